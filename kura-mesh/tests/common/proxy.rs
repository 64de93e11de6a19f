//! An in-process TCP fault proxy: forwards to a target and counts bytes; faults:
//! cut every connection (partition) and heal, cap bandwidth, add latency per
//! direction (each chunk delayed, order preserved, pipelined like a long link), and
//! half-open (a black hole: connections stay open, new ones are accepted, but
//! nothing is forwarded in the chosen directions and nothing is closed — like a
//! peer whose host vanished).
#![allow(clippy::unwrap_used, dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A direction through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client (the dialler) to target.
    Up = 0,
    /// Target to client.
    Down = 1,
}

#[derive(Default)]
struct State {
    cut: AtomicBool,
    bytes: AtomicU64,
    /// Connections accepted.
    accepted: AtomicU64,
    /// Bytes per second per direction per connection (0: unlimited).
    rate: AtomicU64,
    /// Added one-way latency in ms, per direction.
    latency_ms: [AtomicU64; 2],
    /// Black-holed directions.
    blackhole: [AtomicBool; 2],
    conns: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
    /// Per-connection "dark forever" flags (see `FaultProxy::blackhole_existing`).
    dark: std::sync::Mutex<Vec<Arc<AtomicBool>>>,
}

impl State {
    /// Waits while `dir` or the connection is black-holed (polling: a test proxy).
    async fn open(&self, dir: Dir, dark: &AtomicBool) {
        while self.blackhole[dir as usize].load(Ordering::SeqCst) || dark.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.state.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// Forwards `from` to `to` in direction `dir`: a reader stamps each chunk with its
/// due time (now + latency) and a writer releases chunks in order at their due time,
/// paced to the rate. Either side waits while the direction is black-holed, without
/// closing anything.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    st: Arc<State>,
    dir: Dir,
    dark: Arc<AtomicBool>,
) {
    // Bounded: with the writer held back, the reader stops reading and TCP
    // backpressure reaches the sender, as on a real link.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u8>, Instant)>(512);
    let rst = st.clone();
    let rdark = dark.clone();
    let reader = async move {
        loop {
            rst.open(dir, &rdark).await;
            let mut buf = vec![0u8; 64 * 1024];
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if rst.cut.load(Ordering::SeqCst) {
                break;
            }
            buf.truncate(n);
            let lat = rst.latency_ms[dir as usize].load(Ordering::Relaxed);
            let due = Instant::now() + Duration::from_millis(lat);
            if tx.send((buf, due)).await.is_err() {
                break;
            }
        }
    };
    let wst = st.clone();
    let writer = async move {
        // Pacing: `next` is when the link is free again.
        let mut next = Instant::now();
        while let Some((buf, due)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            wst.open(dir, &dark).await;
            if wst.cut.load(Ordering::SeqCst) {
                break;
            }
            let rate = wst.rate.load(Ordering::Relaxed);
            if rate > 0 {
                let now = Instant::now();
                if next < now {
                    next = now;
                }
                next += Duration::from_secs_f64(buf.len() as f64 / rate as f64);
                // Sleep only when ahead by more than the timer's granularity.
                if next > now + Duration::from_millis(2) {
                    tokio::time::sleep_until(next).await;
                }
            }
            wst.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            if to.write_all(&buf).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

impl FaultProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(State::default());
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = l.accept().await else {
                    continue;
                };
                if st.cut.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                st.accepted.fetch_add(1, Ordering::Relaxed);
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                let dark = Arc::new(AtomicBool::new(false));
                st.dark.lock().unwrap().push(dark.clone());
                let a = tokio::spawn(pump(ri, wo, st.clone(), Dir::Up, dark.clone()));
                let b = tokio::spawn(pump(ro, wi, st.clone(), Dir::Down, dark));
                let mut conns = st.conns.lock().unwrap();
                conns.retain(|c| !c.is_finished());
                conns.push(a.abort_handle());
                conns.push(b.abort_handle());
            }
        });
        Self {
            addr,
            state,
            accept,
        }
    }

    /// Partition: drop every connection and refuse new ones.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for c in self.state.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Ends a cut and every black hole; held connections resume where they stopped
    /// (like a network that came back before TCP gave up).
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
        for b in &self.state.blackhole {
            b.store(false, Ordering::SeqCst);
        }
    }

    /// Half-open: silently stop forwarding in `dirs` on every connection, existing and
    /// new, without closing anything (new connections are still accepted).
    pub fn blackhole(&self, dirs: &[Dir]) {
        for d in dirs {
            self.state.blackhole[*d as usize].store(true, Ordering::SeqCst);
        }
    }

    /// Every connection open now goes dark for good, both ways, without being
    /// closed; new connections work (a flow whose NAT or conntrack state was lost,
    /// a peer address now answered by a new host that silently drops it).
    pub fn blackhole_existing(&self) {
        for d in self.state.dark.lock().unwrap().iter() {
            d.store(true, Ordering::SeqCst);
        }
    }

    /// Adds `ms` of one-way latency in `dir` (each chunk is delayed; order and
    /// throughput are preserved).
    pub fn set_latency(&self, dir: Dir, ms: u64) {
        self.state.latency_ms[dir as usize].store(ms, Ordering::Relaxed);
    }

    pub fn bytes(&self) -> u64 {
        self.state.bytes.load(Ordering::Relaxed)
    }

    pub fn reset_bytes(&self) {
        self.state.bytes.store(0, Ordering::Relaxed);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }

    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.state.rate.store(bytes_per_sec, Ordering::Relaxed);
    }
}
