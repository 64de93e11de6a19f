//! The public listener: HTTP/1.1 keep-alive and h2c on one port, header read
//! timeouts against slow clients, REAPI gRPC routed by content type (and an
//! optional gRPC-only listener), accept-error backoff (descriptor
//! exhaustion never crashes the process) and graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::app::{AppState, normalize_path, router};
use crate::fast;
use crate::reapi::{self, Dispatch};

/// How long a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound, not yet serving, public listener (plus the optional gRPC-only
/// listener of `KURA_GRPC_PORT`).
pub struct Server {
    listener: TcpListener,
    grpc_listener: Option<TcpListener>,
    state: Arc<AppState>,
}

/// What a connection is served with: gRPC by content type, else HTTP.
type App = tower::util::MapRequest<Dispatch, fn(http::Request<Incoming>) -> http::Request<Body>>;

fn to_axum(req: http::Request<Incoming>) -> http::Request<Body> {
    normalize_path(req.map(Body::new))
}

fn app(dispatch: Dispatch) -> App {
    dispatch.map_request(to_axum as fn(http::Request<Incoming>) -> http::Request<Body>)
}

impl Server {
    /// Binds the configured address (and the gRPC port, when configured).
    pub async fn bind(state: Arc<AppState>) -> io::Result<Self> {
        let listener = TcpListener::bind(state.config.listen).await?;
        let grpc_listener = match state.config.grpc_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            listener,
            grpc_listener,
            state,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound address of the gRPC-only listener, if configured.
    pub fn grpc_local_addr(&self) -> io::Result<Option<SocketAddr>> {
        self.grpc_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
    }

    /// Serves until `shutdown` resolves, then stops accepting and gives
    /// in-flight requests the configured grace period.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let grace = self.state.config.shutdown_grace;
        let grpc = reapi::grpc_router(self.state.clone());
        let public = app(Dispatch::new(router(self.state.clone()), grpc.clone()));
        let grpc_only = app(Dispatch::new(grpc.clone(), grpc));
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .adaptive_window(true);
        let graceful = GracefulShutdown::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let signal = async {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let grpc_loop = async {
            if let Some(l) = &self.grpc_listener {
                accept_loop(l, &builder, &graceful, grpc_only, stop_rx.clone(), None).await;
            }
        };
        let fast = self.state.config.http_fast_path.then_some(&self.state);
        tokio::join!(
            signal,
            accept_loop(
                &self.listener,
                &builder,
                &graceful,
                public,
                stop_rx.clone(),
                fast
            ),
            grpc_loop
        );
        drop(self.listener);
        drop(self.grpc_listener);
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: finishing in-flight requests"
        );
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; closing remaining connections");
        }
    }
}

/// Accepts connections until `stop` turns true. With `fast`, each
/// connection starts on the HTTP/1.1 read fast path ([`crate::fast`]) and
/// moves to hyper when it needs more.
async fn accept_loop(
    listener: &TcpListener,
    builder: &Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    app: App,
    mut stop: tokio::sync::watch::Receiver<bool>,
    fast: Option<&Arc<AppState>>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let (tcp, _peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning or dying.
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        // Taken now, so shutdown waits for this connection from the start
        // (also while it is on the fast path).
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let fast = fast.cloned();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let io = match fast {
                Some(state) => {
                    match fast::serve(&state, tcp, HEADER_READ_TIMEOUT, &mut stop).await {
                        fast::End::Closed => return,
                        fast::End::HandOff(io) => io,
                    }
                }
                None => fast::Prefixed::new(tcp),
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
