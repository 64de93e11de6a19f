//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use kura_store::{
    BodyStream, Digest, Hlc, NamespaceId, NodeId, ObjectId, ReplicatedRecord, Store, Version,
    body_from_bytes,
};

/// A body stream from a list of chunks (or errors).
pub struct Chunks(pub VecDeque<io::Result<Bytes>>);

impl Stream for Chunks {
    type Item = io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.pop_front())
    }
}

pub fn chunks(data: &[u8], size: usize) -> Chunks {
    Chunks(
        data.chunks(size.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect(),
    )
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn oid(ns: &str, key: &str) -> ObjectId {
    ObjectId::parse("acct", ns, key).unwrap()
}

pub fn nsid(ns: &str) -> NamespaceId {
    oid(ns, "x").namespace_id()
}

pub async fn read(store: &Store, id: &ObjectId) -> Option<Vec<u8>> {
    let obj = store.get(id).await.unwrap()?;
    Some(obj.read_all().await.unwrap().to_vec())
}

/// A replicated put of `data` at `hlc` from node `node`.
pub fn put_record(id: &ObjectId, hlc: Hlc, node: u64, data: &[u8]) -> ReplicatedRecord {
    ReplicatedRecord::Put {
        id: id.clone(),
        version: Version::new(hlc, NodeId(node)),
        content_type: "x".into(),
        len: data.len() as u64,
        digest: Digest::of(data),
        refs: vec![],
    }
}

/// The body of a replicated put.
pub fn body(data: &[u8]) -> Option<BodyStream> {
    Some(Box::pin(body_from_bytes(data.to_vec())))
}
