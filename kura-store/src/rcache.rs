//! The read cache of small verified objects and the sharded access-time map.
//!
//! Both are split into [`SHARDS`] shards chosen by one hash of the object id, each shard a
//! `Mutex` held for a few hundred nanoseconds, so readers on different cores rarely meet.
//!
//! The cache holds inline objects only (their bytes live in the metadata database), each
//! with its metadata and bytes whose SHA-256 was verified against that metadata before
//! they entered. Replacement is CLOCK (second chance): a hit sets the slot's reference bit,
//! the hand clears bits and evicts the first slot found without one. Each shard is bounded
//! by `read_cache_bytes / SHARDS` bytes of charge (body plus an estimate of the bookkeeping).
//!
//! Exactness: the committer removes (or, for access-time flushes, refreshes) the entry of
//! every object whose metadata row it changed, after the change is visible and before the
//! write is acknowledged, and bumps the shard's epoch. A reader takes the epoch before it
//! reads the database and fills only if the epoch is unchanged, so a fill can never put
//! back a row that an invalidation already went past.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::meta::ObjectMeta;
use crate::types::ObjectId;

/// Number of shards of the read cache and of the access-time map.
pub(crate) const SHARDS: usize = 16;

/// Above this many invalidations in one batch the whole cache is cleared instead.
const CLEAR_ABOVE: usize = 4096;

/// Bookkeeping charged per entry on top of its body and strings.
const ENTRY_OVERHEAD: usize =
    std::mem::size_of::<Slot>() + std::mem::size_of::<ObjectMeta>() + 2 * 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps each shard on its own cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// Chooses shards.
#[derive(Debug, Default)]
pub(crate) struct Sharding(RandomState);

impl Sharding {
    /// The shard of `id`.
    pub(crate) fn of(&self, id: &ObjectId) -> usize {
        (self.0.hash_one(id) >> 32) as usize % SHARDS
    }
}

/// A cache hit.
pub(crate) struct Hit {
    pub(crate) meta: Arc<ObjectMeta>,
    pub(crate) bytes: Bytes,
}

struct Slot {
    meta: Arc<ObjectMeta>,
    bytes: Bytes,
    charge: usize,
    referenced: bool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<ObjectId, usize>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    hand: usize,
    bytes: usize,
    epoch: u64,
    hits: u64,
    misses: u64,
}

impl Shard {
    fn remove_slot(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i).and_then(Option::take) {
            self.bytes -= s.charge;
            self.map.remove(&s.meta.id);
            self.free.push(i);
        }
    }

    /// Evicts one entry (second chance). Returns false when the shard is empty.
    fn evict_one(&mut self) -> bool {
        if self.map.is_empty() {
            return false;
        }
        // Two sweeps at most: the first clears every reference bit it passes.
        for _ in 0..2 * self.slots.len() + 1 {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let i = self.hand;
            self.hand += 1;
            match &mut self.slots[i] {
                Some(s) if s.referenced => s.referenced = false,
                Some(_) => {
                    self.remove_slot(i);
                    return true;
                }
                None => {}
            }
        }
        false
    }

    fn clear(&mut self) {
        self.map.clear();
        self.slots.clear();
        self.free.clear();
        self.hand = 0;
        self.bytes = 0;
        self.epoch += 1;
    }
}

/// Counters of [`ReadCache`] (summed over shards).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CacheStats {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) bytes: u64,
    pub(crate) objects: u64,
}

/// The read cache (see the module docs).
pub(crate) struct ReadCache {
    shards: Box<[Padded<Mutex<Shard>>]>,
    shard_cap: usize,
}

fn charge(meta: &ObjectMeta, bytes: &Bytes) -> usize {
    let id = &meta.id;
    bytes.len()
        + id.account.as_str().len()
        + id.namespace.as_str().len()
        + 2 * id.key.as_str().len()
        + meta.content_type.len()
        + meta.refs.len() * 64
        + ENTRY_OVERHEAD
}

impl ReadCache {
    /// A cache of at most `bytes` bytes (0: disabled).
    pub(crate) fn new(bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
            shard_cap: bytes / SHARDS,
        }
    }

    /// Whether the cache can hold anything.
    pub(crate) fn enabled(&self) -> bool {
        self.shard_cap > 0
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        lock(&self.shards[i % SHARDS].0)
    }

    /// Looks `id` up in shard `shard`; on a miss returns the shard's epoch, to be passed
    /// to [`ReadCache::fill`] after reading the database.
    pub(crate) fn get(&self, shard: usize, id: &ObjectId) -> Result<Hit, u64> {
        let mut g = self.shard(shard);
        let s = &mut *g;
        match s.map.get(id).and_then(|&i| s.slots[i].as_mut()) {
            Some(slot) => {
                slot.referenced = true;
                let hit = Hit {
                    meta: slot.meta.clone(),
                    bytes: slot.bytes.clone(),
                };
                s.hits += 1;
                Ok(hit)
            }
            None => {
                s.misses += 1;
                Err(s.epoch)
            }
        }
    }

    /// Inserts verified `bytes` of `meta` unless shard `shard` was invalidated since
    /// `epoch` was taken (or the entry is larger than a shard). Returns whether it did.
    pub(crate) fn fill(
        &self,
        shard: usize,
        epoch: u64,
        meta: Arc<ObjectMeta>,
        bytes: Bytes,
    ) -> bool {
        let charge = charge(&meta, &bytes);
        if charge > self.shard_cap {
            return false;
        }
        let mut s = self.shard(shard);
        if s.epoch != epoch {
            return false;
        }
        if let Some(&i) = s.map.get(&meta.id) {
            s.remove_slot(i);
        }
        while s.bytes + charge > self.shard_cap {
            if !s.evict_one() {
                return false;
            }
        }
        let slot = Slot {
            meta,
            bytes,
            charge,
            referenced: false,
        };
        let id = slot.meta.id.clone();
        let i = match s.free.pop() {
            Some(i) => {
                s.slots[i] = Some(slot);
                i
            }
            None => {
                s.slots.push(Some(slot));
                s.slots.len() - 1
            }
        };
        s.bytes += charge;
        s.map.insert(id, i);
        true
    }

    /// Removes `id` and fails fills of its shard that started before now.
    pub(crate) fn invalidate(&self, sharding: &Sharding, id: &ObjectId) {
        let mut s = self.shard(sharding.of(id));
        if let Some(&i) = s.map.get(id) {
            s.remove_slot(i);
        }
        s.epoch += 1;
    }

    /// Replaces the metadata of a cached `meta.id` by `meta` when only its access time
    /// changed (otherwise removes the entry), and fails fills that started before now.
    pub(crate) fn refresh(&self, sharding: &Sharding, meta: ObjectMeta) {
        let mut g = self.shard(sharding.of(&meta.id));
        let s = &mut *g;
        if let Some(&i) = s.map.get(&meta.id) {
            let same = s.slots[i].as_ref().is_some_and(|slot| {
                let old = &*slot.meta;
                old.blob == meta.blob
                    && old.version == meta.version
                    && old.digest == meta.digest
                    && old.len == meta.len
                    && old.seq == meta.seq
            });
            match s.slots[i].as_mut() {
                Some(slot) if same => slot.meta = Arc::new(meta),
                _ => s.remove_slot(i),
            }
        }
        s.epoch += 1;
    }

    /// Empties every shard.
    pub(crate) fn clear(&self) {
        for i in 0..SHARDS {
            self.shard(i).clear();
        }
    }

    /// Invalidates the objects whose encoded ids are `keys` (clearing everything when they
    /// are many or one does not decode).
    pub(crate) fn invalidate_encoded(&self, sharding: &Sharding, keys: &[Vec<u8>]) {
        if keys.is_empty() || !self.enabled() {
            return;
        }
        if keys.len() > CLEAR_ABOVE {
            return self.clear();
        }
        for k in keys {
            match ObjectId::decode(k) {
                Ok(id) => self.invalidate(sharding, &id),
                Err(_) => return self.clear(),
            }
        }
    }

    /// Counters summed over the shards.
    pub(crate) fn stats(&self) -> CacheStats {
        let mut st = CacheStats::default();
        for i in 0..SHARDS {
            let s = self.shard(i);
            st.hits += s.hits;
            st.misses += s.misses;
            st.bytes += s.bytes as u64;
            st.objects += s.map.len() as u64;
        }
        st
    }
}

/// Access times recorded by reads and not yet written to the LRU index, sharded like the
/// cache. A repeated access to the same object allocates nothing.
pub(crate) struct AccessMap {
    shards: Box<[Padded<Mutex<AccessShard>>]>,
}

/// Pending access times of one shard.
type AccessShard = HashMap<ObjectId, u64>;

impl Default for AccessMap {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
        }
    }
}

impl AccessMap {
    /// Records an access to `id` (in shard `shard`) at `ms`.
    pub(crate) fn record(&self, shard: usize, id: &ObjectId, ms: u64) {
        let mut m = lock(&self.shards[shard % SHARDS].0);
        match m.get_mut(id) {
            Some(t) => *t = ms,
            None => {
                m.insert(id.clone(), ms);
            }
        }
    }

    /// Number of objects with a pending access.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.0).len()).sum()
    }

    /// Takes every pending access, keyed by encoded id.
    pub(crate) fn take(&self) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let m = std::mem::take(&mut *lock(&s.0));
            out.extend(m.into_iter().map(|(id, ms)| (id.encode(), ms)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::{Hlc, Version};
    use crate::meta::BlobLoc;
    use crate::types::{Digest, NodeId};

    fn meta(key: &str, len: usize, blob: u64) -> Arc<ObjectMeta> {
        Arc::new(ObjectMeta {
            id: ObjectId::parse("a", "n", key).unwrap(),
            content_type: String::new(),
            len: len as u64,
            digest: Digest([0; 32]),
            version: Version::new(Hlc::new(1, 0), NodeId(1)),
            created_ms: 0,
            last_access_ms: 0,
            refs: Vec::new(),
            seq: blob,
            blob: BlobLoc::Inline(blob),
        })
    }

    #[test]
    fn bounded_in_bytes_and_clock_keeps_referenced_entries() {
        let sh = Sharding::default();
        let cache = ReadCache::new(SHARDS * 8 * 1024);
        let mut filled = 0;
        for k in 0..2000 {
            let m = meta(&format!("k{k}"), 1000, k);
            let s = sh.of(&m.id);
            let e = cache.get(s, &m.id).err().unwrap();
            if cache.fill(s, e, m, Bytes::from(vec![0u8; 1000])) {
                filled += 1;
            }
            assert!(cache.stats().bytes <= (SHARDS * 8 * 1024) as u64);
        }
        assert_eq!(filled, 2000);
        assert!(cache.stats().objects < 2000);
        // A referenced entry survives one more insertion into its shard.
        let hot = meta("hot", 1000, 9999);
        let s = sh.of(&hot.id);
        let e = cache.get(s, &hot.id).err().unwrap();
        assert!(cache.fill(s, e, hot.clone(), Bytes::from(vec![1u8; 1000])));
        assert!(cache.get(s, &hot.id).is_ok());
        for k in 0..100_000 {
            let m = meta(&format!("x{k}"), 1000, 10_000 + k);
            if sh.of(&m.id) == s {
                let e = cache.get(s, &m.id).err().unwrap();
                assert!(cache.fill(s, e, m, Bytes::from(vec![0u8; 1000])));
                break;
            }
        }
        assert!(cache.get(s, &hot.id).is_ok(), "second chance");
    }

    #[test]
    fn stale_fill_after_invalidation_is_refused() {
        let sh = Sharding::default();
        let cache = ReadCache::new(1 << 20);
        let m = meta("k", 10, 1);
        let s = sh.of(&m.id);
        let e = cache.get(s, &m.id).err().unwrap();
        cache.invalidate(&sh, &m.id);
        assert!(!cache.fill(s, e, m.clone(), Bytes::from_static(b"0123456789")));
        assert!(cache.get(s, &m.id).is_err());
        let e = cache.get(s, &m.id).err().unwrap();
        assert!(cache.fill(s, e, m.clone(), Bytes::from_static(b"0123456789")));
        assert!(cache.get(s, &m.id).is_ok());
        cache.invalidate_encoded(&sh, &[m.id.encode()]);
        assert!(cache.get(s, &m.id).is_err());
    }

    #[test]
    fn disabled_and_oversized() {
        let sh = Sharding::default();
        let off = ReadCache::new(0);
        assert!(!off.enabled());
        let m = meta("k", 10, 1);
        let s = sh.of(&m.id);
        assert!(!off.fill(s, 0, m, Bytes::from_static(b"0123456789")));
        let small = ReadCache::new(SHARDS * 512);
        let big = meta("big", 4096, 2);
        let s = sh.of(&big.id);
        assert!(!small.fill(s, 0, big, Bytes::from(vec![0u8; 4096])));
    }

    #[test]
    fn access_map_keeps_latest_and_drains() {
        let sh = Sharding::default();
        let a = AccessMap::default();
        let id = ObjectId::parse("a", "n", "k").unwrap();
        a.record(sh.of(&id), &id, 5);
        a.record(sh.of(&id), &id, 7);
        assert_eq!(a.len(), 1);
        assert_eq!(a.take(), vec![(id.encode(), 7)]);
        assert_eq!(a.len(), 0);
    }
}
