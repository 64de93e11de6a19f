//! Shared helpers of the multi-process mesh tests: an account PKI writing leaves to
//! files, `kurad` processes (optionally wrapped, e.g. by `ip netns exec` or
//! `faketime`), polling with deadlines, and the tool checks (skip locally, fail
//! under `CI`).
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kura_ca::{AccountHandle, AccountPki, CaOptions, ClusterDomain, InstanceName, LeafRequest};

pub struct Pki {
    pub pki: AccountPki,
    pub account: AccountHandle,
    pub service: String,
}

impl Pki {
    pub fn new(account: &str) -> Self {
        let now = time::OffsetDateTime::now_utc();
        let account = AccountHandle::new(account).unwrap();
        let pki = AccountPki::generate(&account, &CaOptions::default(), now).unwrap();
        let service = kura_ca::names::peer_service_dns_name(
            &account,
            &kura_ca::Namespace::new("kura").unwrap(),
            &ClusterDomain::default(),
        );
        Self {
            pki,
            account,
            service,
        }
    }

    /// Writes ca.pem, tls.crt, tls.key into `dir`.
    pub fn write_leaf(&self, instance: &str, dir: &Path) {
        let req = LeafRequest::new(
            InstanceName::new(instance).unwrap(),
            kura_ca::Namespace::new("kura").unwrap(),
            self.account.clone(),
        );
        let leaf = self
            .pki
            .issue_leaf(&req, time::OffsetDateTime::now_utc())
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ca.pem"), leaf.trust().to_pem()).unwrap();
        std::fs::write(dir.join("tls.crt"), leaf.cert_pem()).unwrap();
        std::fs::write(dir.join("tls.key"), leaf.key_pem()).unwrap();
    }

    /// A peer client for `addr` presenting a leaf of this account (to read a node's
    /// `/_internal/status`, HLC included).
    pub fn peer_client(&self, addr: &str, dir: &Path) -> kura_mesh::PeerClient {
        self.write_leaf("test-client", dir);
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
        let tls = kura_mesh::TlsState::from_pem(
            &read("ca.pem"),
            &read("tls.crt"),
            &read("tls.key"),
            &self.service,
        )
        .unwrap();
        kura_mesh::PeerClient::new(
            addr,
            std::sync::Arc::new(tls),
            kura_mesh::ClientOptions::default(),
        )
    }
}

pub struct Daemon {
    pub child: Child,
    pub base: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How one node is started.
pub struct NodeSpec {
    pub data: PathBuf,
    pub tls: PathBuf,
    /// Address both listeners bind.
    pub ip: String,
    /// Public port (0: any).
    pub port: u16,
    pub internal_port: u16,
    /// Wrapper command and arguments put before `kurad` (`ip netns exec ns`,
    /// `faketime +1h`).
    pub wrapper: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl NodeSpec {
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.ip, self.internal_port)
    }
}

/// A free loopback port (peer ports must be known before the peers start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `kurad` for `spec` with `peers` as seeds; returns once it printed its
/// public address.
pub fn start(spec: &NodeSpec, service: &str, peers: &[String]) -> Daemon {
    let kurad = env!("CARGO_BIN_EXE_kurad");
    let mut cmd = match spec.wrapper.split_first() {
        None => Command::new(kurad),
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(kurad);
            c
        }
    };
    cmd.args(["--port", &spec.port.to_string(), "--bind-address", &spec.ip])
        .arg("--data-dir")
        .arg(&spec.data)
        .env("KURA_TENANT_ID", "acme")
        .env("KURA_INTERNAL_PORT", spec.internal_port.to_string())
        .env("KURA_NODE_URL", spec.url())
        .env("KURA_PEERS", peers.join(","))
        .env("KURA_PEER_SERVER_NAME", service)
        .env("KURA_INTERNAL_TLS_CA_CERT_PATH", spec.tls.join("ca.pem"))
        .env("KURA_INTERNAL_TLS_CERT_PATH", spec.tls.join("tls.crt"))
        .env("KURA_INTERNAL_TLS_KEY_PATH", spec.tls.join("tls.key"))
        .env("KURA_DISCOVERY_INTERVAL_SECS", "0.2")
        .env("KURA_LOG", "warn");
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    Daemon {
        child,
        base: format!("http://{addr}"),
    }
}

pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub async fn get(c: &reqwest::Client, url: String) -> Option<Vec<u8>> {
    match c.get(url).send().await {
        Ok(r) if r.status() == 200 => Some(r.bytes().await.ok()?.to_vec()),
        _ => None,
    }
}

pub async fn put(c: &reqwest::Client, url: String, body: impl Into<reqwest::Body>) {
    let r = c.put(&url).body(body).send().await.unwrap();
    assert!(r.status().is_success(), "PUT {url}: {}", r.status());
}

pub async fn up(c: &reqwest::Client, d: &Daemon) -> serde_json::Value {
    match c.get(format!("{}/up", d.base)).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// Whether `peer` (its peer URL's `host:port`) is a member in `/up` of a node.
pub fn is_member(up: &serde_json::Value, peer: &str) -> bool {
    up["members"]
        .as_array()
        .is_some_and(|m| m.iter().any(|a| a.as_str() == Some(peer)))
}

/// Whether `cmd args` runs and succeeds.
pub fn runs(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Skips (returns false after printing why) when `missing` is `Some`, unless `CI`
/// is set: then the test fails.
pub fn require(test: &str, missing: Option<String>) -> bool {
    match missing {
        None => true,
        Some(why) => {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: {why} (required under CI)");
            }
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

/// Runs a command that must succeed (setup).
pub fn must(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
