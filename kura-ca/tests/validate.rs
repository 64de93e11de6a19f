//! `validate_leaf` and renewal: one test per structured reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use kura_ca::*;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use time::{Duration, OffsetDateTime};

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn acct(a: &str) -> AccountHandle {
    AccountHandle::new(a).unwrap()
}

fn req(account: &str) -> LeafRequest {
    LeafRequest::new(
        InstanceName::new("eu-1").unwrap(),
        Namespace::new("kura").unwrap(),
        acct(account),
    )
}

fn service(account: &str) -> String {
    req(account).peer_service_dns_name()
}

fn setup() -> (AccountCa, TrustBundle, SecretData) {
    let ca = AccountCa::generate(&acct("alpha"), &CaOptions::default(), now()).unwrap();
    let trust = TrustBundle::single(&ca);
    let leaf = ca.issue_leaf(&req("alpha"), &trust, now()).unwrap();
    (ca, trust, leaf.to_secret_data())
}

#[test]
fn valid_leaf_passes_and_reports_its_names() {
    let (_, trust, data) = setup();
    let info = validate_leaf(&data, &trust, &[&service("alpha")], now()).unwrap();
    assert_eq!(info.dns_names, req("alpha").sans());
    assert!(
        (info.not_after - info.not_before - Duration::days(730) - Duration::hours(1)).abs()
            < Duration::seconds(2)
    );
}

#[test]
fn missing_keys_are_named() {
    let (_, trust, data) = setup();
    for key in ["ca.pem", "tls.crt", "tls.key"] {
        let mut d = data.clone();
        d.remove(key);
        assert_eq!(
            validate_leaf(&d, &trust, &[], now()).unwrap_err(),
            LeafProblem::MissingKey {
                key: match key {
                    "ca.pem" => "ca.pem",
                    "tls.crt" => "tls.crt",
                    _ => "tls.key",
                }
            }
        );
    }
}

#[test]
fn garbage_and_truncated_pem_are_typed() {
    let (_, trust, data) = setup();
    let mut d = data.clone();
    d.insert("tls.crt".into(), b"not pem at all".to_vec());
    assert!(matches!(
        validate_leaf(&d, &trust, &[], now()).unwrap_err(),
        LeafProblem::Pem {
            key: "tls.crt",
            reason: PemProblem::NoSection { .. }
        }
    ));
    let cert = &data["tls.crt"];
    let mut d = data.clone();
    d.insert("tls.crt".into(), cert[..cert.len() / 2].to_vec());
    assert!(matches!(
        validate_leaf(&d, &trust, &[], now()).unwrap_err(),
        LeafProblem::Pem { key: "tls.crt", .. }
    ));
    let key = &data["tls.key"];
    let mut d = data.clone();
    d.insert("tls.key".into(), key[..key.len() - 40].to_vec());
    assert!(matches!(
        validate_leaf(&d, &trust, &[], now()).unwrap_err(),
        LeafProblem::Pem { key: "tls.key", .. }
    ));
    // The same inputs through the loading APIs are typed errors too.
    assert!(matches!(
        TrustBundle::from_pem(b"-----BEGIN CERTIFICATE-----\nMII"),
        Err(Error::Pem { .. })
    ));
    assert!(matches!(
        PeerIdentity::from_pem(cert, b"garbage"),
        Err(Error::Pem { key: "tls.key", .. })
    ));
}

#[test]
fn alpha_leaf_fails_against_bravo_ca() {
    let (_, _, data) = setup();
    let bravo = AccountCa::generate(&acct("bravo"), &CaOptions::default(), now()).unwrap();
    let bravo_trust = TrustBundle::single(&bravo);
    // The bundle differs...
    assert_eq!(
        validate_leaf(&data, &bravo_trust, &[], now()).unwrap_err(),
        LeafProblem::CaMismatch
    );
    // ...and even with ca.pem swapped to bravo's, the chain does not verify.
    let mut d = data.clone();
    d.insert("ca.pem".into(), bravo_trust.to_pem().into_bytes());
    assert!(matches!(
        validate_leaf(&d, &bravo_trust, &[], now()).unwrap_err(),
        LeafProblem::ChainInvalid { .. }
    ));
}

#[test]
fn key_mismatch_is_detected() {
    let (ca, trust, data) = setup();
    let other = ca.issue_leaf(&req("alpha"), &trust, now()).unwrap();
    let mut d = data.clone();
    d.insert("tls.key".into(), other.key_pem().as_bytes().to_vec());
    assert_eq!(
        validate_leaf(&d, &trust, &[], now()).unwrap_err(),
        LeafProblem::KeyMismatch
    );
}

#[test]
fn expiry_and_not_yet_valid_carry_their_dates() {
    let (ca, trust, _) = setup();
    let leaf = ca
        .issue_leaf(&req("alpha").validity(Duration::days(10)), &trust, now())
        .unwrap();
    let data = leaf.to_secret_data();
    match validate_leaf(&data, &trust, &[], now() + Duration::days(11)).unwrap_err() {
        LeafProblem::Expired { not_after } => {
            assert!((not_after - now() - Duration::days(10)).abs() < Duration::seconds(5));
        }
        other => panic!("{other:?}"),
    }
    match validate_leaf(&data, &trust, &[], now() - Duration::hours(2)).unwrap_err() {
        LeafProblem::NotYetValid { not_before } => {
            assert!((now() - not_before - Duration::hours(1)).abs() < Duration::seconds(5));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn uncovered_name_is_reported() {
    let (_, trust, data) = setup();
    assert_eq!(
        validate_leaf(
            &data,
            &trust,
            &["kura-bravo-peers.kura.svc.cluster.local"],
            now()
        )
        .unwrap_err(),
        LeafProblem::NameNotCovered {
            name: "kura-bravo-peers.kura.svc.cluster.local".into()
        }
    );
    // Wildcards cover pod names behind the Service and the headless Service.
    validate_leaf(
        &data,
        &trust,
        &[
            "x.kura-alpha-peers.kura.svc.cluster.local",
            "eu-1-0.eu-1-headless.kura.svc.cluster.local",
        ],
        now(),
    )
    .unwrap();
}

#[test]
fn missing_client_auth_eku_is_reported() {
    let (ca, trust, _) = setup();
    let issuer =
        Issuer::from_ca_cert_pem(ca.cert_pem(), KeyPair::from_pem(&ca.key_pem()).unwrap()).unwrap();
    for (ekus, which) in [
        (vec![ExtendedKeyUsagePurpose::ServerAuth], Eku::ClientAuth),
        (vec![ExtendedKeyUsagePurpose::ClientAuth], Eku::ServerAuth),
    ] {
        let mut p = CertificateParams::new(req("alpha").sans()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "eu-1 peer");
        p.not_before = now() - Duration::hours(1);
        p.not_after = now() + Duration::days(30);
        p.is_ca = IsCa::ExplicitNoCa;
        p.extended_key_usages = ekus;
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        let data = SecretData::from([
            ("ca.pem".into(), trust.to_pem().into_bytes()),
            ("tls.crt".into(), cert.pem().into_bytes()),
            ("tls.key".into(), key.serialize_pem().into_bytes()),
        ]);
        assert_eq!(
            validate_leaf(&data, &trust, &[], now()).unwrap_err(),
            LeafProblem::MissingEku { which }
        );
    }
}

#[test]
fn renewal_starts_with_a_third_of_the_lifetime_left() {
    let (ca, trust, _) = setup();
    let t0 = now();
    let leaf = ca
        .issue_leaf(&req("alpha").validity(Duration::days(300)), &trust, t0)
        .unwrap();
    let info = validate_leaf(&leaf.to_secret_data(), &trust, &[], t0).unwrap();
    // Lifetime = 300 days + 1 h backdate; a third is ~100 days.
    assert!(!info.needs_renewal(t0));
    assert!(!info.needs_renewal(t0 + Duration::days(199)));
    assert!(info.needs_renewal(t0 + Duration::days(201)));
    // Long before expiry: the system we replace renewed only after it.
    assert!(
        info.needs_renewal(t0 + Duration::days(201)) && t0 + Duration::days(201) < info.not_after
    );
    let half = RenewalPolicy::remaining_fraction(1, 2).unwrap();
    assert!(info.needs_renewal_with(half, t0 + Duration::days(151)));
    assert!(!info.needs_renewal_with(half, t0 + Duration::days(149)));
    assert!(RenewalPolicy::remaining_fraction(0, 3).is_err());
    assert!(RenewalPolicy::remaining_fraction(4, 3).is_err());
}

#[test]
fn two_instances_share_the_account_ca() {
    let now = now();
    let pki = AccountPki::generate(&acct("alpha"), &CaOptions::default(), now).unwrap();
    let stored = pki.to_secret_data();
    // A second reconcile loads the same CA and issues the second instance.
    let loaded = AccountPki::from_secret_data(&stored, now).unwrap();
    assert_eq!(
        loaded.to_secret_data(),
        stored,
        "CA material preserved byte for byte"
    );
    let r2 = LeafRequest::new(
        InstanceName::new("eu-2").unwrap(),
        Namespace::new("kura").unwrap(),
        acct("alpha"),
    );
    let l1 = pki.issue_leaf(&req("alpha"), now).unwrap();
    let l2 = loaded.issue_leaf(&r2, now).unwrap();
    assert_eq!(l1.to_secret_data()["ca.pem"], l2.to_secret_data()["ca.pem"]);
    for l in [&l1, &l2] {
        loaded
            .validate_leaf(&l.to_secret_data(), &[&service("alpha")], now)
            .unwrap();
    }
}

#[test]
fn rotation_state_round_trips_through_secret_data() {
    let now = now();
    let a = acct("alpha");
    let pki = AccountPki::generate(&a, &CaOptions::default(), now).unwrap();
    let published = pki.begin_rotation(&a, &CaOptions::default(), now).unwrap();
    let data = published.to_secret_data();
    assert!(data.contains_key(NEXT_CA_CERT_KEY) && data.contains_key(NEXT_CA_KEY_KEY));
    let back = AccountPki::from_secret_data(&data, now).unwrap();
    assert_eq!(back.phase(), RotationPhase::NextPublished);
    assert_eq!(back.trust_bundle(), published.trust_bundle());
    let promoted = back.promote_next().unwrap();
    let data = promoted.to_secret_data();
    assert!(data.contains_key(PREVIOUS_CA_CERT_KEY) && !data.contains_key(NEXT_CA_CERT_KEY));
    let back = AccountPki::from_secret_data(&data, now).unwrap();
    assert_eq!(back.phase(), RotationPhase::SigningWithNext);
    assert_eq!(back.trust_bundle().certs().len(), 2);
    // Out-of-order transitions are typed errors, not panics.
    assert!(matches!(
        back.drop_previous().unwrap().promote_next(),
        Err(Error::Rotation(_))
    ));
    // Half a next CA is an inconsistent state.
    let mut broken = published.to_secret_data();
    broken.remove(NEXT_CA_KEY_KEY);
    assert!(matches!(
        AccountPki::from_secret_data(&broken, now),
        Err(Error::Rotation(_))
    ));
}

#[test]
fn a_leaf_can_not_be_used_as_a_ca() {
    let (_, _, data) = setup();
    let err = AccountCa::from_pem(&data["tls.crt"], &data["tls.key"], now()).unwrap_err();
    assert!(matches!(err, Error::InvalidCa(CaProblem::NotACa)));
}
