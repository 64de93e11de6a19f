//! The store: configuration, writes (staging + group commit), reads, replication hooks.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use redb::{ReadableDatabase, ReadableTable};
use sha2::{Digest as _, Sha256};
use tokio::sync::oneshot;

use crate::backend::{Backend, BlobReader, BlobWriter, MetadataStorage};
use crate::commit::{
    BUCKETS, CHANGES, Cmd, Committer, Counters, GHOSTS, INLINE, Learned, NS_TOMBS, OBJECTS, OWNERS,
    Op, Outcome, PendingPut, STATE, SUMMARY, Staged, bucket_key, bucket_prefix, prefix_end,
    summary_key,
};
use crate::error::{Error, Result};
use crate::hlc::{Clock, Hlc, HlcClock, SystemClock, Version};
use crate::meta::{BlobLoc, Change, ObjectMeta, ReplicatedRecord, decode_bucket, decode_entry};
use crate::rcache::{AccessMap, ReadCache, Sharding};
use crate::summary::{BucketEntry, FANOUT, NodeHash};
use crate::types::{Digest, Key, NamespaceId, NodeId, ObjectId, ObjectRef};

/// When a write is acknowledged relative to its durability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged once data and metadata are durable (group commit: concurrent writers
    /// share one sync per batch). On backends with a redo log the batch's durability point
    /// is one `fdatasync` of its redo record and the database is synced at checkpoints;
    /// otherwise it is one durable database commit. The default.
    Always,
    /// Acknowledged once committed and visible; made durable by a checkpoint at most
    /// `max_delay` later. Blob data is still fsynced by each writer. A crash loses at most the
    /// writes acknowledged in the last `max_delay`.
    Batch {
        /// Bound on the time between acknowledgement and durability.
        max_delay: Duration,
    },
    /// Nothing waits for fsync: blob files are never synced, metadata is checkpointed every
    /// `checkpoint`. A crash may lose recent writes; torn blobs are caught by checksums.
    None {
        /// Interval of metadata checkpoints.
        checkpoint: Duration,
    },
}

/// How much the store may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capacity {
    /// No limit (the disk is the limit; ENOSPC gives [`Error::Full`]).
    Unlimited,
    /// At most this many bytes of object content.
    Bytes(u64),
    /// At most this percentage (1–100) of the filesystem's size.
    PercentOfFilesystem(u8),
}

/// Store configuration. Start from [`Config::default`] and change fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// This replica's node id (LWW tie-break).
    pub node: NodeId,
    /// Durability mode.
    pub durability: Durability,
    /// Capacity limit.
    pub capacity: Capacity,
    /// Background eviction starts above this percentage of capacity.
    pub high_watermark_pct: u8,
    /// Background eviction stops at this percentage of capacity.
    pub low_watermark_pct: u8,
    /// Objects up to this size are *small*: their bytes travel in their batch's record and
    /// stay in the value log (`Always` mode on a backend with a log), or live inline in the
    /// metadata database (other modes). Larger objects get a blob file each.
    pub inline_threshold: usize,
    /// Read and write chunk size (bounds memory per transfer).
    pub chunk_size: usize,
    /// Maximum operations per group commit.
    pub max_batch: usize,
    /// Maximum accepted lead of a remote HLC over the local physical clock.
    pub max_drift: Duration,
    /// Physical clock.
    pub clock: Arc<dyn Clock>,
    /// How often recorded accesses are written to the LRU index.
    pub access_flush_interval: Duration,
    /// Persist allocator state with every durable commit (redb "quick repair"), so that
    /// opening after a crash does not walk the whole metadata database. Costs extra
    /// writes per commit; see `docs/store.md`.
    pub fast_crash_recovery: bool,
    /// Bytes of metadata (and inline object) pages redb may cache in memory (default
    /// 64 MiB). This also bounds redb's write buffer: pages of non-durable commits stay in it
    /// until evicted, so in `Always` mode a redo-log checkpoint (during which no batch runs)
    /// writes and syncs up to this much; see `docs/store.md`.
    pub metadata_cache_bytes: usize,
    /// `Always` mode with a redo log on a file backend: sync the metadata database in the
    /// background (at most every 100 ms) between checkpoints, so a checkpoint stalls writers
    /// for less time. Trades throughput for tail latency (default off; best with
    /// `metadata_cache_bytes` of 16 MiB); see `docs/store.md`. Crash safety is the same
    /// either way.
    pub background_writeback: bool,
    /// Evicted objects leave a *ghost* (their digest-summary entry stays, so a replica's
    /// repair does not fetch them back; see [`Store::gc_ghosts`]). A store that is not
    /// replicated can turn this off: evicted objects then leave nothing behind.
    pub ghosts: bool,
    /// Bytes of small (inline) objects kept in memory, already verified, so that repeated
    /// [`Store::get`]s are served without touching the metadata database or hashing again
    /// ([`Object::verified_bytes`]). Split into 16 shards of `read_cache_bytes / 16` bytes;
    /// each entry is charged its body plus an estimate of its bookkeeping, and objects
    /// larger than a shard are not cached. Every write, delete, eviction or quarantine of an
    /// object removes it before the write is acknowledged. `0` disables the cache.
    /// Default 32 MiB.
    pub read_cache_bytes: usize,
    /// A new value-log segment starts once the current one is this long (default 32 MiB,
    /// at least 64 KiB). Compaction works a segment at a time: smaller segments give disk
    /// space back sooner, larger ones mean fewer files. See `docs/store.md`, "The value log".
    pub log_segment_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node: NodeId(0),
            durability: Durability::Always,
            capacity: Capacity::Unlimited,
            high_watermark_pct: 95,
            low_watermark_pct: 85,
            inline_threshold: 64 * 1024,
            chunk_size: 256 * 1024,
            max_batch: 1024,
            max_drift: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
            access_flush_interval: Duration::from_secs(5),
            fast_crash_recovery: true,
            metadata_cache_bytes: 64 << 20,
            background_writeback: false,
            ghosts: true,
            read_cache_bytes: 32 << 20,
            log_segment_bytes: 32 << 20,
        }
    }
}

/// A request to store an object; the body is passed separately.
#[derive(Clone, Debug)]
pub struct PutRequest {
    /// Where to store it.
    pub id: ObjectId,
    /// Content type (opaque).
    pub content_type: String,
    /// Declared length, when known (enables space reservation up front).
    pub len: Option<u64>,
    /// Expected SHA-256 (e.g. a CAS key), verified before the write is accepted.
    pub expected_digest: Option<Digest>,
    /// Objects of the same account this one references.
    pub refs: Vec<ObjectRef>,
}

impl PutRequest {
    /// A request with no declared length, digest or references.
    pub fn new(id: ObjectId) -> Self {
        Self {
            id,
            content_type: "application/octet-stream".into(),
            len: None,
            expected_digest: None,
            refs: Vec::new(),
        }
    }

    /// Declares the length.
    pub fn with_len(mut self, len: u64) -> Self {
        self.len = Some(len);
        self
    }

    /// Sets the expected digest.
    pub fn with_digest(mut self, digest: Digest) -> Self {
        self.expected_digest = Some(digest);
        self
    }

    /// Sets the content type.
    pub fn with_content_type(mut self, ct: impl Into<String>) -> Self {
        self.content_type = ct.into();
        self
    }

    /// Sets the references.
    pub fn with_refs(mut self, refs: Vec<ObjectRef>) -> Self {
        self.refs = refs;
        self
    }
}

/// A boxed body stream.
pub type BodyStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A stream yielding one buffer (or nothing, for an empty body).
#[derive(Debug)]
pub struct OnceBody(Option<Bytes>);

impl Stream for OnceBody {
    type Item = io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.take().map(Ok))
    }
}

/// A body made of one in-memory buffer.
pub fn body_from_bytes(b: impl Into<Bytes>) -> OnceBody {
    let b = b.into();
    OnceBody(if b.is_empty() { None } else { Some(b) })
}

/// Result of [`Store::apply_replicated`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The record won and was applied.
    Applied,
    /// The record lost (older than what is stored, or shadowed by a namespace tombstone).
    Ignored,
}

/// Counters for the daemon's metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Objects stored (ghosts not included).
    pub objects: u64,
    /// Ghosts: evicted objects whose summary entry is kept (see `docs/store.md`, "Ghosts").
    pub ghosts: u64,
    /// Bytes of object content stored.
    pub bytes: u64,
    /// Bytes reserved by writes in flight.
    pub reserved_bytes: u64,
    /// Capacity in bytes, if limited.
    pub capacity_bytes: Option<u64>,
    /// Objects evicted since open (including referrers evicted with them).
    pub evictions: u64,
    /// Bytes evicted since open.
    pub evicted_bytes: u64,
    /// Objects found corrupt (and quarantined) since open.
    pub corrupt_objects: u64,
    /// Group commits since open.
    pub commits: u64,
    /// Operations in those commits.
    pub committed_ops: u64,
    /// Largest batch.
    pub max_batch: u64,
    /// Total time spent in group commits (metadata transaction, renames, fsyncs), in µs.
    pub commit_micros: u64,
    /// Histogram of batch sizes: bucket `i` counts batches of `2^i ..= 2^(i+1)-1` operations
    /// (the last bucket is open-ended).
    pub batch_histogram: [u64; 8],
    /// Last change-feed sequence number.
    pub last_seq: u64,
    /// Temporary files removed on open.
    pub recovered_temp_files: u64,
    /// Orphan blobs removed on open.
    pub recovered_orphans: u64,
    /// Redo-log batches replayed on open (durable writes the database had not checkpointed).
    pub recovered_batches: u64,
    /// [`Store::get`]s served from the read cache since open.
    pub read_cache_hits: u64,
    /// [`Store::get`]s that looked in the read cache and did not find the object (absent,
    /// file-backed, or not cached yet) since open. Always 0 when the cache is disabled.
    pub read_cache_misses: u64,
    /// Bytes charged to the read cache now (bodies plus bookkeeping; at most
    /// [`Config::read_cache_bytes`]).
    pub read_cache_bytes: u64,
    /// Objects in the read cache now.
    pub read_cache_objects: u64,
    /// Durable checkpoints of the metadata database since open (redo-log and `batch`/`none`
    /// checkpoints; no batch runs while one is in progress).
    pub checkpoints: u64,
    /// Total time spent in those checkpoints, in µs.
    pub checkpoint_micros: u64,
    /// Longest checkpoint, in µs (a stall every writer waits out).
    pub max_checkpoint_micros: u64,
    /// Value-log segments on disk (see `docs/store.md`, "The value log").
    pub log_segments: u64,
    /// Their total length in bytes (batch records, including small objects' bodies).
    pub log_bytes: u64,
    /// Bytes of small objects' bodies in them that objects still point at; the rest is
    /// garbage that compaction and segment removal give back.
    pub log_live_bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatCounters {
    pub(crate) evictions: AtomicU64,
    pub(crate) evicted_bytes: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    commits: AtomicU64,
    ops: AtomicU64,
    pub(crate) commit_micros: AtomicU64,
    max_batch: AtomicU64,
    hist: [AtomicU64; 8],
    recovered_temp: AtomicU64,
    recovered_orphans: AtomicU64,
    pub(crate) recovered_batches: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
    pub(crate) checkpoint_micros: AtomicU64,
    pub(crate) max_checkpoint_micros: AtomicU64,
    pub(crate) log_segments: AtomicU64,
    pub(crate) log_bytes: AtomicU64,
    pub(crate) log_live_bytes: AtomicU64,
}

impl StatCounters {
    pub(crate) fn record_batch(&self, n: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.ops.fetch_add(n, Ordering::Relaxed);
        self.max_batch.fetch_max(n, Ordering::Relaxed);
        let b = (63 - n.max(1).leading_zeros()).min(7) as usize;
        self.hist[b].fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Space {
    pub(crate) used: u64,
    pub(crate) reserved: u64,
}

/// State shared by handles, readers and the committer thread.
pub(crate) struct Shared {
    pub(crate) db: redb::Database,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) cfg: Config,
    pub(crate) hlc: HlcClock,
    pub(crate) next_blob: AtomicU64,
    pub(crate) capacity: Option<u64>,
    pub(crate) space: Mutex<Space>,
    pub(crate) objects: AtomicU64,
    pub(crate) ghosts: AtomicU64,
    pub(crate) seq: AtomicU64,
    pub(crate) stats: StatCounters,
    pub(crate) access: AccessMap,
    pub(crate) sharding: Sharding,
    pub(crate) read_cache: ReadCache,
}

struct Inner {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the sender lets the committer drain, checkpoint and exit on its own.
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// A handle to an open store. Cheap to clone; all clones share one committer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("node", &self.inner.shared.cfg.node)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct BoxedStorage(Box<dyn redb::StorageBackend>);

impl redb::StorageBackend for BoxedStorage {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write(offset, data)
    }
}

fn mm<T: Into<redb::Error>>(op: &'static str) -> impl FnOnce(T) -> Error {
    move |e| Error::meta(op, e)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io("blocking task", io::Error::other(e.to_string())))
}

fn open_blocking(backend: Arc<dyn Backend>, cfg: Config) -> Result<Store> {
    let mut builder = redb::Builder::new();
    // Bound the page cache: small objects live inline in redb, so redb's default
    // (1 GiB) would let resident memory grow with the data written.
    builder.set_cache_size(cfg.metadata_cache_bytes);
    let mut meta_path = None;
    let db = match backend
        .metadata()
        .map_err(|e| Error::io("open metadata", e))?
    {
        MetadataStorage::Path(p) => {
            meta_path = Some(p.clone());
            builder.create(p)
        }
        MetadataStorage::Custom(b) => builder.create_with_backend(BoxedStorage(b)),
    }
    .map_err(mm("open metadata"))?;
    // Create tables, load counters.
    let txn = db.begin_write().map_err(mm("begin"))?;
    let (counters, max_blob) = {
        for def in [
            OBJECTS,
            crate::commit::TOMBS,
            NS_TOMBS,
            crate::commit::REFS,
            SUMMARY,
            BUCKETS,
            GHOSTS,
        ] {
            txn.open_table(def).map_err(mm("open table"))?;
        }
        txn.open_table(crate::commit::LRU)
            .map_err(mm("open table"))?;
        txn.open_table(CHANGES).map_err(mm("open table"))?;
        txn.open_table(crate::commit::PACKS)
            .map_err(mm("open table"))?;
        let inline = txn.open_table(INLINE).map_err(mm("open table"))?;
        let owners = txn.open_table(OWNERS).map_err(mm("open table"))?;
        let state = txn.open_table(STATE).map_err(mm("open table"))?;
        let counters = Counters::load(&state)?;
        let last = |t: &redb::Table<'_, u64, &[u8]>| -> Result<u64> {
            Ok(t.last()
                .map_err(mm("read"))?
                .map(|(k, _)| k.value())
                .unwrap_or(0))
        };
        let max_blob = last(&inline)?.max(last(&owners)?);
        (counters, max_blob)
    };
    txn.commit().map_err(mm("commit"))?;
    // Batches made durable by a version-1 redo log but not yet by the database (see
    // `redo.rs`; the value log is read by the replay itself).
    let redo = crate::redo::decode_log(&Bytes::from(
        backend
            .redo_read()
            .map_err(|e| Error::io("read redo log", e))?,
    ));
    let intents = backend
        .intent_read()
        .map_err(|e| Error::io("read intent log", e))?;
    let redo_files = redo
        .iter()
        .flat_map(|b| &b.ops)
        .filter_map(|op| match op.staged {
            Some(crate::redo::RedoStaged::File(id)) => Some(id),
            _ => None,
        });
    let max_blob = intents
        .iter()
        .copied()
        .chain(redo_files)
        .fold(max_blob, u64::max);
    let temps = backend
        .clear_temp()
        .map_err(|e| Error::io("clear temp", e))?;
    let capacity = match cfg.capacity {
        Capacity::Unlimited => None,
        Capacity::Bytes(b) => Some(b),
        Capacity::PercentOfFilesystem(p) => {
            let total = backend
                .fs_total_bytes()
                .map_err(|e| Error::io("statvfs", e))?;
            Some(total / 100 * u64::from(p))
        }
    };
    let hlc = HlcClock::new(
        cfg.clock.clone(),
        u64::try_from(cfg.max_drift.as_millis()).unwrap_or(u64::MAX),
        Hlc(counters.max_hlc),
    );
    let shared = Arc::new(Shared {
        db,
        backend,
        hlc,
        next_blob: AtomicU64::new(max_blob + 1),
        capacity,
        space: Mutex::new(Space {
            used: counters.bytes,
            reserved: 0,
        }),
        objects: AtomicU64::new(counters.objects),
        ghosts: AtomicU64::new(counters.ghosts),
        seq: AtomicU64::new(counters.seq),
        stats: StatCounters::default(),
        access: AccessMap::default(),
        sharding: Sharding::default(),
        read_cache: ReadCache::new(cfg.read_cache_bytes),
        cfg,
    });
    shared.stats.recovered_temp.store(temps, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel();
    let mut committer = Committer::new(shared.clone(), rx, counters);
    let replayed = committer.replay(redo)?;
    if replayed > 0 {
        let c = committer.counters;
        shared.hlc.raise_floor(Hlc(c.max_hlc));
        shared.space.lock().unwrap_or_else(|e| e.into_inner()).used = c.bytes;
        shared.objects.store(c.objects, Ordering::Relaxed);
        shared.ghosts.store(c.ghosts, Ordering::Relaxed);
        shared.seq.store(c.seq, Ordering::Relaxed);
    }
    shared
        .stats
        .recovered_batches
        .store(replayed, Ordering::Relaxed);
    // Blobs whose publication or removal was in flight (after the replay, which may have
    // given some of them their owner back).
    let mut orphans = 0;
    if !intents.is_empty() {
        let rtxn = shared.db.begin_read().map_err(mm("begin read"))?;
        let owners = rtxn.open_table(OWNERS).map_err(mm("open table"))?;
        for id in &intents {
            if owners.get(*id).map_err(mm("read"))?.is_none() {
                shared
                    .backend
                    .remove_blob(*id)
                    .map_err(|e| Error::io("remove orphan", e))?;
                orphans += 1;
            }
        }
    }
    shared
        .backend
        .intent_clear()
        .map_err(|e| Error::io("clear intent log", e))?;
    shared
        .stats
        .recovered_orphans
        .store(orphans, Ordering::Relaxed);
    // Redo mode: the database file is written back in the background between checkpoints,
    // so a checkpoint's own sync has little left to do (see `commit::writeback`).
    if let (true, Some(p)) = (
        committer.logs_redo() && shared.cfg.background_writeback,
        meta_path,
    ) {
        let file = std::fs::File::open(&p).map_err(|e| Error::io("open metadata", e))?;
        let (wtx, wrx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("kura-store-writeback".into())
            .spawn(move || crate::commit::writeback(&file, &wrx))
            .map_err(|e| Error::io("spawn writeback", e))?;
        committer.set_writeback(wtx);
    }
    let thread = std::thread::Builder::new()
        .name("kura-store-commit".into())
        .spawn(move || committer.run())
        .map_err(|e| Error::io("spawn committer", e))?;
    Ok(Store {
        inner: Arc::new(Inner {
            shared,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }),
    })
}

/// Reads the next item of a stream.
async fn next_item<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

/// Holds reserved capacity until dropped, or until the committer converts it into used
/// space (whoever swaps the shared amount to zero releases it, exactly once).
struct Reservation {
    shared: Arc<Shared>,
    bytes: u64,
    amount: Arc<AtomicU64>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut sp = self.shared.space.lock().unwrap_or_else(|e| e.into_inner());
        let r = self.amount.swap(0, Ordering::SeqCst);
        sp.reserved = sp.reserved.saturating_sub(r);
    }
}

/// Removes a temporary blob unless disarmed (covers errors and cancelled writes).
struct TempGuard {
    backend: Arc<dyn Backend>,
    id: Option<u64>,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let _ = self.backend.remove_temp(id);
        }
    }
}

struct FileStage {
    writer: Box<dyn BlobWriter>,
    hasher: Sha256,
    pending: BytesMut,
    guard: TempGuard,
}

fn write_all(w: &mut dyn BlobWriter, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match w.write(buf) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl FileStage {
    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let buf = self.pending.split().freeze();
        let mut writer = std::mem::replace(&mut self.writer, Box::new(NullWriter));
        let mut hasher = std::mem::take(&mut self.hasher);
        let (writer, hasher, r) = blocking(move || {
            hasher.update(&buf);
            let r = write_all(writer.as_mut(), &buf);
            (writer, hasher, r)
        })
        .await?;
        self.writer = writer;
        self.hasher = hasher;
        r.map_err(|e| Error::io("write", e))
    }
}

struct NullWriter;

impl BlobWriter for NullWriter {
    fn reserve(&mut self, _len: u64) -> io::Result<()> {
        Ok(())
    }
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("writer in use"))
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct StagedBody {
    staged: Staged,
    len: u64,
    digest: Digest,
    reservation: Reservation,
    guard: Option<TempGuard>,
}

impl Store {
    /// Opens (or creates) a store on `backend`, recovering from any crash: temporary files
    /// are removed and blobs whose publication or removal was in flight are reconciled with
    /// the metadata. Work is bounded by the in-flight set, not the data set.
    pub async fn open(backend: impl Backend, config: Config) -> Result<Store> {
        if config.low_watermark_pct > config.high_watermark_pct || config.high_watermark_pct > 100 {
            return Err(Error::InvalidConfig {
                reason: "watermarks must satisfy low <= high <= 100",
            });
        }
        if let Capacity::PercentOfFilesystem(p) = config.capacity {
            if p == 0 || p > 100 {
                return Err(Error::InvalidConfig {
                    reason: "capacity percentage must be 1..=100",
                });
            }
        }
        if config.chunk_size == 0 {
            return Err(Error::InvalidConfig {
                reason: "chunk size must be positive",
            });
        }
        let backend: Arc<dyn Backend> = Arc::new(backend);
        blocking(move || open_blocking(backend, config)).await?
    }

    /// Flushes pending work, makes everything durable and stops the committer. Other
    /// handles fail with [`Error::Closed`] afterwards; the metadata file is released when
    /// the last handle (including open [`Object`]s) is dropped.
    pub async fn close(self) -> Result<()> {
        let r = self.submit(Op::Shutdown).await;
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = thread {
            blocking(move || {
                let _ = t.join();
            })
            .await?;
        }
        r.map(|_| ())
    }

    /// Forces a durable checkpoint of the database now (in `Always` mode the writes are
    /// already durable through the redo log; this syncs the database and resets the log).
    pub async fn checkpoint(&self) -> Result<()> {
        self.submit(Op::Checkpoint).await.map(|_| ())
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    async fn submit(&self, op: Op) -> Result<Outcome> {
        let (tx, rx) = oneshot::channel();
        {
            let g = self.inner.tx.lock().unwrap_or_else(|e| e.into_inner());
            let sender = g.as_ref().ok_or(Error::Closed)?;
            sender
                .send(Cmd {
                    op,
                    reply: Some(tx),
                })
                .map_err(|_| Error::Closed)?;
        }
        rx.await.map_err(|_| Error::Closed)?
    }

    fn submit_detached(&self, op: Op) {
        let g = self.inner.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = g.as_ref() {
            let _ = s.send(Cmd { op, reply: None });
        }
    }

    /// Reserves capacity so that `r` covers `total` bytes, evicting if needed.
    async fn reserve(&self, r: &mut Reservation, total: u64) -> Result<()> {
        if total <= r.bytes {
            return Ok(());
        }
        let shared = self.shared();
        let extra = total - r.bytes;
        let Some(cap) = shared.capacity else {
            shared
                .space
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reserved += extra;
            r.bytes = total;
            r.amount.fetch_add(extra, Ordering::SeqCst);
            return Ok(());
        };
        if total > cap {
            return Err(Error::TooLarge {
                len: total,
                capacity: cap,
            });
        }
        // Evict until the reservation fits; give up when nothing committed is left to evict
        // (the rest is reserved by writes in flight).
        for _ in 0..64 {
            let target = {
                let mut sp = shared.space.lock().unwrap_or_else(|e| e.into_inner());
                if sp.used + sp.reserved + extra <= cap {
                    sp.reserved += extra;
                    r.bytes = total;
                    r.amount.fetch_add(extra, Ordering::SeqCst);
                    return Ok(());
                }
                if sp.used == 0 {
                    break;
                }
                let low = cap / 100 * u64::from(shared.cfg.low_watermark_pct);
                low.min(cap.saturating_sub(sp.reserved + extra))
            };
            self.submit(Op::Evict {
                target_bytes: target,
            })
            .await?;
        }
        let available = {
            let sp = shared.space.lock().unwrap_or_else(|e| e.into_inner());
            cap.saturating_sub(sp.used + sp.reserved)
        };
        Err(Error::Full {
            needed: extra,
            available,
            source: None,
        })
    }

    async fn stage<S>(
        &self,
        declared: Option<u64>,
        expected: Option<Digest>,
        mut body: S,
    ) -> Result<StagedBody>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let shared = self.shared().clone();
        let cfg = &shared.cfg;
        let mut reservation = Reservation {
            shared: shared.clone(),
            bytes: 0,
            amount: Arc::new(AtomicU64::new(0)),
        };
        if let Some(len) = declared {
            self.reserve(&mut reservation, len).await?;
        }
        let sync = !matches!(cfg.durability, Durability::None { .. });
        let mut inline: Option<BytesMut> = None;
        let mut file: Option<FileStage> = None;
        if declared.is_some_and(|l| l > cfg.inline_threshold as u64) {
            file = Some(self.create_file(declared).await?);
        } else {
            inline = Some(BytesMut::new());
        }
        let mut total: u64 = 0;
        while let Some(chunk) = next_item(&mut body).await {
            let chunk = chunk.map_err(|source| Error::Body { source })?;
            total += chunk.len() as u64;
            match declared {
                Some(d) if total > d => {
                    return Err(Error::LengthMismatch {
                        declared: d,
                        actual: total,
                    });
                }
                Some(_) => {}
                None => self.reserve(&mut reservation, total).await?,
            }
            if let Some(buf) = inline.as_mut() {
                buf.extend_from_slice(&chunk);
                if buf.len() > cfg.inline_threshold {
                    let mut f = self.create_file(None).await?;
                    f.pending = inline.take().unwrap_or_default();
                    file = Some(f);
                }
            } else if let Some(f) = file.as_mut() {
                f.pending.extend_from_slice(&chunk);
            }
            if let Some(f) = file.as_mut() {
                if f.pending.len() >= cfg.chunk_size {
                    f.flush().await?;
                }
            }
        }
        if let Some(d) = declared {
            if total != d {
                return Err(Error::LengthMismatch {
                    declared: d,
                    actual: total,
                });
            }
        }
        let (staged, digest, guard) = match (inline, file) {
            (Some(buf), _) => {
                let buf = buf.freeze();
                let digest = Digest(Sha256::digest(&buf).into());
                (Staged::Inline(buf), digest, None)
            }
            (None, Some(mut f)) => {
                f.flush().await?;
                let FileStage {
                    mut writer,
                    hasher,
                    guard,
                    ..
                } = f;
                if sync {
                    let (w, r) = blocking(move || {
                        let r = writer.sync();
                        (writer, r)
                    })
                    .await?;
                    drop(w);
                    r.map_err(|e| Error::io("fsync", e))?;
                } else {
                    drop(writer);
                }
                let digest = Digest(hasher.finalize().into());
                let id = guard.id.unwrap_or(0);
                (Staged::File(id), digest, Some(guard))
            }
            (None, None) => (Staged::Inline(Bytes::new()), Digest::of(b""), None),
        };
        if let Some(e) = expected {
            if e != digest {
                return Err(Error::DigestMismatch {
                    expected: e,
                    actual: digest,
                });
            }
        }
        Ok(StagedBody {
            staged,
            len: total,
            digest,
            reservation,
            guard,
        })
    }

    async fn create_file(&self, reserve: Option<u64>) -> Result<FileStage> {
        let shared = self.shared().clone();
        let id = shared.next_blob.fetch_add(1, Ordering::Relaxed);
        let backend = shared.backend.clone();
        // The guard travels with the blocking task's result: if this future is dropped
        // before the task finishes, tokio drops the result and the guard removes the file.
        let (writer, guard) = blocking(move || -> Result<(Box<dyn BlobWriter>, TempGuard)> {
            let mut w = backend
                .create_temp(id)
                .map_err(|e| Error::io("create temp", e))?;
            let guard = TempGuard {
                backend,
                id: Some(id),
            };
            if let Some(len) = reserve {
                w.reserve(len).map_err(|e| Error::io("reserve", e))?;
            }
            Ok((w, guard))
        })
        .await??;
        Ok(FileStage {
            writer,
            hasher: Sha256::new(),
            pending: BytesMut::new(),
            guard,
        })
    }

    async fn commit_put(&self, staged: StagedBody, p: PendingPutParts) -> Result<Outcome> {
        let StagedBody {
            staged,
            len,
            digest,
            reservation,
            mut guard,
        } = staged;
        // The committer owns the temporary file from here on.
        if let Some(g) = guard.as_mut() {
            g.id = None;
        }
        let r = self
            .submit(Op::Put(Box::new(PendingPut {
                id: p.id,
                content_type: p.content_type,
                len,
                digest,
                refs: p.refs,
                version: p.version,
                staged,
                reservation: reservation.amount.clone(),
            })))
            .await;
        drop(reservation);
        r
    }

    /// Stores an object from a byte stream. Returns once the write is durable (per the
    /// durability mode). A body whose length or digest does not match the request is
    /// rejected and leaves no trace.
    pub async fn put<S>(&self, req: PutRequest, body: S) -> Result<ObjectMeta>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let staged = self.stage(req.len, req.expected_digest, body).await?;
        match self
            .commit_put(
                staged,
                PendingPutParts {
                    id: req.id,
                    content_type: req.content_type,
                    refs: req.refs,
                    version: None,
                },
            )
            .await?
        {
            Outcome::Put(m) => Ok(*m),
            _ => Err(Error::Corrupt {
                object: None,
                reason: "local write was shadowed by a namespace tombstone from the future".into(),
            }),
        }
    }

    /// Convenience: stores an in-memory buffer.
    pub async fn put_bytes(&self, id: ObjectId, data: impl Into<Bytes>) -> Result<ObjectMeta> {
        let data = data.into();
        let len = data.len() as u64;
        self.put(PutRequest::new(id).with_len(len), body_from_bytes(data))
            .await
    }

    /// Deletes an object (writing a key tombstone). Objects referencing it are removed too.
    /// Returns whether it existed.
    pub async fn delete(&self, id: &ObjectId) -> Result<bool> {
        match self
            .submit(Op::Delete {
                id: id.clone(),
                version: None,
            })
            .await?
        {
            Outcome::Deleted(b) => Ok(b),
            _ => Ok(false),
        }
    }

    /// Deletes a whole namespace (writing a namespace tombstone). Returns the number of
    /// objects removed.
    pub async fn delete_namespace(&self, ns: &NamespaceId) -> Result<u64> {
        match self
            .submit(Op::DeleteNamespace {
                ns: ns.clone(),
                version: None,
            })
            .await?
        {
            Outcome::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// Evicts least-recently-used objects until at most `target_bytes` are stored
    /// (`0` empties the store, zero-length objects included). Returns the number of
    /// objects evicted.
    pub async fn evict_to(&self, target_bytes: u64) -> Result<u64> {
        match self.submit(Op::Evict { target_bytes }).await? {
            Outcome::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// Writes recorded accesses to the LRU index now.
    pub async fn flush_access(&self) -> Result<()> {
        self.submit(Op::FlushAccess).await.map(|_| ())
    }

    /// Removes key and namespace tombstones older than `horizon` (the HLC every peer has
    /// acknowledged). Returns how many were removed.
    pub async fn gc_tombstones(&self, horizon: Hlc) -> Result<u64> {
        match self.submit(Op::GcTombstones { horizon }).await? {
            Outcome::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// Drops ghosts recorded (evicted) before `evicted_before_ms` (ms since the Unix epoch):
    /// their summary entries go, so a peer that still holds the object looks ahead again
    /// and repair fetches it once more. This bounds the ghosts' cost (one bucket row and
    /// one ghost row per evicted key). Returns how many were dropped.
    pub async fn gc_ghosts(&self, evicted_before_ms: u64) -> Result<u64> {
        match self.submit(Op::GcGhosts { evicted_before_ms }).await? {
            Outcome::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// Records that a peer has `digest` for `id` at `version` without transferring the
    /// bytes, under the merge rule (ignored unless `version` wins over the local entry and
    /// no namespace tombstone shadows it). If the local copy has the same digest its
    /// version is raised and the bytes kept ([`Learned::Bumped`]); otherwise the older local
    /// copy (and, by the reference rule, objects referencing it) is dropped and the key
    /// becomes a ghost at `version` ([`Learned::Ghost`]) recorded as evicted at
    /// `evicted_ms` (the peer's [`BucketEntry::evicted_ms`] when it only has a ghost, capped
    /// at now; `None`: now). Either way this replica's summary entry for `id` then equals
    /// the peer's. Timestamps beyond the drift bound are refused with [`Error::ClockSkew`].
    pub async fn learn(
        &self,
        id: &ObjectId,
        version: Version,
        digest: Digest,
        evicted_ms: Option<u64>,
    ) -> Result<Learned> {
        self.shared().hlc.observe(version.hlc)?;
        match self
            .submit(Op::Learn {
                id: id.clone(),
                version,
                digest,
                evicted_ms,
            })
            .await?
        {
            Outcome::Learned(l) => Ok(l),
            _ => Ok(Learned::Ignored),
        }
    }

    /// Drops change-feed entries up to and including `upto`.
    pub async fn trim_changes(&self, upto: u64) -> Result<u64> {
        match self.submit(Op::TrimChanges { upto }).await? {
            Outcome::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// Whether a replicated record would be applied now (lets a replicator skip
    /// downloading bodies it would discard).
    pub fn wants(&self, record: &ReplicatedRecord) -> Result<bool> {
        let v = record.version();
        let rtx = self.read_txn()?;
        let ns_tombs = rtx.open_table(NS_TOMBS).map_err(mm("open table"))?;
        let ns = match record {
            ReplicatedRecord::Put { id, .. } | ReplicatedRecord::Delete { id, .. } => {
                id.namespace_id()
            }
            ReplicatedRecord::DeleteNamespace { namespace, .. } => namespace.clone(),
        };
        let tomb = match ns_tombs
            .get(ns.encode_prefix().as_slice())
            .map_err(mm("read"))?
        {
            Some(g) => Some(decode_entry(g.value())?.version),
            None => None,
        };
        let id = match record {
            ReplicatedRecord::DeleteNamespace { .. } => return Ok(tomb.is_none_or(|t| t < v)),
            ReplicatedRecord::Put { id, .. } | ReplicatedRecord::Delete { id, .. } => id,
        };
        if crate::merge::shadowed_by_namespace(v, tomb) {
            return Ok(false);
        }
        let incoming = crate::merge::Entry {
            version: v,
            payload: match record {
                ReplicatedRecord::Put { digest, .. } => crate::merge::Payload::Present(*digest),
                _ => crate::merge::Payload::Deleted,
            },
        };
        // The bucket entry is the key's state: held object, key tombstone or ghost.
        let buckets = rtx.open_table(BUCKETS).map_err(mm("open table"))?;
        let existing = match buckets.get(bucket_key(id).as_slice()).map_err(mm("read"))? {
            Some(g) => Some(decode_bucket(g.value())?.0),
            None => None,
        };
        Ok(existing.is_none_or(|e| crate::merge::winner(&e, &incoming)))
    }

    /// Applies a record from a peer: last-writer-wins on `(hlc, node)`, respecting
    /// namespace tombstones (see [`crate::merge`]). A `Put` needs its body, whose length
    /// and digest are verified. Timestamps beyond the drift bound are refused with
    /// [`Error::ClockSkew`].
    pub async fn apply_replicated(
        &self,
        record: ReplicatedRecord,
        body: Option<BodyStream>,
    ) -> Result<Applied> {
        self.shared().hlc.observe(record.version().hlc)?;
        let outcome = match record {
            ReplicatedRecord::Put {
                id,
                version,
                content_type,
                len,
                digest,
                refs,
            } => {
                let check = ReplicatedRecord::Put {
                    id: id.clone(),
                    version,
                    content_type: String::new(),
                    len,
                    digest,
                    refs: Vec::new(),
                };
                if !self.wants(&check)? {
                    return Ok(Applied::Ignored);
                }
                let body = body.ok_or(Error::LengthMismatch {
                    declared: len,
                    actual: 0,
                })?;
                let staged = self.stage(Some(len), Some(digest), body).await?;
                self.commit_put(
                    staged,
                    PendingPutParts {
                        id,
                        content_type,
                        refs,
                        version: Some(version),
                    },
                )
                .await?
            }
            ReplicatedRecord::Delete { id, version } => {
                self.submit(Op::Delete {
                    id,
                    version: Some(version),
                })
                .await?
            }
            ReplicatedRecord::DeleteNamespace { namespace, version } => {
                self.submit(Op::DeleteNamespace {
                    ns: namespace,
                    version: Some(version),
                })
                .await?
            }
        };
        Ok(match outcome {
            Outcome::Ignored => Applied::Ignored,
            _ => Applied::Applied,
        })
    }

    fn read_txn(&self) -> Result<redb::ReadTransaction> {
        self.shared().db.begin_read().map_err(mm("begin read"))
    }

    /// Metadata of an object, without recording an access.
    pub fn head(&self, id: &ObjectId) -> Result<Option<ObjectMeta>> {
        let rtx = self.read_txn()?;
        let t = rtx.open_table(OBJECTS).map_err(mm("open table"))?;
        match t.get(id.encode().as_slice()).map_err(mm("read"))? {
            None => Ok(None),
            Some(g) => Ok(Some(ObjectMeta::decode(id.clone(), g.value())?)),
        }
    }

    /// Opens an object for reading and records the access (for LRU). The returned
    /// [`Object`] keeps its bytes readable even if the object is evicted or overwritten
    /// meanwhile.
    ///
    /// Small (inline) objects are verified here, once, and then kept in the read cache
    /// ([`Config::read_cache_bytes`]): a cached object is returned without touching the
    /// metadata database and without copying its bytes, and its
    /// [`Object::verified_bytes`] gives the whole body with no hashing left to do. A write
    /// or delete that has returned is always seen by a `get` that starts afterwards.
    pub async fn get(&self, id: &ObjectId) -> Result<Option<Object>> {
        let s = self.shared();
        let shard = s.sharding.of(id);
        let mut epoch = None;
        if s.read_cache.enabled() {
            match s.read_cache.get(shard, id) {
                Ok(hit) => {
                    s.access.record(shard, id, s.cfg.clock.now_ms());
                    return Ok(Some(Object {
                        meta: hit.meta,
                        body: Body::Inline(hit.bytes),
                        verified: true,
                        store: self.clone(),
                    }));
                }
                Err(e) => epoch = Some(e),
            }
        }
        let Some(mut obj) = self.open_object(id).await? else {
            return Ok(None);
        };
        if let Body::Inline(data) = &obj.body {
            // A mismatch is left to the reader, which reports and quarantines it.
            if data.len() as u64 == obj.meta.len && Digest::of(data) == obj.meta.digest {
                obj.verified = true;
                if let Some(e) = epoch {
                    s.read_cache.fill(shard, e, obj.meta.clone(), data.clone());
                }
            }
        }
        s.access.record(shard, id, s.cfg.clock.now_ms());
        Ok(Some(obj))
    }

    async fn open_object(&self, id: &ObjectId) -> Result<Option<Object>> {
        for _ in 0..3 {
            let (meta, inline) = {
                let rtx = self.read_txn()?;
                let t = rtx.open_table(OBJECTS).map_err(mm("open table"))?;
                let meta = match t.get(id.encode().as_slice()).map_err(mm("read"))? {
                    None => return Ok(None),
                    Some(g) => ObjectMeta::decode(id.clone(), g.value())?,
                };
                let inline = match meta.blob {
                    BlobLoc::Inline(bid) => {
                        let it = rtx.open_table(INLINE).map_err(mm("open table"))?;
                        let data = it
                            .get(bid)
                            .map_err(mm("read"))?
                            .map(|g| Bytes::copy_from_slice(g.value()));
                        Some(data)
                    }
                    BlobLoc::File(_) | BlobLoc::Packed { .. } => None,
                };
                (meta, inline)
            };
            let body = match (inline, meta.blob) {
                (Some(Some(data)), _) => Body::Inline(data),
                (Some(None), _) => {
                    return Err(self.corrupt(&meta, "inline bytes missing"));
                }
                // An empty body has no bytes to keep alive: its segment may be gone.
                (None, BlobLoc::Packed { .. }) if meta.len == 0 => Body::Inline(Bytes::new()),
                (None, BlobLoc::Packed { seg, off }) => {
                    // A small read of one open file, usually from the page cache: done
                    // here rather than on a blocking thread (as a redb read would be).
                    let len = usize::try_from(meta.len).unwrap_or(usize::MAX);
                    match self.shared().backend.log_read_at(seg, off, len) {
                        Ok(data) => Body::Inline(data),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            // Relocated by compaction and its old segment removed? Look again.
                            if self.head(id)?.is_some_and(|m| m.blob == meta.blob) {
                                return Err(self.corrupt(&meta, "value-log segment missing"));
                            }
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            return Err(self.corrupt(&meta, "value-log segment too short"));
                        }
                        Err(e) => return Err(Error::io("read value log", e)),
                    }
                }
                (None, BlobLoc::File(bid)) | (None, BlobLoc::Inline(bid)) => {
                    let backend = self.shared().backend.clone();
                    match blocking(move || backend.open_blob(bid)).await? {
                        Ok(r) => Body::File(r),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            // Raced with an overwrite or eviction? Look again.
                            if self.head(id)?.is_some_and(|m| m.blob == meta.blob) {
                                return Err(self.corrupt(&meta, "blob file missing"));
                            }
                            continue;
                        }
                        Err(e) => return Err(Error::io("open blob", e)),
                    }
                }
            };
            return Ok(Some(Object {
                meta: Arc::new(meta),
                body,
                verified: false,
                store: self.clone(),
            }));
        }
        Ok(None)
    }

    /// Quarantines an object whose bytes failed verification and returns the error to
    /// report.
    fn corrupt(&self, meta: &ObjectMeta, reason: &str) -> Error {
        self.submit_detached(Op::Quarantine {
            id: meta.id.clone(),
            blob: meta.blob,
        });
        Error::Corrupt {
            object: Some(meta.id.to_string()),
            reason: reason.to_string(),
        }
    }

    /// Lists objects of a namespace in key order, after `after` (exclusive), at most `limit`.
    pub fn list(
        &self,
        ns: &NamespaceId,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<ObjectMeta>> {
        let prefix = ns.encode_prefix();
        let start = match after {
            Some(k) => {
                let mut s = prefix.clone();
                s.extend_from_slice(k.as_str().as_bytes());
                s.push(0);
                s
            }
            None => prefix.clone(),
        };
        let end = prefix_end(&prefix);
        let rtx = self.read_txn()?;
        let t = rtx.open_table(OBJECTS).map_err(mm("open table"))?;
        let range = match &end {
            Some(e) => t.range(start.as_slice()..e.as_slice()),
            None => t.range(start.as_slice()..),
        }
        .map_err(mm("range"))?;
        let mut out = Vec::new();
        for r in range.take(limit) {
            let (k, v) = r.map_err(mm("range"))?;
            out.push(ObjectMeta::decode(ObjectId::decode(k.value())?, v.value())?);
        }
        Ok(out)
    }

    /// Every namespace that has objects, in order (walks the object index by namespace
    /// prefix, so its cost is proportional to the number of namespaces).
    pub fn namespaces(&self) -> Result<Vec<NamespaceId>> {
        let rtx = self.read_txn()?;
        let t = rtx.open_table(OBJECTS).map_err(mm("open table"))?;
        let mut out: Vec<NamespaceId> = Vec::new();
        let mut start: Vec<u8> = Vec::new();
        loop {
            let next = t
                .range(start.as_slice()..)
                .map_err(mm("range"))?
                .next()
                .transpose()
                .map_err(mm("range"))?
                .map(|(k, _)| k.value().to_vec());
            let Some(k) = next else { break };
            let id = ObjectId::decode(&k)?;
            let ns = id.namespace_id();
            match prefix_end(&ns.encode_prefix()) {
                Some(e) => start = e,
                None => {
                    out.push(ns);
                    break;
                }
            }
            out.push(ns);
        }
        Ok(out)
    }

    /// The namespace tombstone of `ns`, if any.
    pub fn namespace_tombstone(&self, ns: &NamespaceId) -> Result<Option<Version>> {
        let rtx = self.read_txn()?;
        let t = rtx.open_table(NS_TOMBS).map_err(mm("open table"))?;
        match t.get(ns.encode_prefix().as_slice()).map_err(mm("read"))? {
            Some(g) => Ok(Some(decode_entry(g.value())?.version)),
            None => Ok(None),
        }
    }

    /// Every namespace that has digest-summary entries (objects or key tombstones), in
    /// order: what a replica advertises for repair, so that a namespace holding only key
    /// tombstones still converges. Cost proportional to the number of namespaces.
    pub fn summarized_namespaces(&self) -> Result<Vec<NamespaceId>> {
        let rtx = self.read_txn()?;
        let t = rtx.open_table(BUCKETS).map_err(mm("open table"))?;
        let mut out: Vec<NamespaceId> = Vec::new();
        let mut start: Vec<u8> = Vec::new();
        loop {
            let next = t
                .range(start.as_slice()..)
                .map_err(mm("range"))?
                .next()
                .transpose()
                .map_err(mm("range"))?
                .map(|(k, _)| k.value().to_vec());
            let Some(k) = next else { break };
            let second_nul = k
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == 0)
                .map(|(i, _)| i)
                .nth(1)
                .ok_or_else(|| Error::Corrupt {
                    object: None,
                    reason: "undecodable summary bucket key".into(),
                })?;
            let prefix = k.get(..=second_nul).unwrap_or_default();
            out.push(NamespaceId::decode_prefix(prefix)?);
            match prefix_end(prefix) {
                Some(e) => start = e,
                None => break,
            }
        }
        Ok(out)
    }

    /// Every namespace tombstone, in namespace order (what a replica exchanges so that a
    /// deleted namespace is never resurrected by a peer that missed the deletion).
    pub fn namespace_tombstones(&self) -> Result<Vec<(NamespaceId, Version)>> {
        let rtx = self.read_txn()?;
        let t = rtx.open_table(NS_TOMBS).map_err(mm("open table"))?;
        let mut out = Vec::new();
        for r in t.iter().map_err(mm("range"))? {
            let (k, v) = r.map_err(mm("range"))?;
            let key = k.value();
            let prefix = key.strip_suffix(&[0u8]).unwrap_or(key);
            out.push((
                NamespaceId::decode_prefix(prefix)?,
                decode_entry(v.value())?.version,
            ));
        }
        Ok(out)
    }

    /// Change-feed entries with `seq > after`, in order, at most `limit`.
    pub fn changes_since(&self, after: u64, limit: usize) -> Result<Vec<Change>> {
        let rtx = self.read_txn()?;
        let t = rtx.open_table(CHANGES).map_err(mm("open table"))?;
        let mut out = Vec::new();
        for r in t
            .range(after.saturating_add(1)..)
            .map_err(mm("range"))?
            .take(limit)
        {
            let (k, v) = r.map_err(mm("range"))?;
            out.push(Change {
                seq: k.value(),
                record: ReplicatedRecord::from_bytes(v.value())?,
            });
        }
        Ok(out)
    }

    /// Hash of one summary node of `ns` (`level` 0 is the root, index 0).
    pub fn summary_node(&self, ns: &NamespaceId, level: u8, index: u32) -> Result<NodeHash> {
        let rtx = self.read_txn()?;
        let t = rtx.open_table(SUMMARY).map_err(mm("open table"))?;
        let k = summary_key(&ns.encode_prefix(), level, index);
        let mut h = [0u8; 32];
        if let Some(g) = t.get(k.as_slice()).map_err(mm("read"))? {
            if g.value().len() == 32 {
                h.copy_from_slice(g.value());
            }
        }
        Ok(h)
    }

    /// The 16 child hashes of a summary node (`level` < 3).
    pub fn summary_children(
        &self,
        ns: &NamespaceId,
        level: u8,
        index: u32,
    ) -> Result<Vec<NodeHash>> {
        (0..FANOUT as u32)
            .map(|i| self.summary_node(ns, level + 1, index * FANOUT as u32 + i))
            .collect()
    }

    /// Entries (objects and key tombstones) of one leaf bucket of `ns`.
    pub fn summary_bucket(&self, ns: &NamespaceId, leaf: u32) -> Result<Vec<BucketEntry>> {
        let prefix = bucket_prefix(&ns.encode_prefix(), leaf);
        let end = prefix_end(&prefix);
        let rtx = self.read_txn()?;
        let t = rtx.open_table(BUCKETS).map_err(mm("open table"))?;
        let range = match &end {
            Some(e) => t.range(prefix.as_slice()..e.as_slice()),
            None => t.range(prefix.as_slice()..),
        }
        .map_err(mm("range"))?;
        let mut out = Vec::new();
        for r in range {
            let (k, v) = r.map_err(mm("range"))?;
            let key_bytes = k.value().get(prefix.len()..).unwrap_or_default();
            let key = Key::new(String::from_utf8_lossy(key_bytes).into_owned())?;
            let (e, ghost) = decode_bucket(v.value())?;
            out.push(BucketEntry {
                key,
                version: e.version,
                payload: e.payload,
                held: ghost.is_none(),
                evicted_ms: ghost.unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Checks the summary invariants (for tests and debugging; O(entries)): every bucket
    /// entry is exactly one of a held object (same version and digest), a key tombstone or a
    /// ghost, and each of those has its bucket entry; every summary node equals the XOR of the
    /// hashes of the entries below it; the object, byte and ghost counters match the tables.
    /// The first violation is returned as [`Error::Corrupt`].
    pub fn verify_summary(&self) -> Result<()> {
        use crate::merge::Entry;
        use crate::summary::{DEPTH, ancestor, entry_hash, leaf_of, xor_into};
        use std::collections::BTreeMap;
        let bad = |reason: String| Error::Corrupt {
            object: None,
            reason,
        };
        let rtx = self.read_txn()?;
        let mut expect: BTreeMap<Vec<u8>, (ObjectId, Entry, Option<u64>)> = BTreeMap::new();
        let (mut objects, mut bytes, mut ghosts) = (0u64, 0u64, 0u64);
        let mut add = |id: ObjectId, e: Entry, ghost: Option<u64>, what: &str| -> Result<()> {
            if expect
                .insert(bucket_key(&id), (id.clone(), e, ghost))
                .is_some()
            {
                return Err(bad(format!(
                    "{id} is more than one of object/tombstone/ghost ({what})"
                )));
            }
            Ok(())
        };
        for r in rtx
            .open_table(OBJECTS)
            .map_err(mm("open table"))?
            .iter()
            .map_err(mm("read"))?
        {
            let (k, v) = r.map_err(mm("read"))?;
            let meta = ObjectMeta::decode(ObjectId::decode(k.value())?, v.value())?;
            objects += 1;
            bytes += meta.len;
            add(meta.id.clone(), meta.entry(), None, "object")?;
        }
        for r in rtx
            .open_table(crate::commit::TOMBS)
            .map_err(mm("open table"))?
            .iter()
            .map_err(mm("read"))?
        {
            let (k, v) = r.map_err(mm("read"))?;
            add(
                ObjectId::decode(k.value())?,
                decode_entry(v.value())?,
                None,
                "tombstone",
            )?;
        }
        for r in rtx
            .open_table(GHOSTS)
            .map_err(mm("open table"))?
            .iter()
            .map_err(mm("read"))?
        {
            let (k, v) = r.map_err(mm("read"))?;
            ghosts += 1;
            let (e, ms) = crate::commit::decode_ghost(v.value())?;
            add(ObjectId::decode(k.value())?, e, Some(ms), "ghost")?;
        }
        let mut nodes: BTreeMap<Vec<u8>, NodeHash> = BTreeMap::new();
        let buckets = rtx.open_table(BUCKETS).map_err(mm("open table"))?;
        let mut n_buckets = 0usize;
        for r in buckets.iter().map_err(mm("read"))? {
            let (k, v) = r.map_err(mm("read"))?;
            n_buckets += 1;
            let Some((id, e, ghost)) = expect.get(k.value()) else {
                return Err(bad(
                    "a bucket entry has no object, tombstone or ghost".into()
                ));
            };
            if decode_bucket(v.value())? != (*e, *ghost) {
                return Err(bad(format!("bucket entry of {id} differs from its record")));
            }
            let h = entry_hash(&id.key, e);
            let ns = id.namespace_id().encode_prefix();
            for level in 0..=DEPTH {
                let nk = summary_key(&ns, level, ancestor(leaf_of(&id.key), level));
                xor_into(nodes.entry(nk).or_insert([0; 32]), &h);
            }
        }
        if n_buckets != expect.len() {
            return Err(bad(format!(
                "{} objects/tombstones/ghosts but {n_buckets} bucket entries",
                expect.len()
            )));
        }
        nodes.retain(|_, h| *h != [0; 32]);
        let mut stored: BTreeMap<Vec<u8>, NodeHash> = BTreeMap::new();
        for r in rtx
            .open_table(SUMMARY)
            .map_err(mm("open table"))?
            .iter()
            .map_err(mm("read"))?
        {
            let (k, v) = r.map_err(mm("read"))?;
            let mut h = [0u8; 32];
            if v.value().len() == 32 {
                h.copy_from_slice(v.value());
            }
            stored.insert(k.value().to_vec(), h);
        }
        if stored != nodes {
            return Err(bad(
                "summary nodes differ from the XOR of their entries".into()
            ));
        }
        let st = self.stats();
        if (st.objects, st.bytes, st.ghosts) != (objects, bytes, ghosts) {
            return Err(bad(format!(
                "counters (objects {}, bytes {}, ghosts {}) differ from the tables ({objects}, {bytes}, {ghosts})",
                st.objects, st.bytes, st.ghosts
            )));
        }
        Ok(())
    }

    /// Keys of `ns` whose state differs between this store and `other`, found by descending
    /// only into differing summary nodes (O(difference)). `other` stands in for a remote
    /// peer; kura-mesh does the same walk over the network with
    /// [`Store::summary_children`] and [`Store::summary_bucket`].
    pub fn diff_namespace(&self, other: &Store, ns: &NamespaceId) -> Result<Vec<Key>> {
        use crate::summary::{DEPTH, diff_bucket_entries, differing_children};
        if self.summary_node(ns, 0, 0)? == other.summary_node(ns, 0, 0)? {
            return Ok(Vec::new());
        }
        let mut frontier = vec![0u32];
        for level in 0..DEPTH {
            let mut next = Vec::new();
            for idx in frontier {
                let a = self.summary_children(ns, level, idx)?;
                let b = other.summary_children(ns, level, idx)?;
                for c in differing_children(&a, &b) {
                    next.push(idx * FANOUT as u32 + c);
                }
            }
            frontier = next;
        }
        let mut out = Vec::new();
        for leaf in frontier {
            out.extend(diff_bucket_entries(
                &self.summary_bucket(ns, leaf)?,
                &other.summary_bucket(ns, leaf)?,
            ));
        }
        out.sort();
        Ok(out)
    }

    /// Current statistics.
    pub fn stats(&self) -> Stats {
        let s = self.shared();
        let st = &s.stats;
        let (used, reserved) = {
            let sp = s.space.lock().unwrap_or_else(|e| e.into_inner());
            (sp.used, sp.reserved)
        };
        let rc = s.read_cache.stats();
        let mut hist = [0u64; 8];
        for (h, a) in hist.iter_mut().zip(&st.hist) {
            *h = a.load(Ordering::Relaxed);
        }
        Stats {
            objects: s.objects.load(Ordering::Relaxed),
            ghosts: s.ghosts.load(Ordering::Relaxed),
            bytes: used,
            reserved_bytes: reserved,
            capacity_bytes: s.capacity,
            evictions: st.evictions.load(Ordering::Relaxed),
            evicted_bytes: st.evicted_bytes.load(Ordering::Relaxed),
            corrupt_objects: st.corrupt.load(Ordering::Relaxed),
            commits: st.commits.load(Ordering::Relaxed),
            committed_ops: st.ops.load(Ordering::Relaxed),
            max_batch: st.max_batch.load(Ordering::Relaxed),
            commit_micros: st.commit_micros.load(Ordering::Relaxed),
            checkpoints: st.checkpoints.load(Ordering::Relaxed),
            checkpoint_micros: st.checkpoint_micros.load(Ordering::Relaxed),
            max_checkpoint_micros: st.max_checkpoint_micros.load(Ordering::Relaxed),
            log_segments: st.log_segments.load(Ordering::Relaxed),
            log_bytes: st.log_bytes.load(Ordering::Relaxed),
            log_live_bytes: st.log_live_bytes.load(Ordering::Relaxed),
            batch_histogram: hist,
            last_seq: s.seq.load(Ordering::Relaxed),
            recovered_temp_files: st.recovered_temp.load(Ordering::Relaxed),
            recovered_orphans: st.recovered_orphans.load(Ordering::Relaxed),
            recovered_batches: st.recovered_batches.load(Ordering::Relaxed),
            read_cache_hits: rc.hits,
            read_cache_misses: rc.misses,
            read_cache_bytes: rc.bytes,
            read_cache_objects: rc.objects,
        }
    }

    /// A fresh local timestamp from this store's hybrid logical clock.
    pub fn now(&self) -> Hlc {
        self.shared().hlc.now()
    }

    /// This store's node id.
    pub fn node(&self) -> NodeId {
        self.shared().cfg.node
    }

    /// Verifies every object's checksum, reading at most `bytes_per_sec` (0 = unthrottled).
    /// Corrupt objects are quarantined and counted.
    pub async fn scrub(&self, bytes_per_sec: u64) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let started = Instant::now();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page: Vec<ObjectId> = {
                let rtx = self.read_txn()?;
                let t = rtx.open_table(OBJECTS).map_err(mm("open table"))?;
                let range = match &after {
                    Some(a) => {
                        let mut s = a.clone();
                        s.push(0);
                        t.range(s.as_slice()..)
                    }
                    None => t.range::<&[u8]>(..),
                }
                .map_err(mm("range"))?;
                let mut v = Vec::new();
                for r in range.take(256) {
                    let (k, _) = r.map_err(mm("range"))?;
                    v.push(ObjectId::decode(k.value())?);
                }
                v
            };
            let Some(last) = page.last() else { break };
            after = Some(last.encode());
            for id in page {
                let Some(obj) = self.open_object(&id).await.or_else(|e| match e {
                    Error::Corrupt { .. } => {
                        report.corrupt += 1;
                        Ok(None)
                    }
                    e => Err(e),
                })?
                else {
                    continue;
                };
                report.objects += 1;
                // Chunk by chunk (memory bounded by the chunk size, whatever the object's
                // size), pacing after every chunk.
                let mut reader = obj.reader();
                loop {
                    match reader.next_chunk().await {
                        Ok(Some(c)) => report.bytes += c.len() as u64,
                        Ok(None) => break,
                        Err(Error::Corrupt { .. }) => {
                            report.corrupt += 1;
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                    if bytes_per_sec > 0 {
                        let due =
                            Duration::from_secs_f64(report.bytes as f64 / bytes_per_sec as f64);
                        let elapsed = started.elapsed();
                        if due > elapsed {
                            tokio::time::sleep(due - elapsed).await;
                        }
                    }
                }
            }
        }
        Ok(report)
    }
}

struct PendingPutParts {
    id: ObjectId,
    content_type: String,
    refs: Vec<ObjectRef>,
    version: Option<Version>,
}

/// What [`Store::scrub`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Objects verified.
    pub objects: u64,
    /// Bytes verified.
    pub bytes: u64,
    /// Objects found corrupt (now quarantined).
    pub corrupt: u64,
}

#[derive(Debug, Clone)]
enum Body {
    Inline(Bytes),
    File(Arc<dyn BlobReader>),
}

/// An object opened for reading.
#[derive(Debug)]
pub struct Object {
    meta: Arc<ObjectMeta>,
    body: Body,
    /// The body is in memory and its checksum was already verified.
    verified: bool,
    store: Store,
}

/// A file region for zero-copy transfer (`sendfile`/`splice`).
#[derive(Debug, Clone, Copy)]
pub struct FileSlice<'a> {
    /// The open blob file (stays valid after eviction).
    pub file: &'a std::fs::File,
    /// Offset of the object's first byte in the file.
    pub offset: u64,
    /// Length of the object.
    pub len: u64,
}

impl Object {
    /// The object's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    /// The file and region holding the object, when it is file-backed, for zero-copy
    /// sending. Bytes sent this way bypass streaming verification; see `docs/store.md`.
    pub fn file_slice(&self) -> Option<FileSlice<'_>> {
        match &self.body {
            Body::File(r) => r.file().map(|file| FileSlice {
                file,
                offset: 0,
                len: self.meta.len,
            }),
            Body::Inline(_) => None,
        }
    }

    /// The whole body, when it is in memory and its checksum has already been verified
    /// against [`Object::meta`] (small objects opened by [`Store::get`], whether from the
    /// read cache or not): no further hashing or copying is needed to send it. `None` for
    /// file-backed objects and for inline objects whose verification failed (their
    /// [`Object::reader`] reports the corruption).
    pub fn verified_bytes(&self) -> Option<Bytes> {
        match &self.body {
            Body::Inline(b) if self.verified => Some(b.clone()),
            _ => None,
        }
    }

    /// A reader over the whole object; the checksum is verified as it streams and a
    /// mismatch ends the stream with [`Error::Corrupt`] (bytes that were verified when the
    /// object was opened, see [`Object::verified_bytes`], are not hashed again).
    pub fn reader(&self) -> ObjectReader {
        ObjectReader {
            body: self.body.clone(),
            meta_len: self.meta.len,
            pos: 0,
            end: self.meta.len,
            hasher: (!self.verified).then(Sha256::new),
            meta: self.meta.clone(),
            store: self.store.clone(),
            chunk: self.store.shared().cfg.chunk_size,
            failed: false,
        }
    }

    /// A reader over `range`. Ranges covering the whole object are verified; partial
    /// ranges are not (the scrubber and full reads cover them; see `docs/store.md`).
    pub fn range_reader(&self, range: Range<u64>) -> Result<ObjectReader> {
        if range.start > range.end || range.end > self.meta.len {
            return Err(Error::InvalidRange {
                start: range.start,
                end: range.end,
                len: self.meta.len,
            });
        }
        let mut r = self.reader();
        if range.start != 0 || range.end != self.meta.len {
            r.hasher = None;
        }
        r.pos = range.start;
        r.end = range.end;
        Ok(r)
    }

    /// Reads the whole (verified) object into memory. For small objects and tests.
    pub async fn read_all(&self) -> Result<Bytes> {
        if let Some(b) = self.verified_bytes() {
            return Ok(b);
        }
        let mut r = self.reader();
        let mut out = BytesMut::with_capacity(usize::try_from(self.meta.len).unwrap_or(0));
        while let Some(c) = r.next_chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(out.freeze())
    }
}

/// Streams an object's bytes in bounded chunks.
#[derive(Debug)]
pub struct ObjectReader {
    body: Body,
    meta: Arc<ObjectMeta>,
    meta_len: u64,
    pos: u64,
    end: u64,
    hasher: Option<Sha256>,
    store: Store,
    chunk: usize,
    failed: bool,
}

impl ObjectReader {
    /// The next chunk, `None` at the end. After an error the reader stays failed.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.failed {
            return Err(Error::Corrupt {
                object: Some(self.meta.id.to_string()),
                reason: "reader already failed".into(),
            });
        }
        let r = self.next_inner().await;
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    async fn next_inner(&mut self) -> Result<Option<Bytes>> {
        match &self.body {
            Body::Inline(data) => {
                if data.len() as u64 != self.meta_len {
                    return Err(self
                        .store
                        .corrupt(&self.meta, "inline bytes have the wrong length"));
                }
                if self.hasher.take().is_some() && Digest::of(data) != self.meta.digest {
                    return Err(self.store.corrupt(&self.meta, "checksum mismatch"));
                }
                if self.pos >= self.end {
                    return Ok(None);
                }
                let (s, e) = (self.pos as usize, self.end as usize);
                self.pos = self.end;
                Ok(Some(data.slice(s..e)))
            }
            Body::File(reader) => {
                if self.pos >= self.end {
                    if let Some(h) = self.hasher.take() {
                        let actual = Digest(h.finalize().into());
                        if actual != self.meta.digest {
                            return Err(self.store.corrupt(&self.meta, "checksum mismatch"));
                        }
                    }
                    return Ok(None);
                }
                let want = (self.end - self.pos).min(self.chunk as u64) as usize;
                let reader = reader.clone();
                let pos = self.pos;
                let hasher = self.hasher.take();
                let check_len = pos == 0;
                let meta_len = self.meta_len;
                let (buf, hasher, r) = blocking(move || {
                    let mut hasher = hasher;
                    let mut buf = vec![0u8; want];
                    let mut filled = 0;
                    let r = (|| {
                        if check_len && reader.len()? != meta_len {
                            return Ok(false);
                        }
                        while filled < want {
                            let n = reader.read_at(&mut buf[filled..], pos + filled as u64)?;
                            if n == 0 {
                                return Ok(false);
                            }
                            filled += n;
                        }
                        if let Some(h) = hasher.as_mut() {
                            h.update(&buf);
                        }
                        Ok::<bool, io::Error>(true)
                    })();
                    (buf, hasher, r)
                })
                .await?;
                self.hasher = hasher;
                match r {
                    Ok(true) => {
                        self.pos += want as u64;
                        Ok(Some(Bytes::from(buf)))
                    }
                    Ok(false) => Err(self.store.corrupt(&self.meta, "blob has the wrong length")),
                    Err(e) => Err(Error::io("read", e)),
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::MemBackend;

    /// A store written by a release before the value log left batches in a version-1
    /// `redo.log`, with small bodies inline in the database: they are replayed at open and
    /// stay readable and removable; new writes go to the value log.
    #[tokio::test]
    async fn legacy_redo_log_is_replayed_into_the_database() {
        use crate::hlc::{Hlc, Version};
        use crate::meta::ReplicatedRecord;
        use crate::redo::{RedoBatch, RedoOp, RedoStaged};
        let mem = MemBackend::default();
        let old = ObjectId::parse("a", "n", "old").unwrap();
        Store::open(mem.clone(), Config::default())
            .await
            .unwrap()
            .close()
            .await
            .unwrap();
        let body = Bytes::from_static(b"logged by an older release");
        let batch = RedoBatch {
            seq: 1,
            ops: vec![RedoOp {
                rec: ReplicatedRecord::Put {
                    id: old.clone(),
                    version: Version::new(Hlc(1 << 20), NodeId(0)),
                    content_type: "text/plain".into(),
                    len: body.len() as u64,
                    digest: Digest::of(&body),
                    refs: vec![],
                },
                local: true,
                relocate: false,
                now_ms: 1000,
                staged: Some(RedoStaged::Inline(body.clone())),
            }],
        };
        mem.redo_append(&batch.encode()).unwrap();
        let store = Store::open(mem.clone(), Config::default()).await.unwrap();
        assert_eq!(store.stats().recovered_batches, 1);
        let meta = store.head(&old).unwrap().unwrap();
        assert!(matches!(meta.blob, BlobLoc::Inline(_)), "{meta:?}");
        let got = store.get(&old).await.unwrap().unwrap();
        assert_eq!(got.read_all().await.unwrap(), body);
        let new = ObjectId::parse("a", "n", "new").unwrap();
        let meta = store.put_bytes(new.clone(), "fresh").await.unwrap();
        assert!(matches!(meta.blob, BlobLoc::Packed { .. }), "{meta:?}");
        assert_eq!(store.stats().log_live_bytes, 5);
        assert!(store.delete(&old).await.unwrap());
        store.close().await.unwrap();
        // The old log is not replayed again.
        let store = Store::open(mem, Config::default()).await.unwrap();
        assert_eq!(store.stats().recovered_batches, 0);
        assert!(store.get(&old).await.unwrap().is_none());
        let got = store.get(&new).await.unwrap().unwrap();
        assert_eq!(got.read_all().await.unwrap(), "fresh");
    }

    #[tokio::test]
    async fn quarantine_drops_the_cached_copy() {
        let store = Store::open(MemBackend::default(), Config::default())
            .await
            .unwrap();
        let id = ObjectId::parse("a", "n", "k").unwrap();
        let meta = store.put_bytes(id.clone(), "hello").await.unwrap();
        for _ in 0..2 {
            let o = store.get(&id).await.unwrap().unwrap();
            assert_eq!(o.verified_bytes().unwrap(), "hello");
        }
        assert_eq!(store.stats().read_cache_hits, 1);
        assert_eq!(store.stats().read_cache_objects, 1);
        store
            .submit(Op::Quarantine {
                id: id.clone(),
                blob: meta.blob,
            })
            .await
            .unwrap();
        assert_eq!(store.stats().read_cache_objects, 0);
        assert!(store.get(&id).await.unwrap().is_none());
        assert_eq!(store.stats().corrupt_objects, 1);
        store.close().await.unwrap();
    }
}
