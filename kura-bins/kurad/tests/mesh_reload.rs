//! Certificate rotation: when the mounted TLS files change, the peer listener
//! serves the new leaf without a restart (new CA trusted, old CA refused).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_ca::{AccountHandle, AccountPki, CaOptions, ClusterDomain, InstanceName, LeafRequest};
use kura_mesh::{ClientOptions, PeerClient, TlsState};

fn leaf(pki: &AccountPki, account: &AccountHandle, name: &str) -> (String, String, String) {
    let req = LeafRequest::new(
        InstanceName::new(name).unwrap(),
        kura_ca::Namespace::new("kura").unwrap(),
        account.clone(),
    );
    let l = pki
        .issue_leaf(&req, time::OffsetDateTime::now_utc())
        .unwrap();
    (
        l.trust().to_pem(),
        l.cert_pem().to_owned(),
        l.key_pem().to_owned(),
    )
}

fn write(dir: &Path, (ca, crt, key): &(String, String, String)) {
    // Like a kubelet Secret update: write new files, rename into place.
    for (name, data) in [("ca.pem", ca), ("tls.crt", crt), ("tls.key", key)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, data).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_listener_picks_up_rotated_certificates_without_restart() {
    let now = time::OffsetDateTime::now_utc();
    let account = AccountHandle::new("acme").unwrap();
    let service = kura_ca::names::peer_service_dns_name(
        &account,
        &kura_ca::Namespace::new("kura").unwrap(),
        &ClusterDomain::default(),
    );
    let old = AccountPki::generate(&account, &CaOptions::default(), now).unwrap();
    let new = AccountPki::generate(&account, &CaOptions::default(), now).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("tls");
    std::fs::create_dir_all(&tls_dir).unwrap();
    write(&tls_dir, &leaf(&old, &account, "node"));

    let args = kurad::mesh::MeshArgs {
        peer_server_name: Some(service.clone()),
        internal_port: "0".into(),
        internal_tls_ca_cert_path: Some(tls_dir.join("ca.pem")),
        internal_tls_cert_path: Some(tls_dir.join("tls.crt")),
        internal_tls_key_path: Some(tls_dir.join("tls.key")),
        replication_bandwidth_limit_bytes_per_second: "0".into(),
        replication_peer_bandwidth_limit_bytes_per_second: "0".into(),
        anti_entropy_interval_secs: "300".into(),
        discovery_interval_secs: "1".into(),
        replication_stall_timeout_secs: "30".into(),
        tombstone_gc_horizon_secs: "604800".into(),
        ghost_ttl_secs: "604800".into(),
        outbox_max_messages: "10000".into(),
        outbox_max_bytes: "1GiB".into(),
        ..Default::default()
    };
    let settings = args.validate(None).unwrap().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut config = kurad::Config::for_tests(data.clone());
    config.account = kura_store::Account::new("acme").unwrap();
    let store = kura_store::Store::open(
        kura_store::FsBackend::open(&data).unwrap(),
        kura_store::Config::default(),
    )
    .await
    .unwrap();
    let mesh = kurad::mesh::start(
        &settings,
        store,
        &config,
        Arc::new(kura_mesh::SystemResolver),
    )
    .await
    .unwrap();
    let addr = mesh.addr.to_string();
    let client_of = |pki: &AccountPki, name: &str| {
        let (ca, crt, key) = leaf(pki, &account, name);
        let tls =
            TlsState::from_pem(ca.as_bytes(), crt.as_bytes(), key.as_bytes(), &service).unwrap();
        PeerClient::new(addr.clone(), Arc::new(tls), ClientOptions::default())
    };
    client_of(&old, "c1").status().await.unwrap();
    assert!(client_of(&new, "c2").status().await.is_err());

    write(&tls_dir, &leaf(&new, &account, "node"));
    let start = Instant::now();
    loop {
        if client_of(&new, "c3").status().await.is_ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "rotated certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The old CA is no longer trusted by the listener.
    let err = client_of(&old, "c4").status().await.unwrap_err();
    assert!(err.tls_error().is_some(), "{err:?}");
    mesh.shutdown().await;
}
