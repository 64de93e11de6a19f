//! The per-peer outbox: a durable cursor into the store's change feed, bounded in
//! messages and bytes.
//!
//! The change feed is the queue (it is already durable and ordered), so the outbox
//! of a peer is just the sequence number of the last change the peer acknowledged,
//! persisted in a small file. Its depth is `last_seq - cursor`. When that backlog
//! exceeds the configured count or bytes, [`check_backlog`] reports an overflow: the
//! caller skips the cursor to the head and marks the peer *needs repair*, so a dead
//! peer costs a fixed amount of memory and disk, never a growing queue.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use kura_store::{ReplicatedRecord, Store};

use crate::error::{Error, Result};

/// Bounds of one peer's backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Most pending change-feed entries.
    pub max_messages: u64,
    /// Most pending object bytes.
    pub max_bytes: u64,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        Self {
            max_messages: 10_000,
            max_bytes: 1 << 30,
        }
    }
}

/// The state of a backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backlog {
    /// Within bounds: `messages` pending.
    Within {
        /// Pending entries.
        messages: u64,
    },
    /// Over a bound: drop it and repair instead.
    Overflow {
        /// Pending entries.
        messages: u64,
        /// Pending object bytes (counted up to the message bound).
        bytes: u64,
    },
}

/// Measures the backlog after `cursor`. Bytes are summed only when the message
/// count is above `scan_above` (cheap in the common, nearly empty case) and over at
/// most `limits.max_messages` entries.
pub fn check_backlog(
    store: &Store,
    cursor: u64,
    limits: OutboxLimits,
    scan_above: u64,
) -> Result<Backlog> {
    let head = store.stats().last_seq;
    let messages = head.saturating_sub(cursor);
    if messages > limits.max_messages {
        return Ok(Backlog::Overflow { messages, bytes: 0 });
    }
    if messages > scan_above {
        let mut bytes = 0u64;
        let mut after = cursor;
        loop {
            let batch = store.changes_since(after, 1024)?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            for c in &batch {
                if let ReplicatedRecord::Put { len, .. } = &c.record {
                    bytes = bytes.saturating_add(*len);
                }
            }
            if bytes > limits.max_bytes {
                return Ok(Backlog::Overflow { messages, bytes });
            }
        }
    }
    Ok(Backlog::Within { messages })
}

/// A cursor persisted in a file (written atomically: temp file, fsync, rename).
#[derive(Debug, Clone)]
pub struct CursorFile {
    path: PathBuf,
}

impl CursorFile {
    /// The cursor of peer `peer` under `dir` (created if missing).
    pub fn new(dir: &Path, peer: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let name: String = peer
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(Self {
            path: dir.join(format!("{name}.cursor")),
        })
    }

    /// The stored cursor, if any (an unreadable or corrupt file counts as none:
    /// the peer is then repaired, which is always safe).
    pub fn load(&self) -> Option<u64> {
        std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Stores `seq`.
    pub fn store(&self, seq: u64) -> Result<()> {
        let tmp = self.path.with_extension("cursor.tmp");
        let ctx = |e| Error::io(format!("writing {}", self.path.display()), e);
        let mut f = std::fs::File::create(&tmp).map_err(ctx)?;
        f.write_all(seq.to_string().as_bytes()).map_err(ctx)?;
        f.sync_all().map_err(ctx)?;
        std::fs::rename(&tmp, &self.path).map_err(ctx)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_store::{MemBackend, ObjectId};

    #[tokio::test]
    async fn backlog_overflows_on_count_and_bytes() {
        let store = Store::open(MemBackend::default(), kura_store::Config::default())
            .await
            .unwrap();
        for i in 0..20 {
            store
                .put_bytes(
                    ObjectId::parse("a", "n", &format!("k{i}")).unwrap(),
                    vec![0u8; 1000],
                )
                .await
                .unwrap();
        }
        let l = OutboxLimits {
            max_messages: 100,
            max_bytes: 1_000_000,
        };
        assert_eq!(
            check_backlog(&store, 0, l, 0).unwrap(),
            Backlog::Within { messages: 20 }
        );
        let l = OutboxLimits {
            max_messages: 10,
            max_bytes: 1_000_000,
        };
        assert!(matches!(
            check_backlog(&store, 0, l, 0).unwrap(),
            Backlog::Overflow { messages: 20, .. }
        ));
        let l = OutboxLimits {
            max_messages: 100,
            max_bytes: 5_000,
        };
        assert!(matches!(
            check_backlog(&store, 0, l, 0).unwrap(),
            Backlog::Overflow { .. }
        ));
        assert_eq!(
            check_backlog(&store, 15, l, 0).unwrap(),
            Backlog::Within { messages: 5 }
        );
    }

    #[test]
    fn cursor_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let c = CursorFile::new(dir.path(), "127.0.0.1:7443").unwrap();
        assert_eq!(c.load(), None);
        c.store(42).unwrap();
        assert_eq!(
            CursorFile::new(dir.path(), "127.0.0.1:7443")
                .unwrap()
                .load(),
            Some(42)
        );
    }
}
