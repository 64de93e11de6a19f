//! The node's replication engine: membership, per-peer push pumps, repair, and the
//! peer listener, wired together.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kura_store::{Account, ReplicatedRecord, Store};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};

use crate::client::{ClientOptions, PeerClient};
use crate::error::{Error, Result};
use crate::limiter::{Backoff, TokenBucket, random_u64};
use crate::outbox::{Backlog, CursorFile, OutboxLimits, check_backlog};
use crate::repair::{self, RepairContext};
use crate::server::{PeerService, serve};
use crate::tls::TlsState;
use crate::transfer::Progress;

/// A peer URL: `https://host[:port]` (port defaults to 7443).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerUrl {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl PeerUrl {
    /// Parses `https://host[:port][/]`.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidPeer {
            addr: s.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = s.trim().parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(invalid("peers are reached over https:// only"));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(invalid("a peer URL has no path"));
        }
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Self {
            host,
            port: uri.port_u16().unwrap_or(7443),
        })
    }

    /// `host:port` for dialling (IPv6 bracketed).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for PeerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "https://{}", self.addr())
    }
}

/// Future returned by a [`Resolver`].
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Resolves the discovery DNS name to every A/AAAA address (injectable for tests).
pub trait Resolver: Send + Sync + std::fmt::Debug + 'static {
    /// All addresses of `host`.
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a>;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            let mut v: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
                .await?
                .map(|a| a.ip())
                .collect();
            v.sort();
            v.dedup();
            Ok(v)
        })
    }
}

/// A resolver answering from a table that tests change at will.
#[derive(Debug, Default)]
pub struct StaticResolver {
    table: RwLock<HashMap<String, Vec<IpAddr>>>,
}

impl StaticResolver {
    /// Sets the addresses of `host`.
    pub fn set(&self, host: &str, addrs: Vec<IpAddr>) {
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_owned(), addrs);
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a> {
        let r = self
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{host}: no such name"))
            });
        Box::pin(async move { r })
    }
}

/// Mesh configuration. Start from [`MeshConfig::new`] and change fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MeshConfig {
    /// Our account; records of other accounts are refused.
    pub account: Account,
    /// Region label reported by status.
    pub region: String,
    /// Our own peer URL (`https://host:port`), reported by status and announced to
    /// the peers we probe, which dial us back (empty: not announced).
    pub node_url: String,
    /// Seed peers.
    pub seeds: Vec<PeerUrl>,
    /// DNS name (and port) whose every address is a peer.
    pub discovery: Option<PeerUrl>,
    /// Where outbox cursors live.
    pub state_dir: PathBuf,
    /// Interval of discovery and status probes.
    pub probe_interval: Duration,
    /// A member is declared lost after this many consecutive failed probes.
    pub lost_after_failures: u32,
    /// Interval of periodic anti-entropy repair with every member.
    pub anti_entropy_interval: Duration,
    /// Outbox bounds per peer.
    pub outbox: OutboxLimits,
    /// Backoff after failed pushes or repairs.
    pub backoff: Backoff,
    /// Connect and stall timeouts.
    pub client: ClientOptions,
    /// Global replication bandwidth in bytes/s (`0`: unlimited).
    pub bandwidth_bytes_per_sec: u64,
    /// Per-peer replication bandwidth in bytes/s (`0`: unlimited).
    pub peer_bandwidth_bytes_per_sec: u64,
    /// Most object transfers in flight across all peers.
    pub max_concurrent_transfers: usize,
    /// Largest object a peer may push to us.
    pub max_object_bytes: u64,
    /// How often an idle pump looks at the change feed.
    pub poll_interval: Duration,
    /// Key and namespace tombstones older than this are garbage-collected, and only
    /// while every known peer is a healthy member that has acknowledged our whole
    /// change feed and completed a repair with us. A peer partitioned away for
    /// longer than this could bring deleted data back (as with Cassandra's
    /// `gc_grace_seconds`), so keep it well above any expected outage.
    pub tombstone_gc_horizon: Duration,
    /// How often tombstone garbage collection is considered (ghost GC runs at the
    /// same interval).
    pub tombstone_gc_interval: Duration,
    /// Ghosts (evicted objects whose summary entry is kept so repair does not fetch them
    /// back) are dropped this long after their eviction; `None` keeps them forever. Each
    /// ghost costs two small metadata rows; once dropped, a peer that still holds the
    /// object makes repair fetch it again (at most once per TTL per object). A ghost
    /// learned from a peer keeps the peer's eviction time, so every replica drops it
    /// at about the same time.
    pub ghost_ttl: Option<Duration>,
}

impl MeshConfig {
    /// Defaults for `account`, keeping state under `state_dir`.
    pub fn new(account: Account, state_dir: PathBuf) -> Self {
        Self {
            account,
            region: "local".into(),
            node_url: String::new(),
            seeds: Vec::new(),
            discovery: None,
            state_dir,
            probe_interval: Duration::from_secs(2),
            lost_after_failures: 3,
            anti_entropy_interval: Duration::from_secs(300),
            outbox: OutboxLimits::default(),
            backoff: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(30),
            },
            client: ClientOptions::default(),
            bandwidth_bytes_per_sec: 0,
            peer_bandwidth_bytes_per_sec: 0,
            max_concurrent_transfers: 4,
            max_object_bytes: 4 << 30,
            poll_interval: Duration::from_millis(50),
            tombstone_gc_horizon: Duration::from_secs(7 * 24 * 3600),
            tombstone_gc_interval: Duration::from_secs(60),
            ghost_ttl: Some(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct PeerState {
    node: Option<u64>,
    is_self: bool,
    duplicate: bool,
    member: bool,
    failures: u32,
    needs_repair: bool,
    ask_repair: bool,
    repairing: bool,
    repair_again: bool,
    cursor: u64,
    depth: u64,
    last_error: Option<String>,
    discovered: bool,
}

#[derive(Debug)]
struct Peer {
    addr: String,
    client: PeerClient,
    limiter: Arc<TokenBucket>,
    cursor_file: CursorFile,
    state: Mutex<PeerState>,
    wake: Notify,
    pushed: AtomicU64,
    pushed_bytes: AtomicU64,
    push_failures: AtomicU64,
    refused: AtomicU64,
    overflows: AtomicU64,
    repairs: AtomicU64,
    repair_bytes: AtomicU64,
    repair_objects: AtomicU64,
}

impl PeerState {
    /// Schedules a pull; one requested while a pass runs triggers another pass.
    fn schedule_repair(&mut self) {
        self.needs_repair = true;
        if self.repairing {
            self.repair_again = true;
        }
    }
}

impl Peer {
    fn st(&self) -> std::sync::MutexGuard<'_, PeerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Per-peer view for `/up` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerSnapshot {
    /// Dialled address.
    pub addr: String,
    /// Node id learned from its status.
    pub node_id: Option<u64>,
    /// Whether it is a ring member (reachable, same account, not us).
    pub member: bool,
    /// Whether this address turned out to be ourselves.
    pub is_self: bool,
    /// Consecutive failed probes.
    pub failures: u32,
    /// Whether a repair (pull from this peer) is pending.
    pub needs_repair: bool,
    /// Whether we dropped its backlog and still have to ask it to pull from us.
    pub ask_repair: bool,
    /// Whether a repair is running.
    pub repairing: bool,
    /// Outbox depth (change-feed entries not yet acknowledged).
    pub outbox_depth: u64,
    /// Records pushed.
    pub pushed: u64,
    /// Object bytes pushed.
    pub pushed_bytes: u64,
    /// Push attempts that failed (and were retried).
    pub push_failures: u64,
    /// Records the peer refused for good.
    pub refused: u64,
    /// Outbox overflows (backlog dropped, repair scheduled).
    pub overflows: u64,
    /// Completed repair passes from this peer.
    pub repairs: u64,
    /// Object bytes moved by repair (fetched and pushed).
    pub repair_bytes: u64,
    /// Objects moved by repair (fetched and pushed).
    pub repair_objects: u64,
    /// Last error.
    pub last_error: Option<String>,
}

/// A view of the whole mesh.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MeshSnapshot {
    /// Our node id.
    pub node_id: u64,
    /// Ring members including ourselves.
    pub ring_members: usize,
    /// Addresses of connected members.
    pub connected_peers: Vec<String>,
    /// Sum of every peer's outbox depth.
    pub outbox_depth: u64,
    /// Peers discovered (seeds and DNS), excluding ourselves.
    pub discovered_peers: usize,
    /// Peers with a repair pending or running.
    pub repairs_pending: usize,
    /// Pushes applied by our peer API.
    pub pushes_received: u64,
    /// Pushes our peer API answered as stale without reading the body.
    pub pushes_stale: u64,
    /// Pushes our peer API refused.
    pub pushes_refused: u64,
    /// Bytes received by pushes.
    pub bytes_received: u64,
    /// Bytes served to peers' fetches.
    pub bytes_served: u64,
    /// Refused TLS handshakes on the peer listener.
    pub handshake_failures: u64,
    /// Every peer.
    pub peers: Vec<PeerSnapshot>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    config: MeshConfig,
    tls: Arc<TlsState>,
    resolver: Arc<dyn Resolver>,
    service: Arc<PeerService>,
    global: Arc<TokenBucket>,
    transfers: Semaphore,
    peers: Mutex<BTreeMap<String, Arc<Peer>>>,
    shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
}

/// The replication engine of one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

/// Running mesh tasks; [`MeshHandle::shutdown`] stops them.
#[derive(Debug)]
pub struct MeshHandle {
    tx: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl MeshHandle {
    /// Stops every task (peer listener, membership, pumps) and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.tx.send(true);
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = self.tasks.join_next() => if r.is_none() { break },
                () = &mut deadline => { self.tasks.shutdown().await; break }
            }
        }
    }
}

impl Mesh {
    /// Wires a mesh over `store`. Nothing runs until [`Mesh::start`].
    pub fn new(
        store: Store,
        config: MeshConfig,
        tls: Arc<TlsState>,
        resolver: Arc<dyn Resolver>,
    ) -> Result<Self> {
        std::fs::create_dir_all(&config.state_dir)
            .map_err(|e| Error::io(format!("creating {}", config.state_dir.display()), e))?;
        let global = Arc::new(TokenBucket::new(config.bandwidth_bytes_per_sec));
        let service = Arc::new(PeerService::new(
            store.clone(),
            config.account.clone(),
            config.region.clone(),
            config.node_url.clone(),
            config.max_object_bytes,
            config.client.stall_timeout,
            global.clone(),
        ));
        let (shutdown_tx, shutdown) = watch::channel(false);
        Ok(Self {
            inner: Arc::new(Inner {
                transfers: Semaphore::new(config.max_concurrent_transfers.max(1)),
                store,
                config,
                tls,
                resolver,
                service,
                global,
                peers: Mutex::new(BTreeMap::new()),
                shutdown,
                shutdown_tx,
            }),
        })
    }

    /// The peer API service (for serving it on a listener of your own).
    pub fn service(&self) -> Arc<PeerService> {
        self.inner.service.clone()
    }

    /// The TLS state (call [`TlsState::reload`] on certificate rotation).
    pub fn tls(&self) -> Arc<TlsState> {
        self.inner.tls.clone()
    }

    /// Starts the peer listener on `listener` and every background task.
    pub fn start(&self, listener: TcpListener) -> MeshHandle {
        let mut tasks = tokio::task::JoinSet::new();
        let mut rx = self.inner.shutdown.clone();
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tasks.spawn(serve(
            listener,
            self.inner.tls.clone(),
            self.inner.service.clone(),
            shutdown,
        ));
        let m = self.clone();
        tasks.spawn(async move { m.membership_loop().await });
        let m = self.clone();
        tasks.spawn(async move { m.maintenance_loop().await });
        MeshHandle {
            tx: self.inner.shutdown_tx.clone(),
            tasks,
        }
    }

    fn stopping(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    async fn sleep(&self, d: Duration) -> bool {
        let mut rx = self.inner.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(d) => !self.stopping(),
            _ = rx.wait_for(|s| *s) => false,
        }
    }

    /// Marks every member as needing repair (e.g. on operator request).
    pub fn schedule_repair(&self) {
        for p in self.peers() {
            p.st().schedule_repair();
            p.wake.notify_one();
        }
    }

    fn peers(&self) -> Vec<Arc<Peer>> {
        self.inner
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    async fn discover(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self.inner.config.seeds.iter().map(PeerUrl::addr).collect();
        if let Some(d) = &self.inner.config.discovery {
            match self.inner.resolver.resolve(&d.host).await {
                Ok(ips) => addrs.extend(ips.into_iter().map(|ip| {
                    PeerUrl {
                        host: ip.to_string(),
                        port: d.port,
                    }
                    .addr()
                })),
                Err(e) => tracing::debug!(name = %d.host, error = %e, "discovery lookup failed"),
            }
        }
        // Nodes that probed us over mTLS announcing their URL (a peer that knows us
        // from its seeds becomes known to us). Forgotten once it stops announcing.
        let window =
            (self.inner.config.probe_interval * 4 * self.inner.config.lost_after_failures.max(1))
                .max(Duration::from_secs(30));
        addrs.extend(self.inner.service.announced_peers(window));
        addrs.sort();
        addrs.dedup();
        addrs
    }

    fn ensure_peer(&self, addr: &str) -> Result<Option<Arc<Peer>>> {
        let mut peers = self.inner.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.contains_key(addr) {
            return Ok(None);
        }
        let cursor_file = CursorFile::new(&self.inner.config.state_dir.join("outbox"), addr)?;
        let cursor = cursor_file
            .load()
            .unwrap_or_else(|| self.inner.store.stats().last_seq);
        let peer = Arc::new(Peer {
            addr: addr.to_owned(),
            client: PeerClient::new(addr, self.inner.tls.clone(), self.inner.config.client)
                .with_announce(&self.inner.config.node_url),
            limiter: Arc::new(TokenBucket::new(
                self.inner.config.peer_bandwidth_bytes_per_sec,
            )),
            cursor_file,
            state: Mutex::new(PeerState {
                cursor,
                ..PeerState::default()
            }),
            wake: Notify::new(),
            pushed: AtomicU64::new(0),
            pushed_bytes: AtomicU64::new(0),
            push_failures: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            repairs: AtomicU64::new(0),
            repair_bytes: AtomicU64::new(0),
            repair_objects: AtomicU64::new(0),
        });
        peers.insert(addr.to_owned(), peer.clone());
        Ok(Some(peer))
    }

    async fn membership_loop(self) {
        let mut pumps = tokio::task::JoinSet::new();
        loop {
            let addrs = self.discover().await;
            for a in &addrs {
                match self.ensure_peer(a) {
                    Ok(Some(p)) => {
                        let m = self.clone();
                        pumps.spawn(async move { m.pump(p).await });
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(peer = %a, error = %e, "cannot track peer"),
                }
            }
            let peers = self.peers();
            for p in &peers {
                p.st().discovered = addrs.contains(&p.addr);
            }
            let probes = peers.iter().map(|p| self.probe(p.clone()));
            futures_util::future::join_all(probes).await;
            // Peers that dropped their backlog for us asked us to pull from them.
            for node in self.inner.service.take_repair_requests() {
                for p in &peers {
                    let mut s = p.st();
                    if s.node == Some(node) && s.member {
                        s.schedule_repair();
                        drop(s);
                        p.wake.notify_one();
                    }
                }
            }
            // Forget peers that vanished from discovery and are lost.
            {
                let mut map = self.inner.peers.lock().unwrap_or_else(|e| e.into_inner());
                map.retain(|_, p| {
                    let s = p.st();
                    let keep = s.discovered || s.member;
                    if !keep {
                        p.wake.notify_one();
                    }
                    keep
                });
            }
            if !self.sleep(self.inner.config.probe_interval).await {
                break;
            }
        }
        pumps.shutdown().await;
    }

    async fn probe(&self, p: Arc<Peer>) {
        let r = p.client.status().await;
        let mut s = p.st();
        match r {
            Ok(status) => {
                s.failures = 0;
                s.node = Some(status.node_id);
                s.is_self = status.node_id == self.inner.store.node().0;
                let dup = !s.is_self
                    && self.peers().iter().any(|o| {
                        !Arc::ptr_eq(o, &p) && o.addr < p.addr && {
                            let os = o.state.try_lock();
                            os.is_ok_and(|os| os.node == Some(status.node_id) && os.member)
                        }
                    });
                s.duplicate = dup;
                if status.account != self.inner.config.account.as_str() {
                    s.last_error = Some(format!("peer of account {} refused", status.account));
                    s.member = false;
                } else if !s.is_self && !s.duplicate && !s.member {
                    tracing::info!(peer = %p.addr, node = status.node_id, "peer joined the ring");
                    s.member = true;
                    // Bootstrap / restart catch-up.
                    s.schedule_repair();
                    drop(s);
                    p.wake.notify_one();
                }
            }
            Err(e) => {
                s.failures = s.failures.saturating_add(1);
                s.last_error = Some(e.to_string());
                if s.member && s.failures >= self.inner.config.lost_after_failures {
                    tracing::warn!(peer = %p.addr, failures = s.failures, error = %e, "peer lost");
                    s.member = false;
                }
            }
        }
    }

    async fn wait(&self, p: &Peer, d: Duration) -> bool {
        let mut rx = self.inner.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(d) => {},
            () = p.wake.notified() => {},
            _ = rx.wait_for(|s| *s) => return false,
        }
        !self.stopping()
    }

    fn limiters(&self, p: &Peer) -> Vec<Arc<TokenBucket>> {
        vec![self.inner.global.clone(), p.limiter.clone()]
    }

    async fn pump(self, p: Arc<Peer>) {
        let mut attempt = 0u32;
        let store = self.inner.store.clone();
        loop {
            if self.stopping() {
                return;
            }
            let (active, repair, cursor) = {
                let s = p.st();
                (
                    s.member && !s.is_self && !s.duplicate,
                    s.needs_repair,
                    s.cursor,
                )
            };
            if !self
                .inner
                .peers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&p.addr)
            {
                return;
            }
            if !active {
                // A lost peer's backlog stays bounded too.
                if let Ok(Backlog::Overflow { .. }) =
                    check_backlog(&store, cursor, self.inner.config.outbox, u64::MAX)
                {
                    let head = store.stats().last_seq;
                    p.overflows.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut s = p.st();
                        s.cursor = head;
                        s.depth = 0;
                        s.ask_repair = true;
                    }
                    let _ = p.cursor_file.store(head);
                }
                if !self.wait(&p, self.inner.config.probe_interval).await {
                    return;
                }
                continue;
            }
            let backoff = |attempt: u32| self.inner.config.backoff.delay(attempt, random_u64());
            if repair {
                // The head before repair: everything up to it is covered by the pass
                // (from the peer's side, its own pull covers what we have).
                {
                    let mut s = p.st();
                    s.repairing = true;
                    s.repair_again = false;
                }
                let r = self.repair_from(&p).await;
                let failed = {
                    let mut s = p.st();
                    s.repairing = false;
                    match r {
                        Ok(()) => {
                            s.needs_repair = s.repair_again;
                            s.repair_again = false;
                            None
                        }
                        Err(e) => {
                            s.last_error = Some(format!("repair: {e}"));
                            Some(e)
                        }
                    }
                };
                match failed {
                    None => attempt = 0,
                    Some(e) => {
                        tracing::warn!(peer = %p.addr, error = %e, "repair failed; retrying");
                        attempt = attempt.saturating_add(1);
                        if !self.wait(&p, backoff(attempt)).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            // We dropped this peer's backlog: ask it to pull from us.
            if p.st().ask_repair {
                match p.client.request_repair(store.node().0).await {
                    Ok(()) => p.st().ask_repair = false,
                    Err(e) => {
                        p.st().last_error = Some(format!("repair request: {e}"));
                        attempt = attempt.saturating_add(1);
                        if !self.wait(&p, backoff(attempt)).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            // Bound the backlog.
            match check_backlog(&store, cursor, self.inner.config.outbox, 256) {
                Ok(Backlog::Within { messages }) => p.st().depth = messages,
                Ok(Backlog::Overflow { messages, bytes }) => {
                    let head = store.stats().last_seq;
                    tracing::warn!(peer = %p.addr, messages, bytes, "outbox overflow: dropping backlog, peer needs repair");
                    p.overflows.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut s = p.st();
                        s.cursor = head;
                        s.depth = 0;
                        s.ask_repair = true;
                    }
                    let _ = p.cursor_file.store(head);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the change feed failed");
                }
            }
            let changes = match store.changes_since(cursor, 64) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the change feed failed");
                    Vec::new()
                }
            };
            if changes.is_empty() {
                if !self.wait(&p, self.inner.config.poll_interval).await {
                    return;
                }
                continue;
            }
            let mut new_cursor = cursor;
            let mut failed = false;
            for c in changes {
                match self.push_one(&p, &c.record).await {
                    Ok(()) => {
                        new_cursor = c.seq;
                        attempt = 0;
                    }
                    Err(e) if e.is_transient() => {
                        p.push_failures.fetch_add(1, Ordering::Relaxed);
                        p.st().last_error = Some(format!("push: {e}"));
                        tracing::debug!(peer = %p.addr, error = %e, "push failed; backing off");
                        failed = true;
                        break;
                    }
                    Err(e) => {
                        p.refused.fetch_add(1, Ordering::Relaxed);
                        p.st().last_error = Some(format!("push refused: {e}"));
                        tracing::warn!(peer = %p.addr, error = %e, "peer refused a record; skipping it");
                        new_cursor = c.seq;
                    }
                }
                if self.stopping() {
                    break;
                }
            }
            if new_cursor != cursor {
                let cur = {
                    let mut s = p.st();
                    // An overflow may have moved the cursor meanwhile.
                    if s.cursor == cursor {
                        s.cursor = new_cursor;
                    }
                    s.cursor
                };
                if let Err(e) = p.cursor_file.store(cur) {
                    tracing::warn!(error = %e, "cannot persist the outbox cursor");
                }
            }
            if failed {
                attempt = attempt.saturating_add(1);
                if !self.wait(&p, backoff(attempt)).await {
                    return;
                }
            }
        }
    }

    async fn push_one(&self, p: &Peer, record: &ReplicatedRecord) -> Result<()> {
        let store = &self.inner.store;
        let body = match record {
            ReplicatedRecord::Put { id, version, .. } => {
                // Only the current copy is pushed; a newer change follows in the feed.
                match store.head(id)? {
                    Some(m) if m.version == *version => {}
                    _ => return Ok(()),
                }
                match store.get(id).await? {
                    Some(o) if o.meta().version == *version => Some(o),
                    _ => return Ok(()),
                }
            }
            _ => None,
        };
        let _permit = self.inner.transfers.acquire().await;
        let progress = Arc::new(Progress::default());
        let outcome = p
            .client
            .push(
                record,
                body.as_ref().map(|o| o.reader()),
                self.limiters(p),
                progress.clone(),
            )
            .await?;
        p.pushed.fetch_add(1, Ordering::Relaxed);
        if outcome.applied {
            p.pushed_bytes
                .fetch_add(progress.bytes(), Ordering::Relaxed);
        }
        Ok(())
    }

    async fn repair_from(&self, p: &Peer) -> Result<()> {
        let status = p.client.status().await?;
        let ctx = RepairContext {
            store: &self.inner.store,
            account: &self.inner.config.account,
            limiters: self.limiters(p),
            transfers: &self.inner.transfers,
            push: false,
        };
        let report = repair::sync(&ctx, &p.client, &status).await?;
        p.repairs.fetch_add(1, Ordering::Relaxed);
        p.repair_bytes
            .fetch_add(report.bytes_fetched, Ordering::Relaxed);
        p.repair_objects
            .fetch_add(report.objects_applied, Ordering::Relaxed);
        tracing::info!(peer = %p.addr, ?report, "repair pass done");
        Ok(())
    }

    async fn maintenance_loop(self) {
        let mut since_ae = Duration::ZERO;
        let mut since_gc = Duration::ZERO;
        let tick = Duration::from_secs(1)
            .min(self.inner.config.anti_entropy_interval)
            .min(self.inner.config.tombstone_gc_interval);
        loop {
            if !self.sleep(tick).await {
                return;
            }
            since_ae += tick;
            if since_ae >= self.inner.config.anti_entropy_interval {
                since_ae = Duration::ZERO;
                self.schedule_repair();
            }
            since_gc += tick;
            if since_gc >= self.inner.config.tombstone_gc_interval {
                since_gc = Duration::ZERO;
                self.gc_tombstones().await;
                self.gc_ghosts().await;
            }
            // Trim the change feed below every peer's cursor (new peers catch up
            // by repair, so trimming never loses data).
            let peers = self.peers();
            let min = peers
                .iter()
                .filter(|p| !p.st().is_self)
                .map(|p| p.st().cursor)
                .min()
                .unwrap_or_else(|| self.inner.store.stats().last_seq);
            if min > 0 {
                if let Err(e) = self.inner.store.trim_changes(min).await {
                    tracing::debug!(error = %e, "trimming the change feed failed");
                }
            }
        }
    }

    /// Collects tombstones older than the horizon if every known peer has
    /// acknowledged everything (see [`MeshConfig::tombstone_gc_horizon`]).
    async fn gc_tombstones(&self) {
        let head = self.inner.store.stats().last_seq;
        let all_acked = self.peers().iter().all(|p| {
            let s = p.st();
            s.is_self
                || s.duplicate
                || (s.member
                    && !s.needs_repair
                    && !s.ask_repair
                    && !s.repairing
                    && s.cursor >= head
                    && p.repairs.load(Ordering::Relaxed) > 0)
        });
        if !all_acked {
            return;
        }
        let now = self.inner.store.now().physical_ms();
        let horizon_ms =
            u64::try_from(self.inner.config.tombstone_gc_horizon.as_millis()).unwrap_or(u64::MAX);
        let horizon = kura_store::Hlc::new(now.saturating_sub(horizon_ms), 0);
        match self.inner.store.gc_tombstones(horizon).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "tombstones garbage-collected"),
            Err(e) => tracing::warn!(error = %e, "tombstone garbage collection failed"),
        }
    }

    /// Drops ghosts evicted more than [`MeshConfig::ghost_ttl`] ago.
    async fn gc_ghosts(&self) {
        let Some(ttl) = self.inner.config.ghost_ttl else {
            return;
        };
        let now = self.inner.store.now().physical_ms();
        let before = now.saturating_sub(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        match self.inner.store.gc_ghosts(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "ghosts garbage-collected"),
            Err(e) => tracing::warn!(error = %e, "ghost garbage collection failed"),
        }
    }

    /// A snapshot for `/up`, `/status/rollout` and metrics.
    pub fn snapshot(&self) -> MeshSnapshot {
        let peers: Vec<PeerSnapshot> = self
            .peers()
            .iter()
            .map(|p| {
                let s = p.st().clone();
                PeerSnapshot {
                    addr: p.addr.clone(),
                    node_id: s.node,
                    member: s.member,
                    is_self: s.is_self || s.duplicate,
                    failures: s.failures,
                    needs_repair: s.needs_repair,
                    ask_repair: s.ask_repair,
                    repairing: s.repairing,
                    outbox_depth: s.depth,
                    pushed: p.pushed.load(Ordering::Relaxed),
                    pushed_bytes: p.pushed_bytes.load(Ordering::Relaxed),
                    push_failures: p.push_failures.load(Ordering::Relaxed),
                    refused: p.refused.load(Ordering::Relaxed),
                    overflows: p.overflows.load(Ordering::Relaxed),
                    repairs: p.repairs.load(Ordering::Relaxed),
                    repair_bytes: p.repair_bytes.load(Ordering::Relaxed),
                    repair_objects: p.repair_objects.load(Ordering::Relaxed),
                    last_error: s.last_error,
                }
            })
            .collect();
        let members: Vec<&PeerSnapshot> = peers.iter().filter(|p| p.member && !p.is_self).collect();
        let c = &self.inner.service.counters;
        MeshSnapshot {
            node_id: self.inner.store.node().0,
            ring_members: members.len() + 1,
            connected_peers: members
                .iter()
                .filter(|p| p.failures == 0)
                .map(|p| p.addr.clone())
                .collect(),
            outbox_depth: members.iter().map(|p| p.outbox_depth).sum(),
            discovered_peers: peers.iter().filter(|p| !p.is_self).count(),
            repairs_pending: members.iter().filter(|p| p.needs_repair).count(),
            pushes_received: c.pushes_applied.load(Ordering::Relaxed),
            pushes_stale: c.pushes_stale.load(Ordering::Relaxed),
            pushes_refused: c.pushes_refused.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            bytes_served: c.bytes_served.load(Ordering::Relaxed),
            handshake_failures: c.handshake_failures.load(Ordering::Relaxed),
            peers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls() {
        let u = PeerUrl::parse("https://127.0.0.1:9000").unwrap();
        assert_eq!(u.addr(), "127.0.0.1:9000");
        assert_eq!(
            PeerUrl::parse("https://kura-a-peers.ns.svc.cluster.local")
                .unwrap()
                .port,
            7443
        );
        assert_eq!(
            PeerUrl::parse("https://[::1]:7443/").unwrap().addr(),
            "[::1]:7443"
        );
        assert!(PeerUrl::parse("http://x:1").is_err());
        assert!(PeerUrl::parse("https://x:1/path").is_err());
        assert!(PeerUrl::parse("nonsense").is_err());
    }
}
