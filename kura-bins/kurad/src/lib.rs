//! `kurad`, the Kura cache daemon, as a library: configuration, the router
//! serving every client protocol over one [`kura_store::Store`], and the
//! listener. The `kurad` binary is a thin wrapper (`src/main.rs`).
//!
//! Mount points (the same under `/ns/{namespace}/` for namespaces other than
//! `default`):
//!
//! | client | URL to configure | routes |
//! |---|---|---|
//! | Gradle | `http://HOST:PORT/cache/` | `GET/HEAD/PUT /cache/{key}` |
//! | Bazel | `--remote_cache=http://HOST:PORT/bazel` | `GET/HEAD/PUT /bazel/{ac,cas}/{sha256}` |
//! | ccache | `remote_storage = http://HOST:PORT/ccache` | `GET/HEAD/PUT/DELETE /ccache/…` (any layout) |
//! | Turborepo | `TURBO_API=http://HOST:PORT` | `/v8/artifacts/…` |
//! | Nx | `NX_SELF_HOSTED_REMOTE_CACHE_SERVER=http://HOST:PORT` | `GET/PUT /v1/cache/{hash}` |
//!
//! | Bazel (gRPC) | `--remote_cache=grpc://HOST:PORT` | REAPI v2 `Capabilities`, `ActionCache`, `ContentAddressableStorage`, `ByteStream` (see [`reapi`]) |
//!
//! plus the Kura node API (`/api/cache/…`, `/api/metro/cache/…`), `/up`,
//! `/ready`, `/status/rollout` and `/metrics`. See `docs/kurad.md`.
//!
//! ```no_run
//! use kurad::{AppState, Config, Server};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::for_tests("/tmp/kura-data".into());
//! let store = kura_store::Store::open(
//!     kura_store::FsBackend::open(&config.data_dir)?,
//!     kura_store::Config::default(),
//! )
//! .await?;
//! let server = Server::bind(AppState::new(store, config, None)).await?;
//! println!("listening on {}", server.local_addr()?);
//! server.serve(std::future::pending()).await;
//! # Ok(()) }
//! ```

pub mod ac;
pub mod app;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod fast;
pub mod keys;
pub mod mesh;
pub mod metrics;
pub mod module;
pub mod reapi;
pub mod scrub;
pub mod server;

pub use app::{AppState, router};
pub use config::{Args, Config};
pub use server::Server;
