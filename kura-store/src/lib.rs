//! Crash-safe, evicting, replication-ready content store for Kura cache nodes.
//!
//! Objects are addressed by `(account, namespace, key)` and carry a content type, length,
//! SHA-256 checksum, a hybrid-logical-clock version, creation and last-access times, and
//! optional references to other objects. Metadata lives in [redb]; small objects' bytes
//! stay in the record of the group commit that wrote them (the *value log*, segmented and
//! compacted; inline in the database in the modes without a log); large ones are blob
//! files that can be sent with zero-copy. Writes
//! stream through bounded buffers into per-writer temporary files and are published by a
//! group commit that shares fsyncs between concurrent writers. Reads verify checksums as
//! they stream. Capacity is enforced with LRU eviction that respects references, and the
//! replication hooks (LWW merge, change feed, digest summaries, tombstone GC) are what
//! `kura-mesh` builds on. Digest summaries record knowledge, not possession: an evicted
//! object stays in them as a *ghost* (a miss for reads, an entry for the merge), so repair
//! does not fetch it back ([`Store::learn`], [`Store::gc_ghosts`],
//! [`Store::verify_summary`]). The design is described in `docs/store.md`.
//!
//! ```
//! use kura_store::{body_from_bytes, Config, MemBackend, ObjectId, PutRequest, Store};
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
//! // `FsBackend::open(dir)?` for a real disk; the in-memory backend for this example.
//! let store = Store::open(MemBackend::default(), Config::default()).await?;
//! let id = ObjectId::parse("acme", "cas", "hello.txt")?;
//! let meta = store
//!     .put(PutRequest::new(id.clone()).with_len(5), body_from_bytes("hello"))
//!     .await?;
//! assert_eq!(meta.len, 5);
//!
//! let object = store.get(&id).await?.expect("just written");
//! let mut reader = object.reader(); // verifies the checksum while streaming
//! let mut bytes = Vec::new();
//! while let Some(chunk) = reader.next_chunk().await? {
//!     bytes.extend_from_slice(&chunk);
//! }
//! assert_eq!(bytes, b"hello");
//! store.close().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backend;
mod codec;
mod commit;
mod error;
pub mod hlc;
pub mod merge;
mod meta;
mod rcache;
mod redo;
mod store;
pub mod summary;
mod types;

pub use backend::{
    Backend, BlobReader, BlobWriter, FaultKind, FaultPoint, Faults, FaultyBackend, FsBackend,
    MemBackend, MetadataStorage,
};
pub use commit::Learned;
pub use error::{Error, Result};
pub use hlc::{Clock, Hlc, ManualClock, SystemClock, Version};
pub use meta::{Change, ObjectMeta, ReplicatedRecord};
pub use store::{
    Applied, BodyStream, Capacity, Config, Durability, FileSlice, Object, ObjectReader, OnceBody,
    PutRequest, ScrubReport, Stats, Store, body_from_bytes,
};
pub use types::{
    Account, Digest, Key, MAX_ACCOUNT_LEN, MAX_KEY_LEN, MAX_NAMESPACE_LEN, Namespace, NamespaceId,
    NodeId, ObjectId, ObjectRef,
};
