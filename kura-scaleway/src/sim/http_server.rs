//! The simulator over HTTP/1.1 on loopback.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::Simulator;

/// A running HTTP simulator; stops when dropped.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SimServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The base URL to give to [`crate::ClientBuilder::base_url`].
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Serves until the task is aborted (for the binary).
    pub async fn run_forever(mut self) {
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task.await;
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated dropped response")
    }
}
impl std::error::Error for Dropped {}

async fn answer(
    sim: Simulator,
    req: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let out = sim.process(http::Request::from_parts(parts, body));
    if let Some(l) = out.latency {
        sim.sleep(l).await;
    }
    if out.dropped {
        return Err(Dropped);
    }
    let (parts, body) = out.response.into_parts();
    Ok(http::Response::from_parts(parts, Full::new(body)))
}

pub(super) async fn serve(sim: Simulator, port: u16) -> std::io::Result<SimServer> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors or similar: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let sim = sim.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(sim.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(SimServer { addr, task })
}
