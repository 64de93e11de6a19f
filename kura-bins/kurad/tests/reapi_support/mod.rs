//! Test harness for the REAPI tests: a real `kurad` server (public listener
//! and, optionally, the gRPC-only one) on loopback port 0 over a temp store,
//! and tonic clients.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::SocketAddr;
use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient;
use kurad::{AppState, Config, Server};
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub use re::action_cache_client::ActionCacheClient;
pub use re::capabilities_client::CapabilitiesClient;
pub use re::content_addressable_storage_client::ContentAddressableStorageClient as CasClient;

pub struct Node {
    pub addr: SocketAddr,
    pub grpc_addr: Option<SocketAddr>,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub struct Options {
    pub tweak: Box<dyn FnOnce(&mut Config) + Send>,
    pub store: kura_store::Config,
    pub tokens: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tweak: Box::new(|_| {}),
            store: kura_store::Config::default(),
            tokens: None,
        }
    }
}

impl Node {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path().join("data"));
        (opts.tweak)(&mut config);
        std::fs::create_dir_all(&config.data_dir).unwrap();
        let store = kura_store::Store::open(
            kura_store::FsBackend::open(&config.data_dir).unwrap(),
            opts.store,
        )
        .await
        .unwrap();
        let tokens = opts.tokens.map(|t| kurad::auth::Tokens::parse(t).unwrap());
        let state = AppState::new(store, config, tokens);
        let server = Server::bind(state.clone()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let grpc_addr = server.grpc_local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        Self {
            addr,
            grpc_addr,
            state,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn channel(&self) -> Channel {
        channel_to(self.addr).await
    }

    pub async fn cas(&self) -> CasClient<Channel> {
        CasClient::new(self.channel().await)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    pub async fn ac(&self) -> ActionCacheClient<Channel> {
        ActionCacheClient::new(self.channel().await)
    }

    pub async fn bs(&self) -> ByteStreamClient<Channel> {
        ByteStreamClient::new(self.channel().await)
    }

    pub async fn caps(&self) -> CapabilitiesClient<Channel> {
        CapabilitiesClient::new(self.channel().await)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

pub async fn channel_to(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn digest(data: &[u8]) -> re::Digest {
    re::Digest {
        hash: sha256_hex(data),
        size_bytes: data.len() as i64,
    }
}

/// Deterministic pseudo-random bytes.
pub fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
