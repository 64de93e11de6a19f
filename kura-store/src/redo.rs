//! The redo log: the durability point of [`crate::Durability::Always`] batches.
//!
//! A redb commit with `Durability::Immediate` rewrites and syncs every B-tree page the batch
//! touched (eleven tables per put, at random offsets), which costs several milliseconds per
//! batch. With a redo log, a batch is instead made durable by one sequential append of its
//! *resolved* operations (versions and timestamps already assigned, small bodies inline)
//! followed by one `fdatasync`; the redb transaction then commits without syncing. A
//! checkpoint (a redb `Immediate` commit, every few seconds or megabytes, and before any
//! operation that is not logged such as eviction) makes the database durable on its own and
//! empties the log.
//!
//! Recovery replays, in order, every logged batch whose sequence number is greater than the
//! `redo_seq` counter stored in the database (each batch writes its own number in the same
//! transaction), so a batch is applied exactly once whether the crash hit before or after the
//! checkpoint that would have made it redundant. Replaying is deterministic because the
//! operations carry everything the original application decided (version, clock reading,
//! staged body).
//!
//! Frame: `magic u32 | payload length u32 | CRC-32 of payload u32 | payload` (little-endian
//! header). Decoding stops at the first incomplete or corrupt frame: a torn tail is a batch
//! whose `fdatasync` never returned, which therefore was never acknowledged. The file
//! backend writes records from offset 0 again after each checkpoint, over older records
//! (so `fdatasync` has no size change to journal); whatever old records still follow the
//! new ones carry sequence numbers the database already has and are skipped.

use bytes::Bytes;

use crate::codec::{Reader, Writer};
use crate::error::Error;
use crate::meta::ReplicatedRecord;

const MAGIC: u32 = 0x4b52_4c31;
const HEADER: usize = 12;

/// Where a logged put's body lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RedoStaged {
    /// Small body stored inline in the database: the bytes travel in the log.
    Inline(Bytes),
    /// Published blob file (synced and renamed before the log record was written).
    File(u64),
}

/// One resolved operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RedoOp {
    /// The operation with the version the committer assigned.
    pub(crate) rec: ReplicatedRecord,
    /// A local write (no version given by the caller: the LWW check was not applied).
    pub(crate) local: bool,
    /// Clock reading (ms) the committer used for creation/access times.
    pub(crate) now_ms: u64,
    /// Body of a put.
    pub(crate) staged: Option<RedoStaged>,
}

/// The resolved operations of one committed batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RedoBatch {
    pub(crate) seq: u64,
    pub(crate) ops: Vec<RedoOp>,
}

impl RedoBatch {
    /// Encodes one framed record.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.seq).u64(self.ops.len() as u64);
        for op in &self.ops {
            w.u8(u8::from(op.local)).u64(op.now_ms);
            match &op.staged {
                None => {
                    w.u8(0);
                }
                Some(RedoStaged::Inline(b)) => {
                    w.u8(1).bytes(b);
                }
                Some(RedoStaged::File(id)) => {
                    w.u8(2).u64(*id);
                }
            }
            w.bytes(&op.rec.to_bytes());
        }
        let payload = w.0;
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    fn decode_payload(buf: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf, "redo record");
        let seq = r.u64()?;
        let n = r.u64()?;
        let mut ops = Vec::new();
        for _ in 0..n {
            let local = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(bad("flag")),
            };
            let now_ms = r.u64()?;
            let staged = match r.u8()? {
                0 => None,
                1 => Some(RedoStaged::Inline(Bytes::copy_from_slice(r.bytes()?))),
                2 => Some(RedoStaged::File(r.u64()?)),
                _ => return Err(bad("body kind")),
            };
            let rec = ReplicatedRecord::from_bytes(r.bytes()?)?;
            ops.push(RedoOp {
                rec,
                local,
                now_ms,
                staged,
            });
        }
        r.finish()?;
        Ok(Self { seq, ops })
    }
}

fn bad(what: &str) -> Error {
    Error::Corrupt {
        object: None,
        reason: format!("malformed redo record: bad {what}"),
    }
}

/// Decodes every complete, intact record of a log, in order, stopping at the first torn or
/// corrupt frame. Never panics.
pub(crate) fn decode_log(mut buf: &[u8]) -> Vec<RedoBatch> {
    let mut out = Vec::new();
    while buf.len() >= HEADER {
        let word = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        if word(0) != MAGIC {
            break;
        }
        let len = word(4) as usize;
        let crc = word(8);
        let Some(payload) = buf.get(HEADER..HEADER + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match RedoBatch::decode_payload(payload) {
            Ok(b) => out.push(b),
            Err(_) => break,
        }
        buf = &buf[HEADER + len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::{Hlc, Version};
    use crate::types::{Digest, NodeId, ObjectId};
    use proptest::prelude::*;

    fn batch(seq: u64, body: Vec<u8>) -> RedoBatch {
        let id = ObjectId::parse("acme", "cas", "k").unwrap();
        RedoBatch {
            seq,
            ops: vec![
                RedoOp {
                    rec: ReplicatedRecord::Put {
                        id: id.clone(),
                        version: Version::new(Hlc(seq << 16), NodeId(7)),
                        content_type: "application/octet-stream".into(),
                        len: body.len() as u64,
                        digest: Digest::of(&body),
                        refs: vec![],
                    },
                    local: true,
                    now_ms: 1234,
                    staged: Some(RedoStaged::Inline(Bytes::from(body))),
                },
                RedoOp {
                    rec: ReplicatedRecord::Delete {
                        id,
                        version: Version::new(Hlc((seq << 16) + 1), NodeId(7)),
                    },
                    local: false,
                    now_ms: 1235,
                    staged: None,
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let a = batch(1, b"hello".to_vec());
        let b = batch(2, vec![0u8; 5000]);
        let mut log = a.encode();
        log.extend_from_slice(&b.encode());
        assert_eq!(decode_log(&log), vec![a.clone(), b.clone()]);
        // Every truncation yields a prefix of the batches, never garbage.
        for cut in 0..log.len() {
            let got = decode_log(&log[..cut]);
            assert!(got.len() <= 1, "cut {cut}");
            if let Some(first) = got.first() {
                assert_eq!(first, &a);
            }
        }
        // A flipped byte in the second record drops it (and only it).
        let mut bad = log.clone();
        let n = bad.len();
        bad[n - 3] ^= 0x40;
        assert_eq!(decode_log(&bad), vec![a]);
    }

    proptest! {
        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_log(&bytes);
        }

        #[test]
        fn round_trips(seqs in proptest::collection::vec(0u64..1_000_000, 0..6), len in 0usize..3000) {
            let batches: Vec<RedoBatch> = seqs.iter().map(|s| batch(*s, vec![(*s % 251) as u8; len])).collect();
            let mut log = Vec::new();
            for b in &batches {
                log.extend_from_slice(&b.encode());
            }
            prop_assert_eq!(decode_log(&log), batches);
        }
    }
}
