//! Every protocol over real sockets: status codes, headers and edge cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{TestServer, client, files_under, h2c_client, raw, sha256_hex, status_of};
use reqwest::StatusCode;

const GRADLE_KEY: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn gradle_put_get_head_range_etag() {
    let s = TestServer::start().await;
    let c = client();
    let url = s.url(&format!("/cache/{GRADLE_KEY}"));
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let r = c
        .put(&url)
        .body("gradle-entry")
        .header(
            "content-type",
            "application/vnd.gradle.build-cache-artifact.v1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(b"gradle-entry")));
    assert_eq!(r.headers()["content-length"], "12");
    assert_eq!(r.bytes().await.unwrap(), "gradle-entry");
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "12");
    let r = c
        .get(&url)
        .header("range", "bytes=7-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 7-11/12");
    assert_eq!(r.bytes().await.unwrap(), "entry");
    let r = c
        .get(&url)
        .header("range", "bytes=50-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */12");
    let r = c
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    // The legacy route names the same namespaces.
    let legacy = s.url(&format!(
        "/api/cache/gradle/{GRADLE_KEY}?tenant_id=t&namespace_id=default"
    ));
    assert_eq!(
        c.get(&legacy).send().await.unwrap().bytes().await.unwrap(),
        "gradle-entry"
    );
    s.stop().await;
}

#[tokio::test]
async fn namespaces_are_isolated_and_cleaned() {
    let s = TestServer::start().await;
    let c = client();
    let k = format!("/cache/{GRADLE_KEY}");
    c.put(s.url(&format!("/ns/android{k}")))
        .body("a")
        .send()
        .await
        .unwrap();
    assert_eq!(
        c.get(s.url(&k)).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get(s.url(&format!("/ns/android{k}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = c
        .delete(s.url("/api/cache/clean?tenant_id=t&namespace_id=android"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        c.get(s.url(&format!("/ns/android{k}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    // A write after the clean is visible again.
    c.put(s.url(&format!("/ns/android{k}")))
        .body("b")
        .send()
        .await
        .unwrap();
    assert_eq!(
        c.get(s.url(&format!("/ns/android{k}")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        "b"
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_keys_are_400() {
    let s = TestServer::start().await;
    let c = client();
    for path in [
        "/cache/..%2F..%2Fetc%2Fpasswd",
        "/cache/.hidden",
        "/bazel/cas/not-a-sha",
        "/bazel/cas/ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789",
        "/ns/bad%20ns/cache/abc",
    ] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("invalid"),
            "{path}: {body}"
        );
    }
    // Raw dot segments (HTTP clients normalise them away; attackers do not).
    for path in ["/ccache/a/../../etc/passwd", "/cache/..", "/ccache/.."] {
        let resp = raw(
            s.addr,
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
            false,
        )
        .await;
        assert_eq!(status_of(&resp), 400, "{path}: {resp}");
    }
    let long = format!("/cache/{}", "a".repeat(600));
    assert_eq!(
        c.get(s.url(&long)).send().await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    s.stop().await;
}

#[tokio::test]
async fn bazel_cas_is_verified_and_ac_references_cas() {
    let s = TestServer::start().await;
    let c = client();
    let blob = b"compiled output";
    let h = sha256_hex(blob);
    let cas = s.url(&format!("/bazel/cas/{h}"));
    // Wrong content for the digest: rejected, not stored.
    let r = c.put(&cas).body("something else").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        c.get(&cas).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.put(&cas).body(&blob[..]).send().await.unwrap().status(),
        StatusCode::OK
    );
    // Idempotent, cheap re-PUT.
    assert_eq!(
        c.put(&cas).body(&blob[..]).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        c.get(&cas).send().await.unwrap().bytes().await.unwrap(),
        &blob[..]
    );
    // The empty blob is always there.
    let empty =
        s.url("/bazel/cas/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(c.get(&empty).send().await.unwrap().status(), StatusCode::OK);

    // An ActionResult naming the blob (output_files[0].digest).
    let ac = action_result(&[(&h, blob.len() as u64)]);
    let ac_key = sha256_hex(b"action");
    let ac_url = s.url(&format!("/bazel/ac/{ac_key}"));
    assert_eq!(
        c.put(&ac_url)
            .body(ac.clone())
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        c.get(&ac_url).send().await.unwrap().bytes().await.unwrap(),
        ac
    );
    let meta = s
        .state
        .store
        .head(&kura_store::ObjectId::parse("local", "default", &format!("ac/{ac_key}")).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(meta.refs.len(), 1, "AC entry references its CAS blob");
    // An AC entry naming a blob that is not there is refused.
    let missing = action_result(&[(&sha256_hex(b"never uploaded"), 14)]);
    let r = c
        .put(s.url(&format!("/bazel/ac/{}", sha256_hex(b"a2"))))
        .body(missing)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // Garbage is not an ActionResult.
    let r = c
        .put(s.url(&format!("/bazel/ac/{}", sha256_hex(b"a3"))))
        .body(vec![0xffu8; 3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    s.stop().await;
}

fn action_result(outputs: &[(&str, u64)]) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn field(n: u64, p: &[u8], out: &mut Vec<u8>) {
        varint(n << 3 | 2, out);
        varint(p.len() as u64, out);
        out.extend_from_slice(p);
    }
    let mut ar = Vec::new();
    for (i, (hash, size)) in outputs.iter().enumerate() {
        let mut d = Vec::new();
        field(1, hash.as_bytes(), &mut d);
        varint(2 << 3, &mut d);
        varint(*size, &mut d);
        let mut f = Vec::new();
        field(1, format!("out/{i}").as_bytes(), &mut f);
        field(2, &d, &mut f);
        field(2, &f, &mut ar);
    }
    ar
}

#[tokio::test]
async fn ccache_layouts_put_get_delete() {
    let s = TestServer::start().await;
    let c = client();
    let subdirs = s.url("/ccache/70/814jbpi0a5vj6dffnjqpu2a3i0");
    let flat = s.url("/ccache/70814jbpi0a5vj6dffnjqpu2a3i0");
    assert_eq!(
        c.get(&subdirs).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.put(&subdirs).body("r1").send().await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        c.put(&subdirs).body("r2").send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.get(&flat).send().await.unwrap().bytes().await.unwrap(),
        "r2"
    );
    assert_eq!(c.head(&flat).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        c.delete(&flat).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.get(&subdirs).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let bazel_layout = s.url(&format!("/ccache/ac/{}", sha256_hex(b"k")));
    assert_eq!(
        c.put(&bazel_layout)
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    s.stop().await;
}

#[tokio::test]
async fn turbo_v8_api() {
    let s = TestServer::start().await;
    let c = client();
    let url = s.url("/v8/artifacts/a1b2c3?slug=myteam");
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let r = c
        .put(&url)
        .header("x-artifact-duration", "1234")
        .header("x-artifact-tag", "c2lnbmF0dXJl+/=")
        .header("content-type", "application/octet-stream")
        .body("zstd-tar")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-artifact-duration"], "1234");
    assert_eq!(r.headers()["x-artifact-tag"], "c2lnbmF0dXJl+/=");
    assert_eq!(r.bytes().await.unwrap(), "zstd-tar");
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.headers()["x-artifact-duration"], "1234");
    let r: serde_json::Value = c
        .post(s.url("/v8/artifacts?slug=myteam"))
        .json(&serde_json::json!({"hashes": ["a1b2c3", "missing"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["a1b2c3"]["size"], 8);
    assert_eq!(r["a1b2c3"]["taskDurationMs"], 1234);
    assert!(r["missing"].is_null());
    let r = c.post(s.url("/v8/artifacts/events")).json(&serde_json::json!([{"sessionId":"s","source":"LOCAL","event":"HIT","hash":"a1b2c3","duration":1}])).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "{}");
    let r: serde_json::Value = c
        .get(s.url("/v8/artifacts/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "enabled");
    // A PUT without a team is a client error in turbo's error format.
    let r = c
        .put(s.url("/v8/artifacts/zz"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"]["code"].is_string());
    s.stop().await;
}

#[tokio::test]
async fn nx_statuses_are_exact() {
    let s = TestServer::start().await;
    let c = client();
    let url = s.url("/v1/cache/1234abcd");
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let r = c.put(&url).body("nx-archive").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.put(&url).body("other").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        c.get(&url).send().await.unwrap().bytes().await.unwrap(),
        "nx-archive"
    );
    // A trailing slash in the server URL yields `//v1/...`.
    let r = c.get(s.url("//v1/cache/1234abcd")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Without Content-Length: 411.
    let resp = raw(s.addr, b"PUT /v1/cache/zz HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n1\r\na\r\n0\r\n\r\n", false).await;
    assert_eq!(status_of(&resp), 411, "{resp}");
    s.stop().await;
}

#[tokio::test]
async fn compat_routes() {
    let s = TestServer::start().await;
    let c = client();
    let q = "tenant_id=t&namespace_id=ios";
    let r = c.get(s.url("/api/cache/cas/abc")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["message"],
        "Missing tenant_id"
    );
    let r = c
        .get(s.url("/api/cache/cas/abc?tenant_id=t"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["message"],
        "Missing namespace_id"
    );
    let r = c
        .get(s.url(&format!("/api/cache/cas/abc?{q}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.bytes().await.unwrap().len(),
        0,
        "a miss has an empty body"
    );
    assert_eq!(
        c.post(s.url(&format!("/api/cache/cas/abc?{q}")))
            .body("obj")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.get(s.url("/api/cache/cas/abc?account_handle=t&project_handle=ios"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        "obj"
    );
    // keyvalue
    let kv = serde_json::json!({"cas_id": "k1", "entries": [{"value": "v1"}]});
    assert_eq!(
        c.put(s.url(&format!("/api/cache/keyvalue?{q}")))
            .json(&kv)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    let got: serde_json::Value = c
        .get(s.url(&format!("/api/cache/keyvalue/k1?{q}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["entries"][0]["value"], "v1");
    let kv2 = serde_json::json!({"cas_id": "k1", "entries": [{"value": "v2"}]});
    c.put(s.url(&format!("/api/cache/keyvalue?{q}")))
        .json(&kv2)
        .send()
        .await
        .unwrap();
    let got: serde_json::Value = c
        .get(s.url(&format!("/api/cache/keyvalue/k1?{q}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["entries"][0]["value"], "v2", "last writer wins");
    let r = c
        .put(s.url(&format!("/api/cache/keyvalue?{q}")))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["message"],
        "Invalid key-value payload"
    );
    let big = serde_json::json!({"cas_id": "k2", "entries": [{"value": "x".repeat(2 << 20)}]});
    assert_eq!(
        c.put(s.url(&format!("/api/cache/keyvalue?{q}")))
            .json(&big)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // metro
    assert_eq!(
        c.put(s.url("/api/metro/cache/m1"))
            .body("bundle")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.get(s.url("/api/metro/cache/m1"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        "bundle"
    );
    s.stop().await;
}

#[tokio::test]
async fn tenant_must_match_when_configured() {
    let s = TestServer::start_with(|c| {
        c.account = kura_store::Account::new("acme").unwrap();
        c.tenant_configured = true;
    })
    .await;
    let c = client();
    let r = c
        .get(s.url("/api/cache/cas/abc?tenant_id=other&namespace_id=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .get(s.url("/api/cache/cas/abc?tenant_id=acme&namespace_id=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let up: serde_json::Value = c
        .get(s.url("/up"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(up["tenant_id"], "acme");
    assert_eq!(up["status"], "ok");
    s.stop().await;
}

#[tokio::test]
async fn oversized_declared_body_gets_413_before_it_is_sent() {
    let s = TestServer::start_with(|c| c.limits.gradle = 1024).await;
    // Headers only, declaring 1 MiB with Expect: 100-continue: the answer must
    // come without the body being sent, and no 100 Continue first.
    let req = format!(
        "PUT /cache/{GRADLE_KEY} HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\nexpect: 100-continue\r\n\r\n"
    );
    let resp = raw(s.addr, req.as_bytes(), false).await;
    assert_eq!(status_of(&resp), 413, "{resp}");
    assert!(!resp.contains("100 Continue"), "{resp}");
    s.stop().await;
}

#[tokio::test]
async fn short_body_is_never_stored() {
    let s = TestServer::start().await;
    let req = format!(
        "PUT /cache/{GRADLE_KEY} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly-part"
    );
    let _ = raw(s.addr, req.as_bytes(), true).await;
    let c = client();
    // The server saw the connection close mid-body; wait until it has given up
    // on the request, then check nothing is visible.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let in_flight = c
            .get(s.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if in_flight.contains("kura_http_requests_total{route=\"/cache/{key}\",method=\"PUT\"")
            || std::time::Instant::now() > deadline
        {
            break;
        }
        tokio::task::yield_now().await;
    }
    let r = c
        .get(s.url(&format!("/cache/{GRADLE_KEY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn chunked_upload_and_h2c() {
    let s = TestServer::start().await;
    let resp = raw(
        s.addr,
        b"PUT /ccache/chunked1 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(status_of(&resp), 201, "{resp}");
    let h2 = h2c_client();
    let r = h2.get(s.url("/ccache/chunked1")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.bytes().await.unwrap(), "hello world");
    s.stop().await;
}

#[tokio::test]
async fn peer_api_is_never_on_the_public_listener() {
    let s = TestServer::start().await;
    let c = client();
    for path in [
        "/_internal/status",
        "/_internal/bootstrap/manifests",
        "/_internal/replicate/artifact",
    ] {
        assert_eq!(
            c.get(s.url(path)).send().await.unwrap().status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
        assert_eq!(
            c.put(s.url(path)).body("x").send().await.unwrap().status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn health_and_metrics() {
    let s = TestServer::start().await;
    let c = client();
    let up: serde_json::Value = c
        .get(s.url("/up"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for f in [
        "status",
        "tenant_id",
        "region",
        "node_url",
        "connected_nodes",
        "ring_members",
        "members",
        "nodes",
    ] {
        assert!(up.get(f).is_some(), "/up lacks {f}");
    }
    assert_eq!(
        c.get(s.url("/ready")).send().await.unwrap().status(),
        StatusCode::OK
    );
    let ro: serde_json::Value = c
        .get(s.url("/status/rollout"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ro["state"], "serving");
    assert_eq!(ro["writer_lock_owned"], true);
    c.put(s.url(&format!("/cache/{GRADLE_KEY}")))
        .body("x")
        .send()
        .await
        .unwrap();
    c.get(s.url(&format!("/cache/{GRADLE_KEY}")))
        .send()
        .await
        .unwrap();
    let m = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "kura_http_requests_total{",
        "kura_http_request_duration_seconds_bucket{",
        "kura_artifact_reads_total{kind=\"gradle\",result=\"hit\"}",
        "kura_artifact_writes_total{kind=\"gradle\",result=\"ok\"}",
        "kura_node_info{",
        "kura_process_resident_memory_bytes",
        "kura_store_objects 1",
    ] {
        assert!(m.contains(name), "metrics lack {name}:\n{m}");
    }
    s.stop().await;
}

#[tokio::test]
async fn module_multipart_upload() {
    let s = TestServer::start().await;
    let c = client();
    let q = "tenant_id=t&namespace_id=ios&hash=abc123&name=Module.framework.zip";
    let start: serde_json::Value = c
        .post(s.url(&format!("/api/cache/module/start?{q}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = start["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    let part = |n: u32, body: Vec<u8>| {
        c.post(s.url(&format!(
            "/api/cache/module/part?upload_id={id}&part_number={n}"
        )))
        .body(body)
        .send()
    };
    assert_eq!(
        part(2, b"-world".to_vec()).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        part(1, b"hello".to_vec()).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    // Parts over 10 MiB are refused before they are read.
    assert_eq!(
        part(3, vec![0u8; (10 << 20) + 1]).await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Unknown upload.
    let r = c
        .post(s.url(
            "/api/cache/module/part?upload_id=00000000-0000-4000-8000-000000000000&part_number=1",
        ))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The part list must match what was uploaded.
    let complete = |parts: serde_json::Value| {
        c.post(s.url(&format!("/api/cache/module/complete?upload_id={id}")))
            .json(&serde_json::json!({ "parts": parts }))
            .send()
    };
    assert_eq!(
        complete(serde_json::json!([1])).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let head = s.url(&format!("/api/cache/module/m1?{q}"));
    assert_eq!(
        c.head(&head).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        complete(serde_json::json!([1, 2])).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.head(&head).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.get(&head).send().await.unwrap().bytes().await.unwrap(),
        "hello-world"
    );
    // Completed uploads are gone; a new start for the same artifact gets null.
    assert_eq!(
        complete(serde_json::json!([1, 2])).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let again: serde_json::Value = c
        .post(s.url(&format!("/api/cache/module/start?{q}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(again["upload_id"].is_null());
    s.stop().await;
}

fn dav(c: &reqwest::Client, method: &str, url: &str) -> reqwest::RequestBuilder {
    c.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
}

#[tokio::test]
async fn sccache_webdav_status_codes() {
    let s = TestServer::start().await;
    let c = client();
    let root = s.url("/sccache/");
    // Collections are implicit: the root and any collection path exist.
    let r = dav(&c, "PROPFIND", &root)
        .header("depth", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 207);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("xml")
    );
    let body = r.text().await.unwrap();
    assert!(body.contains("<D:href>/sccache/</D:href>"), "{body}");
    assert!(body.contains("<D:collection/>"), "{body}");
    // Depth infinity (or no Depth) is refused.
    let r = dav(&c, "PROPFIND", &root).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("propfind-finite-depth"));
    let r = dav(&c, "PROPFIND", &root)
        .header("depth", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        dav(&c, "MKCOL", &s.url("/sccache/a/b/"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        dav(&c, "MKCOL", &s.url("/sccache/a/"))
            .body("<x/>")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    // Objects: 404, PUT 201, re-PUT 204, GET, HEAD, PROPFIND of the file.
    let file = s.url("/sccache/a/b/.obj-1");
    assert_eq!(
        c.get(&file).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        dav(&c, "PROPFIND", &file)
            .header("depth", "0")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.put(&file).body("one").send().await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        c.put(&file).body("one!").send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let r = c.get(&file).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["etag"],
        format!("\"{}\"", sha256_hex(b"one!")).as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), "one!");
    let r = c.head(&file).send().await.unwrap();
    assert_eq!(r.headers()["content-length"], "4");
    let r = dav(&c, "PROPFIND", &file)
        .header("depth", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 207);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("<D:getcontentlength>4</D:getcontentlength>"),
        "{body}"
    );
    assert!(body.contains("<D:resourcetype/>"), "{body}");
    assert!(body.contains(" GMT</D:getlastmodified>"), "{body}");
    // MKCOL on an object's path: 405 with Allow.
    let r = dav(&c, "MKCOL", &file).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers()["allow"].to_str().unwrap().contains("PROPFIND"));
    // Keys that sort between `a/b` and `a/b/` do not leak into the listing.
    assert_eq!(
        c.put(s.url("/sccache/a/b-c"))
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        c.put(s.url("/sccache/a/b/c/d"))
            .body("y")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    let r = dav(&c, "PROPFIND", &s.url("/sccache/a/b/"))
        .header("depth", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 207);
    let body = r.text().await.unwrap();
    assert_eq!(body.matches("<D:response>").count(), 3, "{body}");
    assert!(
        body.contains("<D:href>/sccache/a/b/.obj-1</D:href>"),
        "{body}"
    );
    assert!(body.contains("<D:href>/sccache/a/b/c/</D:href>"), "{body}");
    assert!(!body.contains("b-c"), "{body}");
    // A collection named without its trailing slash is found through its children.
    let r = dav(&c, "PROPFIND", &s.url("/sccache/a/b"))
        .header("depth", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 207);
    // GET/PUT of a collection: 405.
    assert_eq!(
        c.get(s.url("/sccache/a/")).send().await.unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        c.put(s.url("/sccache/a/"))
            .body("z")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Bad paths: 400.
    for bad in ["/sccache/a/b%00", "/sccache/a%20b"] {
        assert_eq!(
            c.get(s.url(bad)).send().await.unwrap().status(),
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let r = raw(
        s.addr,
        b"GET /sccache/a/../b HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");
    // Namespaces are separate.
    assert_eq!(
        c.get(s.url("/ns/other/sccache/a/b/.obj-1"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let r = dav(&c, "OPTIONS", &root).send().await.unwrap();
    assert_eq!(r.headers()["dav"], "1");
    // DELETE of an object, then of a whole collection.
    assert_eq!(
        c.delete(&file).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.delete(&file).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.delete(s.url("/sccache/a/"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.get(s.url("/sccache/a/b/c/d"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get(s.url("/sccache/a/b-c"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    s.stop().await;
}

async fn put_ok(c: &reqwest::Client, url: &str, data: &[u8]) {
    let r = c.put(url).body(data.to_vec()).send().await.unwrap();
    assert!(r.status().is_success(), "PUT {url}: {}", r.status());
}

/// Flips byte `at` of the (only) blob file of `len` bytes under the data directory.
fn flip_blob_byte(s: &TestServer, len: usize, at: usize) {
    let mut files = Vec::new();
    files_under(&s.state.config.data_dir, &mut files);
    let blob = files
        .into_iter()
        .find(|p| std::fs::metadata(p).unwrap().len() == len as u64)
        .expect("the blob file");
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
}

#[tokio::test]
async fn a_corrupt_large_object_is_never_served_complete() {
    let s = TestServer::start().await;
    let c = client();
    // File-backed (over the inline threshold) and several read chunks long.
    let data: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let url = s.url("/ccache/corrupt-me");
    put_ok(&c, &url, &data).await;
    // An intact object reads back whole (through the read-ahead task).
    let got = c.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), data.as_slice());
    // Flip one byte in the last chunk of the blob file.
    flip_blob_byte(&s, data.len(), 690_000);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    match r.bytes().await {
        Err(_) => {}
        Ok(b) => panic!(
            "a corrupt object was served complete ({} of {} bytes)",
            b.len(),
            data.len()
        ),
    }
    s.stop().await;
}

#[tokio::test]
async fn objects_over_the_verify_limit_stream_from_the_file() {
    let s = TestServer::start_with(|c| c.verify_reads_max = 100_000).await;
    let c = client();
    // Three 1 MiB reads and a partial one.
    let data: Vec<u8> = (0..3_500_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let url = s.url("/ccache/large-unverified");
    put_ok(&c, &url, &data).await;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "3500000");
    assert_eq!(
        r.headers()["etag"],
        format!("\"{}\"", sha256_hex(&data)).as_str()
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
    // Ranges across read boundaries.
    for (a, b) in [(0u64, 9u64), (1_048_570, 1_048_590), (3_000_000, 3_499_999)] {
        let r = c
            .get(&url)
            .header("range", format!("bytes={a}-{b}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            &data[a as usize..=b as usize]
        );
    }
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.headers()["content-length"], "3500000");
    s.stop().await;
}

#[tokio::test]
async fn the_scrubber_quarantines_what_unverified_reads_would_serve() {
    let s = TestServer::start_with(|c| c.verify_reads_max = 100_000).await;
    let c = client();
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let url = s.url("/ccache/rots-on-disk");
    put_ok(&c, &url, &data).await;
    flip_blob_byte(&s, data.len(), 1_000_000);
    // Over the verify limit: served as stored (the trade-off of
    // KURA_VERIFY_READS_MAX_BYTES) ...
    let got = c.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.len(), data.len());
    assert_ne!(got.as_ref(), data.as_slice());
    // ... until a scrub pass finds it: quarantined, counted, a miss from then on.
    kurad::scrub::pass(&s.state, 0).await.unwrap();
    assert_eq!(s.state.metrics.scrub_corrupt.get(), 1);
    assert_eq!(s.state.metrics.scrub_passes.get(), 1);
    // The quarantine is committed in the background: wait for it (deadline).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while c.get(&url).send().await.unwrap().status() != StatusCode::NOT_FOUND {
        assert!(
            std::time::Instant::now() < deadline,
            "the corrupt object was not quarantined"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let text = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("kura_scrub_corrupt_objects_total 1"),
        "{text}"
    );
    // A clean store scrubs clean.
    kurad::scrub::pass(&s.state, 0).await.unwrap();
    assert_eq!(s.state.metrics.scrub_corrupt.get(), 1);
    s.stop().await;
}
