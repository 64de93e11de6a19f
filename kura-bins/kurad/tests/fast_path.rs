//! The HTTP/1.1 read fast path (`kurad::fast`) against the general stack
//! (hyper + axum): the same request must get the same response either way,
//! connections move to the general stack when they need it, and large
//! objects go out with `sendfile`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{TestServer, client, h2c_client, metric, random_bytes, sha256_hex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One parsed HTTP/1.1 response.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resp {
    status: u16,
    /// Lower-case names; `date` and `x-request-id` left out (they differ by
    /// design), repeated headers joined.
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A client connection that reads responses one by one.
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        Self {
            tcp: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(20), self.tcp.read(&mut chunk))
            .await
            .expect("response within 20 s")
            .unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads one response to a request with the given method.
    async fn response(&mut self, head_req: bool) -> Resp {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill().await,
                "connection closed before a response head"
            );
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).unwrap();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status: u16 = status_line[9..12].parse().unwrap();
        let mut headers = BTreeMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (n, v) = line.split_once(':').unwrap();
            let n = n.trim().to_ascii_lowercase();
            let v = v.trim().to_owned();
            headers
                .entry(n)
                .and_modify(|e: &mut String| {
                    e.push_str(", ");
                    e.push_str(&v);
                })
                .or_insert(v);
        }
        let bodiless = head_req || status == 204 || status == 304 || status < 200;
        let mut body = Vec::new();
        if !bodiless {
            if let Some(len) = headers.get("content-length") {
                let len: usize = len.parse().unwrap();
                while self.buf.len() < len {
                    assert!(self.fill().await, "connection closed mid-body");
                }
                body = self.buf.drain(..len).collect();
            } else if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
                loop {
                    let line_end = loop {
                        if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                            break i;
                        }
                        assert!(self.fill().await);
                    };
                    let size = usize::from_str_radix(
                        std::str::from_utf8(&self.buf[..line_end]).unwrap().trim(),
                        16,
                    )
                    .unwrap();
                    self.buf.drain(..line_end + 2);
                    while self.buf.len() < size + 2 {
                        assert!(self.fill().await);
                    }
                    body.extend(self.buf.drain(..size));
                    self.buf.drain(..2);
                    if size == 0 {
                        break;
                    }
                }
            }
        }
        if status >= 200 {
            headers.remove("date").expect("a date header");
        }
        // (hyper's own 400 for a malformed head has none)
        headers.remove("x-request-id");
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn send(&mut self, req: &[u8]) {
        self.tcp.write_all(req).await.unwrap();
    }

    async fn exchange(&mut self, req: &str) -> Resp {
        self.send(req.as_bytes()).await;
        self.response(req.starts_with("HEAD ")).await
    }
}

const FAST: &str = "kura_http_fast_path_requests_total";
const SENDFILE: &str = "kura_http_sendfile_bytes_total";

/// Sends `req` once on a fresh connection (fast path) and once on a
/// connection that was first handed over to the general stack, and returns
/// both responses; checks that exactly one of them took the fast path.
async fn both(addr: SocketAddr, req: &str) -> (Resp, Resp) {
    let before = metric(addr, FAST).await;
    let mut fast = Conn::open(addr).await;
    let a = fast.exchange(req).await;
    assert_eq!(
        metric(addr, FAST).await,
        before + 1,
        "not served by the fast path: {req:?}"
    );
    let mut general = Conn::open(addr).await;
    // OPTIONS is never fast: the connection moves to hyper for good.
    let opt = general
        .exchange("OPTIONS /up HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    assert!(opt.status >= 200);
    let b = general.exchange(req).await;
    assert_eq!(
        metric(addr, FAST).await,
        before + 1,
        "the handed-over connection used the fast path: {req:?}"
    );
    (a, b)
}

async fn put(s: &TestServer, path: &str, body: Vec<u8>, token: Option<&str>) {
    let mut r = client().put(s.url(path)).body(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let st = r.send().await.unwrap().status();
    assert!(st.is_success(), "PUT {path}: {st}");
}

#[tokio::test]
async fn fast_and_general_paths_answer_alike() {
    // A low verification limit so a 300 KB object takes the sendfile path.
    let s = TestServer::start_with(|c| c.verify_reads_max = 64 * 1024).await;
    let small = random_bytes(4096, 1);
    let big = random_bytes(300_000, 2);
    let cas = sha256_hex(&small);
    put(&s, "/cache/small", small.clone(), None).await;
    put(&s, "/ns/android/cache/small", small.clone(), None).await;
    put(&s, "/cache/big", big.clone(), None).await;
    put(&s, &format!("/bazel/cas/{cas}"), small.clone(), None).await;
    put(&s, "/ccache/ab/cdef", small.clone(), None).await;
    put(&s, "/v1/cache/nxhash", small.clone(), None).await;
    // An action result naming a CAS blob that does not exist: a miss.
    let ac = sha256_hex(b"action");
    let output = b"out".to_vec();
    let missing = sha256_hex(&output);
    put(&s, &format!("/bazel/cas/{missing}"), output, None).await;
    put(
        &s,
        &format!("/bazel/ac/{ac}"),
        bazel_ac_naming(&missing),
        None,
    )
    .await;
    // The output goes away (as by eviction) while the action result stays.
    let gone = kura_store::ObjectId::new(
        s.state.config.account.clone(),
        kura_store::Namespace::new("default").unwrap(),
        kura_store::Key::new(format!("cas/{missing}")).unwrap(),
    );
    assert!(s.state.store.delete(&gone).await.unwrap());
    let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let etag = format!("\"{cas}\"");

    let targets = [
        "/cache/small".to_owned(),
        "/cache/missing".to_owned(),
        "/cache/.hidden".to_owned(),
        "/cache/big".to_owned(),
        "/ns/android/cache/small".to_owned(),
        "/ns/other/cache/small".to_owned(),
        "/ns/Bad!/cache/small".to_owned(),
        format!("/bazel/cas/{cas}"),
        format!("/bazel/cas/{empty}"),
        format!("/bazel/ac/{ac}"),
        "/bazel/cas/nothex".to_owned(),
        format!("/bazel/xyz/{cas}"),
        "/ccache/ab/cdef".to_owned(),
        "/ccache/abcdef".to_owned(),
        "/ccache/ab/../x".to_owned(),
        "/v1/cache/nxhash".to_owned(),
        "/v1/cache/nope".to_owned(),
    ];
    let extras = [
        String::new(),
        "range: bytes=0-99\r\n".to_owned(),
        "range: bytes=-10\r\n".to_owned(),
        "range: bytes=100-\r\n".to_owned(),
        "range: bytes=999999999-\r\n".to_owned(),
        "range: bytes=5-2\r\n".to_owned(),
        format!("if-none-match: {etag}\r\n"),
        "if-none-match: \"other\"\r\n".to_owned(),
        "x-request-id: from-the-client\r\n".to_owned(),
        "connection: keep-alive\r\n".to_owned(),
    ];
    let mut compared = 0;
    for target in &targets {
        for method in ["GET", "HEAD"] {
            if method == "HEAD" && target.starts_with("/v1/") {
                continue; // HEAD on Nx is left to the router
            }
            for extra in &extras {
                let req = format!("{method} {target} HTTP/1.1\r\nhost: t\r\n{extra}\r\n");
                let (fast, general) = both(s.addr, &req).await;
                assert_eq!(fast, general, "{req:?}");
                compared += 1;
            }
        }
    }
    assert!(compared > 300);
    // Repeated reads of the small objects came from the store's read cache,
    // and kurad exports its counters.
    assert!(metric(s.addr, "kura_store_read_cache_hits_total").await > 0);
    assert!(metric(s.addr, "kura_store_read_cache_objects").await > 0);
    // The object over the verification limit went out with sendfile, whole
    // and in ranges, and byte-exact.
    let sent = metric(s.addr, SENDFILE).await;
    assert!(sent >= 2 * 300_000, "sendfile bytes: {sent}");
    let mut c = Conn::open(s.addr).await;
    let r = c
        .exchange("GET /cache/big HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&big));
    let r = c
        .exchange("GET /cache/big HTTP/1.1\r\nhost: t\r\nrange: bytes=1000-250999\r\n\r\n")
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, big[1000..251_000]);
    s.stop().await;
}

/// An `ActionResult` (protobuf) with one output file whose digest is `hash`.
fn bazel_ac_naming(hash: &str) -> Vec<u8> {
    use prost::Message;
    let result = bazel_remote_apis::build::bazel::remote::execution::v2::ActionResult {
        output_files: vec![
            bazel_remote_apis::build::bazel::remote::execution::v2::OutputFile {
                path: "out".into(),
                digest: Some(
                    bazel_remote_apis::build::bazel::remote::execution::v2::Digest {
                        hash: hash.into(),
                        size_bytes: 3,
                    },
                ),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    result.encode_to_vec()
}

/// [`both`] for requests with side effects: `req(tag)` builds the request for
/// the fast path (`tag` = "f") and for the general stack ("g"), so each
/// writes its own keys.
async fn both_put(addr: SocketAddr, req: impl Fn(&str) -> String) -> (Resp, Resp) {
    let before = metric(addr, FAST).await;
    let mut fast = Conn::open(addr).await;
    let a = fast.exchange(&req("f")).await;
    assert_eq!(metric(addr, FAST).await, before + 1, "{:?}", req("f"));
    let mut general = Conn::open(addr).await;
    general
        .exchange("OPTIONS /up HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    let b = general.exchange(&req("g")).await;
    assert_eq!(metric(addr, FAST).await, before + 1);
    (a, b)
}

fn put_req(target: &str, body: &[u8], extra: &str) -> String {
    format!(
        "PUT {target} HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n{extra}\r\n{}",
        body.len(),
        String::from_utf8(body.to_vec()).unwrap()
    )
}

/// Builds a request for a tag.
type Case<'a> = Box<dyn Fn(&str) -> String + 'a>;

#[tokio::test]
async fn writes_answer_alike_on_both_paths() {
    let s = TestServer::start_with(|c| c.limits.gradle = 1000).await;
    let body = b"some cached output".to_vec();
    let digest = sha256_hex(&body);
    // The tag goes into the namespace (never echoed in error messages), so
    // both paths write to their own keys and still get comparable answers.
    let cases: Vec<Case<'_>> = vec![
        Box::new(|t| put_req(&format!("/ns/t{t}/cache/new"), &body, "")),
        Box::new(|t| {
            put_req(
                &format!("/ns/a{t}/cache/new"),
                &body,
                "content-type: text/x\r\n",
            )
        }),
        Box::new(|t| put_req(&format!("/ns/t{t}/cache/bad!"), &body, "")),
        Box::new(|t| put_req(&format!("/ns/t{t}/cache/.x"), &body, "")),
        Box::new(|t| put_req(&format!("/ns/Bad!/cache/k{t}"), &body, "")),
        Box::new(|t| put_req(&format!("/ns/t{t}/bazel/cas/{digest}"), &body, "")),
        Box::new(|t| {
            put_req(
                &format!("/ns/t{t}/bazel/cas/{}", sha256_hex(b"x")),
                &body,
                "",
            )
        }),
        Box::new(|t| put_req(&format!("/ns/t{t}/bazel/ac/{digest}"), b"zz", "")),
        Box::new(|t| put_req(&format!("/ns/t{t}/bazel/ac/{digest}"), b"", "")),
        Box::new(|t| put_req(&format!("/ns/t{t}/bazel/zz/{digest}"), &body, "")),
        Box::new(|t| put_req(&format!("/ns/t{t}/ccache/ab/c"), &body, "")),
        Box::new(|t| put_req(&format!("/ns/t{t}/ccache/ab/c"), &body, "")), // replaced
        Box::new(|t| put_req(&format!("/ns/t{t}/ccache/ab/../x"), &body, "")),
        Box::new(|t| put_req(&format!("/ns/t{t}/v1/cache/h"), &body, "")),
        Box::new(|t| put_req(&format!("/ns/t{t}/v1/cache/h"), &body, "")), // now 409
        Box::new(|t| put_req(&format!("/ns/t{t}/v1/cache/e"), b"", "")),
        Box::new(|t| put_req(&format!("/ns/t{t}/cache/new"), &body, "")), // kept
        // Over the Gradle limit: 413 from the general stack either way.
        Box::new(|t| put_req(&format!("/ns/t{t}/cache/big"), &[b'a'; 1500], "")),
    ];
    for (i, case) in cases.iter().enumerate() {
        let over_limit = i == cases.len() - 1;
        if over_limit {
            // Handed over before reading the body: no fast request counted.
            let before = metric(s.addr, FAST).await;
            let mut c = Conn::open(s.addr).await;
            let r = c.exchange(&case("f")).await;
            assert_eq!(r.status, 413);
            assert_eq!(metric(s.addr, FAST).await, before);
            continue;
        }
        let (fast, general) = both_put(s.addr, case).await;
        assert_eq!(fast, general, "{:?}", case("f"));
    }
    // What the fast path stored reads back through both paths.
    let (a, b) = both(s.addr, "GET /ns/af/cache/new HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!((a.status, a.body.as_slice()), (200, body.as_slice()));
    assert_eq!(a, b);
    // A body cut short is never stored.
    let mut c = Conn::open(s.addr).await;
    c.send(b"PUT /cache/short HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nhalf")
        .await;
    c.tcp.shutdown().await.unwrap();
    assert!(!c.fill().await, "closed without an answer");
    let r = client().get(s.url("/cache/short")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    s.stop().await;
}

#[tokio::test]
async fn large_and_expect_continue_puts_stream_on_the_fast_path() {
    let s = TestServer::start_with(|c| c.verify_reads_max = 64 * 1024).await;
    let big = random_bytes(3 << 20, 7);
    let fast_before = metric(s.addr, FAST).await;
    let mut c = Conn::open(s.addr).await;
    // A 3 MiB PUT streams into the store, then GETs on the same connection
    // stay on the fast path (sendfile for this one).
    let mut req = format!(
        "PUT /ccache/big HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    req.extend_from_slice(&big);
    // ...with a pipelined GET right behind the body.
    req.extend_from_slice(b"GET /ccache/big HTTP/1.1\r\nhost: t\r\n\r\n");
    c.send(&req).await;
    assert_eq!(c.response(false).await.status, 201);
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&big));
    assert_eq!(metric(s.addr, FAST).await, fast_before + 2);
    // Expect: 100-continue: the body is sent after the interim response.
    let small = random_bytes(1000, 8);
    c.send(
        format!(
            "PUT /cache/ex HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
            small.len()
        )
        .as_bytes(),
    )
    .await;
    let interim = c.response(false).await;
    assert_eq!(interim.status, 100);
    c.send(&small).await;
    assert_eq!(c.response(false).await.status, 201);
    let r = c
        .exchange("GET /cache/ex HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    assert_eq!(r.body, small);
    // A write-once key that exists: 201 at once, no 100, and the connection
    // closes (the client may not send the body at all).
    c.send(
        b"PUT /cache/ex HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n",
    )
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.headers.get("connection").map(String::as_str),
        Some("close")
    );
    assert!(!c.fill().await);
    // Without Expect, an unread body is drained and the connection reused.
    let mut c = Conn::open(s.addr).await;
    let mut req = format!(
        "PUT /cache/ex HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    req.extend_from_slice(&big);
    c.send(&req).await;
    assert_eq!(c.response(false).await.status, 201);
    let r = c
        .exchange("GET /cache/ex HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    assert_eq!(r.body, small, "write-once: the first value stays");
    // A streamed body cut short is never stored.
    let mut c = Conn::open(s.addr).await;
    c.send(b"PUT /ccache/cut HTTP/1.1\r\nhost: t\r\ncontent-length: 2000000\r\n\r\n")
        .await;
    c.send(&big[..500_000]).await;
    c.tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), c.tcp.read_to_end(&mut rest)).await;
    let r = client().get(s.url("/ccache/cut")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    s.stop().await;
}

#[tokio::test]
async fn auth_answers_alike_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = kurad::auth::Tokens::parse("writer rw *\nreader ro default\n").unwrap();
    let s = TestServer::start_in(dir.path().to_path_buf(), |_| {}, Some(tokens)).await;
    put(&s, "/cache/k", b"hello".to_vec(), Some("writer")).await;
    put(&s, "/ns/private/cache/k", b"hello".to_vec(), Some("writer")).await;
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("user:reader");
    for target in ["/cache/k", "/ns/private/cache/k", "/v1/cache/k"] {
        for auth in [
            String::new(),
            "authorization: Bearer nobody\r\n".to_owned(),
            "authorization: Bearer reader\r\n".to_owned(),
            "authorization: Bearer writer\r\n".to_owned(),
            format!("authorization: Basic {basic}\r\n"),
        ] {
            let req = format!("GET {target} HTTP/1.1\r\nhost: t\r\n{auth}\r\n");
            let (fast, general) = both(s.addr, &req).await;
            assert_eq!(fast, general, "{req:?}");
            let (fast, general) = both_put(s.addr, |t| {
                put_req(&format!("{target}-{t}"), b"data", &auth)
            })
            .await;
            assert_eq!(fast, general, "PUT {target} {auth:?}");
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn a_connection_moves_to_the_general_stack_and_keeps_working() {
    let s = TestServer::start().await;
    put(&s, "/cache/a", b"first".to_vec(), None).await;
    let mut c = Conn::open(s.addr).await;
    let before = metric(s.addr, FAST).await;
    // Two pipelined GETs in one write: both answered, in order.
    c.send(b"GET /cache/a HTTP/1.1\r\nhost: t\r\n\r\nGET /cache/b HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    let r1 = c.response(false).await;
    let r2 = c.response(false).await;
    assert_eq!((r1.status, r1.body.as_slice()), (200, &b"first"[..]));
    assert_eq!(r2.status, 404);
    // A head that arrives in pieces.
    for piece in ["GET /cac", "he/a HTTP/1.", "1\r\nhost: t\r", "\n\r\n"] {
        c.send(piece.as_bytes()).await;
        c.tcp.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(c.response(false).await.body, b"first");
    assert_eq!(metric(s.addr, FAST).await, before + 3);
    // A chunked PUT on the same connection: handed over, stored.
    let r = c
        .exchange(
            "PUT /cache/b HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n6\r\nsecond\r\n0\r\n\r\n",
        )
        .await;
    assert_eq!(r.status, 201);
    // Later GETs on that connection are the general stack's, and right.
    let r = c.exchange("GET /cache/b HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"second"[..]));
    assert_eq!(metric(s.addr, FAST).await, before + 3);
    // `Connection: close` on the fast path: answered, then closed.
    let mut c = Conn::open(s.addr).await;
    let r = c
        .exchange("GET /cache/a HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await;
    assert_eq!(
        r.headers.get("connection").map(String::as_str),
        Some("close")
    );
    assert_eq!(r.body, b"first");
    assert!(!c.fill().await, "the server closes after Connection: close");
    // h2c with prior knowledge still works on the same port.
    let h2 = h2c_client();
    let r = h2.get(s.url("/cache/a")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"first");
    // Malformed heads are the general stack's to refuse.
    let mut c = Conn::open(s.addr).await;
    c.send(b"GET /cache/a HTTP/1.1\r\nbad header\r\n\r\n").await;
    assert_eq!(c.response(false).await.status, 400);
    s.stop().await;
}

#[tokio::test]
async fn sendfile_keeps_serving_an_overwritten_object() {
    let s = TestServer::start_with(|c| c.verify_reads_max = 64 * 1024).await;
    let old = random_bytes(8 << 20, 3);
    let new = random_bytes(8 << 20, 4);
    put(&s, "/ccache/big", old.clone(), None).await;
    let before = metric(s.addr, SENDFILE).await;
    // A reader that stops reading after the head: the server blocks in
    // sendfile with the socket buffers full.
    let mut slow = Conn::open(s.addr).await;
    slow.send(b"GET /ccache/big HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    slow.fill().await;
    put(&s, "/ccache/big", new.clone(), None).await;
    let r = slow.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), old.len());
    let first_diff = r.body.iter().zip(&old).position(|(a, b)| a != b);
    let new_diff = r.body.iter().zip(&new).position(|(a, b)| a != b);
    assert!(
        first_diff.is_none(),
        "differs from the old bytes at {first_diff:?} (from the new at {new_diff:?})"
    );
    // The next request on that connection sees the new object.
    let r = slow
        .exchange("GET /ccache/big HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&new));
    assert_eq!(metric(s.addr, SENDFILE).await, before + 2 * (8 << 20));
    // A client that disconnects mid-transfer does not hurt the server.
    let mut gone = Conn::open(s.addr).await;
    gone.send(b"GET /ccache/big HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    gone.fill().await;
    drop(gone);
    let r = client().get(s.url("/ccache/big")).send().await.unwrap();
    assert_eq!(sha256_hex(&r.bytes().await.unwrap()), sha256_hex(&new));
    s.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_fast_connections_and_finishes_busy_ones() {
    let s = TestServer::start_with(|c| c.verify_reads_max = 64 * 1024).await;
    let big = random_bytes(4 << 20, 5);
    put(&s, "/cache/big", big.clone(), None).await;
    let mut idle = Conn::open(s.addr).await;
    let r = idle
        .exchange("GET /cache/big HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    // A transfer in progress when the server is asked to stop.
    let mut busy = Conn::open(s.addr).await;
    busy.send(b"GET /cache/big HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    busy.fill().await;
    let addr = s.addr;
    let stopping = tokio::spawn(s.stop());
    let r = busy.response(false).await;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&big), "finished whole");
    // The idle keep-alive connection is closed by the server.
    assert!(!idle.fill().await);
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("server stops")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn fast_path_off_serves_everything_through_the_general_stack() {
    let s = TestServer::start_with(|c| c.http_fast_path = false).await;
    put(&s, "/cache/a", b"x".to_vec(), None).await;
    let mut c = Conn::open(s.addr).await;
    let r = c.exchange("GET /cache/a HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(r.body, b"x");
    assert_eq!(metric(s.addr, FAST).await, 0);
    s.stop().await;
}
