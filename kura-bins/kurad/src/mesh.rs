//! The replication mesh in the daemon: flags, the peer listener, certificate
//! reload, node identity, and what `/up`, `/status/rollout` and `/metrics` report.
//!
//! The mesh is on when the three `KURA_INTERNAL_TLS_*` paths are given (all or
//! none). The peer API is then served on `KURA_INTERNAL_PORT` (default 7443) with
//! mutual TLS under the account CA; it is never routed on the public listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kura_mesh::{Mesh, MeshConfig, MeshHandle, MeshSnapshot, PeerUrl, Resolver, TlsState};
use kura_store::{NodeId, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::{ConfigError, parse_bytes};

/// Mesh flags (flattened into [`crate::config::Args`]).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MeshArgs {
    /// Seed peers, comma-separated `https://host:port` URLs.
    #[arg(long, env = "KURA_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// DNS name whose every A/AAAA address is a peer (e.g. the account peer Service);
    /// `name` or `https://name[:port]`.
    #[arg(long, env = "KURA_DISCOVERY_DNS_NAME")]
    pub discovery_dns_name: Option<String>,
    /// Name every peer's certificate must carry and the SNI sent (default: the host
    /// of the discovery name, else the host of the first peer URL).
    #[arg(long, env = "KURA_PEER_SERVER_NAME")]
    pub peer_server_name: Option<String>,
    /// Port of the peer (mTLS) listener.
    #[arg(long, env = "KURA_INTERNAL_PORT", default_value = "7443")]
    pub internal_port: String,
    /// Account CA bundle (PEM) peers must chain to.
    #[arg(long, env = "KURA_INTERNAL_TLS_CA_CERT_PATH")]
    pub internal_tls_ca_cert_path: Option<PathBuf>,
    /// This node's leaf certificate (PEM).
    #[arg(long, env = "KURA_INTERNAL_TLS_CERT_PATH")]
    pub internal_tls_cert_path: Option<PathBuf>,
    /// This node's leaf key (PEM, PKCS#8).
    #[arg(long, env = "KURA_INTERNAL_TLS_KEY_PATH")]
    pub internal_tls_key_path: Option<PathBuf>,
    /// Global replication bandwidth cap in bytes/s (`0`: unlimited).
    #[arg(
        long,
        env = "KURA_REPLICATION_BANDWIDTH_LIMIT_BYTES_PER_SECOND",
        default_value = "536870912"
    )]
    pub replication_bandwidth_limit_bytes_per_second: String,
    /// Per-peer replication bandwidth cap in bytes/s (`0`: unlimited).
    #[arg(
        long,
        env = "KURA_REPLICATION_PEER_BANDWIDTH_LIMIT_BYTES_PER_SECOND",
        default_value = "0"
    )]
    pub replication_peer_bandwidth_limit_bytes_per_second: String,
    /// Seconds between anti-entropy repair passes with every peer.
    #[arg(long, env = "KURA_ANTI_ENTROPY_INTERVAL_SECS", default_value = "300")]
    pub anti_entropy_interval_secs: String,
    /// Seconds between discovery rounds and peer probes.
    #[arg(long, env = "KURA_DISCOVERY_INTERVAL_SECS", default_value = "2")]
    pub discovery_interval_secs: String,
    /// Seconds a replication transfer may make no progress before it is abandoned
    /// and retried (there is no total timeout).
    #[arg(
        long,
        env = "KURA_REPLICATION_STALL_TIMEOUT_SECS",
        default_value = "30"
    )]
    pub replication_stall_timeout_secs: String,
    /// Seconds after which key and namespace tombstones are garbage-collected
    /// (only while every known peer has acknowledged them).
    #[arg(long, env = "KURA_TOMBSTONE_GC_HORIZON_SECS", default_value = "604800")]
    pub tombstone_gc_horizon_secs: String,
    /// Seconds after its eviction that an evicted object's summary entry (its
    /// "ghost", which keeps anti-entropy from fetching it back) is dropped;
    /// `0` keeps ghosts forever.
    #[arg(long, env = "KURA_GHOST_TTL_SECS", default_value = "604800")]
    pub ghost_ttl_secs: String,
    /// Most pending outbox messages per peer before it is dropped to repair.
    #[arg(long, env = "KURA_OUTBOX_MAX_MESSAGES", default_value = "10000")]
    pub outbox_max_messages: String,
    /// Most pending outbox bytes per peer before it is dropped to repair.
    #[arg(long, env = "KURA_OUTBOX_MAX_BYTES", default_value = "1GiB")]
    pub outbox_max_bytes: String,
}

/// Validated mesh settings.
#[derive(Debug, Clone)]
pub struct MeshSettings {
    /// Peer listener port.
    pub internal_port: u16,
    /// CA bundle path.
    pub ca_path: PathBuf,
    /// Leaf path.
    pub cert_path: PathBuf,
    /// Key path.
    pub key_path: PathBuf,
    /// Seed peers.
    pub peers: Vec<PeerUrl>,
    /// Discovery name and port.
    pub discovery: Option<PeerUrl>,
    /// Verification name / SNI.
    pub peer_server_name: String,
    /// Global cap.
    pub bandwidth: u64,
    /// Per-peer cap.
    pub peer_bandwidth: u64,
    /// Anti-entropy interval.
    pub anti_entropy: Duration,
    /// Probe interval.
    pub probe_interval: Duration,
    /// Stall timeout.
    pub stall: Duration,
    /// Outbox bounds.
    pub outbox: kura_mesh::outbox::OutboxLimits,
    /// Tombstone GC horizon.
    pub tombstone_gc_horizon: Duration,
    /// Ghost lifetime after eviction (`None`: forever).
    pub ghost_ttl: Option<Duration>,
}

impl MeshArgs {
    /// Validates; `Ok(None)` when the mesh is off (no TLS paths and no peers).
    pub fn validate(
        &self,
        node_url: Option<&str>,
    ) -> Result<Option<MeshSettings>, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut err = |flag: &'static str, env: &'static str, message: String| {
            errors.push(ConfigError { flag, env, message });
        };
        let internal_port = match self.internal_port.trim().parse::<u16>() {
            Ok(p) => p,
            Err(_) => {
                err(
                    "--internal-port",
                    "KURA_INTERNAL_PORT",
                    format!("{:?} is not a port number (0-65535)", self.internal_port),
                );
                0
            }
        };
        let paths = [
            &self.internal_tls_ca_cert_path,
            &self.internal_tls_cert_path,
            &self.internal_tls_key_path,
        ];
        let given = paths.iter().filter(|p| p.is_some()).count();
        let wants_mesh = !self.peers.is_empty() || self.discovery_dns_name.is_some();
        if given == 0 && !wants_mesh {
            return Ok(None);
        }
        if given != 3 {
            err(
                "--internal-tls-ca-cert-path",
                "KURA_INTERNAL_TLS_CA_CERT_PATH",
                "KURA_INTERNAL_TLS_CA_CERT_PATH, KURA_INTERNAL_TLS_CERT_PATH and KURA_INTERNAL_TLS_KEY_PATH \
                 must all be set to replicate (the peer API is mTLS only)"
                    .into(),
            );
        }
        for (p, flag, env) in [
            (
                &self.internal_tls_ca_cert_path,
                "--internal-tls-ca-cert-path",
                "KURA_INTERNAL_TLS_CA_CERT_PATH",
            ),
            (
                &self.internal_tls_cert_path,
                "--internal-tls-cert-path",
                "KURA_INTERNAL_TLS_CERT_PATH",
            ),
            (
                &self.internal_tls_key_path,
                "--internal-tls-key-path",
                "KURA_INTERNAL_TLS_KEY_PATH",
            ),
        ] {
            if let Some(p) = p {
                if !p.is_file() {
                    err(flag, env, format!("{} is not a readable file", p.display()));
                }
            }
        }
        let mut peers = Vec::new();
        for p in self
            .peers
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
        {
            match PeerUrl::parse(p) {
                Ok(u) => peers.push(u),
                Err(e) => err("--peers", "KURA_PEERS", e.to_string()),
            }
        }
        let discovery = match &self.discovery_dns_name {
            None => None,
            Some(d) => {
                let url = if d.contains("://") {
                    d.clone()
                } else {
                    format!("https://{d}:{internal_port}")
                };
                match PeerUrl::parse(&url) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        err(
                            "--discovery-dns-name",
                            "KURA_DISCOVERY_DNS_NAME",
                            e.to_string(),
                        );
                        None
                    }
                }
            }
        };
        if let Some(u) = node_url {
            if PeerUrl::parse(u).is_err() {
                err(
                    "--node-url",
                    "KURA_NODE_URL",
                    format!(
                        "{u:?}: with the mesh on, the node URL must be https://host:<internal port>"
                    ),
                );
            }
        }
        let peer_server_name = self
            .peer_server_name
            .clone()
            .or_else(|| discovery.as_ref().map(|d| d.host.clone()))
            .or_else(|| peers.first().map(|p| p.host.clone()));
        let peer_server_name = match peer_server_name {
            Some(n) if !n.trim().is_empty() => n,
            _ => {
                err(
                    "--peer-server-name",
                    "KURA_PEER_SERVER_NAME",
                    "cannot be derived: set it, KURA_DISCOVERY_DNS_NAME or KURA_PEERS".into(),
                );
                String::new()
            }
        };
        let mut bytes = |v: &str, flag: &'static str, env: &'static str| match parse_bytes(v) {
            Ok(n) => n,
            Err(e) => {
                err(flag, env, e);
                0
            }
        };
        let bandwidth = bytes(
            &self.replication_bandwidth_limit_bytes_per_second,
            "--replication-bandwidth-limit-bytes-per-second",
            "KURA_REPLICATION_BANDWIDTH_LIMIT_BYTES_PER_SECOND",
        );
        let peer_bandwidth = bytes(
            &self.replication_peer_bandwidth_limit_bytes_per_second,
            "--replication-peer-bandwidth-limit-bytes-per-second",
            "KURA_REPLICATION_PEER_BANDWIDTH_LIMIT_BYTES_PER_SECOND",
        );
        let outbox_bytes = bytes(
            &self.outbox_max_bytes,
            "--outbox-max-bytes",
            "KURA_OUTBOX_MAX_BYTES",
        );
        let mut secs =
            |v: &str, flag: &'static str, env: &'static str| match v.trim().parse::<f64>() {
                Ok(n) if n > 0.0 && n.is_finite() => Duration::from_secs_f64(n),
                _ => {
                    err(
                        flag,
                        env,
                        format!("{v:?} is not a positive number of seconds"),
                    );
                    Duration::from_secs(1)
                }
            };
        let anti_entropy = secs(
            &self.anti_entropy_interval_secs,
            "--anti-entropy-interval-secs",
            "KURA_ANTI_ENTROPY_INTERVAL_SECS",
        );
        let probe_interval = secs(
            &self.discovery_interval_secs,
            "--discovery-interval-secs",
            "KURA_DISCOVERY_INTERVAL_SECS",
        );
        let stall = secs(
            &self.replication_stall_timeout_secs,
            "--replication-stall-timeout-secs",
            "KURA_REPLICATION_STALL_TIMEOUT_SECS",
        );
        let tombstone_gc_horizon = secs(
            &self.tombstone_gc_horizon_secs,
            "--tombstone-gc-horizon-secs",
            "KURA_TOMBSTONE_GC_HORIZON_SECS",
        );
        let ghost_ttl = match self.ghost_ttl_secs.trim().parse::<u64>() {
            Ok(0) => None,
            Ok(n) => Some(Duration::from_secs(n)),
            Err(_) => {
                err(
                    "--ghost-ttl-secs",
                    "KURA_GHOST_TTL_SECS",
                    format!(
                        "{:?} is not a number of seconds (0 keeps ghosts forever)",
                        self.ghost_ttl_secs
                    ),
                );
                None
            }
        };
        let outbox_messages = match self.outbox_max_messages.trim().parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                err(
                    "--outbox-max-messages",
                    "KURA_OUTBOX_MAX_MESSAGES",
                    format!("{:?} is not a positive integer", self.outbox_max_messages),
                );
                1
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let [Some(ca_path), Some(cert_path), Some(key_path)] = paths.map(Clone::clone) else {
            return Ok(None);
        };
        Ok(Some(MeshSettings {
            internal_port,
            ca_path,
            cert_path,
            key_path,
            peers,
            discovery,
            peer_server_name,
            bandwidth,
            peer_bandwidth,
            anti_entropy,
            probe_interval,
            stall,
            tombstone_gc_horizon,
            ghost_ttl,
            outbox: kura_mesh::outbox::OutboxLimits {
                max_messages: outbox_messages,
                max_bytes: outbox_bytes,
            },
        }))
    }
}

/// This node's id: read from `<data dir>/node-id`, created (random, non-zero) on
/// first start so that last-writer-wins ties break the same way on every node.
pub fn node_id(data_dir: &Path) -> std::io::Result<NodeId> {
    let path = data_dir.join("node-id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if let Ok(n) = s.trim().parse::<u64>() {
            if n != 0 {
                return Ok(NodeId(n));
            }
        }
    }
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    let n = u64::from_le_bytes(b).max(1);
    let tmp = data_dir.join("node-id.tmp");
    std::fs::write(&tmp, n.to_string())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(NodeId(n))
}

fn read_tls(s: &MeshSettings) -> Result<TlsState, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    TlsState::from_pem(
        &read(&s.ca_path)?,
        &read(&s.cert_path)?,
        &read(&s.key_path)?,
        &s.peer_server_name,
    )
    .map_err(|e| e.to_string())
}

fn mtimes(s: &MeshSettings) -> Vec<Option<SystemTime>> {
    [&s.ca_path, &s.cert_path, &s.key_path]
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// A started mesh: the engine, its tasks and the certificate watcher.
#[derive(Debug)]
pub struct RunningMesh {
    /// The engine (snapshots for `/up` and metrics).
    pub mesh: Mesh,
    handle: MeshHandle,
    watcher: tokio::task::JoinHandle<()>,
    /// The bound peer listener address.
    pub addr: std::net::SocketAddr,
}

impl RunningMesh {
    /// Stops the mesh.
    pub async fn shutdown(self) {
        self.watcher.abort();
        self.handle.shutdown().await;
    }
}

/// Builds the TLS state, binds the peer listener (on the public bind address,
/// port `KURA_INTERNAL_PORT`) and starts the mesh. State lives in `<data dir>/mesh`.
pub async fn start(
    settings: &MeshSettings,
    store: Store,
    config: &crate::config::Config,
    resolver: Arc<dyn Resolver>,
) -> Result<RunningMesh, String> {
    let ip = config.listen.ip();
    let tls = Arc::new(read_tls(settings)?);
    let mut cfg = MeshConfig::new(config.account.clone(), config.data_dir.join("mesh"));
    cfg.region = config.region.clone();
    cfg.node_url = config.node_url.clone().unwrap_or_default();
    cfg.seeds = settings.peers.clone();
    cfg.discovery = settings.discovery.clone();
    cfg.bandwidth_bytes_per_sec = settings.bandwidth;
    cfg.peer_bandwidth_bytes_per_sec = settings.peer_bandwidth;
    cfg.anti_entropy_interval = settings.anti_entropy;
    cfg.probe_interval = settings.probe_interval;
    cfg.client.stall_timeout = settings.stall;
    cfg.outbox = settings.outbox;
    cfg.tombstone_gc_horizon = settings.tombstone_gc_horizon;
    cfg.ghost_ttl = settings.ghost_ttl;
    cfg.max_object_bytes = config.limits.object;
    let mesh = Mesh::new(store, cfg, tls.clone(), resolver).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind((ip, settings.internal_port))
        .await
        .map_err(|e| format!("cannot listen on {ip}:{}: {e}", settings.internal_port))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let handle = mesh.start(listener);
    // Certificate rotation: reload when a file changes; keep the old material if
    // the new one is unusable (e.g. a Secret update caught half-written).
    let s = settings.clone();
    let watcher = tokio::spawn(async move {
        let mut seen = mtimes(&s);
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = mtimes(&s);
            if now == seen {
                continue;
            }
            let read = |p: &Path| std::fs::read(p);
            let r = (|| -> Result<(), String> {
                let identity = kura_ca::PeerIdentity::from_pem(
                    &read(&s.cert_path).map_err(|e| e.to_string())?,
                    &read(&s.key_path).map_err(|e| e.to_string())?,
                )
                .map_err(|e| e.to_string())?;
                let trust =
                    kura_ca::TrustBundle::from_pem(&read(&s.ca_path).map_err(|e| e.to_string())?)
                        .map_err(|e| e.to_string())?;
                tls.reload(&identity, &trust, &s.peer_server_name)
                    .map_err(|e| e.to_string())
            })();
            match r {
                Ok(()) => {
                    tracing::info!("peer TLS material reloaded");
                    seen = now;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "peer TLS material changed but is unusable; keeping the old")
                }
            }
        }
    });
    Ok(RunningMesh {
        mesh,
        handle,
        watcher,
        addr,
    })
}

/// Labels of per-peer replication metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicationLabels {
    /// Peer address.
    pub target: String,
    /// `push` or `repair`.
    pub operation: &'static str,
    /// `ok`, `failed` or `refused`.
    pub result: &'static str,
}

/// Labels with only the peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// Peer address.
    pub target: String,
}

/// Replication metrics (mirrors of the mesh's counters, refreshed at scrape time).
#[derive(Debug, Default)]
pub struct MeshMetrics {
    requests: Family<ReplicationLabels, Gauge>,
    bytes: Family<ReplicationLabels, Gauge>,
    outbox: Gauge,
    outbox_per_peer: Family<TargetLabels, Gauge>,
    overflows: Family<TargetLabels, Gauge>,
    discovered: Gauge,
    ring_members: Gauge,
    repair_runs: Gauge,
    repair_bytes: Gauge,
    repairs_pending: Gauge,
    received: Family<ReplicationLabels, Gauge>,
    handshake_failures: Gauge,
}

impl MeshMetrics {
    /// Registers every replication metric in `registry` (prefix `kura_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "replication_requests_total",
            "Replication requests sent, by peer, operation and result",
            m.requests.clone(),
        );
        registry.register(
            "replication_bytes_total",
            "Object bytes sent (push) or fetched (repair), by peer",
            m.bytes.clone(),
        );
        registry.register(
            "outbox_messages",
            "Pending outbox messages (all peers)",
            m.outbox.clone(),
        );
        registry.register(
            "replication_outbox_messages",
            "Pending outbox messages by peer",
            m.outbox_per_peer.clone(),
        );
        registry.register(
            "replication_outbox_overflows_total",
            "Backlogs dropped to repair, by peer",
            m.overflows.clone(),
        );
        registry.register(
            "discovered_peer_nodes",
            "Peers discovered (seeds and DNS)",
            m.discovered.clone(),
        );
        registry.register(
            "ring_members",
            "Ring members including this node",
            m.ring_members.clone(),
        );
        registry.register(
            "repair_runs_total",
            "Completed repair passes",
            m.repair_runs.clone(),
        );
        registry.register(
            "bootstrap_runs_total",
            "Completed catch-up (repair) passes",
            m.repair_runs.clone(),
        );
        registry.register(
            "repair_bytes_total",
            "Object bytes fetched by repair",
            m.repair_bytes.clone(),
        );
        registry.register(
            "repairs_pending",
            "Peers with a repair pending",
            m.repairs_pending.clone(),
        );
        registry.register(
            "replication_received_total",
            "Records received from peers, by result",
            m.received.clone(),
        );
        registry.register(
            "peer_handshake_failures_total",
            "Refused TLS handshakes on the peer listener",
            m.handshake_failures.clone(),
        );
        m
    }

    /// Refreshes every gauge from a snapshot.
    pub fn observe(&self, s: &MeshSnapshot) {
        let c = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let l = |target: &str, operation, result| ReplicationLabels {
            target: target.to_owned(),
            operation,
            result,
        };
        for p in &s.peers {
            if p.is_self {
                continue;
            }
            self.requests
                .get_or_create(&l(&p.addr, "push", "ok"))
                .set(c(p.pushed));
            self.requests
                .get_or_create(&l(&p.addr, "push", "failed"))
                .set(c(p.push_failures));
            self.requests
                .get_or_create(&l(&p.addr, "push", "refused"))
                .set(c(p.refused));
            self.requests
                .get_or_create(&l(&p.addr, "repair", "ok"))
                .set(c(p.repairs));
            self.bytes
                .get_or_create(&l(&p.addr, "push", "ok"))
                .set(c(p.pushed_bytes));
            self.bytes
                .get_or_create(&l(&p.addr, "repair", "ok"))
                .set(c(p.repair_bytes));
            let t = TargetLabels {
                target: p.addr.clone(),
            };
            self.outbox_per_peer
                .get_or_create(&t)
                .set(c(p.outbox_depth));
            self.overflows.get_or_create(&t).set(c(p.overflows));
        }
        self.outbox.set(c(s.outbox_depth));
        self.discovered.set(c(s.discovered_peers as u64));
        self.ring_members.set(c(s.ring_members as u64));
        self.repair_runs
            .set(c(s.peers.iter().map(|p| p.repairs).sum()));
        self.repair_bytes
            .set(c(s.peers.iter().map(|p| p.repair_bytes).sum()));
        self.repairs_pending.set(c(s.repairs_pending as u64));
        self.received
            .get_or_create(&l("", "push", "ok"))
            .set(c(s.pushes_received));
        self.received
            .get_or_create(&l("", "push", "stale"))
            .set(c(s.pushes_stale));
        self.received
            .get_or_create(&l("", "push", "refused"))
            .set(c(s.pushes_refused));
        self.handshake_failures.set(c(s.handshake_failures));
    }
}

/// The mesh part of `/up`.
pub fn up_fields(s: Option<&MeshSnapshot>) -> serde_json::Value {
    match s {
        None => serde_json::json!({
            "connected_nodes": 0,
            "ring_members": 1,
            "members": [],
            "nodes": [],
            "outbox_messages": 0,
        }),
        Some(s) => {
            let members: Vec<_> = s
                .peers
                .iter()
                .filter(|p| p.member && !p.is_self)
                .map(|p| p.addr.clone())
                .collect();
            serde_json::json!({
                "node_id": s.node_id,
                "connected_nodes": s.connected_peers.len(),
                "connected_peers": s.connected_peers,
                "ring_members": s.ring_members,
                "members": members,
                "nodes": s.peers,
                "outbox_messages": s.outbox_depth,
                "repairs_pending": s.repairs_pending,
            })
        }
    }
}

/// `state` of `/status/rollout`: `joining` until the first repair with every
/// member is done, then `serving`.
pub fn rollout_state(s: Option<&MeshSnapshot>) -> &'static str {
    match s {
        Some(s)
            if s.peers
                .iter()
                .any(|p| p.member && !p.is_self && p.repairs == 0) =>
        {
            "joining"
        }
        _ => "serving",
    }
}
