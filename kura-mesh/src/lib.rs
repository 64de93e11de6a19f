//! Per-account replication mesh for Kura cache nodes.
//!
//! Every node of an account runs a peer listener (HTTP/2 over mutual TLS with the
//! account CA from `kura-ca`) and replicates its `kura-store` to every other node:
//!
//! - **push on write**: the store's durable change feed drives a per-peer outbox
//!   (a persisted cursor), bounded in count and bytes; a peer that falls too far
//!   behind is marked *needs repair* instead of growing a queue;
//! - **repair in O(difference)**: peers compare per-namespace digest summaries
//!   top-down and fetch only differing entries — at bootstrap, after a restart,
//!   after an outbox overflow, and periodically; objects a node evicted stay in its
//!   summary as *ghosts*, so repair neither fetches them back nor transfers bytes
//!   for entries the peer only knows as ghosts (see [`repair`]);
//! - **merge** is the store's last-writer-wins on `(hlc, node)` with namespace
//!   tombstones that block older writes (see [`kura_store::merge`]);
//! - transfers have a **stall watchdog** instead of a total timeout, a global and
//!   per-peer **token-bucket bandwidth limiter**, and bounded concurrency;
//! - **membership** from seed URLs and DNS (every resolved address is dialled and
//!   verified under the peer Service name), with hysteresis on failed probes.
//!
//! The wire protocol is described in [`wire`]; the design in `docs/mesh.md`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kura_mesh::{Mesh, MeshConfig, PeerUrl, TlsState, SystemResolver};
//! use kura_store::{Account, MemBackend, Store};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open(MemBackend::default(), kura_store::Config::default()).await?;
//! let tls = Arc::new(TlsState::from_pem(
//!     &std::fs::read("ca.pem")?,
//!     &std::fs::read("tls.crt")?,
//!     &std::fs::read("tls.key")?,
//!     "kura-acme-peers.kura.svc.cluster.local",
//! )?);
//! let mut config = MeshConfig::new(Account::new("acme")?, "/var/lib/kura/mesh".into());
//! config.seeds = vec![PeerUrl::parse("https://10.0.0.2:7443")?];
//! let mesh = Mesh::new(store, config, tls, Arc::new(SystemResolver))?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:7443").await?;
//! let handle = mesh.start(listener);
//! // … serve the public API; `mesh.snapshot()` feeds `/up` and metrics …
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

pub mod client;
mod error;
pub mod limiter;
mod mesh;
pub mod outbox;
pub mod repair;
pub mod server;
mod tls;
pub mod transfer;
pub mod wire;

pub use client::{ClientOptions, PeerClient};
pub use error::{Error, Result, WireError};
pub use limiter::{Backoff, TokenBucket};
pub use mesh::{
    Mesh, MeshConfig, MeshHandle, MeshSnapshot, PeerSnapshot, PeerUrl, ResolveFuture, Resolver,
    StaticResolver, SystemResolver,
};
pub use server::PeerService;
pub use tls::TlsState;
