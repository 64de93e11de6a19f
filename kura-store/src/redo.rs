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
//! whose `fdatasync` never returned, which therefore was never acknowledged.
//!
//! Two formats share the frame. **Version 2** (`KRL2`, written since the value log) is a
//! *segmented log that keeps small bodies*: records are appended to numbered segments
//! ([`crate::Backend::log_write`]) that are not emptied at checkpoints, and an inline body's
//! bytes stay where the record put them: the object row points at them
//! (`BlobLoc::Packed`), so a small put writes its bytes once, in its batch's record, instead
//! of a second time into the database. Payload: `seq u64`, then operations up to the end
//! (see [`RecordBuilder`]). **Version 1** (`KRL1`, the single `redo.log` of earlier
//! releases) is still read once at open, so an upgraded store replays what it logged.

use bytes::Bytes;

use crate::codec::{Reader, Writer};
use crate::error::Error;
use crate::meta::ReplicatedRecord;

const MAGIC: u32 = 0x4b52_4c31;
const MAGIC_V2: u32 = 0x4b52_4c32;
/// Frame header length (magic, payload length, CRC).
const HEADER: usize = 12;
/// Operation flags (version 2): a replicated write, a local write, a relocated body.
const FLAG_REMOTE: u8 = 0;
const FLAG_LOCAL: u8 = 1;
const FLAG_MOVE: u8 = 2;

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
    /// Not a write: the body of the put in `rec` (same version and digest) was copied to
    /// this record by value-log compaction, and the object now points here.
    pub(crate) relocate: bool,
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
    /// Encodes one framed version-1 record (what earlier releases wrote; tests make legacy
    /// logs with it).
    #[cfg(test)]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer(vec![0; HEADER]);
        w.u64(self.seq).u64(self.ops.len() as u64);
        for op in &self.ops {
            write_op(&mut w, op);
        }
        seal(w.0, MAGIC)
    }

    /// Decodes the payload at `all[start..end]` (either version); `offsets` receives, per
    /// operation, where its inline body starts in `all`. Bodies are slices of `all`, not
    /// copies.
    fn decode_payload(
        all: &Bytes,
        (start, end): (usize, usize),
        v2: bool,
        offsets: &mut Vec<Option<u64>>,
    ) -> Result<Self, Error> {
        let mut r = Reader::new(&all[start..end], "redo record");
        let seq = r.u64()?;
        let n = if v2 { u64::MAX } else { r.u64()? };
        let mut ops = Vec::new();
        let mut i = 0;
        while i < n && !(v2 && r.is_empty()) {
            i += 1;
            let flag = r.u8()?;
            let (local, relocate) = match flag {
                FLAG_REMOTE => (false, false),
                FLAG_LOCAL => (true, false),
                FLAG_MOVE if v2 => (false, true),
                _ => return Err(bad("flag")),
            };
            let now_ms = r.u64()?;
            let mut at = None;
            let staged = match r.u8()? {
                0 => None,
                1 => {
                    let len = r.bytes()?.len();
                    let body = end - r.remaining() - len;
                    at = Some(body as u64);
                    Some(RedoStaged::Inline(all.slice(body..body + len)))
                }
                2 => Some(RedoStaged::File(r.u64()?)),
                _ => return Err(bad("body kind")),
            };
            let rec = ReplicatedRecord::from_bytes(r.bytes()?)?;
            if relocate && !matches!(staged, Some(RedoStaged::Inline(_))) {
                return Err(bad("relocation"));
            }
            offsets.push(at);
            ops.push(RedoOp {
                rec,
                local,
                relocate,
                now_ms,
                staged,
            });
        }
        r.finish()?;
        Ok(Self { seq, ops })
    }
}

/// Builds one version-2 record operation by operation, telling the caller where each inline
/// body will sit (so the object row can point there before the record is written).
pub(crate) struct RecordBuilder {
    buf: Vec<u8>,
    ops: usize,
}

impl RecordBuilder {
    pub(crate) fn new() -> Self {
        let mut buf = Vec::with_capacity(64 << 10);
        buf.resize(HEADER + 8, 0);
        Self { buf, ops: 0 }
    }

    /// Whether no operation was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// Adds an operation; for a put with an inline body, returns the offset of the body's
    /// first byte from the start of the frame.
    pub(crate) fn push(&mut self, op: &RedoOp) -> Option<u64> {
        self.ops += 1;
        let mut w = Writer(std::mem::take(&mut self.buf));
        let at = write_op(&mut w, op);
        self.buf = w.0;
        at
    }

    /// The framed record, numbered `seq`.
    pub(crate) fn finish(mut self, seq: u64) -> Vec<u8> {
        self.buf[HEADER..HEADER + 8].copy_from_slice(&seq.to_be_bytes());
        seal(self.buf, MAGIC_V2)
    }
}

/// Appends one operation (same layout in both versions; version 1 has no relocations) and
/// returns where its inline body starts in `w`, if it has one.
fn write_op(w: &mut Writer, op: &RedoOp) -> Option<u64> {
    let flag = match (op.relocate, op.local) {
        (true, _) => FLAG_MOVE,
        (false, true) => FLAG_LOCAL,
        (false, false) => FLAG_REMOTE,
    };
    w.u8(flag).u64(op.now_ms);
    let mut at = None;
    match &op.staged {
        None => {
            w.u8(0);
        }
        Some(RedoStaged::Inline(b)) => {
            w.u8(1);
            at = Some(w.0.len() as u64 + 4);
            w.bytes(b);
        }
        Some(RedoStaged::File(id)) => {
            w.u8(2).u64(*id);
        }
    }
    w.bytes(&op.rec.to_bytes());
    at
}

/// Fills in the frame header of `buf` (whose first [`HEADER`] bytes are reserved for it).
fn seal(mut buf: Vec<u8>, magic: u32) -> Vec<u8> {
    let len = u32::try_from(buf.len() - HEADER).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(&buf[HEADER..]);
    buf[0..4].copy_from_slice(&magic.to_le_bytes());
    buf[4..8].copy_from_slice(&len.to_le_bytes());
    buf[8..12].copy_from_slice(&crc.to_le_bytes());
    buf
}

fn bad(what: &str) -> Error {
    Error::Corrupt {
        object: None,
        reason: format!("malformed redo record: bad {what}"),
    }
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) batch: RedoBatch,
    /// Per operation: where its inline body starts in the decoded buffer.
    pub(crate) offsets: Vec<Option<u64>>,
}

/// Decodes every complete, intact record of a log (either version), in order, stopping at
/// the first torn or corrupt frame. Bodies are slices of `all`. Never panics.
pub(crate) fn decode_frames(all: &Bytes) -> Vec<Decoded> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(buf) = all.get(pos..).filter(|b| b.len() >= HEADER) {
        let word = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let v2 = match word(0) {
            MAGIC => false,
            MAGIC_V2 => true,
            _ => break,
        };
        let len = word(4) as usize;
        let crc = word(8);
        let Some(payload) = buf.get(HEADER..HEADER + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let range = (pos + HEADER, pos + HEADER + payload.len());
        let mut offsets = Vec::new();
        match RedoBatch::decode_payload(all, range, v2, &mut offsets) {
            Ok(batch) => out.push(Decoded { batch, offsets }),
            Err(_) => break,
        }
        pos = range.1;
    }
    out
}

/// [`decode_frames`] without the offsets.
pub(crate) fn decode_log(buf: &Bytes) -> Vec<RedoBatch> {
    decode_frames(buf).into_iter().map(|d| d.batch).collect()
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
                    relocate: false,
                    now_ms: 1234,
                    staged: Some(RedoStaged::Inline(Bytes::from(body))),
                },
                RedoOp {
                    rec: ReplicatedRecord::Delete {
                        id,
                        version: Version::new(Hlc((seq << 16) + 1), NodeId(7)),
                    },
                    local: false,
                    relocate: false,
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
        let log = Bytes::from(log);
        assert_eq!(decode_log(&log), vec![a.clone(), b.clone()]);
        // Every truncation yields a prefix of the batches, never garbage.
        for cut in 0..log.len() {
            let got = decode_log(&log.slice(..cut));
            assert!(got.len() <= 1, "cut {cut}");
            if let Some(first) = got.first() {
                assert_eq!(first, &a);
            }
        }
        // A flipped byte in the second record drops it (and only it).
        let mut bad = log.to_vec();
        let n = bad.len();
        bad[n - 3] ^= 0x40;
        assert_eq!(decode_log(&Bytes::from(bad)), vec![a]);
    }

    fn build(b: &RedoBatch) -> (Vec<u8>, Vec<Option<u64>>) {
        let mut r = RecordBuilder::new();
        let at: Vec<Option<u64>> = b.ops.iter().map(|op| r.push(op)).collect();
        (r.finish(b.seq), at)
    }

    #[test]
    fn v2_offsets_point_at_the_bodies() {
        let mut a = batch(1, b"hello".to_vec());
        a.ops[1].relocate = true;
        a.ops[1].staged = Some(RedoStaged::Inline(Bytes::from_static(b"moved body")));
        let b = batch(2, vec![7u8; 5000]);
        let (ra, at_a) = build(&a);
        let (rb, at_b) = build(&b);
        let mut log = ra.clone();
        log.extend_from_slice(&rb);
        let log = Bytes::from(log);
        let got = decode_frames(&log);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].batch, a);
        assert_eq!(got[1].batch, b);
        assert_eq!(got[0].offsets, at_a);
        let shifted: Vec<Option<u64>> = at_b
            .iter()
            .map(|o| o.map(|o| o + ra.len() as u64))
            .collect();
        assert_eq!(got[1].offsets, shifted);
        let o = at_a[0].unwrap() as usize;
        assert_eq!(&log[o..o + 5], b"hello");
        let o = at_a[1].unwrap() as usize;
        assert_eq!(&log[o..o + 10], b"moved body");
        // Bodies are slices of the decoded buffer, not copies.
        let Some(RedoStaged::Inline(body)) = &got[0].batch.ops[1].staged else {
            panic!("no body");
        };
        assert_eq!(body.as_ptr(), log[o..].as_ptr());
        // Versions 1 and 2 may follow each other; a torn v2 tail ends the log.
        // (Version 1 has no relocations.)
        let legacy = batch(3, b"old".to_vec());
        let mut mixed = legacy.encode();
        mixed.extend_from_slice(&rb[..rb.len() - 1]);
        let got = decode_frames(&Bytes::from(mixed));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].batch, legacy);
        // A relocation without an inline body is malformed.
        let mut bad = a.clone();
        bad.ops[1].staged = None;
        assert!(decode_frames(&Bytes::from(build(&bad).0)).is_empty());
    }

    proptest! {
        #[test]
        fn v2_round_trips_with_offsets(seqs in proptest::collection::vec(0u64..1_000_000, 0..6), len in 0usize..3000) {
            let mut log = Vec::new();
            let mut want = Vec::new();
            for s in &seqs {
                let b = batch(*s, vec![(*s % 251) as u8; len]);
                let (r, at) = build(&b);
                let base = log.len() as u64;
                log.extend_from_slice(&r);
                want.push(Decoded { batch: b, offsets: at.iter().map(|o| o.map(|o| o + base)).collect() });
            }
            let log = Bytes::from(log);
            let got = decode_frames(&log);
            for d in &got {
                for (op, at) in d.batch.ops.iter().zip(&d.offsets) {
                    if let (Some(RedoStaged::Inline(b)), Some(at)) = (&op.staged, at) {
                        prop_assert_eq!(&log[*at as usize..*at as usize + b.len()], &b[..]);
                    }
                }
            }
            prop_assert_eq!(got, want);
        }

        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_log(&Bytes::from(bytes));
        }

        #[test]
        fn round_trips(seqs in proptest::collection::vec(0u64..1_000_000, 0..6), len in 0usize..3000) {
            let batches: Vec<RedoBatch> = seqs.iter().map(|s| batch(*s, vec![(*s % 251) as u8; len])).collect();
            let mut log = Vec::new();
            for b in &batches {
                log.extend_from_slice(&b.encode());
            }
            prop_assert_eq!(decode_log(&Bytes::from(log)), batches);
        }
    }
}
