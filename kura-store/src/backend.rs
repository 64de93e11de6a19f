//! Storage backends: where blob bytes, temporary files, the intent log and the metadata
//! database live. [`FsBackend`] is the real one; [`MemBackend`] keeps everything in memory for
//! fast tests; [`FaultyBackend`] wraps another backend and injects I/O failures at chosen
//! steps.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

/// Where the metadata database lives.
#[derive(Debug)]
pub enum MetadataStorage {
    /// A redb file at this path.
    Path(PathBuf),
    /// A custom redb storage backend (in-memory, fault-injecting, ...).
    Custom(Box<dyn redb::StorageBackend>),
}

/// A blob being written to a temporary location.
pub trait BlobWriter: Send {
    /// Reserves `len` bytes up front (fallocate); may fail with ENOSPC.
    fn reserve(&mut self, len: u64) -> io::Result<()>;
    /// Writes some of `buf`, returning how many bytes were written (short writes allowed).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Makes the written bytes durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// An open, published blob. Holding it keeps the bytes readable even if the blob is
/// removed (Linux unlink semantics; the in-memory backend shares the buffer).
pub trait BlobReader: Send + Sync + fmt::Debug {
    /// Reads at `offset` into `buf`, returning the number of bytes read (0 at end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Length of the blob.
    fn len(&self) -> io::Result<u64>;
    /// Whether the blob is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// The underlying file, for zero-copy transfers (`sendfile`/`splice`), if there is one.
    fn file(&self) -> Option<&File>;
}

/// The I/O a store needs. Blob ids are allocated by the store; the backend maps them to
/// locations. All methods are blocking; the store calls them from blocking threads.
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Where the metadata database lives.
    fn metadata(&self) -> io::Result<MetadataStorage>;
    /// Creates the temporary file for blob `id`.
    fn create_temp(&self, id: u64) -> io::Result<Box<dyn BlobWriter>>;
    /// Removes the temporary file of blob `id` (missing is not an error).
    fn remove_temp(&self, id: u64) -> io::Result<()>;
    /// Removes every temporary file (used on open), returning how many were removed.
    fn clear_temp(&self) -> io::Result<u64>;
    /// Atomically moves the temporary file of `id` to its published location.
    fn publish(&self, id: u64) -> io::Result<()>;
    /// Makes the publication of `ids` durable (fsync of the directories involved).
    fn sync_published(&self, ids: &[u64]) -> io::Result<()>;
    /// Opens a published blob for reading.
    fn open_blob(&self, id: u64) -> io::Result<Arc<dyn BlobReader>>;
    /// Removes a published blob (missing is not an error).
    fn remove_blob(&self, id: u64) -> io::Result<()>;
    /// Moves a published blob aside for inspection (missing is not an error).
    fn quarantine_blob(&self, id: u64) -> io::Result<()>;
    /// Appends blob ids to the intent log, syncing it when `sync` is set.
    fn intent_append(&self, ids: &[u64], sync: bool) -> io::Result<()>;
    /// Reads the intent log.
    fn intent_read(&self) -> io::Result<Vec<u64>>;
    /// Empties the intent log.
    fn intent_clear(&self) -> io::Result<()>;
    /// Total size of the filesystem holding the store, in bytes.
    fn fs_total_bytes(&self) -> io::Result<u64>;
    /// Whether this backend keeps a redo log ([`Backend::redo_append`] and friends). Without
    /// one, `Durability::Always` syncs the metadata database on every batch instead.
    fn supports_redo(&self) -> bool {
        false
    }
    /// Appends one framed redo record and makes it durable (`fdatasync`) before returning.
    /// On error the next append must start where this one did (overwriting any partial
    /// record), so the log stays a readable sequence of frames.
    fn redo_append(&self, _record: &[u8]) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// Reads the whole redo log (empty if there is none).
    fn redo_read(&self) -> io::Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// Empties the redo log (after a durable checkpoint of the database). Implementations
    /// may keep old bytes and write new records over them: recovery skips records whose
    /// sequence number the database already has, and stops at the first torn frame.
    fn redo_clear(&self) -> io::Result<()> {
        Ok(())
    }
    /// The segments of the value log (see `docs/store.md`, "The value log"): their numbers
    /// and lengths, in ascending order. Backends with a redo log must implement the `log_*`
    /// methods: the store appends its batch records there, and small objects' bytes stay
    /// in those records.
    fn log_segments(&self) -> io::Result<Vec<(u64, u64)>> {
        Ok(Vec::new())
    }
    /// Writes `record` at `offset` of segment `seg` (creating the segment, durably, if it
    /// does not exist) and makes it durable (`fdatasync`) before returning.
    fn log_write(&self, _seg: u64, _offset: u64, _record: &[u8]) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// Reads `len` bytes at `offset` of segment `seg`; a missing segment is `NotFound`, a
    /// short one `UnexpectedEof`.
    fn log_read_at(&self, _seg: u64, _offset: u64, _len: usize) -> io::Result<Bytes> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// Reads a whole segment.
    fn log_read(&self, _seg: u64) -> io::Result<Vec<u8>> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// Removes a segment (missing is not an error).
    fn log_remove(&self, _seg: u64) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Filesystem backend

/// The filesystem backend. Layout under `root`:
///
/// ```text
/// meta.redb                 metadata (redb)
/// intent.log                blob ids whose publication or removal is in flight
/// tmp/<id>                  blobs being written
/// blobs/<id >> 12>/<id>     published blobs (ids in hex; 4096 per directory)
/// quarantine/<id>           blobs that failed verification
/// log/<seg>.seg             value-log segments: batch records and small objects' bytes
/// redo.log                  the redo log of earlier releases (read once at open)
/// ```
#[derive(Debug)]
pub struct FsBackend {
    root: PathBuf,
    intent: Mutex<File>,
    /// The redo log and the offset of the next record.
    redo: Mutex<(File, u64)>,
    /// Open value-log segments (at most [`OPEN_SEGMENTS`] kept).
    segs: RwLock<HashMap<u64, Arc<File>>>,
}

/// Value-log segment handles an [`FsBackend`] keeps open.
const OPEN_SEGMENTS: usize = 64;

impl FsBackend {
    /// Opens (creating if needed) a store directory.
    pub fn open(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = root.as_ref().to_path_buf();
        for d in ["tmp", "blobs", "quarantine", "log"] {
            fs::create_dir_all(root.join(d))?;
        }
        let intent = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(root.join("intent.log"))?;
        // Not append mode: records are written at an offset so the file's blocks are reused
        // after each checkpoint (see `redo_append`).
        let redo = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(root.join("redo.log"))?;
        sync_dir(&root)?;
        Ok(Self {
            root,
            intent: Mutex::new(intent),
            redo: Mutex::new((redo, 0)),
            segs: RwLock::new(HashMap::new()),
        })
    }

    fn seg_path(&self, seg: u64) -> PathBuf {
        self.root.join("log").join(format!("{seg:016x}.seg"))
    }

    /// The open handle of segment `seg`, opening (and with `create`, durably creating) it.
    fn seg(&self, seg: u64, create: bool) -> io::Result<Arc<File>> {
        if let Some(f) = self
            .segs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&seg)
        {
            return Ok(f.clone());
        }
        let path = self.seg_path(seg);
        let f = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)?;
                sync_dir(&self.root.join("log"))?;
                f
            }
            Err(e) => return Err(e),
        };
        let f = Arc::new(f);
        let mut g = self.segs.write().unwrap_or_else(|e| e.into_inner());
        if g.len() >= OPEN_SEGMENTS {
            let victim = g.keys().copied().find(|k| *k != seg);
            if let Some(v) = victim {
                g.remove(&v);
            }
        }
        Ok(g.entry(seg).or_insert(f).clone())
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn temp_path(&self, id: u64) -> PathBuf {
        self.root.join("tmp").join(format!("{id:016x}"))
    }

    fn blob_dir(&self, id: u64) -> PathBuf {
        self.root.join("blobs").join(format!("{:x}", id >> 12))
    }

    /// Path of a published blob.
    pub fn blob_path(&self, id: u64) -> PathBuf {
        self.blob_dir(id).join(format!("{id:016x}"))
    }
}

fn sync_dir(p: &Path) -> io::Result<()> {
    File::open(p)?.sync_all()
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

struct FsWriter(File);

impl BlobWriter for FsWriter {
    fn reserve(&mut self, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        match rustix::fs::fallocate(&self.0, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::NOSPC => {
                Err(io::Error::from(io::ErrorKind::StorageFull))
            }
            // Filesystems without fallocate: the write path still reports ENOSPC.
            Err(_) => Ok(()),
        }
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

#[derive(Debug)]
struct FsReader(File);

impl BlobReader for FsReader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn file(&self) -> Option<&File> {
        Some(&self.0)
    }
}

impl Backend for FsBackend {
    fn metadata(&self) -> io::Result<MetadataStorage> {
        Ok(MetadataStorage::Path(self.root.join("meta.redb")))
    }

    fn create_temp(&self, id: u64) -> io::Result<Box<dyn BlobWriter>> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.temp_path(id))?;
        Ok(Box::new(FsWriter(f)))
    }

    fn remove_temp(&self, id: u64) -> io::Result<()> {
        ignore_missing(fs::remove_file(self.temp_path(id)))
    }

    fn clear_temp(&self) -> io::Result<u64> {
        let mut n = 0;
        for e in fs::read_dir(self.root.join("tmp"))? {
            let e = e?;
            ignore_missing(fs::remove_file(e.path()))?;
            n += 1;
        }
        Ok(n)
    }

    fn publish(&self, id: u64) -> io::Result<()> {
        let to = self.blob_path(id);
        match fs::rename(self.temp_path(id), &to) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(self.blob_dir(id))?;
                fs::rename(self.temp_path(id), &to)
            }
            other => other,
        }
    }

    fn sync_published(&self, ids: &[u64]) -> io::Result<()> {
        let mut dirs: Vec<u64> = ids.iter().map(|id| id >> 12).collect();
        dirs.sort_unstable();
        dirs.dedup();
        if !dirs.is_empty() {
            sync_dir(&self.root.join("blobs"))?;
        }
        for d in dirs {
            sync_dir(&self.blob_dir(d << 12))?;
        }
        Ok(())
    }

    fn open_blob(&self, id: u64) -> io::Result<Arc<dyn BlobReader>> {
        Ok(Arc::new(FsReader(File::open(self.blob_path(id))?)))
    }

    fn remove_blob(&self, id: u64) -> io::Result<()> {
        ignore_missing(fs::remove_file(self.blob_path(id)))
    }

    fn quarantine_blob(&self, id: u64) -> io::Result<()> {
        ignore_missing(fs::rename(
            self.blob_path(id),
            self.root.join("quarantine").join(format!("{id:016x}")),
        ))
    }

    fn intent_append(&self, ids: &[u64], sync: bool) -> io::Result<()> {
        let mut buf = Vec::with_capacity(ids.len() * 8);
        for id in ids {
            buf.extend_from_slice(&id.to_le_bytes());
        }
        let mut f = self.intent.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(&buf)?;
        if sync { f.sync_data() } else { Ok(()) }
    }

    fn intent_read(&self) -> io::Result<Vec<u64>> {
        let mut buf = Vec::new();
        File::open(self.root.join("intent.log"))?.read_to_end(&mut buf)?;
        // A torn final entry (crash mid-append) is ignored: its blob was never published.
        Ok(buf
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }

    fn intent_clear(&self) -> io::Result<()> {
        let f = self.intent.lock().unwrap_or_else(|e| e.into_inner());
        f.set_len(0)
    }

    fn fs_total_bytes(&self) -> io::Result<u64> {
        let s = rustix::fs::statvfs(&self.root).map_err(io::Error::from)?;
        Ok(s.f_blocks.saturating_mul(s.f_frsize))
    }
    fn supports_redo(&self) -> bool {
        true
    }
    fn redo_append(&self, record: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        // Records are written from the start of the file again after every checkpoint,
        // over the blocks of older records: `fdatasync` then has no size or allocation
        // change to journal (cheaper than appending). Stale records left further on are
        // skipped by recovery (their sequence numbers are not above the database's), and
        // the first torn record ends the log.
        let mut g = self.redo.lock().unwrap_or_else(|e| e.into_inner());
        let (f, pos) = &mut *g;
        f.write_all_at(record, *pos)?;
        f.sync_data()?;
        *pos += record.len() as u64;
        Ok(())
    }
    fn redo_read(&self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        File::open(self.root.join("redo.log"))?.read_to_end(&mut buf)?;
        Ok(buf)
    }
    fn redo_clear(&self) -> io::Result<()> {
        // Only the write position: see `redo_append`.
        self.redo.lock().unwrap_or_else(|e| e.into_inner()).1 = 0;
        Ok(())
    }
    fn log_segments(&self) -> io::Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("log"))? {
            let e = e?;
            let name = e.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
                continue;
            };
            if let Ok(seg) = u64::from_str_radix(hex, 16) {
                out.push((seg, e.metadata()?.len()));
            }
        }
        out.sort_unstable();
        Ok(out)
    }
    fn log_write(&self, seg: u64, offset: u64, record: &[u8]) -> io::Result<()> {
        let f = self.seg(seg, true)?;
        f.write_all_at(record, offset)?;
        f.sync_data()
    }
    fn log_read_at(&self, seg: u64, offset: u64, len: usize) -> io::Result<Bytes> {
        let f = self.seg(seg, false)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    }
    fn log_read(&self, seg: u64) -> io::Result<Vec<u8>> {
        fs::read(self.seg_path(seg))
    }
    fn log_remove(&self, seg: u64) -> io::Result<()> {
        self.segs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&seg);
        ignore_missing(fs::remove_file(self.seg_path(seg)))
    }
}

// ---------------------------------------------------------------------------------------------
// In-memory backend

#[derive(Debug, Default, Clone)]
struct MemState {
    temps: HashMap<u64, Vec<u8>>,
    blobs: HashMap<u64, Arc<Vec<u8>>>,
    quarantine: HashMap<u64, Arc<Vec<u8>>>,
    intent: Vec<u64>,
    redo: Vec<u8>,
    log: std::collections::BTreeMap<u64, Vec<u8>>,
}

/// An in-memory backend. Clones share the same contents, so a store can be "reopened" on
/// the same data.
#[derive(Debug, Clone)]
pub struct MemBackend {
    state: Arc<Mutex<MemState>>,
    meta: Arc<RwLock<Vec<u8>>>,
    total_bytes: u64,
}

impl Default for MemBackend {
    fn default() -> Self {
        Self::new(1 << 40)
    }
}

impl MemBackend {
    /// An empty backend pretending to live on a filesystem of `total_bytes`.
    pub fn new(total_bytes: u64) -> Self {
        Self {
            state: Arc::default(),
            meta: Arc::default(),
            total_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An independent copy of everything written so far: what a crash at this instant
    /// leaves (every write that returned is kept; the store's in-memory state is not).
    /// Open a store on it to test recovery while the original keeps running.
    pub fn snapshot(&self) -> MemBackend {
        // Metadata first: the store writes a batch's log record and blobs before the
        // database commit that points at them, so the copy never has a row without its bytes.
        let meta = self.meta.read().unwrap_or_else(|e| e.into_inner()).clone();
        let state = self.lock().clone();
        Self {
            state: Arc::new(Mutex::new(state)),
            meta: Arc::new(RwLock::new(meta)),
            total_bytes: self.total_bytes,
        }
    }

    /// Number of temporary blobs (for tests: must be 0 after any failed put).
    pub fn temp_count(&self) -> usize {
        self.lock().temps.len()
    }

    /// Number of published blobs.
    pub fn blob_count(&self) -> usize {
        self.lock().blobs.len()
    }

    /// Number of quarantined blobs.
    pub fn quarantine_count(&self) -> usize {
        self.lock().quarantine.len()
    }

    /// Ids of published blobs.
    pub fn blob_ids(&self) -> Vec<u64> {
        self.lock().blobs.keys().copied().collect()
    }

    /// Flips one byte of a published blob (for corruption tests). Returns whether it existed.
    pub fn corrupt_blob(&self, id: u64, offset: usize) -> bool {
        let mut st = self.lock();
        match st.blobs.get_mut(&id) {
            Some(b) if offset < b.len() => {
                let mut v = (**b).clone();
                v[offset] ^= 0xff;
                *b = Arc::new(v);
                true
            }
            _ => false,
        }
    }
}

struct MemWriter {
    state: Arc<Mutex<MemState>>,
    id: u64,
}

impl BlobWriter for MemWriter {
    fn reserve(&mut self, _len: u64) -> io::Result<()> {
        Ok(())
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let t = st
            .temps
            .get_mut(&self.id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        t.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct MemReader(Arc<Vec<u8>>);

impl BlobReader for MemReader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let off = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let n = buf.len().min(self.0.len() - off);
        buf[..n].copy_from_slice(&self.0[off..off + n]);
        Ok(n)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
    fn file(&self) -> Option<&File> {
        None
    }
}

/// redb storage over a shared, growable buffer.
#[derive(Debug)]
struct SharedMemStorage(Arc<RwLock<Vec<u8>>>);

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "offset out of range")
}

impl redb::StorageBackend for SharedMemStorage {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.read().unwrap_or_else(|e| e.into_inner()).len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let g = self.0.read().unwrap_or_else(|e| e.into_inner());
        let off = usize::try_from(offset).map_err(|_| out_of_range())?;
        let src = g.get(off..off + out.len()).ok_or_else(out_of_range)?;
        out.copy_from_slice(src);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .resize(len, 0);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut g = self.0.write().unwrap_or_else(|e| e.into_inner());
        let off = usize::try_from(offset).map_err(|_| out_of_range())?;
        let dst = g.get_mut(off..off + data.len()).ok_or_else(out_of_range)?;
        dst.copy_from_slice(data);
        Ok(())
    }
}

impl Backend for MemBackend {
    fn metadata(&self) -> io::Result<MetadataStorage> {
        Ok(MetadataStorage::Custom(Box::new(SharedMemStorage(
            self.meta.clone(),
        ))))
    }
    fn create_temp(&self, id: u64) -> io::Result<Box<dyn BlobWriter>> {
        let mut st = self.lock();
        if st.temps.contains_key(&id) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        st.temps.insert(id, Vec::new());
        Ok(Box::new(MemWriter {
            state: self.state.clone(),
            id,
        }))
    }
    fn remove_temp(&self, id: u64) -> io::Result<()> {
        self.lock().temps.remove(&id);
        Ok(())
    }
    fn clear_temp(&self) -> io::Result<u64> {
        let mut st = self.lock();
        let n = st.temps.len() as u64;
        st.temps.clear();
        Ok(n)
    }
    fn publish(&self, id: u64) -> io::Result<()> {
        let mut st = self.lock();
        let t = st
            .temps
            .remove(&id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        st.blobs.insert(id, Arc::new(t));
        Ok(())
    }
    fn sync_published(&self, _ids: &[u64]) -> io::Result<()> {
        Ok(())
    }
    fn open_blob(&self, id: u64) -> io::Result<Arc<dyn BlobReader>> {
        let st = self.lock();
        let b = st
            .blobs
            .get(&id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Arc::new(MemReader(b.clone())))
    }
    fn remove_blob(&self, id: u64) -> io::Result<()> {
        self.lock().blobs.remove(&id);
        Ok(())
    }
    fn quarantine_blob(&self, id: u64) -> io::Result<()> {
        let mut st = self.lock();
        if let Some(b) = st.blobs.remove(&id) {
            st.quarantine.insert(id, b);
        }
        Ok(())
    }
    fn intent_append(&self, ids: &[u64], _sync: bool) -> io::Result<()> {
        self.lock().intent.extend_from_slice(ids);
        Ok(())
    }
    fn intent_read(&self) -> io::Result<Vec<u64>> {
        Ok(self.lock().intent.clone())
    }
    fn intent_clear(&self) -> io::Result<()> {
        self.lock().intent.clear();
        Ok(())
    }
    fn supports_redo(&self) -> bool {
        true
    }
    fn redo_append(&self, record: &[u8]) -> io::Result<()> {
        self.lock().redo.extend_from_slice(record);
        Ok(())
    }
    fn redo_read(&self) -> io::Result<Vec<u8>> {
        Ok(self.lock().redo.clone())
    }
    fn redo_clear(&self) -> io::Result<()> {
        self.lock().redo.clear();
        Ok(())
    }
    fn log_segments(&self) -> io::Result<Vec<(u64, u64)>> {
        Ok(self
            .lock()
            .log
            .iter()
            .map(|(k, v)| (*k, v.len() as u64))
            .collect())
    }
    fn log_write(&self, seg: u64, offset: u64, record: &[u8]) -> io::Result<()> {
        let mut g = self.lock();
        let v = g.log.entry(seg).or_default();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start + record.len();
        if v.len() < end {
            v.resize(end, 0);
        }
        v[start..end].copy_from_slice(record);
        Ok(())
    }
    fn log_read_at(&self, seg: u64, offset: u64, len: usize) -> io::Result<Bytes> {
        let g = self.lock();
        let v = g
            .log
            .get(&seg)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        v.get(start..start.saturating_add(len))
            .map(Bytes::copy_from_slice)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }
    fn log_read(&self, seg: u64) -> io::Result<Vec<u8>> {
        self.lock()
            .log
            .get(&seg)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn log_remove(&self, seg: u64) -> io::Result<()> {
        self.lock().log.remove(&seg);
        Ok(())
    }
    fn fs_total_bytes(&self) -> io::Result<u64> {
        Ok(self.total_bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// Fault injection

/// An I/O step where [`FaultyBackend`] can inject a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultPoint {
    /// Creating the temporary file.
    CreateTemp,
    /// Reserving space (fallocate).
    Reserve,
    /// Writing a chunk.
    Write,
    /// Syncing the blob.
    SyncBlob,
    /// Appending to the intent log.
    IntentAppend,
    /// Renaming the temporary file into place.
    Publish,
    /// Syncing the directories of published blobs.
    SyncPublished,
    /// Writing to the metadata database.
    MetadataWrite,
    /// Syncing the metadata database.
    MetadataSync,
    /// Opening a blob for reading.
    OpenBlob,
    /// Appending (and syncing) a redo-log record.
    RedoAppend,
}

/// What an injected fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// Fails with a generic I/O error (EIO).
    Error,
    /// Fails with ENOSPC.
    NoSpace,
    /// For [`FaultPoint::Write`]: writes half the buffer and reports success (a short write,
    /// which callers must continue); elsewhere the same as [`FaultKind::Error`].
    ShortWrite,
}

#[derive(Debug, Default)]
struct FaultState {
    /// (point, hits to skip before firing, kind, remaining firings)
    armed: Vec<(FaultPoint, u64, FaultKind, u64)>,
    hits: Vec<FaultPoint>,
}

/// Handle to arm faults in a [`FaultyBackend`] and see which steps were hit.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<FaultState>>);

impl Faults {
    /// Arms a fault at the `skip`-th next hit (0 = the next one) of `point`, firing `times`
    /// times in a row.
    pub fn arm(&self, point: FaultPoint, skip: u64, kind: FaultKind, times: u64) {
        self.lock().armed.push((point, skip, kind, times));
    }

    /// Disarms everything.
    pub fn clear(&self) {
        self.lock().armed.clear();
    }

    /// Steps hit since the last call, in order.
    pub fn take_hits(&self) -> Vec<FaultPoint> {
        std::mem::take(&mut self.lock().hits)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hit(&self, point: FaultPoint) -> Option<FaultKind> {
        let mut st = self.lock();
        st.hits.push(point);
        let mut fired = None;
        for a in st.armed.iter_mut().filter(|a| a.0 == point) {
            if a.1 > 0 {
                a.1 -= 1;
            } else if a.3 > 0 {
                a.3 -= 1;
                fired = Some(a.2);
                break;
            }
        }
        st.armed.retain(|a| a.3 > 0);
        fired
    }

    fn check(&self, point: FaultPoint) -> io::Result<()> {
        match self.hit(point) {
            None => Ok(()),
            Some(k) => Err(fault_error(k)),
        }
    }
}

fn fault_error(kind: FaultKind) -> io::Error {
    match kind {
        FaultKind::NoSpace => io::Error::from(io::ErrorKind::StorageFull),
        _ => io::Error::other("injected I/O error"),
    }
}

/// A backend that forwards to `inner` and fails the steps armed in its [`Faults`].
#[derive(Debug, Clone)]
pub struct FaultyBackend<B> {
    inner: B,
    faults: Faults,
}

impl<B: Backend> FaultyBackend<B> {
    /// Wraps `inner`; returns the backend and the handle to arm faults.
    pub fn new(inner: B) -> (Self, Faults) {
        let faults = Faults::default();
        (
            Self {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

struct FaultyWriter {
    inner: Box<dyn BlobWriter>,
    faults: Faults,
}

impl BlobWriter for FaultyWriter {
    fn reserve(&mut self, len: u64) -> io::Result<()> {
        self.faults.check(FaultPoint::Reserve)?;
        self.inner.reserve(len)
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.faults.hit(FaultPoint::Write) {
            None => self.inner.write(buf),
            Some(FaultKind::ShortWrite) if buf.len() > 1 => self.inner.write(&buf[..buf.len() / 2]),
            Some(k) => Err(fault_error(k)),
        }
    }
    fn sync(&mut self) -> io::Result<()> {
        self.faults.check(FaultPoint::SyncBlob)?;
        self.inner.sync()
    }
}

#[derive(Debug)]
struct FaultyMeta {
    inner: Box<dyn redb::StorageBackend>,
    faults: Faults,
}

impl redb::StorageBackend for FaultyMeta {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.check(FaultPoint::MetadataWrite)?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.faults.check(FaultPoint::MetadataSync)?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.faults.check(FaultPoint::MetadataWrite)?;
        self.inner.write(offset, data)
    }
}

impl<B: Backend> Backend for FaultyBackend<B> {
    fn metadata(&self) -> io::Result<MetadataStorage> {
        Ok(match self.inner.metadata()? {
            MetadataStorage::Custom(inner) => MetadataStorage::Custom(Box::new(FaultyMeta {
                inner,
                faults: self.faults.clone(),
            })),
            // A path-backed database is opened by redb itself: no metadata faults there.
            p @ MetadataStorage::Path(_) => p,
        })
    }
    fn create_temp(&self, id: u64) -> io::Result<Box<dyn BlobWriter>> {
        self.faults.check(FaultPoint::CreateTemp)?;
        Ok(Box::new(FaultyWriter {
            inner: self.inner.create_temp(id)?,
            faults: self.faults.clone(),
        }))
    }
    fn remove_temp(&self, id: u64) -> io::Result<()> {
        self.inner.remove_temp(id)
    }
    fn clear_temp(&self) -> io::Result<u64> {
        self.inner.clear_temp()
    }
    fn publish(&self, id: u64) -> io::Result<()> {
        self.faults.check(FaultPoint::Publish)?;
        self.inner.publish(id)
    }
    fn sync_published(&self, ids: &[u64]) -> io::Result<()> {
        self.faults.check(FaultPoint::SyncPublished)?;
        self.inner.sync_published(ids)
    }
    fn open_blob(&self, id: u64) -> io::Result<Arc<dyn BlobReader>> {
        self.faults.check(FaultPoint::OpenBlob)?;
        self.inner.open_blob(id)
    }
    fn remove_blob(&self, id: u64) -> io::Result<()> {
        self.inner.remove_blob(id)
    }
    fn quarantine_blob(&self, id: u64) -> io::Result<()> {
        self.inner.quarantine_blob(id)
    }
    fn intent_append(&self, ids: &[u64], sync: bool) -> io::Result<()> {
        self.faults.check(FaultPoint::IntentAppend)?;
        self.inner.intent_append(ids, sync)
    }
    fn intent_read(&self) -> io::Result<Vec<u64>> {
        self.inner.intent_read()
    }
    fn intent_clear(&self) -> io::Result<()> {
        self.inner.intent_clear()
    }
    fn supports_redo(&self) -> bool {
        self.inner.supports_redo()
    }
    fn redo_append(&self, record: &[u8]) -> io::Result<()> {
        self.faults.check(FaultPoint::RedoAppend)?;
        self.inner.redo_append(record)
    }
    fn redo_read(&self) -> io::Result<Vec<u8>> {
        self.inner.redo_read()
    }
    fn redo_clear(&self) -> io::Result<()> {
        self.inner.redo_clear()
    }
    fn log_segments(&self) -> io::Result<Vec<(u64, u64)>> {
        self.inner.log_segments()
    }
    fn log_write(&self, seg: u64, offset: u64, record: &[u8]) -> io::Result<()> {
        self.faults.check(FaultPoint::RedoAppend)?;
        self.inner.log_write(seg, offset, record)
    }
    fn log_read_at(&self, seg: u64, offset: u64, len: usize) -> io::Result<Bytes> {
        self.inner.log_read_at(seg, offset, len)
    }
    fn log_read(&self, seg: u64) -> io::Result<Vec<u8>> {
        self.inner.log_read(seg)
    }
    fn log_remove(&self, seg: u64) -> io::Result<()> {
        self.inner.log_remove(seg)
    }
    fn fs_total_bytes(&self) -> io::Result<u64> {
        self.inner.fs_total_bytes()
    }
}

impl<B: Backend> Backend for Arc<B> {
    fn metadata(&self) -> io::Result<MetadataStorage> {
        (**self).metadata()
    }
    fn create_temp(&self, id: u64) -> io::Result<Box<dyn BlobWriter>> {
        (**self).create_temp(id)
    }
    fn remove_temp(&self, id: u64) -> io::Result<()> {
        (**self).remove_temp(id)
    }
    fn clear_temp(&self) -> io::Result<u64> {
        (**self).clear_temp()
    }
    fn publish(&self, id: u64) -> io::Result<()> {
        (**self).publish(id)
    }
    fn sync_published(&self, ids: &[u64]) -> io::Result<()> {
        (**self).sync_published(ids)
    }
    fn open_blob(&self, id: u64) -> io::Result<Arc<dyn BlobReader>> {
        (**self).open_blob(id)
    }
    fn remove_blob(&self, id: u64) -> io::Result<()> {
        (**self).remove_blob(id)
    }
    fn quarantine_blob(&self, id: u64) -> io::Result<()> {
        (**self).quarantine_blob(id)
    }
    fn intent_append(&self, ids: &[u64], sync: bool) -> io::Result<()> {
        (**self).intent_append(ids, sync)
    }
    fn intent_read(&self) -> io::Result<Vec<u64>> {
        (**self).intent_read()
    }
    fn intent_clear(&self) -> io::Result<()> {
        (**self).intent_clear()
    }
    fn supports_redo(&self) -> bool {
        (**self).supports_redo()
    }
    fn redo_append(&self, record: &[u8]) -> io::Result<()> {
        (**self).redo_append(record)
    }
    fn redo_read(&self) -> io::Result<Vec<u8>> {
        (**self).redo_read()
    }
    fn redo_clear(&self) -> io::Result<()> {
        (**self).redo_clear()
    }
    fn log_segments(&self) -> io::Result<Vec<(u64, u64)>> {
        (**self).log_segments()
    }
    fn log_write(&self, seg: u64, offset: u64, record: &[u8]) -> io::Result<()> {
        (**self).log_write(seg, offset, record)
    }
    fn log_read_at(&self, seg: u64, offset: u64, len: usize) -> io::Result<Bytes> {
        (**self).log_read_at(seg, offset, len)
    }
    fn log_read(&self, seg: u64) -> io::Result<Vec<u8>> {
        (**self).log_read(seg)
    }
    fn log_remove(&self, seg: u64) -> io::Result<()> {
        (**self).log_remove(seg)
    }
    fn fs_total_bytes(&self) -> io::Result<u64> {
        (**self).fs_total_bytes()
    }
}
