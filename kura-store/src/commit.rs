//! The committer: one thread that owns the redb write transaction and applies batches of
//! operations (group commit). Writers stage their bytes concurrently and only hand the
//! committer small metadata operations.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::hlc::{Hlc, Version};
use crate::merge::{Entry, Payload, shadowed_by_namespace, winner};
use crate::meta::{
    BlobLoc, ObjectMeta, ReplicatedRecord, decode_entry, encode_bucket, encode_entry,
};
use crate::redo::{RecordBuilder, RedoBatch, RedoOp, RedoStaged};
use crate::store::{Durability, Shared};
use crate::summary::{self, DEPTH, NodeHash};
use crate::types::{Digest, Key, NamespaceId, ObjectId, ObjectRef};

pub(crate) const OBJECTS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("objects");
pub(crate) const INLINE: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("inline");
pub(crate) const OWNERS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("file_blobs");
pub(crate) const TOMBS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("key_tombstones");
pub(crate) const NS_TOMBS: TableDefinition<'_, &[u8], &[u8]> =
    TableDefinition::new("namespace_tombstones");
pub(crate) const CHANGES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("changes");
pub(crate) const LRU: TableDefinition<'_, &[u8], u64> = TableDefinition::new("lru");
pub(crate) const REFS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("referrers");
pub(crate) const SUMMARY: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("summary");
pub(crate) const BUCKETS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("buckets");
pub(crate) const STATE: TableDefinition<'_, &str, u64> = TableDefinition::new("state");
/// Value-log segments holding packed bodies: segment → live bytes (see `docs/store.md`,
/// "The value log").
pub(crate) const PACKS: TableDefinition<'_, u64, u64> = TableDefinition::new("packs");
/// Ghosts: objects evicted while their summary entry stays (object key → entry ++ eviction
/// time in ms). See `docs/store.md`, "Ghosts".
pub(crate) const GHOSTS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("ghosts");

/// The BUCKETS key of an object: namespace prefix, leaf, key.
pub(crate) fn bucket_key(id: &ObjectId) -> Vec<u8> {
    let mut bk = bucket_prefix(
        &id.namespace_id().encode_prefix(),
        summary::leaf_of(&id.key),
    );
    bk.extend_from_slice(id.key.as_str().as_bytes());
    bk
}

fn encode_ghost(e: &Entry, evicted_ms: u64) -> Vec<u8> {
    let mut v = encode_entry(e);
    v.extend_from_slice(&evicted_ms.to_be_bytes());
    v
}

pub(crate) fn decode_ghost(buf: &[u8]) -> Result<(Entry, u64)> {
    let corrupt = || Error::Corrupt {
        object: None,
        reason: "malformed ghost entry".into(),
    };
    let split = buf.len().checked_sub(8).ok_or_else(corrupt)?;
    let (e, ms) = buf.split_at(split);
    let ms = u64::from_be_bytes(ms.try_into().map_err(|_| corrupt())?);
    Ok((decode_entry(e)?, ms))
}

/// What happens to the summary entry of an object that is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// The caller replaces it (delete: with a tombstone).
    Keep,
    /// It goes (namespace delete, quarantine): peers' copies look new again.
    Drop,
    /// It stays as a ghost (eviction): the summary records knowledge, not possession.
    Ghost,
}

/// What [`crate::Store::learn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Learned {
    /// Nothing: the local entry is as new or newer (or a namespace tombstone shadows it).
    Ignored,
    /// The local copy had the same digest: its version was raised, the bytes kept.
    Bumped,
    /// The key is now a ghost at the learned version (any older local copy was dropped).
    Ghost,
}

/// A key's current state in the committer's view.
struct Current {
    /// The held object, if any.
    obj: Option<ObjectMeta>,
    /// Its entry: the object's, the key tombstone's or the ghost's.
    entry: Option<Entry>,
    /// Whether `entry` is a ghost.
    ghost: bool,
}

pub(crate) fn lru_key(ms: u64, key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + key.len());
    v.extend_from_slice(&ms.to_be_bytes());
    v.extend_from_slice(key);
    v
}

/// Reverse reference index: `len(target) ++ target ++ source`.
pub(crate) fn ref_prefix(target: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + target.len());
    let len = u16::try_from(target.len()).unwrap_or(u16::MAX);
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(target);
    v
}

pub(crate) fn summary_key(ns_prefix: &[u8], level: u8, index: u32) -> Vec<u8> {
    let mut v = ns_prefix.to_vec();
    v.push(level);
    v.extend_from_slice(&index.to_be_bytes());
    v
}

pub(crate) fn bucket_prefix(ns_prefix: &[u8], leaf: u32) -> Vec<u8> {
    let mut v = ns_prefix.to_vec();
    v.extend_from_slice(&leaf.to_be_bytes());
    v
}

/// The exclusive upper bound of all keys starting with `prefix`, if any.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut v = prefix.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xff {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

/// Persistent counters, written in every batch.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) objects: u64,
    pub(crate) bytes: u64,
    pub(crate) ghosts: u64,
    pub(crate) seq: u64,
    pub(crate) max_hlc: u64,
    /// Sequence number of the last redo-log batch applied to the database.
    pub(crate) redo_seq: u64,
    /// Where recovery starts reading the value log: segment and offset (everything before
    /// is durable in the database).
    pub(crate) log_seg: u64,
    pub(crate) log_off: u64,
}

impl Counters {
    pub(crate) fn load(t: &impl ReadableTable<&'static str, u64>) -> Result<Self> {
        let get = |k: &str| -> Result<u64> {
            Ok(t.get(k)
                .map_err(|e| Error::meta("read state", e))?
                .map(|g| g.value())
                .unwrap_or(0))
        };
        Ok(Self {
            objects: get("objects")?,
            bytes: get("bytes")?,
            ghosts: get("ghosts")?,
            seq: get("seq")?,
            max_hlc: get("max_hlc")?,
            redo_seq: get("redo_seq")?,
            log_seg: get("log_seg")?,
            log_off: get("log_off")?,
        })
    }

    fn save(&self, t: &mut Table<'_, &'static str, u64>) -> Result<()> {
        let w = "write state";
        for (k, v) in [
            ("objects", self.objects),
            ("bytes", self.bytes),
            ("ghosts", self.ghosts),
            ("seq", self.seq),
            ("max_hlc", self.max_hlc),
            ("redo_seq", self.redo_seq),
            ("log_seg", self.log_seg),
            ("log_off", self.log_off),
        ] {
            t.insert(k, v).map_err(m(w))?;
        }
        Ok(())
    }
}

pub(crate) enum Staged {
    Inline(Bytes),
    File(u64),
    /// Recovery: the body is already in the value log, here.
    Packed {
        seg: u64,
        off: u64,
    },
}

pub(crate) struct PendingPut {
    pub(crate) id: ObjectId,
    pub(crate) content_type: String,
    pub(crate) len: u64,
    pub(crate) digest: Digest,
    pub(crate) refs: Vec<ObjectRef>,
    /// `None` for a local write (the committer assigns a fresh HLC).
    pub(crate) version: Option<Version>,
    pub(crate) staged: Staged,
    /// Capacity reserved by the writer; released when the commit turns it into used space.
    pub(crate) reservation: Arc<std::sync::atomic::AtomicU64>,
}

pub(crate) enum Op {
    Put(Box<PendingPut>),
    Delete {
        id: ObjectId,
        version: Option<Version>,
    },
    DeleteNamespace {
        ns: NamespaceId,
        version: Option<Version>,
    },
    Evict {
        target_bytes: u64,
    },
    FlushAccess,
    Quarantine {
        id: ObjectId,
        blob: BlobLoc,
    },
    GcTombstones {
        horizon: Hlc,
    },
    GcGhosts {
        evicted_before_ms: u64,
    },
    Learn {
        id: ObjectId,
        version: Version,
        digest: Digest,
        evicted_ms: Option<u64>,
    },
    TrimChanges {
        upto: u64,
    },
    /// Copies the live packed bodies of a value-log segment into this batch's record.
    Compact {
        seg: u64,
    },
    Checkpoint,
    Shutdown,
}

#[derive(Debug)]
pub(crate) enum Outcome {
    Put(Box<ObjectMeta>),
    Ignored,
    Deleted(bool),
    Count(u64),
    Learned(Learned),
    Done,
}

pub(crate) struct Cmd {
    pub(crate) op: Op,
    pub(crate) reply: Option<oneshot::Sender<Result<Outcome>>>,
}

/// Records in a batch's per-segment deltas of live packed bytes that `len` body bytes left
/// segment `from` and/or now live in segment `to`.
fn pack_move(delta: &mut HashMap<u64, i64>, from: Option<u64>, to: Option<u64>, len: u64) {
    let n = i64::try_from(len).unwrap_or(i64::MAX);
    if let Some(seg) = from {
        *delta.entry(seg).or_default() -= n;
    }
    if let Some(seg) = to {
        *delta.entry(seg).or_default() += n;
    }
}

#[derive(Default)]
struct Effects {
    new_files: Vec<u64>,
    dead_files: Vec<u64>,
    quarantine_files: Vec<u64>,
    discard_temps: Vec<u64>,
    published: Vec<u64>,
    evicted_objects: u64,
    evicted_bytes: u64,
    corrupt: u64,
    /// The batch's record, built as operations apply (redo mode, not during recovery).
    log: Option<RecordBuilder>,
    /// Where that record will be written: segment and offset.
    log_at: (u64, u64),
    /// Change of live packed bytes per value-log segment.
    pack_delta: HashMap<u64, i64>,
    /// The resulting live bytes, written to `PACKS` (see [`Committer::write_packs`]).
    pack_new: Vec<(u64, u64)>,
    /// The batch did something the redo log does not record (eviction, quarantine, GC,
    /// trimming): it must be committed durably as a checkpoint.
    needs_checkpoint: bool,
    /// Object rows written or removed (see [`Tables::touched`]).
    touched: Vec<Vec<u8>>,
    /// Object rows whose access time alone changed.
    refreshed: Vec<ObjectMeta>,
}

/// How a batch was made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BatchKind {
    /// redb `Immediate` commit: everything up to here is durable in the database itself.
    Synced,
    /// Made durable by its redo-log record.
    Logged,
    /// Not durable yet (`batch`/`none` modes, or nothing that must survive a crash).
    Unsynced,
}

struct Tables<'t> {
    objects: Table<'t, &'static [u8], &'static [u8]>,
    inline: Table<'t, u64, &'static [u8]>,
    owners: Table<'t, u64, &'static [u8]>,
    tombs: Table<'t, &'static [u8], &'static [u8]>,
    ns_tombs: Table<'t, &'static [u8], &'static [u8]>,
    changes: Table<'t, u64, &'static [u8]>,
    lru: Table<'t, &'static [u8], u64>,
    refs: Table<'t, &'static [u8], &'static [u8]>,
    summary: Table<'t, &'static [u8], &'static [u8]>,
    buckets: Table<'t, &'static [u8], &'static [u8]>,
    ghosts: Table<'t, &'static [u8], &'static [u8]>,
    state: Table<'t, &'static str, u64>,
    packs: Table<'t, u64, u64>,
    /// Summary-node XOR deltas of this batch, written once at the end (a batch of writes to
    /// one namespace shares its upper nodes).
    summary_delta: HashMap<Vec<u8>, NodeHash>,
    /// Objects rows written or removed in this batch (the read cache drops them once the
    /// batch is visible). Every change to `objects` goes through [`Tables::put_object`],
    /// [`Tables::remove_object`] or [`Tables::refresh_object`].
    touched: Vec<Vec<u8>>,
    /// Rows whose access time alone changed: cached entries are refreshed, not dropped.
    refreshed: Vec<ObjectMeta>,
    /// Namespace tombstones read in this batch (see [`Tables::ns_tomb`]).
    ns_tomb_cache: HashMap<Vec<u8>, Option<Version>>,
}

fn m<T>(op: &'static str) -> impl FnOnce(T) -> Error
where
    T: Into<redb::Error>,
{
    move |e| Error::meta(op, e)
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self> {
        let o = "open table";
        Ok(Self {
            objects: txn.open_table(OBJECTS).map_err(m(o))?,
            inline: txn.open_table(INLINE).map_err(m(o))?,
            owners: txn.open_table(OWNERS).map_err(m(o))?,
            tombs: txn.open_table(TOMBS).map_err(m(o))?,
            ns_tombs: txn.open_table(NS_TOMBS).map_err(m(o))?,
            changes: txn.open_table(CHANGES).map_err(m(o))?,
            lru: txn.open_table(LRU).map_err(m(o))?,
            refs: txn.open_table(REFS).map_err(m(o))?,
            summary: txn.open_table(SUMMARY).map_err(m(o))?,
            buckets: txn.open_table(BUCKETS).map_err(m(o))?,
            ghosts: txn.open_table(GHOSTS).map_err(m(o))?,
            state: txn.open_table(STATE).map_err(m(o))?,
            packs: txn.open_table(PACKS).map_err(m(o))?,
            summary_delta: HashMap::new(),
            touched: Vec::new(),
            refreshed: Vec::new(),
            ns_tomb_cache: HashMap::new(),
        })
    }

    /// Writes an object row.
    fn put_object(&mut self, key: &[u8], meta: &ObjectMeta) -> Result<()> {
        self.objects
            .insert(key, meta.encode().as_slice())
            .map_err(m("write object"))?;
        self.touched.push(key.to_vec());
        Ok(())
    }

    /// Rewrites an object row whose access time alone changed.
    fn refresh_object(&mut self, key: &[u8], meta: ObjectMeta) -> Result<()> {
        self.objects
            .insert(key, meta.encode().as_slice())
            .map_err(m("write object"))?;
        self.refreshed.push(meta);
        Ok(())
    }

    /// Removes an object row.
    fn remove_object(&mut self, key: &[u8]) -> Result<()> {
        self.objects.remove(key).map_err(m("remove object"))?;
        self.touched.push(key.to_vec());
        Ok(())
    }

    fn save_counters(&mut self, c: &Counters) -> Result<()> {
        c.save(&mut self.state)
    }

    fn get_meta(&self, key: &[u8]) -> Result<Option<ObjectMeta>> {
        match self.objects.get(key).map_err(m("read object"))? {
            None => Ok(None),
            Some(g) => Ok(Some(ObjectMeta::decode(ObjectId::decode(key)?, g.value())?)),
        }
    }

    fn get_tomb(&self, key: &[u8]) -> Result<Option<Entry>> {
        match self.tombs.get(key).map_err(m("read tombstone"))? {
            None => Ok(None),
            Some(g) => Ok(Some(decode_entry(g.value())?)),
        }
    }

    fn get_ghost(&self, key: &[u8]) -> Result<Option<Entry>> {
        match self.ghosts.get(key).map_err(m("read ghost"))? {
            None => Ok(None),
            Some(g) => Ok(Some(decode_ghost(g.value())?.0)),
        }
    }

    /// The held object, key tombstone or ghost of `key` (at most one exists).
    fn current(&self, key: &[u8]) -> Result<Current> {
        if let Some(o) = self.get_meta(key)? {
            return Ok(Current {
                entry: Some(o.entry()),
                obj: Some(o),
                ghost: false,
            });
        }
        if let Some(e) = self.get_tomb(key)? {
            return Ok(Current {
                obj: None,
                entry: Some(e),
                ghost: false,
            });
        }
        let g = self.get_ghost(key)?;
        Ok(Current {
            obj: None,
            ghost: g.is_some(),
            entry: g,
        })
    }

    /// Removes the ghost row of `key` (its bucket entry is rewritten by the caller).
    fn clear_ghost(&mut self, key: &[u8], c: &mut Counters) -> Result<()> {
        if self
            .ghosts
            .remove(key)
            .map_err(m("remove ghost"))?
            .is_some()
        {
            c.ghosts = c.ghosts.saturating_sub(1);
        }
        Ok(())
    }

    /// Records `e` as a ghost of `id`: the bucket entry stays (marked not held) and the
    /// summary does not change when `e` is already the key's entry.
    fn set_ghost(
        &mut self,
        id: &ObjectId,
        old: Option<&Entry>,
        e: &Entry,
        evicted_ms: u64,
        c: &mut Counters,
    ) -> Result<()> {
        self.set_entry_as(id, old, Some(e), Some(evicted_ms))?;
        let prev = self
            .ghosts
            .insert(
                id.encode().as_slice(),
                encode_ghost(e, evicted_ms).as_slice(),
            )
            .map_err(m("write ghost"))?;
        if prev.is_none() {
            c.ghosts += 1;
        }
        Ok(())
    }

    /// The namespace tombstone of `prefix` (looked up once per batch: every write of
    /// `ns_tombs` empties the cache).
    fn ns_tomb(&mut self, prefix: &[u8]) -> Result<Option<Version>> {
        if let Some(v) = self.ns_tomb_cache.get(prefix) {
            return Ok(*v);
        }
        let v = match self
            .ns_tombs
            .get(prefix)
            .map_err(m("read namespace tombstone"))?
        {
            None => None,
            Some(g) => Some(decode_entry(g.value())?.version),
        };
        self.ns_tomb_cache.insert(prefix.to_vec(), v);
        Ok(v)
    }

    /// XORs `h` into every node on the path of `key` in its namespace's summary tree
    /// (buffered until [`Tables::flush_summary`]).
    fn summary_xor(&mut self, ns_prefix: &[u8], key: &Key, h: &NodeHash) {
        let leaf = summary::leaf_of(key);
        for level in 0..=DEPTH {
            let k = summary_key(ns_prefix, level, summary::ancestor(leaf, level));
            summary::xor_into(self.summary_delta.entry(k).or_insert([0; 32]), h);
        }
    }

    fn flush_summary(&mut self) -> Result<()> {
        for (k, h) in std::mem::take(&mut self.summary_delta) {
            if h == [0; 32] {
                continue;
            }
            let mut cur: NodeHash = [0; 32];
            if let Some(g) = self.summary.get(k.as_slice()).map_err(m("read summary"))? {
                if g.value().len() == 32 {
                    cur.copy_from_slice(g.value());
                }
            }
            summary::xor_into(&mut cur, &h);
            if cur == [0; 32] {
                self.summary
                    .remove(k.as_slice())
                    .map_err(m("write summary"))?;
            } else {
                self.summary
                    .insert(k.as_slice(), cur.as_slice())
                    .map_err(m("write summary"))?;
            }
        }
        Ok(())
    }

    /// Replaces the summary contribution and bucket entry of `id` (old → new).
    fn set_entry(&mut self, id: &ObjectId, old: Option<&Entry>, new: Option<&Entry>) -> Result<()> {
        self.set_entry_as(id, old, new, None)
    }

    /// [`Tables::set_entry`], recording a ghost's eviction time (`None`: held).
    fn set_entry_as(
        &mut self,
        id: &ObjectId,
        old: Option<&Entry>,
        new: Option<&Entry>,
        ghost: Option<u64>,
    ) -> Result<()> {
        let ns = id.namespace_id().encode_prefix();
        let mut h: NodeHash = [0; 32];
        if let Some(o) = old {
            summary::xor_into(&mut h, &summary::entry_hash(&id.key, o));
        }
        if let Some(n) = new {
            summary::xor_into(&mut h, &summary::entry_hash(&id.key, n));
        }
        if h != [0; 32] {
            self.summary_xor(&ns, &id.key, &h);
        }
        let bk = bucket_key(id);
        match new {
            Some(n) => {
                self.buckets
                    .insert(bk.as_slice(), encode_bucket(n, ghost).as_slice())
                    .map_err(m("write bucket"))?;
            }
            None => {
                self.buckets
                    .remove(bk.as_slice())
                    .map_err(m("write bucket"))?;
            }
        }
        Ok(())
    }
}

pub(crate) struct Committer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) rx: Receiver<Cmd>,
    pub(crate) counters: Counters,
    unsynced_published: Vec<u64>,
    intent_dirty: bool,
    dirty_since_checkpoint: bool,
    last_checkpoint: Instant,
    last_access_flush: Instant,
    /// `Durability::Always` on a backend with a redo log: batches are made durable by the log.
    redo: bool,
    /// Bytes appended to the redo log since it was last emptied.
    redo_bytes: u64,
    /// A redo append failed: commit durably (and empty the log) before using it again.
    redo_suspect: bool,
    /// During recovery: the version and clock reading the next operation must reuse.
    forced: std::cell::Cell<Option<(Version, u64)>>,
    /// Wakes the background writeback of the database file (see [`writeback`]).
    writeback: Option<SyncSender<()>>,
    /// Value log (redo mode): the segment records go to, and its length.
    log_seg: u64,
    log_end: u64,
    /// Every value-log segment: its length and its live packed bytes (mirror of `PACKS`).
    segs: std::collections::BTreeMap<u64, SegInfo>,
    /// Segments compaction gave up on (unreadable); not tried again until reopened.
    compact_skip: std::collections::HashSet<u64>,
}

/// What the committer knows of a value-log segment.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SegInfo {
    pub(crate) len: u64,
    pub(crate) live: u64,
}

/// Background writeback of the database file in redo mode, on its own descriptor and
/// thread: each wake-up (a batch committed without syncing the database) syncs `file`, at
/// most once per [`WRITEBACK_INTERVAL`]; returns when the committer is gone.
///
/// Between checkpoints, non-durable redb commits write B-tree pages to the file (never
/// over pages the last durable commit uses; the header only changes on a durable commit),
/// and the kernel may write those pages back at any time anyway. Syncing them early changes
/// nothing a crash can observe; it only leaves the checkpoint's `fdatasync`, during which
/// no batch runs, with less to write. A failed sync here is not lost: the kernel reports a
/// write-back error to every descriptor open at the time, so redb's own sync at the next
/// checkpoint fails too.
pub(crate) fn writeback(file: &std::fs::File, rx: &Receiver<()>) {
    let mut pending = false;
    loop {
        if !pending && rx.recv().is_err() {
            return;
        }
        pending = false;
        let _ = file.sync_data();
        let until = Instant::now() + WRITEBACK_INTERVAL;
        loop {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(()) => pending = true,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Redo-log checkpoint triggers: time since the last checkpoint and log size.
const REDO_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);
const REDO_CHECKPOINT_BYTES: u64 = 64 << 20;
/// Least time between two background syncs of the database file (see [`writeback`]).
const WRITEBACK_INTERVAL: Duration = Duration::from_millis(100);
/// Compaction relocates a sealed segment's live bodies once they are less than half of it.
const COMPACT_LIVE_PCT: u64 = 50;
/// Most body bytes one compaction batch relocates.
const COMPACT_MAX_BYTES: u64 = 16 << 20;

impl Committer {
    pub(crate) fn new(shared: Arc<Shared>, rx: Receiver<Cmd>, counters: Counters) -> Self {
        Self {
            rx,
            counters,
            unsynced_published: Vec::new(),
            intent_dirty: false,
            dirty_since_checkpoint: false,
            last_checkpoint: Instant::now(),
            last_access_flush: Instant::now(),
            redo: matches!(shared.cfg.durability, Durability::Always)
                && shared.backend.supports_redo(),
            redo_bytes: 0,
            redo_suspect: false,
            forced: std::cell::Cell::new(None),
            writeback: None,
            log_seg: 0,
            log_end: 0,
            segs: std::collections::BTreeMap::new(),
            compact_skip: std::collections::HashSet::new(),
            shared,
        }
    }

    /// Whether batches are made durable by the redo log.
    pub(crate) fn logs_redo(&self) -> bool {
        self.redo
    }

    /// Hands the committer the wake-up channel of the background [`writeback`].
    pub(crate) fn set_writeback(&mut self, tx: SyncSender<()>) {
        self.writeback = Some(tx);
    }

    fn durable_each_batch(&self) -> bool {
        matches!(self.shared.cfg.durability, Durability::Always)
    }

    fn checkpoint_interval(&self) -> Option<Duration> {
        match self.shared.cfg.durability {
            Durability::Always if self.redo => Some(REDO_CHECKPOINT_INTERVAL),
            Durability::Always => None,
            Durability::Batch { max_delay } => Some(max_delay),
            Durability::None { checkpoint } => Some(checkpoint),
        }
    }

    fn access_due(&self) -> bool {
        let n = self.shared.access.len();
        n > 0
            && (n >= 10_000
                || self.last_access_flush.elapsed() >= self.shared.cfg.access_flush_interval)
    }

    pub(crate) fn run(mut self) {
        let max_batch = self.shared.cfg.max_batch.max(1);
        loop {
            let mut timeout = self.shared.cfg.access_flush_interval;
            if let Some(iv) = self.checkpoint_interval() {
                if self.dirty_since_checkpoint {
                    timeout = timeout.min(iv.saturating_sub(self.last_checkpoint.elapsed()));
                }
            }
            let mut batch = Vec::new();
            let mut disconnected = false;
            match self.rx.recv_timeout(timeout) {
                Ok(c) => batch.push(c),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => disconnected = true,
            }
            while !batch.is_empty() && batch.len() < max_batch {
                match self.rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            if self.access_due() {
                batch.push(Cmd {
                    op: Op::FlushAccess,
                    reply: None,
                });
            }
            let mut shutdown = None;
            let mut checkpoint_replies = Vec::new();
            let mut work = Vec::with_capacity(batch.len());
            for c in batch {
                match c.op {
                    Op::Shutdown => shutdown = Some(c.reply),
                    Op::Checkpoint => checkpoint_replies.push(c.reply),
                    _ => work.push(c),
                }
            }
            if !work.is_empty() {
                self.run_batch(work);
            }
            self.maybe_evict();
            self.maybe_compact();
            let due = self.checkpoint_interval().is_some_and(|iv| {
                self.dirty_since_checkpoint && self.last_checkpoint.elapsed() >= iv
            }) || self.redo_bytes >= REDO_CHECKPOINT_BYTES;
            if due || !checkpoint_replies.is_empty() || shutdown.is_some() || disconnected {
                let r = self.checkpoint();
                for reply in checkpoint_replies.into_iter().flatten() {
                    let _ = reply.send(r.as_ref().map(|_| Outcome::Done).map_err(Error::duplicate));
                }
            }
            if let Some(reply) = shutdown {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(Outcome::Done));
                }
                return;
            }
            if disconnected {
                return;
            }
        }
    }

    /// Recovery: applies, in order, the logged batches the database does not have yet (the
    /// ones numbered above its `redo_seq`): first those of a version-1 `redo.log`, then
    /// those of the value log from the recorded start; then checkpoints, removes segments
    /// nothing needs any more, and points new records at a fresh segment. Returns the
    /// number of batches replayed.
    pub(crate) fn replay(&mut self, legacy: Vec<RedoBatch>) -> Result<u64> {
        let mut replayed = 0;
        for batch in legacy {
            if batch.seq <= self.counters.redo_seq {
                continue;
            }
            let ops = batch.ops.into_iter().map(|op| (op, None)).collect();
            self.replay_batch(batch.seq, ops)?;
            replayed += 1;
        }
        let b = self.shared.backend.clone();
        if b.supports_redo() {
            let segs = b
                .log_segments()
                .map_err(|e| Error::io("list value log", e))?;
            {
                let rtx = self.shared.db.begin_read().map_err(m("begin read"))?;
                let packs = rtx.open_table(PACKS).map_err(m("open table"))?;
                for row in packs.iter().map_err(m("read packs"))? {
                    let (k, v) = row.map_err(m("read packs"))?;
                    self.segs.entry(k.value()).or_default().live = v.value();
                }
            }
            for (seg, len) in &segs {
                self.segs.entry(*seg).or_default().len = *len;
            }
            let from = (self.counters.log_seg, self.counters.log_off);
            for (seg, _) in segs.iter().filter(|(s, _)| *s >= from.0) {
                let buf = Bytes::from(
                    b.log_read(*seg)
                        .map_err(|e| Error::io("read value log", e))?,
                );
                let start = if *seg == from.0 {
                    usize::try_from(from.1).unwrap_or(usize::MAX).min(buf.len())
                } else {
                    0
                };
                // A torn or corrupt frame ends the segment: it is the last record written
                // before a crash, or one whose write failed (and the next went elsewhere).
                let frames = crate::redo::decode_frames(&buf.slice(start..));
                for d in frames {
                    if d.batch.seq <= self.counters.redo_seq {
                        continue;
                    }
                    let ops = d
                        .batch
                        .ops
                        .into_iter()
                        .zip(d.offsets)
                        .map(|(op, at)| (op, at.map(|a| (*seg, start as u64 + a))))
                        .collect();
                    self.replay_batch(d.batch.seq, ops)?;
                    replayed += 1;
                }
            }
            self.log_seg = segs
                .last()
                .map_or(0, |(s, _)| s + 1)
                .max(self.counters.log_seg);
            self.log_end = 0;
        }
        self.dirty_since_checkpoint = true;
        self.checkpoint()?;
        self.shared
            .backend
            .redo_clear()
            .map_err(|e| Error::io("clear redo log", e))?;
        self.publish_log_stats();
        Ok(replayed)
    }

    /// Applies one logged batch during recovery; `at` gives, for operations whose body is
    /// in the value log, where it is.
    fn replay_batch(&mut self, seq: u64, ops: Vec<(RedoOp, Option<(u64, u64)>)>) -> Result<()> {
        let mut fx = Effects::default();
        let mut c = self.counters;
        let mut txn = self.shared.db.begin_write().map_err(m("begin"))?;
        txn.set_durability(redb::Durability::None)
            .map_err(m("set durability"))?;
        {
            let mut t = Tables::open(&txn)?;
            for (op, at) in ops {
                let r = self.replay_op(&mut t, op, at, &mut fx, &mut c);
                self.forced.set(None);
                match r {
                    Ok(()) | Err(Error::MissingReference { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            t.flush_summary()?;
            self.write_packs(&mut t, &mut fx)?;
            c.redo_seq = seq;
            t.save_counters(&c)?;
            fx.touched = std::mem::take(&mut t.touched);
        }
        txn.commit().map_err(m("commit"))?;
        self.sync_read_cache(&mut fx);
        self.counters = c;
        self.apply_packs(&fx);
        for id in &fx.dead_files {
            let _ = self.shared.backend.remove_blob(*id);
        }
        self.dirty_since_checkpoint = true;
        Ok(())
    }

    /// Writes the batch's changes of live packed bytes to `PACKS` (applied to the
    /// committer's mirror by [`Committer::apply_packs`] once the batch commits).
    fn write_packs(&self, t: &mut Tables<'_>, fx: &mut Effects) -> Result<()> {
        for (seg, d) in std::mem::take(&mut fx.pack_delta) {
            if d == 0 {
                continue;
            }
            let cur = self.segs.get(&seg).map_or(0, |i| i.live);
            let new = if d >= 0 {
                cur.saturating_add(d.unsigned_abs())
            } else {
                cur.saturating_sub(d.unsigned_abs())
            };
            t.packs.insert(seg, new).map_err(m("write packs"))?;
            fx.pack_new.push((seg, new));
        }
        Ok(())
    }

    fn apply_packs(&mut self, fx: &Effects) {
        for (seg, live) in &fx.pack_new {
            self.segs.entry(*seg).or_default().live = *live;
        }
    }

    /// Value-log totals for [`crate::Stats`].
    fn publish_log_stats(&self) {
        let st = &self.shared.stats;
        let (len, live) = self
            .segs
            .values()
            .fold((0u64, 0u64), |(a, b), i| (a + i.len, b + i.live));
        st.log_segments
            .store(self.segs.len() as u64, Ordering::Relaxed);
        st.log_bytes.store(len, Ordering::Relaxed);
        st.log_live_bytes.store(live, Ordering::Relaxed);
    }

    /// Segments nothing needs: no live body, and before the segment recovery would start
    /// from after a checkpoint now.
    fn dead_segments(&self) -> Vec<u64> {
        self.segs
            .range(..self.log_seg)
            .filter(|(_, i)| i.live == 0)
            .map(|(s, _)| *s)
            .collect()
    }

    /// Relocates the live packed bodies of segment `seg` into this batch's record (at most
    /// [`COMPACT_MAX_BYTES`]): returns the bytes moved.
    fn compact(&self, t: &mut Tables<'_>, seg: u64, fx: &mut Effects) -> Result<u64> {
        let Some(log) = fx.log.as_mut() else {
            return Ok(0);
        };
        let buf = Bytes::from(
            self.shared
                .backend
                .log_read(seg)
                .map_err(|e| Error::io("read value log", e))?,
        );
        let frames = crate::redo::decode_frames(&buf);
        let (cur, base) = fx.log_at;
        let mut moved = 0u64;
        'frames: for d in frames {
            for (op, at) in d.batch.ops.into_iter().zip(d.offsets) {
                let (Some(at), ReplicatedRecord::Put { id, .. }, Some(RedoStaged::Inline(bytes))) =
                    (at, &op.rec, &op.staged)
                else {
                    continue;
                };
                let key = id.encode();
                let Some(mut meta) = t.get_meta(&key)? else {
                    continue;
                };
                if meta.blob != (BlobLoc::Packed { seg, off: at }) || meta.len != bytes.len() as u64
                {
                    continue;
                }
                let new_at = log
                    .push(&RedoOp {
                        rec: meta.put_record(),
                        local: false,
                        relocate: true,
                        now_ms: meta.last_access_ms,
                        staged: Some(RedoStaged::Inline(bytes.clone())),
                    })
                    .unwrap_or(0);
                meta.blob = BlobLoc::Packed {
                    seg: cur,
                    off: base + new_at,
                };
                t.put_object(&key, &meta)?;
                pack_move(&mut fx.pack_delta, Some(seg), Some(cur), meta.len);
                moved += meta.len;
                if moved >= COMPACT_MAX_BYTES {
                    break 'frames;
                }
            }
        }
        Ok(moved)
    }

    /// Recovery of a relocation: the object (same version and digest) now points at `at`.
    fn replay_relocate(
        &self,
        t: &mut Tables<'_>,
        rec: &ReplicatedRecord,
        (seg, off): (u64, u64),
        fx: &mut Effects,
    ) -> Result<()> {
        let ReplicatedRecord::Put {
            id,
            version,
            digest,
            len,
            ..
        } = rec
        else {
            return Ok(());
        };
        let key = id.encode();
        let Some(mut meta) = t.get_meta(&key)? else {
            return Ok(());
        };
        let BlobLoc::Packed { seg: old, .. } = meta.blob else {
            return Ok(());
        };
        if meta.version != *version || meta.digest != *digest || meta.len != *len {
            return Ok(());
        }
        meta.blob = BlobLoc::Packed { seg, off };
        t.put_object(&key, &meta)?;
        pack_move(&mut fx.pack_delta, Some(old), Some(seg), meta.len);
        Ok(())
    }

    /// Runs one compaction batch when a sealed segment is mostly garbage.
    fn maybe_compact(&mut self) {
        if !self.redo || self.redo_suspect {
            return;
        }
        let cand = self
            .segs
            .iter()
            .filter(|(s, i)| {
                **s != self.log_seg
                    && i.live > 0
                    && i.live.saturating_mul(100) < i.len.saturating_mul(COMPACT_LIVE_PCT)
                    && !self.compact_skip.contains(s)
            })
            .min_by_key(|(_, i)| i.live.saturating_mul(1000) / i.len.max(1))
            .map(|(s, i)| (*s, i.live));
        let Some((seg, before)) = cand else {
            return;
        };
        self.run_batch(vec![Cmd {
            op: Op::Compact { seg },
            reply: None,
        }]);
        if self.segs.get(&seg).is_some_and(|i| i.live >= before) {
            // Nothing moved (unreadable segment, or bookkeeping that found no body).
            self.compact_skip.insert(seg);
        }
    }

    fn replay_op(
        &self,
        t: &mut Tables<'_>,
        op: RedoOp,
        at: Option<(u64, u64)>,
        fx: &mut Effects,
        c: &mut Counters,
    ) -> Result<()> {
        if op.relocate {
            return match at {
                Some(at) => self.replay_relocate(t, &op.rec, at, fx),
                None => Ok(()),
            };
        }
        let version = op.rec.version();
        let given = (!op.local).then_some(version);
        self.forced.set(Some((version, op.now_ms)));
        match op.rec {
            ReplicatedRecord::Put {
                id,
                content_type,
                len,
                digest,
                refs,
                ..
            } => {
                let staged = match (op.staged, at) {
                    (Some(RedoStaged::Inline(_)), Some((seg, off))) => Staged::Packed { seg, off },
                    (Some(RedoStaged::Inline(b)), None) => Staged::Inline(b),
                    // The file was synced and published before the record was logged; if it
                    // is gone anyway (a failed batch whose record survived), skip the write
                    // rather than point at nothing.
                    (Some(RedoStaged::File(fid)), _)
                        if self.shared.backend.open_blob(fid).is_ok() =>
                    {
                        // Its id is taken: a new writer must not be handed it again.
                        self.shared.next_blob.fetch_max(fid + 1, Ordering::Relaxed);
                        Staged::File(fid)
                    }
                    _ => return Ok(()),
                };
                let p = PendingPut {
                    id,
                    content_type,
                    len,
                    digest,
                    refs,
                    version: given,
                    staged,
                    reservation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
                };
                self.apply_put(t, &p, fx, c).map(|_| ())
            }
            ReplicatedRecord::Delete { id, .. } => {
                self.apply_delete(t, &id, given, c, fx).map(|_| ())
            }
            ReplicatedRecord::DeleteNamespace { namespace, .. } => self
                .apply_delete_ns(t, &namespace, given, c, fx)
                .map(|_| ()),
        }
    }

    /// Makes everything committed so far durable in the database itself (modes other than
    /// `Always`, and redo-log checkpoints).
    fn checkpoint(&mut self) -> Result<()> {
        self.last_checkpoint = Instant::now();
        let has_log = self.shared.backend.supports_redo();
        let dead = if has_log {
            self.dead_segments()
        } else {
            Vec::new()
        };
        if !self.dirty_since_checkpoint
            && !self.intent_dirty
            && !self.redo_suspect
            && dead.is_empty()
        {
            return Ok(());
        }
        let sync_files = matches!(self.shared.cfg.durability, Durability::Batch { .. });
        let b = self.shared.backend.clone();
        if sync_files {
            b.intent_append(&[], true)
                .map_err(|e| Error::io("intent sync", e))?;
            b.sync_published(&self.unsynced_published)
                .map_err(|e| Error::io("directory sync", e))?;
        }
        let started = Instant::now();
        let mut txn = self.shared.db.begin_write().map_err(m("begin"))?;
        txn.set_quick_repair(self.shared.cfg.fast_crash_recovery);
        txn.set_durability(redb::Durability::Immediate)
            .map_err(m("set durability"))?;
        let mut c = self.counters;
        if has_log {
            // Recovery starts here from now on; segments before it that hold no live body
            // go once this commit is durable.
            c.log_seg = self.log_seg;
            c.log_off = self.log_end;
            let mut state = txn.open_table(STATE).map_err(m("open table"))?;
            c.save(&mut state)?;
            let mut packs = txn.open_table(PACKS).map_err(m("open table"))?;
            for seg in &dead {
                packs.remove(*seg).map_err(m("write packs"))?;
            }
        }
        txn.commit().map_err(m("commit"))?;
        self.counters = c;
        for seg in &dead {
            // A failure leaves a file that the next open (or checkpoint) removes again.
            let _ = self.shared.backend.log_remove(*seg);
            self.segs.remove(seg);
            self.compact_skip.remove(seg);
        }
        if !dead.is_empty() {
            self.publish_log_stats();
        }
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let st = &self.shared.stats;
        st.checkpoints.fetch_add(1, Ordering::Relaxed);
        st.checkpoint_micros.fetch_add(us, Ordering::Relaxed);
        st.max_checkpoint_micros.fetch_max(us, Ordering::Relaxed);
        self.redo_checkpointed();
        self.unsynced_published.clear();
        if self.intent_dirty {
            b.intent_clear().map_err(|e| Error::io("intent clear", e))?;
            self.intent_dirty = false;
        }
        self.dirty_since_checkpoint = false;
        Ok(())
    }

    fn maybe_evict(&mut self) {
        let Some(cap) = self.shared.capacity else {
            return;
        };
        let high = cap / 100 * u64::from(self.shared.cfg.high_watermark_pct);
        if self.counters.bytes > high {
            let low = cap / 100 * u64::from(self.shared.cfg.low_watermark_pct);
            self.run_batch(vec![Cmd {
                op: Op::Evict { target_bytes: low },
                reply: None,
            }]);
        }
    }

    fn run_batch(&mut self, cmds: Vec<Cmd>) {
        let n = cmds.len();
        let mut fx = Effects::default();
        let mut results: Vec<Result<Outcome>> = Vec::with_capacity(n);
        let mut counters = self.counters;
        let durable = self.durable_each_batch();
        let started = Instant::now();
        let res = self.try_batch(&cmds, &mut fx, &mut results, &mut counters, durable);
        if let Ok(BatchKind::Synced) = res {
            if self.redo {
                self.redo_checkpointed();
            }
        }
        self.shared.stats.commit_micros.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let b = self.shared.backend.clone();
        // The batch is committed (visible to readers) or abandoned; either way no reply has
        // been sent yet. Drop what the read cache holds of the rows it changed (refreshes
        // first: a row refreshed and then rewritten in the same batch must go).
        self.sync_read_cache(&mut fx);
        match res {
            Ok(kind) => {
                self.counters = counters;
                self.apply_packs(&fx);
                if !fx.pack_new.is_empty() {
                    self.publish_log_stats();
                }
                self.dirty_since_checkpoint = kind != BatchKind::Synced;
                if kind != BatchKind::Synced {
                    if let Some(w) = &self.writeback {
                        let _ = w.try_send(());
                    }
                }
                for id in &fx.dead_files {
                    let _ = b.remove_blob(*id);
                }
                for id in &fx.quarantine_files {
                    let _ = b.quarantine_blob(*id);
                }
                for id in &fx.discard_temps {
                    let _ = b.remove_temp(*id);
                }
                if durable && self.intent_dirty && b.intent_clear().is_ok() {
                    self.intent_dirty = false;
                }
                if !durable {
                    self.unsynced_published.extend_from_slice(&fx.new_files);
                }
                let s = &self.shared;
                {
                    let mut sp = s.space.lock().unwrap_or_else(|e| e.into_inner());
                    sp.used = counters.bytes;
                    for c in &cmds {
                        if let Op::Put(p) = &c.op {
                            let r = p.reservation.swap(0, Ordering::SeqCst);
                            sp.reserved = sp.reserved.saturating_sub(r);
                        }
                    }
                }
                s.objects.store(counters.objects, Ordering::Relaxed);
                s.ghosts.store(counters.ghosts, Ordering::Relaxed);
                s.seq.store(counters.seq, Ordering::Relaxed);
                let st = &s.stats;
                st.evictions
                    .fetch_add(fx.evicted_objects, Ordering::Relaxed);
                st.evicted_bytes
                    .fetch_add(fx.evicted_bytes, Ordering::Relaxed);
                st.corrupt.fetch_add(fx.corrupt, Ordering::Relaxed);
                st.record_batch(n as u64);
                for (c, r) in cmds.into_iter().zip(results) {
                    if let Some(reply) = c.reply {
                        let _ = reply.send(r);
                    }
                }
            }
            Err(e) => {
                for id in &fx.published {
                    let _ = b.remove_blob(*id);
                }
                for id in fx.new_files.iter().chain(&fx.discard_temps) {
                    let _ = b.remove_temp(*id);
                }
                for c in cmds {
                    if let Op::Put(p) = &c.op {
                        if let Staged::File(id) = p.staged {
                            let _ = b.remove_temp(id);
                        }
                    }
                    if let Some(reply) = c.reply {
                        let _ = reply.send(Err(e.duplicate()));
                    }
                }
            }
        }
    }

    fn try_batch(
        &mut self,
        cmds: &[Cmd],
        fx: &mut Effects,
        results: &mut Vec<Result<Outcome>>,
        c: &mut Counters,
        durable: bool,
    ) -> Result<BatchKind> {
        let mut txn = self.shared.db.begin_write().map_err(m("begin"))?;
        // In redo mode the value log is the durability point, so redb does not sync (except
        // for batches that must be checkpoints); otherwise a durable batch is an `Immediate`
        // redb commit.
        if durable && !self.redo {
            txn.set_quick_repair(self.shared.cfg.fast_crash_recovery);
        } else {
            txn.set_durability(redb::Durability::None)
                .map_err(m("set durability"))?;
        }
        if self.redo {
            if self.log_end >= self.shared.cfg.log_segment_bytes.max(64 << 10) {
                self.log_seg += 1;
                self.log_end = 0;
            }
            fx.log = Some(RecordBuilder::new());
            fx.log_at = (self.log_seg, self.log_end);
        }
        let (kind, record) = {
            let mut t = Tables::open(&txn)?;
            for cmd in cmds {
                match self.apply(&mut t, &cmd.op, fx, c) {
                    Ok(o) => results.push(Ok(o)),
                    Err(e @ Error::MissingReference { .. }) => results.push(Err(e)),
                    Err(e) => return Err(e),
                }
            }
            t.flush_summary()?;
            self.write_packs(&mut t, fx)?;
            fx.touched = std::mem::take(&mut t.touched);
            fx.refreshed = std::mem::take(&mut t.refreshed);
            let record = fx.log.take().filter(|r| !r.is_empty());
            let kind = if !self.redo {
                if durable {
                    BatchKind::Synced
                } else {
                    BatchKind::Unsynced
                }
            } else if fx.needs_checkpoint || self.redo_suspect {
                // Something the log does not record (eviction, GC, ...), or a log write
                // failed earlier: the database itself must become durable.
                BatchKind::Synced
            } else if record.is_some() {
                BatchKind::Logged
            } else {
                // Nothing that must survive a crash (ignored writes, access times).
                BatchKind::Unsynced
            };
            let record = record.map(|r| {
                c.redo_seq += 1;
                r.finish(c.redo_seq)
            });
            if self.redo && kind == BatchKind::Synced {
                // Durable in the database up to and including this batch's record.
                c.log_seg = fx.log_at.0;
                c.log_off = fx.log_at.1 + record.as_ref().map_or(0, |r| r.len() as u64);
            }
            t.save_counters(c)?;
            (kind, record)
        };
        if self.redo && kind == BatchKind::Synced {
            txn.set_quick_repair(self.shared.cfg.fast_crash_recovery);
            txn.set_durability(redb::Durability::Immediate)
                .map_err(m("set durability"))?;
        }
        let b = &self.shared.backend;
        let sync = !matches!(self.shared.cfg.durability, Durability::None { .. });
        let mut intents: Vec<u64> = fx.new_files.clone();
        intents.extend_from_slice(&fx.dead_files);
        intents.extend_from_slice(&fx.quarantine_files);
        if !intents.is_empty() {
            self.intent_dirty = true;
            b.intent_append(&intents, sync && durable)
                .map_err(|e| Error::io("intent append", e))?;
        }
        for id in &fx.new_files {
            b.publish(*id).map_err(|e| Error::io("publish", e))?;
            fx.published.push(*id);
        }
        if durable && !fx.new_files.is_empty() {
            b.sync_published(&fx.new_files)
                .map_err(|e| Error::io("directory sync", e))?;
        }
        if let Some(record) = &record {
            let (seg, off) = fx.log_at;
            if let Err(e) = b.log_write(seg, off, record) {
                // Whatever part of the record landed stays unread: records continue in a new
                // segment, and until a checkpoint puts recovery's start there, batches commit
                // durably (so nothing acknowledged depends on the old segment's tail).
                self.redo_suspect = true;
                self.log_seg += 1;
                self.log_end = 0;
                return Err(Error::io("value log write", e));
            }
            self.log_end = off + record.len() as u64;
            self.segs.entry(seg).or_default().len = self.log_end;
            self.redo_bytes += record.len() as u64;
        }
        if let Err(e) = txn.commit() {
            if record.is_some() {
                // The record is in the log with a sequence number the next batch reuses:
                // make the next batch a checkpoint, which puts recovery's start after both.
                self.redo_suspect = true;
            }
            return Err(m("commit")(e));
        }
        Ok(kind)
    }

    fn apply(
        &self,
        t: &mut Tables<'_>,
        op: &Op,
        fx: &mut Effects,
        c: &mut Counters,
    ) -> Result<Outcome> {
        match op {
            Op::Put(p) => self.apply_put(t, p, fx, c),
            Op::Delete { id, version } => self.apply_delete(t, id, *version, c, fx),
            Op::DeleteNamespace { ns, version } => self.apply_delete_ns(t, ns, *version, c, fx),
            Op::Evict { target_bytes } => {
                fx.needs_checkpoint = true;
                self.flush_access(t)?;
                self.evict(t, *target_bytes, c, fx).map(Outcome::Count)
            }
            Op::FlushAccess => self.flush_access(t).map(|()| Outcome::Done),
            Op::Quarantine { id, blob } => {
                fx.needs_checkpoint = true;
                let key = id.encode();
                if let Some(meta) = t.get_meta(&key)? {
                    if meta.blob == *blob {
                        fx.corrupt += 1;
                        // No ghost: repair fetches a good copy from a peer.
                        self.remove_cascade(t, meta, c, fx, Fate::Drop, Fate::Drop)?;
                        if let BlobLoc::File(fid) = blob {
                            fx.dead_files.retain(|d| d != fid);
                            fx.quarantine_files.push(*fid);
                        }
                    }
                }
                Ok(Outcome::Done)
            }
            Op::GcTombstones { horizon } => {
                fx.needs_checkpoint = true;
                self.gc_tombstones(t, *horizon).map(Outcome::Count)
            }
            Op::GcGhosts { evicted_before_ms } => {
                fx.needs_checkpoint = true;
                self.gc_ghosts(t, *evicted_before_ms, c).map(Outcome::Count)
            }
            Op::Learn {
                id,
                version,
                digest,
                evicted_ms,
            } => {
                // Not in the redo log: forces a durable commit like eviction (a lost
                // `learn` is redone by the next repair pass anyway).
                fx.needs_checkpoint = true;
                self.apply_learn(t, id, (*version, *digest), *evicted_ms, c, fx)
                    .map(Outcome::Learned)
            }
            Op::TrimChanges { upto } => {
                fx.needs_checkpoint = true;
                let keys: Vec<u64> = t
                    .changes
                    .range(..=*upto)
                    .map_err(m("read changes"))?
                    .map(|r| r.map(|(k, _)| k.value()))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(m("read changes"))?;
                for k in &keys {
                    t.changes.remove(*k).map_err(m("trim changes"))?;
                }
                Ok(Outcome::Count(keys.len() as u64))
            }
            Op::Compact { seg } => self.compact(t, *seg, fx).map(Outcome::Count),
            Op::Checkpoint | Op::Shutdown => Ok(Outcome::Done),
        }
    }

    /// Brings the read cache in line with the object rows a batch changed.
    fn sync_read_cache(&self, fx: &mut Effects) {
        let s = &self.shared;
        if !s.read_cache.enabled() {
            return;
        }
        for meta in fx.refreshed.drain(..) {
            s.read_cache.refresh(&s.sharding, meta);
        }
        s.read_cache.invalidate_encoded(&s.sharding, &fx.touched);
        fx.touched.clear();
    }

    /// The database is durable up to now (recovery starts after everything logged).
    fn redo_checkpointed(&mut self) {
        self.redo_bytes = 0;
        self.redo_suspect = false;
    }

    /// The clock reading for a new object (the logged one during recovery).
    fn now_ms(&self) -> u64 {
        match self.forced.get() {
            Some((_, ms)) => ms,
            None => self.shared.cfg.clock.now_ms(),
        }
    }

    fn next_version(&self, given: Option<Version>, c: &mut Counters) -> Version {
        let forced = self.forced.get().map(|(v, _)| v);
        let v = forced
            .or(given)
            .unwrap_or_else(|| Version::new(self.shared.hlc.now(), self.shared.cfg.node));
        c.max_hlc = c.max_hlc.max(v.hlc.0);
        v
    }

    fn log_change(
        &self,
        t: &mut Tables<'_>,
        c: &mut Counters,
        rec: &ReplicatedRecord,
    ) -> Result<u64> {
        c.seq += 1;
        t.changes
            .insert(c.seq, rec.encode().as_slice())
            .map_err(m("write change"))?;
        Ok(c.seq)
    }

    fn log_redo(&self, fx: &mut Effects, rec: ReplicatedRecord, local: bool) {
        if let Some(log) = fx.log.as_mut() {
            log.push(&RedoOp {
                rec,
                local,
                relocate: false,
                now_ms: 0,
                staged: None,
            });
        }
    }

    fn apply_put(
        &self,
        t: &mut Tables<'_>,
        p: &PendingPut,
        fx: &mut Effects,
        c: &mut Counters,
    ) -> Result<Outcome> {
        let key = p.id.encode();
        let discard = |fx: &mut Effects| {
            if let Staged::File(id) = p.staged {
                fx.discard_temps.push(id);
            }
        };
        let ns_prefix = p.id.namespace_id().encode_prefix();
        let ns_tomb = t.ns_tomb(&ns_prefix)?;
        let Current {
            obj: existing_obj,
            entry: existing,
            ghost,
        } = t.current(&key)?;
        if let Some(v) = p.version {
            let incoming = Entry {
                version: v,
                payload: Payload::Present(p.digest),
            };
            if shadowed_by_namespace(v, ns_tomb) || existing.is_some_and(|e| !winner(&e, &incoming))
            {
                discard(fx);
                return Ok(Outcome::Ignored);
            }
        }
        for r in &p.refs {
            let rid = r.resolve(&p.id.account);
            if rid == p.id
                || t.objects
                    .get(rid.encode().as_slice())
                    .map_err(m("read object"))?
                    .is_none()
            {
                discard(fx);
                return Err(Error::MissingReference {
                    missing: rid.to_string(),
                });
            }
        }
        let version = self.next_version(p.version, c);
        let incoming = Entry {
            version,
            payload: Payload::Present(p.digest),
        };
        if shadowed_by_namespace(version, ns_tomb) {
            // A local write can only be shadowed if the clock was far behind a tombstone.
            discard(fx);
            return Ok(Outcome::Ignored);
        }
        if let Some(old) = existing_obj {
            self.unlink(t, &old, c, fx)?;
        } else if ghost {
            t.clear_ghost(&key, c)?;
        } else if existing.is_some() {
            t.tombs
                .remove(key.as_slice())
                .map_err(m("write tombstone"))?;
        }
        t.set_entry(&p.id, existing.as_ref(), Some(&incoming))?;
        let rec = ReplicatedRecord::Put {
            id: p.id.clone(),
            version,
            content_type: p.content_type.clone(),
            len: p.len,
            digest: p.digest,
            refs: p.refs.clone(),
        };
        let now = self.now_ms();
        // The batch's record (redo mode) gets the resolved put; a small body travels in it
        // and stays there (see `redo.rs`).
        let logged = |fx: &mut Effects, staged: RedoStaged| {
            fx.log.as_mut().and_then(|log| {
                log.push(&RedoOp {
                    rec: rec.clone(),
                    local: p.version.is_none(),
                    relocate: false,
                    now_ms: now,
                    staged: Some(staged),
                })
            })
        };
        let blob_id = match &p.staged {
            Staged::Inline(bytes) if fx.log.is_some() => {
                let at = logged(fx, RedoStaged::Inline(bytes.clone())).unwrap_or(0);
                let (seg, base) = fx.log_at;
                pack_move(&mut fx.pack_delta, None, Some(seg), p.len);
                BlobLoc::Packed {
                    seg,
                    off: base + at,
                }
            }
            Staged::Inline(bytes) => {
                let id = self.shared.next_blob.fetch_add(1, Ordering::Relaxed);
                t.inline
                    .insert(id, bytes.as_ref())
                    .map_err(m("write inline"))?;
                BlobLoc::Inline(id)
            }
            Staged::Packed { seg, off } => {
                pack_move(&mut fx.pack_delta, None, Some(*seg), p.len);
                BlobLoc::Packed {
                    seg: *seg,
                    off: *off,
                }
            }
            Staged::File(id) => {
                t.owners
                    .insert(*id, key.as_slice())
                    .map_err(m("write blob owner"))?;
                fx.new_files.push(*id);
                logged(fx, RedoStaged::File(*id));
                BlobLoc::File(*id)
            }
        };
        let seq = self.log_change(t, c, &rec)?;
        let meta = ObjectMeta {
            id: p.id.clone(),
            content_type: p.content_type.clone(),
            len: p.len,
            digest: p.digest,
            version,
            created_ms: now,
            last_access_ms: now,
            refs: p.refs.clone(),
            seq,
            blob: blob_id,
        };
        t.put_object(&key, &meta)?;
        t.lru
            .insert(lru_key(now, &key).as_slice(), p.len)
            .map_err(m("write lru"))?;
        for r in &p.refs {
            let mut rk = ref_prefix(&r.resolve(&p.id.account).encode());
            rk.extend_from_slice(&key);
            t.refs
                .insert(rk.as_slice(), [].as_slice())
                .map_err(m("write refs"))?;
        }
        c.objects += 1;
        c.bytes += p.len;
        Ok(Outcome::Put(Box::new(meta)))
    }

    /// Removes an object's row, LRU entry, bytes and outgoing references (not its summary
    /// entry, tombstone, or referrers).
    fn unlink(
        &self,
        t: &mut Tables<'_>,
        meta: &ObjectMeta,
        c: &mut Counters,
        fx: &mut Effects,
    ) -> Result<()> {
        let key = meta.id.encode();
        t.remove_object(&key)?;
        t.lru
            .remove(lru_key(meta.last_access_ms, &key).as_slice())
            .map_err(m("remove lru"))?;
        match meta.blob {
            BlobLoc::Inline(id) => {
                t.inline.remove(id).map_err(m("remove inline"))?;
            }
            BlobLoc::File(id) => {
                t.owners.remove(id).map_err(m("remove blob owner"))?;
                fx.dead_files.push(id);
            }
            BlobLoc::Packed { seg, .. } => pack_move(&mut fx.pack_delta, Some(seg), None, meta.len),
        }
        for r in &meta.refs {
            let mut rk = ref_prefix(&r.resolve(&meta.id.account).encode());
            rk.extend_from_slice(&key);
            t.refs.remove(rk.as_slice()).map_err(m("remove refs"))?;
        }
        c.objects = c.objects.saturating_sub(1);
        c.bytes = c.bytes.saturating_sub(meta.len);
        Ok(())
    }

    /// Removes an object and, transitively, every object that references it (the reference
    /// rule). The first object's summary entry meets `first`, referrers' entries `rest`.
    /// Returns the bytes removed.
    fn remove_cascade(
        &self,
        t: &mut Tables<'_>,
        meta: ObjectMeta,
        c: &mut Counters,
        fx: &mut Effects,
        first: Fate,
        rest: Fate,
    ) -> Result<u64> {
        let mut work = vec![(meta, first)];
        let mut bytes = 0;
        let now = self.now_ms();
        while let Some((meta, fate)) = work.pop() {
            let key = meta.id.encode();
            let prefix = ref_prefix(&key);
            let referrers: Vec<Vec<u8>> = {
                let range = match prefix_end(&prefix) {
                    Some(end) => t.refs.range(prefix.as_slice()..end.as_slice()),
                    None => t.refs.range(prefix.as_slice()..),
                }
                .map_err(m("read refs"))?;
                let mut v = Vec::new();
                for r in range {
                    let (k, _) = r.map_err(m("read refs"))?;
                    v.push(k.value()[prefix.len()..].to_vec());
                }
                v
            };
            self.unlink(t, &meta, c, fx)?;
            let e = meta.entry();
            match fate {
                Fate::Keep => {}
                Fate::Drop => t.set_entry(&meta.id, Some(&e), None)?,
                Fate::Ghost => t.set_ghost(&meta.id, Some(&e), &e, now, c)?,
            }
            bytes += meta.len;
            for src in referrers {
                if let Some(sm) = t.get_meta(&src)? {
                    work.push((sm, rest));
                }
            }
        }
        Ok(bytes)
    }

    fn apply_delete(
        &self,
        t: &mut Tables<'_>,
        id: &ObjectId,
        given: Option<Version>,
        c: &mut Counters,
        fx: &mut Effects,
    ) -> Result<Outcome> {
        let key = id.encode();
        let ns_tomb = t.ns_tomb(&id.namespace_id().encode_prefix())?;
        let Current {
            obj: existing_obj,
            entry: existing,
            ghost,
        } = t.current(&key)?;
        if let Some(v) = given {
            let incoming = Entry {
                version: v,
                payload: Payload::Deleted,
            };
            if shadowed_by_namespace(v, ns_tomb) || existing.is_some_and(|e| !winner(&e, &incoming))
            {
                return Ok(Outcome::Ignored);
            }
        }
        let version = self.next_version(given, c);
        let tomb = Entry {
            version,
            payload: Payload::Deleted,
        };
        let existed = existing_obj.is_some();
        if let Some(meta) = existing_obj {
            self.remove_cascade(t, meta, c, fx, Fate::Keep, Fate::Drop)?;
        } else if ghost {
            t.clear_ghost(&key, c)?;
        }
        t.set_entry(id, existing.as_ref(), Some(&tomb))?;
        t.tombs
            .insert(key.as_slice(), encode_entry(&tomb).as_slice())
            .map_err(m("write tombstone"))?;
        let rec = ReplicatedRecord::Delete {
            id: id.clone(),
            version,
        };
        self.log_change(t, c, &rec)?;
        self.log_redo(fx, rec, given.is_none());
        Ok(Outcome::Deleted(existed))
    }

    fn apply_delete_ns(
        &self,
        t: &mut Tables<'_>,
        ns: &NamespaceId,
        given: Option<Version>,
        c: &mut Counters,
        fx: &mut Effects,
    ) -> Result<Outcome> {
        let prefix = ns.encode_prefix();
        let current = t.ns_tomb(&prefix)?;
        if let (Some(v), Some(cur)) = (given, current) {
            if cur >= v {
                return Ok(Outcome::Ignored);
            }
        }
        let version = self.next_version(given, c);
        let tomb = Entry {
            version,
            payload: Payload::Deleted,
        };
        t.ns_tomb_cache.clear();
        t.ns_tombs
            .insert(prefix.as_slice(), encode_entry(&tomb).as_slice())
            .map_err(m("write namespace tombstone"))?;
        let end = prefix_end(&prefix);
        let mut removed = 0u64;
        // Objects older than the tombstone.
        let keys: Vec<Vec<u8>> = collect_keys(&t.objects, &prefix, end.as_deref())?;
        for k in keys {
            if let Some(meta) = t.get_meta(&k)? {
                if meta.version < version {
                    self.remove_cascade(t, meta, c, fx, Fate::Drop, Fate::Drop)?;
                    removed += 1;
                }
            }
        }
        // Ghosts older than it go too.
        let keys: Vec<Vec<u8>> = collect_keys(&t.ghosts, &prefix, end.as_deref())?;
        for k in keys {
            if let Some(e) = t.get_ghost(&k)? {
                if e.version < version {
                    t.clear_ghost(&k, c)?;
                    t.set_entry(&ObjectId::decode(&k)?, Some(&e), None)?;
                }
            }
        }
        // Key tombstones older than it are subsumed.
        let keys: Vec<Vec<u8>> = collect_keys(&t.tombs, &prefix, end.as_deref())?;
        for k in keys {
            if let Some(e) = t.get_tomb(&k)? {
                if e.version < version {
                    t.tombs
                        .remove(k.as_slice())
                        .map_err(m("remove tombstone"))?;
                    t.set_entry(&ObjectId::decode(&k)?, Some(&e), None)?;
                }
            }
        }
        let rec = ReplicatedRecord::DeleteNamespace {
            namespace: ns.clone(),
            version,
        };
        self.log_change(t, c, &rec)?;
        self.log_redo(fx, rec, given.is_none());
        Ok(Outcome::Count(removed))
    }

    fn flush_access(&self, t: &mut Tables<'_>) -> Result<()> {
        for (key, ms) in self.shared.access.take() {
            if let Some(mut meta) = t.get_meta(&key)? {
                if ms > meta.last_access_ms {
                    t.lru
                        .remove(lru_key(meta.last_access_ms, &key).as_slice())
                        .map_err(m("remove lru"))?;
                    t.lru
                        .insert(lru_key(ms, &key).as_slice(), meta.len)
                        .map_err(m("write lru"))?;
                    meta.last_access_ms = ms;
                    t.refresh_object(&key, meta)?;
                }
            }
        }
        Ok(())
    }

    fn evict(
        &self,
        t: &mut Tables<'_>,
        target: u64,
        c: &mut Counters,
        fx: &mut Effects,
    ) -> Result<u64> {
        let mut evicted = 0;
        // `target == 0` empties the store, including zero-length objects.
        let over = |c: &Counters| c.bytes > target || (target == 0 && c.objects > 0);
        while over(c) {
            let candidates: Vec<Vec<u8>> = {
                let mut v = Vec::new();
                for r in t.lru.iter().map_err(m("read lru"))?.take(64) {
                    let (k, _) = r.map_err(m("read lru"))?;
                    v.push(k.value().to_vec());
                }
                v
            };
            if candidates.is_empty() {
                break;
            }
            for lk in candidates {
                if !over(c) {
                    break;
                }
                let key = lk.get(8..).unwrap_or_default();
                match t.get_meta(key)? {
                    Some(meta) => {
                        let before = c.objects;
                        let fate = if self.shared.cfg.ghosts {
                            Fate::Ghost
                        } else {
                            Fate::Drop
                        };
                        let bytes = self.remove_cascade(t, meta, c, fx, fate, fate)?;
                        fx.evicted_objects += before - c.objects;
                        fx.evicted_bytes += bytes;
                        evicted += before - c.objects;
                    }
                    None => {
                        t.lru.remove(lk.as_slice()).map_err(m("remove lru"))?;
                    }
                }
            }
        }
        Ok(evicted)
    }

    fn gc_ghosts(&self, t: &mut Tables<'_>, before_ms: u64, c: &mut Counters) -> Result<u64> {
        let all: Vec<(Vec<u8>, Entry, u64)> = {
            let mut v = Vec::new();
            for r in t.ghosts.iter().map_err(m("read ghosts"))? {
                let (k, val) = r.map_err(m("read ghosts"))?;
                let (e, ms) = decode_ghost(val.value())?;
                v.push((k.value().to_vec(), e, ms));
            }
            v
        };
        let mut n = 0;
        for (k, e, ms) in all {
            if ms < before_ms {
                t.clear_ghost(&k, c)?;
                t.set_entry(&ObjectId::decode(&k)?, Some(&e), None)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Records that a peer has `(version, digest)` for `id` without transferring the bytes.
    fn apply_learn(
        &self,
        t: &mut Tables<'_>,
        id: &ObjectId,
        (version, digest): (Version, Digest),
        evicted_ms: Option<u64>,
        c: &mut Counters,
        fx: &mut Effects,
    ) -> Result<Learned> {
        let key = id.encode();
        let ns_tomb = t.ns_tomb(&id.namespace_id().encode_prefix())?;
        let cur = t.current(&key)?;
        let incoming = Entry {
            version,
            payload: Payload::Present(digest),
        };
        if shadowed_by_namespace(version, ns_tomb)
            || cur.entry.is_some_and(|e| !winner(&e, &incoming))
        {
            return Ok(Learned::Ignored);
        }
        c.max_hlc = c.max_hlc.max(version.hlc.0);
        match cur.obj {
            Some(mut meta) if meta.digest == digest => {
                let old = meta.entry();
                meta.version = version;
                t.put_object(&key, &meta)?;
                t.set_entry(id, Some(&old), Some(&incoming))?;
                return Ok(Learned::Bumped);
            }
            Some(meta) => {
                // Referrers lose their target here: they become ghosts like evicted ones.
                self.remove_cascade(t, meta, c, fx, Fate::Keep, Fate::Ghost)?;
            }
            None if cur.ghost => t.clear_ghost(&key, c)?,
            None if cur.entry.is_some() => {
                t.tombs
                    .remove(key.as_slice())
                    .map_err(m("write tombstone"))?;
            }
            None => {}
        }
        // A learned ghost keeps the peer's eviction time (never later than now), so that
        // ghost GC drops it when the peer's copy goes too and the two cannot keep
        // re-teaching each other a ghost forever.
        let now = self.now_ms();
        let at = evicted_ms.map_or(now, |ms| ms.min(now));
        t.set_ghost(id, cur.entry.as_ref(), &incoming, at, c)?;
        Ok(Learned::Ghost)
    }

    fn gc_tombstones(&self, t: &mut Tables<'_>, horizon: Hlc) -> Result<u64> {
        let mut n = 0;
        let all: Vec<(Vec<u8>, Entry)> = {
            let mut v = Vec::new();
            for r in t.tombs.iter().map_err(m("read tombstones"))? {
                let (k, val) = r.map_err(m("read tombstones"))?;
                v.push((k.value().to_vec(), decode_entry(val.value())?));
            }
            v
        };
        for (k, e) in all {
            if e.version.hlc < horizon {
                t.tombs
                    .remove(k.as_slice())
                    .map_err(m("remove tombstone"))?;
                t.set_entry(&ObjectId::decode(&k)?, Some(&e), None)?;
                n += 1;
            }
        }
        let all: Vec<(Vec<u8>, Entry)> = {
            let mut v = Vec::new();
            for r in t.ns_tombs.iter().map_err(m("read tombstones"))? {
                let (k, val) = r.map_err(m("read tombstones"))?;
                v.push((k.value().to_vec(), decode_entry(val.value())?));
            }
            v
        };
        t.ns_tomb_cache.clear();
        for (k, e) in all {
            if e.version.hlc < horizon {
                t.ns_tombs
                    .remove(k.as_slice())
                    .map_err(m("remove tombstone"))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

fn collect_keys(
    table: &Table<'_, &'static [u8], &'static [u8]>,
    prefix: &[u8],
    end: Option<&[u8]>,
) -> Result<Vec<Vec<u8>>> {
    let range = match end {
        Some(end) => table.range(prefix..end),
        None => table.range(prefix..),
    }
    .map_err(m("range"))?;
    let mut v = Vec::new();
    for r in range {
        let (k, _) = r.map_err(m("range"))?;
        v.push(k.value().to_vec());
    }
    Ok(v)
}
