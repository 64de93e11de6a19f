//! Token authentication across protocols.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use base64::Engine;
use common::{TestServer, client};
use reqwest::StatusCode;

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = kurad::auth::Tokens::parse("writer rw *\nreader ro default\n").unwrap();
    let s = TestServer::start_in(dir.path().to_path_buf(), |_| {}, Some(tokens)).await;
    (s, dir)
}

#[tokio::test]
async fn missing_token_is_401_with_challenge() {
    let (s, _d) = server().await;
    let c = client();
    let r = c.get(s.url("/cache/abc")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("Basic")
    );
    // Nx needs text/plain on 401.
    let r = c.get(s.url("/v1/cache/abc")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    // Health endpoints stay open.
    assert_eq!(
        c.get(s.url("/up")).send().await.unwrap().status(),
        StatusCode::OK
    );
    s.stop().await;
}

#[tokio::test]
async fn read_only_tokens_cannot_write() {
    let (s, _d) = server().await;
    let c = client();
    let r = c
        .put(s.url("/v1/cache/abc"))
        .bearer_auth("reader")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .put(s.url("/v1/cache/abc"))
        .bearer_auth("writer")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(s.url("/v1/cache/abc"))
        .bearer_auth("reader")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The reader may not touch another namespace.
    let r = c
        .get(s.url("/ns/other/v1/cache/abc"))
        .bearer_auth("reader")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Turbo's 403 body format.
    let r = c
        .put(s.url("/v8/artifacts/h1?slug=t"))
        .bearer_auth("reader")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "remote_caching_disabled");
    s.stop().await;
}

#[tokio::test]
async fn basic_auth_in_base64_and_base64url() {
    let (s, _d) = server().await;
    let c = client();
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        let v = format!("Basic {}", engine.encode("gradle:writer"));
        let r = c
            .put(s.url("/cache/k1"))
            .header("authorization", v)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    s.stop().await;
}
