//! Real mutual-TLS handshakes over loopback TCP with tokio-rustls, for every
//! good and bad certificate case.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration as StdDuration;

use kura_ca::*;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::ServerName;
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: StdDuration = StdDuration::from_secs(20);

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn acct(a: &str) -> AccountHandle {
    AccountHandle::new(a).unwrap()
}

fn ns(n: &str) -> Namespace {
    Namespace::new(n).unwrap()
}

fn request(instance: &str, namespace: &str, account: &str) -> LeafRequest {
    LeafRequest::new(
        InstanceName::new(instance).unwrap(),
        ns(namespace),
        acct(account),
    )
}

fn service(account: &str) -> String {
    names::peer_service_dns_name(&acct(account), &ns("kura"), &ClusterDomain::default())
}

/// A node: its leaf Secret data.
#[derive(Clone)]
struct Node {
    data: SecretData,
}

impl Node {
    fn from_leaf(leaf: &IssuedLeaf) -> Self {
        Self {
            data: leaf.to_secret_data(),
        }
    }

    fn identity(&self) -> PeerIdentity {
        PeerIdentity::from_secret_data(&self.data).unwrap()
    }

    fn trust(&self) -> TrustBundle {
        TrustBundle::from_pem(&self.data["ca.pem"]).unwrap()
    }

    fn server(&self) -> Arc<rustls::ServerConfig> {
        server_config(&self.identity(), &self.trust(), &ServerOptions::default()).unwrap()
    }

    fn client(&self, account: &str) -> PeerClientConfig {
        client_config(&self.identity(), &self.trust(), &service(account)).unwrap()
    }
}

fn node(pki: &AccountPki, instance: &str, account: &str) -> Node {
    Node::from_leaf(
        &pki.issue_leaf(&request(instance, "kura", account), now())
            .unwrap(),
    )
}

#[derive(Debug)]
struct Outcome {
    server: Result<Option<Vec<u8>>, String>,
    client: Result<(), String>,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.server.is_ok() && self.client.is_ok()
    }
}

/// Runs one handshake plus a request/response exchange (needed with TLS 1.3,
/// where the client learns of a rejected client certificate only on read).
async fn handshake_named(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    dial_name: ServerName<'static>,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        Ok::<_, String>(alpn)
    });
    let connector = tokio_rustls::TlsConnector::from(client);
    let client_result = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(dial_name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"pong" {
            return Err("bad response".to_owned());
        }
        Ok(())
    };
    let client = tokio::time::timeout(DEADLINE, client_result)
        .await
        .unwrap_or_else(|_| Err("client timed out".into()));
    let server = tokio::time::timeout(DEADLINE, server_task)
        .await
        .map_err(|_| "server timed out".to_owned())
        .and_then(|j| j.map_err(|e| e.to_string()))
        .and_then(|r| r);
    Outcome { server, client }
}

async fn handshake(server: &Node, client: &Node, account: &str) -> Outcome {
    let c = client.client(account);
    handshake_named(server.server(), c.config, c.server_name).await
}

fn pki(account: &str) -> AccountPki {
    AccountPki::generate(&acct(account), &CaOptions::default(), now()).unwrap()
}

/// Signs arbitrary leaf parameters with an account CA, for shapes the API
/// deliberately cannot produce.
fn sign_custom(pki: &AccountPki, params: CertificateParams) -> Node {
    let ca = pki.signing_ca();
    let ca_key = KeyPair::from_pem(&ca.key_pem()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(ca.cert_pem(), ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Node {
        data: SecretData::from([
            ("ca.pem".into(), pki.trust_bundle().to_pem().into_bytes()),
            ("tls.crt".into(), cert.pem().into_bytes()),
            ("tls.key".into(), key.serialize_pem().into_bytes()),
        ]),
    }
}

fn leaf_params(account: &str) -> CertificateParams {
    let mut p = CertificateParams::new(request("eu-1", "kura", account).sans()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "eu-1 peer");
    p.not_before = now() - Duration::hours(1);
    p.not_after = now() + Duration::days(30);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    p
}

#[tokio::test]
async fn same_account_peers_authenticate_each_other() {
    let a = pki("acme");
    let (x, y) = (node(&a, "eu-1", "acme"), node(&a, "eu-2", "acme"));
    let out = handshake(&x, &y, "acme").await;
    assert!(out.ok(), "{out:?}");
    assert_eq!(out.server.unwrap().as_deref(), Some(&b"h2"[..]));
    let out = handshake(&y, &x, "acme").await;
    assert!(out.ok(), "{out:?}");
}

#[tokio::test]
async fn dialling_a_pod_ip_still_verifies_the_service_name() {
    let a = pki("acme");
    let (x, y) = (node(&a, "eu-1", "acme"), node(&a, "eu-2", "acme"));
    let ip = ServerName::IpAddress("127.0.0.1".parse::<std::net::IpAddr>().unwrap().into());
    let out = handshake_named(x.server(), y.client("acme").config, ip.clone()).await;
    assert!(out.ok(), "{out:?}");
    // ...and a server of another account is still rejected when dialled by IP.
    let b = pki("bravo");
    let z = node(&b, "eu-1", "bravo");
    let out = handshake_named(z.server(), y.client("acme").config, ip).await;
    assert!(out.client.is_err(), "{out:?}");
}

#[tokio::test]
async fn other_account_client_is_rejected_by_the_server() {
    let (a, b) = (pki("acme"), pki("bravo"));
    let server = node(&a, "eu-1", "acme");
    // The intruder trusts acme's CA (so it would accept the server) but its
    // leaf comes from bravo's CA.
    let intruder = node(&b, "eu-1", "bravo");
    let cfg = client_config(&intruder.identity(), &server.trust(), &service("acme")).unwrap();
    let out = handshake_named(server.server(), cfg.config, cfg.server_name).await;
    let err = out.server.expect_err("server must reject a foreign client");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(out.client.is_err());
}

#[tokio::test]
async fn other_account_server_is_rejected_by_the_client() {
    let (a, b) = (pki("acme"), pki("bravo"));
    let client = node(&a, "eu-1", "acme");
    let intruder = node(&b, "eu-1", "bravo");
    let out = handshake(&intruder, &client, "acme").await;
    let err = out.client.expect_err("client must reject a foreign server");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(out.server.is_err());
}

#[tokio::test]
async fn expired_leaf_is_rejected_both_ways() {
    let a = pki("acme");
    let good = node(&a, "eu-1", "acme");
    let expired = Node::from_leaf(
        &a.issue_leaf(
            &request("eu-2", "kura", "acme").validity(Duration::days(1)),
            now() - Duration::days(3),
        )
        .unwrap(),
    );
    let out = handshake(&expired, &good, "acme").await;
    let e = out.client.unwrap_err();
    assert!(e.contains("certificate expired"), "{e}");
    let out = handshake(&good, &expired, "acme").await;
    let e = out.server.unwrap_err();
    assert!(e.contains("certificate expired"), "{e}");
}

#[tokio::test]
async fn not_yet_valid_leaf_is_rejected_both_ways() {
    let a = pki("acme");
    let good = node(&a, "eu-1", "acme");
    let future = Node::from_leaf(
        &a.issue_leaf(&request("eu-2", "kura", "acme"), now() + Duration::days(2))
            .unwrap(),
    );
    let out = handshake(&future, &good, "acme").await;
    let e = out.client.unwrap_err();
    assert!(e.contains("not valid yet"), "{e}");
    let out = handshake(&good, &future, "acme").await;
    let e = out.server.unwrap_err();
    assert!(e.contains("not valid yet"), "{e}");
}

#[tokio::test]
async fn leaf_without_the_peer_service_san_is_rejected_by_the_client() {
    let a = pki("acme");
    let client = node(&a, "eu-1", "acme");
    // Same CA, but issued for another namespace: its SANs name
    // kura-acme-peers.other.svc..., not the Service the client verifies.
    let wrong = Node::from_leaf(
        &a.issue_leaf(&request("eu-2", "other", "acme"), now())
            .unwrap(),
    );
    let out = handshake(&wrong, &client, "acme").await;
    let e = out.client.unwrap_err();
    assert!(e.contains("not valid for name"), "{e}");
}

#[tokio::test]
async fn server_can_require_the_client_to_name_the_service() {
    let a = pki("acme");
    let server = node(&a, "eu-1", "acme");
    let other_ns = Node::from_leaf(
        &a.issue_leaf(&request("eu-2", "other", "acme"), now())
            .unwrap(),
    );
    let strict = server_config(
        &server.identity(),
        &server.trust(),
        &ServerOptions::default()
            .require_client_name(&service("acme"))
            .unwrap(),
    )
    .unwrap();
    let c = client_config(&other_ns.identity(), &other_ns.trust(), &service("acme")).unwrap();
    let out = handshake_named(strict.clone(), c.config, c.server_name).await;
    let e = out.server.unwrap_err();
    assert!(e.contains("NotValidForName"), "{e}");
    // A client from the right namespace passes the same strict server.
    let good = node(&a, "eu-3", "acme");
    let c = good.client("acme");
    let out = handshake_named(strict, c.config, c.server_name).await;
    assert!(out.ok(), "{out:?}");
}

#[tokio::test]
async fn server_auth_only_leaf_is_rejected_as_a_client() {
    let a = pki("acme");
    let server = node(&a, "eu-1", "acme");
    let mut params = leaf_params("acme");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_only = sign_custom(&a, params);
    let out = handshake(&server, &server_only, "acme").await;
    let err = out.server.unwrap_err();
    assert!(err.contains("client authentication"), "{err}");
    // The same leaf is fine as a server.
    let out = handshake(&server_only, &server, "acme").await;
    assert!(out.ok(), "{out:?}");
}

#[tokio::test]
async fn missing_client_certificate_is_rejected() {
    let a = pki("acme");
    let server = node(&a, "eu-1", "acme");
    let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(server.trust().root_store().unwrap())
    .with_no_client_auth();
    let name = ServerName::try_from(service("acme")).unwrap();
    let out = handshake_named(server.server(), Arc::new(anonymous), name).await;
    let e = out.server.unwrap_err();
    assert!(e.contains("no certificates"), "{e}");
    assert!(out.client.is_err());
}

#[tokio::test]
async fn self_signed_look_alike_is_rejected_both_ways() {
    let a = pki("acme");
    let good = node(&a, "eu-1", "acme");
    // Same subject, SANs and usages as a real leaf, but self-signed.
    let params = leaf_params("acme");
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let fake = Node {
        data: SecretData::from([
            ("ca.pem".into(), a.trust_bundle().to_pem().into_bytes()),
            ("tls.crt".into(), cert.pem().into_bytes()),
            ("tls.key".into(), key.serialize_pem().into_bytes()),
        ]),
    };
    let out = handshake(&fake, &good, "acme").await;
    assert!(out.client.is_err(), "{out:?}");
    let out = handshake(&good, &fake, "acme").await;
    assert!(out.server.is_err(), "{out:?}");
}

#[tokio::test]
async fn look_alike_ca_with_the_same_subject_is_rejected() {
    let a = pki("acme");
    let good = node(&a, "eu-1", "acme");
    // An attacker's CA with the very same subject DN "kura acme peer CA".
    let twin = pki("acme");
    let forged = node(&twin, "eu-2", "acme");
    let out = handshake(&forged, &good, "acme").await;
    assert!(out.client.is_err(), "{out:?}");
    let out = handshake(&good, &forged, "acme").await;
    assert!(out.server.is_err(), "{out:?}");
}

#[tokio::test]
async fn rotation_overlap_authenticates_both_ways_then_drops_old() {
    let account = acct("acme");
    let stable = pki("acme");
    let old_only = node(&stable, "eu-0", "acme"); // trust {A}, signed by A

    // Phase 2: next CA published everywhere; leaves still signed by A.
    let published = stable
        .begin_rotation(&account, &CaOptions::default(), now())
        .unwrap();
    assert_eq!(published.phase(), RotationPhase::NextPublished);
    let old_leaf = node(&published, "eu-1", "acme"); // trust {B, A}, signed by A
    // A node that has not yet picked up the new bundle still talks to it.
    assert!(handshake(&old_only, &old_leaf, "acme").await.ok());
    assert!(handshake(&old_leaf, &old_only, "acme").await.ok());

    // Phase 3: leaves re-issued by the new CA; old leaves still around.
    let signing_new = published.promote_next().unwrap();
    assert_eq!(signing_new.phase(), RotationPhase::SigningWithNext);
    let new_leaf = node(&signing_new, "eu-2", "acme"); // trust {B, A}, signed by B
    let out = handshake(&old_leaf, &new_leaf, "acme").await;
    assert!(out.ok(), "old server, new client: {out:?}");
    let out = handshake(&new_leaf, &old_leaf, "acme").await;
    assert!(out.ok(), "new server, old client: {out:?}");
    // The controller sees old leaves as stale and re-issues them.
    assert_eq!(
        signing_new
            .validate_leaf(&old_leaf.data, &[&service("acme")], now())
            .unwrap_err(),
        LeafProblem::StaleIssuer
    );

    // Phase 4: old CA dropped; an old leaf is rejected both ways.
    let done = signing_new.drop_previous().unwrap();
    assert_eq!(done.phase(), RotationPhase::Stable);
    let fresh = node(&done, "eu-3", "acme"); // trust {B}
    let out = handshake(&old_leaf, &fresh, "acme").await;
    assert!(out.client.is_err(), "{out:?}");
    let out = handshake(&fresh, &old_leaf, "acme").await;
    assert!(out.server.is_err(), "{out:?}");
    // New leaves keep working.
    let out = handshake(&fresh, &new_leaf, "acme").await;
    assert!(out.ok(), "{out:?}");
}
