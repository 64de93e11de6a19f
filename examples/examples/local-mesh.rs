//! A three-node Kura mesh on loopback, in one process.
//!
//! ```text
//! cargo run -q -p kura-examples --example local-mesh
//! ```
//!
//! Generates an account CA and three instance leaves (kura-ca), starts three
//! `kurad` nodes (the daemon's own library: public listener + mTLS peer listener),
//! writes an object through the first node, reads it back through the other two,
//! deletes a namespace on the third and shows the deletion everywhere. Prints what
//! happens at each step; exits non-zero if replication does not converge.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_ca::time::OffsetDateTime;
use kura_ca::{AccountHandle, AccountPki, CaOptions, ClusterDomain, InstanceName, LeafRequest};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Node {
    base: String,
    mesh: kurad::mesh::RunningMesh,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

fn write_leaf(pki: &AccountPki, account: &AccountHandle, instance: &str, dir: &Path) -> Res<()> {
    let req = LeafRequest::new(
        InstanceName::new(instance)?,
        kura_ca::Namespace::new("kura")?,
        account.clone(),
    );
    let leaf = pki.issue_leaf(&req, OffsetDateTime::now_utc())?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.pem"), leaf.trust().to_pem())?;
    std::fs::write(dir.join("tls.crt"), leaf.cert_pem())?;
    std::fs::write(dir.join("tls.key"), leaf.key_pem())?;
    Ok(())
}

async fn start(dir: &Path, port: u16, peers: &[String], service: &str) -> Res<Node> {
    let tls = dir.join("tls");
    let args = kurad::mesh::MeshArgs {
        peers: peers.to_vec(),
        peer_server_name: Some(service.to_owned()),
        internal_port: port.to_string(),
        internal_tls_ca_cert_path: Some(tls.join("ca.pem")),
        internal_tls_cert_path: Some(tls.join("tls.crt")),
        internal_tls_key_path: Some(tls.join("tls.key")),
        replication_bandwidth_limit_bytes_per_second: "0".into(),
        replication_peer_bandwidth_limit_bytes_per_second: "0".into(),
        anti_entropy_interval_secs: "300".into(),
        discovery_interval_secs: "0.2".into(),
        replication_stall_timeout_secs: "30".into(),
        outbox_max_messages: "10000".into(),
        tombstone_gc_horizon_secs: "604800".into(),
        ghost_ttl_secs: "604800".into(),
        outbox_max_bytes: "1GiB".into(),
        ..Default::default()
    };
    let node_url = format!("https://127.0.0.1:{port}");
    let settings = args
        .validate(Some(&node_url))
        .map_err(|e| format!("{e:?}"))?
        .ok_or("mesh not enabled")?;
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let mut config = kurad::Config::for_tests(data.clone());
    config.account = kura_store::Account::new("acme")?;
    config.tenant_configured = true;
    config.node_url = Some(node_url);
    let mut store_config = kura_store::Config::default();
    store_config.node = kurad::mesh::node_id(&data)?;
    let store = kura_store::Store::open(kura_store::FsBackend::open(&data)?, store_config).await?;
    let state = kurad::AppState::new(store.clone(), config, None);
    let mesh = kurad::mesh::start(
        &settings,
        store,
        &state.config,
        Arc::new(kura_mesh::SystemResolver),
    )
    .await?;
    let _ = state.mesh.set(mesh.mesh.clone());
    let server = kurad::Server::bind(state.clone()).await?;
    let base = format!("http://{}", server.local_addr()?);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    Ok(Node {
        base,
        mesh,
        stop,
        server,
    })
}

async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) -> Res<Duration> {
    let start = Instant::now();
    while !cond().await {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

async fn run() -> Res<()> {
    let root = tempfile::tempdir()?;
    let now = OffsetDateTime::now_utc();
    let account = AccountHandle::new("acme")?;
    let pki = AccountPki::generate(&account, &CaOptions::default(), now)?;
    let service = kura_ca::names::peer_service_dns_name(
        &account,
        &kura_ca::Namespace::new("kura")?,
        &ClusterDomain::default(),
    );
    println!("account CA for acme; peers verify each other as {service}");
    let names = ["a", "b", "c"];
    let mut ports = Vec::new();
    for n in names {
        write_leaf(&pki, &account, n, &root.path().join(n).join("tls"))?;
        // Peers are each other's seeds, so their ports are chosen up front.
        ports.push(
            std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port(),
        );
    }
    let peers: Vec<String> = ports
        .iter()
        .map(|p| format!("https://127.0.0.1:{p}"))
        .collect();
    let mut nodes = Vec::new();
    for (n, port) in names.iter().zip(&ports) {
        let node = start(&root.path().join(n), *port, &peers, &service).await?;
        println!(
            "node {n}: public {} , peers on https://{} (mTLS)",
            node.base, node.mesh.addr
        );
        nodes.push(node);
    }
    let http = reqwest::Client::builder().no_proxy().build()?;
    let took = wait_for("the ring", async || {
        nodes
            .iter()
            .all(|n| n.mesh.mesh.snapshot().ring_members == 3)
    })
    .await?;
    println!("ring of 3 formed in {took:?}");

    let url = |n: &Node, path: &str| format!("{}{path}", n.base);
    let r = http
        .put(url(&nodes[0], "/ns/demo/cache/hello"))
        .body("hello from a")
        .send()
        .await?;
    println!("PUT /ns/demo/cache/hello on a -> {}", r.status());
    for (i, n) in nodes.iter().enumerate().skip(1) {
        let took = wait_for("replication", async || {
            match http.get(url(n, "/ns/demo/cache/hello")).send().await {
                Ok(r) if r.status() == 200 => r.bytes().await.is_ok_and(|b| b == "hello from a"),
                _ => false,
            }
        })
        .await?;
        println!("GET on {} -> \"hello from a\" after {took:?}", names[i]);
    }
    let r = http
        .delete(url(
            &nodes[2],
            "/api/cache/clean?tenant_id=acme&namespace_id=demo",
        ))
        .send()
        .await?;
    println!("DELETE namespace demo on c -> {}", r.status());
    for (i, n) in nodes.iter().enumerate() {
        let took = wait_for("the deletion", async || {
            matches!(http.get(url(n, "/ns/demo/cache/hello")).send().await, Ok(r) if r.status() == 404)
        })
        .await?;
        println!("GET on {} -> 404 after {took:?}", names[i]);
    }
    let up: serde_json::Value = serde_json::from_slice(
        &http
            .get(url(&nodes[1], "/up"))
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    println!(
        "/up on b: ring_members={} connected_nodes={} outbox_messages={}",
        up["ring_members"], up["connected_nodes"], up["outbox_messages"]
    );
    for n in nodes {
        let _ = n.stop.send(());
        let _ = n.server.await;
        n.mesh.shutdown().await;
    }
    println!("done");
    Ok(())
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("local-mesh: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("local-mesh: {e}");
            ExitCode::FAILURE
        }
    }
}
