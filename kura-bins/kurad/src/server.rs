//! The public listener: HTTP/1.1 keep-alive and h2c on one port, header read
//! timeouts against slow clients, accept-error backoff (descriptor
//! exhaustion never crashes the process) and graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::app::{AppState, normalize_path, router};

/// How long a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound, not yet serving, public listener.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Server {
    /// Binds the configured address.
    pub async fn bind(state: Arc<AppState>) -> io::Result<Self> {
        let listener = TcpListener::bind(state.config.listen).await?;
        Ok(Self { listener, state })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and gives
    /// in-flight requests the configured grace period.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let grace = self.state.config.shutdown_grace;
        let app =
            router(self.state.clone()).map_request(|req: http::Request<hyper::body::Incoming>| {
                normalize_path(req.map(Body::new))
            });
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                a = self.listener.accept() => a,
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
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            let conn = graceful.watch(conn.into_owned());
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
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
