//! Binary encoding of metadata records. Every decoder is total: malformed bytes give
//! [`Error::Corrupt`], never a panic.

use crate::error::Error;
use crate::hlc::{Hlc, Version};
use crate::types::{Digest, Key, Namespace, NodeId};

pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn new() -> Self {
        Self(Vec::with_capacity(128))
    }
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&v[..len as usize]);
        self
    }
    pub(crate) fn digest(&mut self, d: &Digest) -> &mut Self {
        self.0.extend_from_slice(&d.0);
        self
    }
    pub(crate) fn version(&mut self, v: &Version) -> &mut Self {
        self.u64(v.hlc.0).u64(v.node.0)
    }
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }
    fn err(&self) -> Error {
        Error::Corrupt {
            object: None,
            reason: format!("truncated or malformed {} record", self.what),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.buf.len() < n {
            return Err(self.err());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let b = self.take(4)?;
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        self.take(len)
    }
    pub(crate) fn string(&mut self) -> Result<String, Error> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err())
    }
    pub(crate) fn digest(&mut self) -> Result<Digest, Error> {
        let b = self.take(32)?;
        let mut a = [0u8; 32];
        a.copy_from_slice(b);
        Ok(Digest(a))
    }
    pub(crate) fn version(&mut self) -> Result<Version, Error> {
        Ok(Version::new(Hlc(self.u64()?), NodeId(self.u64()?)))
    }
    pub(crate) fn namespace(&mut self) -> Result<Namespace, Error> {
        Namespace::new(self.string()?)
    }
    pub(crate) fn key(&mut self) -> Result<Key, Error> {
        Key::new(self.string()?)
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub(crate) fn finish(&self) -> Result<(), Error> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err())
        }
    }
}
