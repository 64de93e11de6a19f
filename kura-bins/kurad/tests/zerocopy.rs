//! Zero-copy (`sendfile`) responses over real sockets: byte-exact bodies and
//! ranges, HTTP/1.1 only (never h2c), keep-alive with mixed responses,
//! overwrite and truncation while streaming, clients that vanish mid-stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{TestServer, client, files_under, h2c_client, metrics_text, random_bytes, sha256_hex};
use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Objects over this many bytes take the unverified (zero-copy) path.
const VERIFY_MAX: u64 = 1 << 20;

async fn server() -> TestServer {
    TestServer::start_with(|c| c.verify_reads_max = VERIFY_MAX).await
}

/// Uploads on a client of its own, so each GET under test starts on a fresh
/// connection.
async fn put_ok(url: &str, data: &[u8]) {
    let r = h1().put(url).body(data.to_vec()).send().await.unwrap();
    assert!(r.status().is_success(), "PUT {url}: {}", r.status());
}

fn sent(s: &TestServer) -> u64 {
    s.state.metrics.sendfile_bytes.get()
}

fn h1() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .build()
        .unwrap()
}

/// A raw HTTP/1.1 keep-alive connection.
struct Raw {
    s: BufReader<TcpStream>,
}

/// One parsed response.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Raw {
    async fn connect(s: &TestServer) -> Self {
        Self {
            s: BufReader::new(TcpStream::connect(s.addr).await.unwrap()),
        }
    }

    /// A connection with a small, fixed receive buffer (no autotuning): a
    /// reader that stops reading parks the server's transfer early, with
    /// most of the object still unsent.
    async fn connect_small_window(s: &TestServer) -> Self {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(64 * 1024).unwrap();
        Self {
            s: BufReader::new(sock.connect(s.addr).await.unwrap()),
        }
    }

    async fn send(&mut self, method: &str, path: &str, extra: &str) {
        let req = format!("{method} {path} HTTP/1.1\r\nhost: kurad\r\n{extra}\r\n");
        self.s.get_mut().write_all(req.as_bytes()).await.unwrap();
    }

    async fn head_of_response(&mut self) -> (u16, Vec<(String, String)>) {
        let mut line = String::new();
        self.s.read_line(&mut line).await.unwrap();
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.s.read_line(&mut line).await.unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        (status, headers)
    }

    /// Reads one whole response (`head`: no body follows the headers).
    async fn response(&mut self, head: bool) -> Resp {
        let (status, headers) = self.head_of_response().await;
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .expect("content-length");
        let mut body = vec![0u8; if head { 0 } else { len }];
        tokio::time::timeout(Duration::from_secs(30), self.s.read_exact(&mut body))
            .await
            .expect("body within 30 s")
            .unwrap();
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Resp {
        self.send("GET", path, "").await;
        self.response(false).await
    }
}

#[tokio::test]
async fn http1_get_goes_through_sendfile_byte_exact() {
    let s = server().await;
    let c = h1();
    let data = random_bytes(5 * 1024 * 1024 + 123, 1);
    let url = s.url("/ccache/zc-full");
    put_ok(&url, &data).await;
    let before = sent(&s);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        data.len().to_string()
    );
    assert_eq!(
        r.headers()["etag"].to_str().unwrap(),
        format!("\"{}\"", sha256_hex(&data))
    );
    let got = r.bytes().await.unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    assert_eq!(sent(&s) - before, data.len() as u64);
    // HEAD sends no body, zero-copy or not.
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sent(&s) - before, data.len() as u64);
    // Objects under the verify limit keep the verifying path.
    let small = random_bytes(300_000, 2);
    let small_url = s.url("/ccache/zc-small");
    put_ok(&small_url, &small).await;
    let got = c
        .get(&small_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), small.as_slice());
    assert_eq!(sent(&s) - before, data.len() as u64);
    // The counter is exported.
    let text = metrics_text(s.addr).await;
    assert!(
        text.contains(&format!("kura_http_sendfile_bytes_total {}", sent(&s))),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test]
async fn ranges_go_through_sendfile_byte_exact() {
    let s = server().await;
    let c = h1();
    let data = random_bytes(4 * 1024 * 1024 + 77, 3);
    let len = data.len() as u64;
    let url = s.url("/ccache/zc-ranges");
    put_ok(&url, &data).await;
    let cases: [(String, u64, u64); 5] = [
        ("bytes=0-9".into(), 0, 10),
        ("bytes=1048570-3000000".into(), 1_048_570, 3_000_001),
        ("bytes=-1000".into(), len - 1000, len),
        ("bytes=4000000-".into(), 4_000_000, len),
        ("bytes=2097152-2097152".into(), 2_097_152, 2_097_153),
    ];
    for (spec, a, b) in cases {
        let before = sent(&s);
        let r = c.get(&url).header("range", &spec).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{spec}");
        assert_eq!(
            r.headers()["content-range"].to_str().unwrap(),
            format!("bytes {}-{}/{}", a, b - 1, len)
        );
        let got = r.bytes().await.unwrap();
        assert_eq!(
            sha256_hex(&got),
            sha256_hex(&data[a as usize..b as usize]),
            "{spec}"
        );
        assert_eq!(sent(&s) - before, b - a, "{spec} went through sendfile");
    }
    s.stop().await;
}

#[tokio::test]
async fn h2c_never_uses_sendfile() {
    let s = server().await;
    let data = random_bytes(3 * 1024 * 1024 + 5, 4);
    let url = s.url("/ccache/zc-h2");
    put_ok(&url, &data).await;
    let h2 = h2c_client();
    let before = sent(&s);
    let r = h2.get(&url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), StatusCode::OK);
    let got = r.bytes().await.unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    let r = h2
        .get(&url)
        .header("range", "bytes=1000000-2999999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    let got = r.bytes().await.unwrap();
    assert_eq!(got.as_ref(), &data[1_000_000..3_000_000]);
    // Several streams at once on the one h2 connection.
    let (a, b) = tokio::join!(
        async { h2.get(&url).send().await.unwrap().bytes().await.unwrap() },
        async { h2.get(&url).send().await.unwrap().bytes().await.unwrap() }
    );
    assert_eq!(sha256_hex(&a), sha256_hex(&data));
    assert_eq!(sha256_hex(&b), sha256_hex(&data));
    assert_eq!(sent(&s), before, "h2c must never take the sendfile path");
    s.stop().await;
}

#[tokio::test]
async fn keep_alive_interleaves_zero_copy_and_ordinary_responses() {
    let s = server().await;
    let big_a = random_bytes(3 * 1024 * 1024 + 7, 5);
    let big_b = random_bytes(2 * 1024 * 1024 + 1, 6);
    let small = random_bytes(100, 7);
    let medium = random_bytes(600_000, 8);
    put_ok(&s.url("/ccache/ka-a"), &big_a).await;
    put_ok(&s.url("/ccache/ka-b"), &big_b).await;
    put_ok(&s.url("/ccache/ka-small"), &small).await;
    put_ok(&s.url("/ccache/ka-medium"), &medium).await;
    let before = sent(&s);
    let mut raw = Raw::connect(&s).await;
    let mut expect_sent = 0u64;

    let r = raw.get("/ccache/ka-a").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, big_a);
    expect_sent += big_a.len() as u64;

    let r = raw.get("/ccache/ka-small").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, small);

    raw.send("GET", "/ccache/ka-b", "range: bytes=1000-1500000\r\n")
        .await;
    let r = raw.response(false).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &big_b[1000..=1_500_000]);
    expect_sent += 1_499_001;

    raw.send("HEAD", "/ccache/ka-a", "").await;
    let r = raw.response(true).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(big_a.len().to_string().as_str())
    );

    let r = raw.get("/ccache/ka-medium").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, medium);

    let r = raw.get("/ccache/ka-missing").await;
    assert_eq!(r.status, 404);

    let r = raw.get("/ccache/ka-b").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, big_b);
    expect_sent += big_b.len() as u64;

    // Pipelined: three requests in one write, answered in order.
    let pipelined = "GET /ccache/ka-a HTTP/1.1\r\nhost: kurad\r\n\r\n\
                     GET /ccache/ka-small HTTP/1.1\r\nhost: kurad\r\n\r\n\
                     GET /ccache/ka-b HTTP/1.1\r\nhost: kurad\r\nrange: bytes=-10\r\n\r\n";
    raw.s
        .get_mut()
        .write_all(pipelined.as_bytes())
        .await
        .unwrap();
    let r = raw.response(false).await;
    assert_eq!((r.status, r.body == big_a), (200, true));
    let r = raw.response(false).await;
    assert_eq!((r.status, r.body == small), (200, true));
    let r = raw.response(false).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &big_b[big_b.len() - 10..]);
    expect_sent += big_a.len() as u64 + 10;

    assert_eq!(sent(&s) - before, expect_sent);
    s.stop().await;
}

/// Starts a GET on a raw socket, reads its headers and the first `first`
/// body bytes, and returns the socket with the declared length.
async fn start_slow_get(s: &TestServer, path: &str, first: usize) -> (Raw, usize, Vec<u8>) {
    let mut raw = Raw::connect_small_window(s).await;
    raw.send("GET", path, "").await;
    let (status, headers) = raw.head_of_response().await;
    assert_eq!(status, 200);
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    let mut got = vec![0u8; first];
    raw.s.read_exact(&mut got).await.unwrap();
    (raw, len, got)
}

/// Reads until the server closes or `want` bytes are in (deadline 30 s).
async fn read_rest(raw: &mut Raw, got: &mut Vec<u8>, want: usize) {
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < want {
        match tokio::time::timeout_at(deadline, raw.s.read(&mut buf))
            .await
            .expect("the response neither completed nor ended within 30 s")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                // Slow reader: yield between reads.
                tokio::task::yield_now().await;
            }
        }
    }
}

#[tokio::test]
async fn an_object_overwritten_during_a_slow_get_streams_its_old_bytes() {
    let s = server().await;
    let c = h1();
    // Far larger than the loopback socket buffers: most of it is still in
    // the file when the overwrite lands.
    let old = random_bytes(32 * 1024 * 1024, 9);
    let new = random_bytes(32 * 1024 * 1024, 10);
    let url = s.url("/ccache/zc-overwrite");
    put_ok(&url, &old).await;
    let before = sent(&s);
    let (mut raw, len, mut got) = start_slow_get(&s, "/ccache/zc-overwrite", 64 * 1024).await;
    assert_eq!(len, old.len());
    // Overwrite, and prove it landed, while the first GET is parked.
    put_ok(&url, &new).await;
    let in_flight = sent(&s) - before;
    assert!(
        in_flight < old.len() as u64 / 2,
        "the overwrite must land while most of the old object is unsent ({in_flight} sent)"
    );
    let fresh = c.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256_hex(&fresh), sha256_hex(&new));
    // Then delete it altogether.
    let r = c.delete(&url).send().await.unwrap();
    assert!(r.status().is_success(), "DELETE: {}", r.status());
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    read_rest(&mut raw, &mut got, len).await;
    assert_eq!(got.len(), old.len(), "the slow GET was cut short");
    assert_eq!(sha256_hex(&got), sha256_hex(&old));
    assert_eq!(sent(&s) - before, (old.len() + new.len()) as u64);
    s.stop().await;
}

#[tokio::test]
async fn a_blob_truncated_mid_stream_cuts_the_response_never_pads_it() {
    let s = server().await;
    let c = h1();
    let data = random_bytes(32 * 1024 * 1024, 11);
    let url = s.url("/ccache/zc-truncate");
    put_ok(&url, &data).await;
    let mut files = Vec::new();
    files_under(&s.state.config.data_dir, &mut files);
    let blob = files
        .into_iter()
        .find(|p| std::fs::metadata(p).unwrap().len() == data.len() as u64)
        .expect("the blob file");
    let (mut raw, len, mut got) = start_slow_get(&s, "/ccache/zc-truncate", 64 * 1024).await;
    // Simulates on-disk damage (the store never truncates a live blob).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&blob)
        .unwrap()
        .set_len(16 * 1024 * 1024)
        .unwrap();
    read_rest(&mut raw, &mut got, len).await;
    assert!(
        got.len() < len,
        "a truncated blob must end the connection early"
    );
    assert!(got.len() <= 16 * 1024 * 1024);
    assert_eq!(got.as_slice(), &data[..got.len()], "only real file bytes");
    // The server keeps serving.
    let r = c.get(s.url("/up")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn clients_vanishing_mid_stream_do_not_hurt_the_server() {
    let s = server().await;
    let c = h1();
    let data = random_bytes(16 * 1024 * 1024 + 3, 12);
    let url = s.url("/ccache/zc-vanish");
    put_ok(&url, &data).await;
    for i in 0..5 {
        let (raw, _, got) = start_slow_get(&s, "/ccache/zc-vanish", 1000 * (i + 1)).await;
        assert_eq!(got.as_slice(), &data[..got.len()]);
        drop(raw);
    }
    // Several at once, dropped after the headers.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(start_slow_get(&s, "/ccache/zc-vanish", 1).await);
    }
    drop(held);
    let before = sent(&s);
    let got = c.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    // Keep-alive on a fresh raw connection still works afterwards.
    let mut raw = Raw::connect(&s).await;
    for _ in 0..2 {
        let r = raw.get("/ccache/zc-vanish").await;
        assert_eq!(r.status, 200);
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    }
    assert!(sent(&s) - before >= 3 * data.len() as u64);
    s.stop().await;
}

#[tokio::test]
async fn the_default_client_takes_the_zero_copy_path() {
    // `common::client` is the suite's default client; it negotiates HTTP/1.1
    // too, so it takes the zero-copy path as well.
    let s = server().await;
    let data = random_bytes(2 * 1024 * 1024, 13);
    let url = s.url("/ccache/zc-default-client");
    put_ok(&url, &data).await;
    let before = sent(&s);
    let got = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    assert_eq!(sent(&s) - before, data.len() as u64);
    s.stop().await;
}

#[tokio::test]
async fn http1_0_requests_are_served_whole_by_the_general_stack() {
    let s = server().await;
    let data = random_bytes(2 * 1024 * 1024 + 9, 14);
    put_ok(&s.url("/ccache/zc-http10"), &data).await;
    let before = sent(&s);
    let mut raw = Raw::connect(&s).await;
    raw.s
        .get_mut()
        .write_all(b"GET /ccache/zc-http10 HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let r = raw.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    // HTTP/1.0 is left to hyper (its keep-alive rules differ): no sendfile.
    assert_eq!(sent(&s) - before, 0);
    // HTTP/1.0 without keep-alive: the server closes after the response.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), raw.s.read_to_end(&mut rest))
        .await
        .expect("the server closes an HTTP/1.0 connection")
        .unwrap();
    assert_eq!(n, 0);
    s.stop().await;
}
