//! kura-ca throughput: CA generation, leaf issuance, leaf validation (a
//! controller's full resync of 1,000 leaves, compared with `openssl verify` over
//! the same leaves in the same run) and full mTLS handshakes on loopback.
//!
//! Run: `cargo bench -p kura-ca --bench ca`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use kura_ca::*;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn per_sec(n: usize, secs: f64) -> f64 {
    n as f64 / secs
}

fn main() {
    let now = OffsetDateTime::now_utc();
    let account = AccountHandle::new("acme").unwrap();
    let ns = Namespace::new("kura").unwrap();

    // CA generation.
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(AccountCa::generate(&account, &CaOptions::default(), now).unwrap());
    }
    let ca_secs = t.elapsed().as_secs_f64();
    println!(
        "ca generation        {:>10.0} /s  ({n} in {ca_secs:.3} s)",
        per_sec(n, ca_secs)
    );

    // Leaf issuance.
    let pki = AccountPki::generate(&account, &CaOptions::default(), now).unwrap();
    let n = 1000;
    let t = Instant::now();
    let leaves: Vec<SecretData> = (0..n)
        .map(|i| {
            let req = LeafRequest::new(
                InstanceName::new(format!("inst-{i}")).unwrap(),
                ns.clone(),
                account.clone(),
            );
            pki.issue_leaf(&req, now).unwrap().to_secret_data()
        })
        .collect();
    let issue_secs = t.elapsed().as_secs_f64();
    println!(
        "leaf issuance        {:>10.0} /s  ({n} in {issue_secs:.3} s)",
        per_sec(n, issue_secs)
    );

    // Validation of 1,000 leaves (full resync).
    let service = names::peer_service_dns_name(&account, &ns, &ClusterDomain::default());
    let t = Instant::now();
    for data in &leaves {
        std::hint::black_box(pki.validate_leaf(data, &[&service], now).unwrap());
    }
    let validate_secs = t.elapsed().as_secs_f64();
    println!(
        "leaf validation      {:>10.0} /s  (1000 leaves in {validate_secs:.3} s; target < 0.2 s)",
        per_sec(n, validate_secs)
    );

    // Peer: `openssl verify` of the same 1,000 leaves in one process.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), pki.trust_bundle().to_pem()).unwrap();
    let mut files = Vec::new();
    for (i, data) in leaves.iter().enumerate() {
        let f = format!("l{i}.crt");
        std::fs::write(dir.path().join(&f), &data["tls.crt"]).unwrap();
        files.push(f);
    }
    let t = Instant::now();
    let out = Command::new("openssl")
        .args(["verify", "-CAfile", "ca.pem", "-verify_hostname", &service])
        .args(&files)
        .current_dir(dir.path())
        .output();
    let openssl_secs = t.elapsed().as_secs_f64();
    match out {
        Ok(o) if o.status.success() => println!(
            "openssl verify       {:>10.0} /s  (1000 leaves in {openssl_secs:.3} s, one process); kura-ca is {:.2}x openssl",
            per_sec(n, openssl_secs),
            openssl_secs / validate_secs
        ),
        Ok(o) => println!(
            "openssl verify failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => println!("openssl not available ({e}); no peer comparison"),
    }

    // Full mTLS handshakes on loopback (TLS 1.3, ECDSA P-256, fresh TCP each).
    let a = &leaves[0];
    let b = &leaves[1];
    let trust = TrustBundle::from_pem(&a["ca.pem"]).unwrap();
    let server = server_config(
        &PeerIdentity::from_secret_data(a).unwrap(),
        &trust,
        &ServerOptions::default(),
    )
    .unwrap();
    let client = client_config(
        &PeerIdentity::from_secret_data(b).unwrap(),
        &trust,
        &service,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = 1000;
    let secs = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let mut b = [0u8; 1];
                        let _ = tls.read_exact(&mut b).await;
                        let _ = tls.write_all(b"k").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&client.config));
        let t = Instant::now();
        for _ in 0..n {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut tls = connector
                .connect(client.server_name.clone(), tcp)
                .await
                .unwrap();
            tls.write_all(b"p").await.unwrap();
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.unwrap();
        }
        t.elapsed().as_secs_f64()
    });
    println!(
        "mTLS handshakes      {:>10.0} /s  ({n} sequential, loopback, incl. 1 round trip)",
        per_sec(n, secs)
    );
}
