//! Test helpers: an account PKI, nodes with real stores, meshes and mTLS listeners.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unreachable_pub,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_ca::{AccountHandle, AccountPki, CaOptions, ClusterDomain, InstanceName, LeafRequest};
use kura_mesh::{Mesh, MeshConfig, MeshHandle, PeerUrl, StaticResolver, TlsState};
use kura_store::{Account, FsBackend, NodeId, Store};

pub mod proxy;

pub const ACCOUNT: &str = "acme";

pub struct Pki {
    pub pki: AccountPki,
    pub account: AccountHandle,
    pub service: String,
}

impl Pki {
    pub fn new(account: &str) -> Self {
        let now = time::OffsetDateTime::now_utc();
        let handle = AccountHandle::new(account).unwrap();
        let pki = AccountPki::generate(&handle, &CaOptions::default(), now).unwrap();
        let service = kura_ca::names::peer_service_dns_name(
            &handle,
            &kura_ca::Namespace::new("kura").unwrap(),
            &ClusterDomain::default(),
        );
        Self {
            pki,
            account: handle,
            service,
        }
    }

    /// (ca.pem, tls.crt, tls.key) of a new leaf.
    pub fn leaf(&self, instance: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let now = time::OffsetDateTime::now_utc();
        let req = LeafRequest::new(
            InstanceName::new(instance).unwrap(),
            kura_ca::Namespace::new("kura").unwrap(),
            self.account.clone(),
        );
        let leaf = self.pki.issue_leaf(&req, now).unwrap();
        (
            leaf.trust().to_pem().into_bytes(),
            leaf.cert_pem().as_bytes().to_vec(),
            leaf.key_pem().as_bytes().to_vec(),
        )
    }

    pub fn tls(&self, instance: &str) -> Arc<TlsState> {
        let (ca, cert, key) = self.leaf(instance);
        Arc::new(TlsState::from_pem(&ca, &cert, &key, &self.service).unwrap())
    }
}

pub struct Node {
    pub store: Store,
    pub mesh: Mesh,
    pub handle: Option<MeshHandle>,
    pub addr: std::net::SocketAddr,
    pub dir: std::path::PathBuf,
}

impl Node {
    pub fn url(&self) -> PeerUrl {
        PeerUrl::parse(&format!("https://{}", self.addr)).unwrap()
    }

    pub async fn stop(mut self) -> (Store, std::path::PathBuf) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
        (self.store, self.dir)
    }
}

pub fn fast_config(dir: &std::path::Path) -> MeshConfig {
    let mut c = MeshConfig::new(Account::new(ACCOUNT).unwrap(), dir.join("mesh"));
    c.probe_interval = Duration::from_millis(100);
    c.poll_interval = Duration::from_millis(20);
    c.backoff.base = Duration::from_millis(20);
    c.backoff.max = Duration::from_millis(500);
    c.client.connect_timeout = Duration::from_secs(2);
    c.client.stall_timeout = Duration::from_secs(5);
    c
}

pub async fn open_store(dir: &std::path::Path, node: u64) -> Store {
    let mut cfg = kura_store::Config::default();
    cfg.node = NodeId(node);
    Store::open(FsBackend::open(dir.join("store")).unwrap(), cfg)
        .await
        .unwrap()
}

/// Starts a node on `listener` with `seeds`; `tweak` edits the config.
pub async fn start_node(
    pki: &Pki,
    store: Store,
    dir: std::path::PathBuf,
    listener: tokio::net::TcpListener,
    seeds: Vec<PeerUrl>,
    tweak: impl FnOnce(&mut MeshConfig),
) -> Node {
    let mut cfg = fast_config(&dir);
    cfg.seeds = seeds;
    let addr = listener.local_addr().unwrap();
    cfg.node_url = format!("https://{addr}");
    tweak(&mut cfg);
    let mesh = Mesh::new(
        store.clone(),
        cfg,
        pki.tls(&format!("n{}", addr.port())),
        Arc::new(StaticResolver::default()),
    )
    .unwrap();
    let handle = mesh.start(listener);
    Node {
        store,
        mesh,
        handle: Some(handle),
        addr,
        dir,
    }
}

pub async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Polls `cond` until it holds or `deadline` passes.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn read(store: &Store, id: &kura_store::ObjectId) -> Option<Vec<u8>> {
    match store.get(id).await.unwrap() {
        None => None,
        Some(o) => Some(o.read_all().await.unwrap().to_vec()),
    }
}
