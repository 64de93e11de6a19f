//! `HttpRoutability` against real sockets (port 0): a serving node, a node
//! answering garbage, a node that never answers (timeout), nothing listening.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use kura_operator::primary::{HttpRoutability, Routability};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn client() -> kura_operator::primary::ProbeClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

async fn serve(body: &'static str, respond: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(req.starts_with("GET /status/rollout "), "{req}");
                if !respond {
                    // Hold the connection open without answering.
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn probes_real_sockets() {
    let ok = serve(
        r#"{"ready":true,"state":"serving","ring_members":2,"writer_lock_owned":true}"#,
        true,
    )
    .await;
    let status = HttpRoutability::new(client(), ok, Duration::from_secs(2))
        .rollout("127.0.0.1")
        .await
        .unwrap();
    assert!(status.routable(3));

    let draining = serve(
        r#"{"ready":true,"state":"draining","ring_members":2,"writer_lock_owned":true}"#,
        true,
    )
    .await;
    let status = HttpRoutability::new(client(), draining, Duration::from_secs(2))
        .rollout("127.0.0.1")
        .await
        .unwrap();
    assert!(!status.routable(3));

    let garbage = serve("not json", true).await;
    assert!(
        HttpRoutability::new(client(), garbage, Duration::from_secs(2))
            .rollout("127.0.0.1")
            .await
            .is_none()
    );

    let silent = serve("", false).await;
    assert!(
        HttpRoutability::new(client(), silent, Duration::from_millis(200))
            .rollout("127.0.0.1")
            .await
            .is_none()
    );

    // Nothing listening: bind, note the port, close.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(
        HttpRoutability::new(client(), closed, Duration::from_secs(2))
            .rollout("127.0.0.1")
            .await
            .is_none()
    );
    // Not an IP address.
    assert!(
        HttpRoutability::new(client(), ok, Duration::from_secs(2))
            .rollout("pod.example")
            .await
            .is_none()
    );
}
