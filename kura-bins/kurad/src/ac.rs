//! The CAS digests an action-cache entry (a REAPI `ActionResult` message)
//! names, so the entry can reference them and never outlive them.
//!
//! A total protobuf wire-format walker over the fields that carry digests:
//! `output_files[].digest` (2 → 2), `output_directories[].tree_digest`
//! (3 → 3), `stdout_digest` (6) and `stderr_digest` (8). Every other field is
//! skipped by wire type. Malformed input is an error, never a panic.

/// A `build.bazel.remote.execution.v2.Digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Lowercase hex SHA-256.
    pub hash: String,
    /// Size in bytes.
    pub size: i64,
}

/// Why an `ActionResult` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ActionResult at byte {offset}: {reason}")]
pub struct ProtoError {
    /// Where decoding failed.
    pub offset: usize,
    /// What was wrong.
    pub reason: &'static str,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn err(&self, reason: &'static str) -> ProtoError {
        ProtoError {
            offset: self.base + self.pos,
            reason,
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| self.err("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn bytes(&mut self) -> Result<(&'a [u8], usize), ProtoError> {
        let len = usize::try_from(self.varint()?).map_err(|_| self.err("length overflow"))?;
        let start = self.pos;
        let end = start
            .checked_add(len)
            .ok_or_else(|| self.err("length overflow"))?;
        let slice = self
            .buf
            .get(start..end)
            .ok_or_else(|| self.err("truncated field"))?;
        self.pos = end;
        Ok((slice, self.base + start))
    }

    /// Returns (field number, wire type), skipping nothing.
    fn tag(&mut self) -> Result<(u64, u8), ProtoError> {
        let t = self.varint()?;
        let field = t >> 3;
        if field == 0 {
            return Err(self.err("field number 0"));
        }
        Ok((field, (t & 7) as u8))
    }

    fn skip(&mut self, wire: u8) -> Result<(), ProtoError> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            _ => Err(self.err("unsupported wire type")),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), ProtoError> {
        if self.pos + n > self.buf.len() {
            return Err(self.err("truncated fixed-width field"));
        }
        self.pos += n;
        Ok(())
    }
}

fn digest(buf: &[u8], base: usize) -> Result<Digest, ProtoError> {
    let mut r = Reader::new(buf, base);
    let mut hash = String::new();
    let mut size = 0i64;
    while !r.done() {
        match r.tag()? {
            (1, 2) => {
                let (b, _) = r.bytes()?;
                hash = std::str::from_utf8(b)
                    .map_err(|_| r.err("digest hash is not UTF-8"))?
                    .to_owned();
            }
            (2, 0) => size = r.varint()? as i64,
            (_, w) => r.skip(w)?,
        }
    }
    Ok(Digest { hash, size })
}

/// Finds the digest in field `want` of a nested message.
fn nested_digest(buf: &[u8], base: usize, want: u64) -> Result<Option<Digest>, ProtoError> {
    let mut r = Reader::new(buf, base);
    let mut found = None;
    while !r.done() {
        match r.tag()? {
            (f, 2) if f == want => {
                let (b, at) = r.bytes()?;
                found = Some(digest(b, at)?);
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok(found)
}

/// Every CAS digest an `ActionResult` refers to, in message order.
pub fn action_result_digests(buf: &[u8]) -> Result<Vec<Digest>, ProtoError> {
    let mut r = Reader::new(buf, 0);
    let mut out = Vec::new();
    while !r.done() {
        match r.tag()? {
            (2, 2) => {
                let (b, at) = r.bytes()?;
                out.extend(nested_digest(b, at, 2)?);
            }
            (3, 2) => {
                let (b, at) = r.bytes()?;
                out.extend(nested_digest(b, at, 3)?);
            }
            (6 | 8, 2) => {
                let (b, at) = r.bytes()?;
                out.push(digest(b, at)?);
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn field(num: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn digest_msg(hash: &str, size: u64) -> Vec<u8> {
        let mut d = Vec::new();
        field(1, hash.as_bytes(), &mut d);
        varint(2 << 3, &mut d);
        varint(size, &mut d);
        d
    }

    #[test]
    fn finds_every_digest() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let c = "c".repeat(64);
        let mut file = Vec::new();
        field(1, b"out/x", &mut file);
        field(2, &digest_msg(&a, 5), &mut file);
        let mut dir = Vec::new();
        field(1, b"out/d", &mut dir);
        field(3, &digest_msg(&b, 7), &mut dir);
        let mut ar = Vec::new();
        field(2, &file, &mut ar);
        field(3, &dir, &mut ar);
        varint(4 << 3, &mut ar); // exit_code = 0
        varint(0, &mut ar);
        field(6, &digest_msg(&c, 9), &mut ar);
        let got = action_result_digests(&ar).unwrap();
        assert_eq!(
            got,
            vec![
                Digest { hash: a, size: 5 },
                Digest { hash: b, size: 7 },
                Digest { hash: c, size: 9 },
            ]
        );
        assert!(action_result_digests(&ar[..ar.len() - 3]).is_err());
        assert_eq!(action_result_digests(&[]).unwrap(), vec![]);
        assert!(action_result_digests(&[0x07]).is_err());
    }
}
