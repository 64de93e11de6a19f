//! Cross-check issued material with a second TLS stack: the `openssl` CLI.
//!
//! Skipped (with a message) when `openssl` is not installed, except under CI
//! (`CI` set), where its absence fails the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    missing_docs
)]

use std::path::Path;
use std::process::Command;

use kura_ca::*;
use time::OffsetDateTime;

fn openssl_available() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl is required under CI"
        );
        eprintln!("SKIP: openssl not installed");
    }
    found
}

fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write(dir: &Path, data: &SecretData) {
    for (k, v) in data {
        std::fs::write(dir.join(k), v).unwrap();
    }
}

fn request() -> LeafRequest {
    LeafRequest::new(
        InstanceName::new("eu-1").unwrap(),
        Namespace::new("kura").unwrap(),
        AccountHandle::new("acme").unwrap(),
    )
    .extra_name(HostName::new("peer.acme.example").unwrap())
}

#[test]
fn openssl_verifies_leaf_for_server_and_client_purposes() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let pki = AccountPki::generate(
        &AccountHandle::new("acme").unwrap(),
        &CaOptions::default(),
        now,
    )
    .unwrap();
    write(dir.path(), &pki.to_secret_data());
    write(
        dir.path(),
        &pki.issue_leaf(&request(), now).unwrap().to_secret_data(),
    );

    for purpose in ["sslserver", "sslclient"] {
        let (ok, text) = openssl(
            &[
                "verify",
                "-x509_strict",
                "-CAfile",
                "ca.pem",
                "-purpose",
                purpose,
                "tls.crt",
            ],
            dir.path(),
        );
        assert!(ok && text.contains("tls.crt: OK"), "{purpose}: {text}");
    }
    let (ok, text) = openssl(
        &[
            "verify",
            "-CAfile",
            "ca.pem",
            "-verify_hostname",
            "kura-acme-peers.kura.svc.cluster.local",
            "tls.crt",
        ],
        dir.path(),
    );
    assert!(ok, "{text}");

    let (ok, text) = openssl(
        &[
            "x509",
            "-in",
            "tls.crt",
            "-noout",
            "-ext",
            "subjectAltName,extendedKeyUsage,keyUsage,basicConstraints",
            "-subject",
        ],
        dir.path(),
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(
        text.contains("Digital Signature, Key Encipherment"),
        "{text}"
    );
    assert!(
        text.contains("CN=eu-1 peer") || text.contains("CN = eu-1 peer"),
        "{text}"
    );
    let expected = request()
        .sans()
        .iter()
        .map(|s| format!("DNS:{s}"))
        .collect::<Vec<_>>()
        .join(", ");
    assert!(
        text.contains(&expected),
        "SANs not in reference order:\n{text}\nexpected {expected}"
    );

    let (ok, text) = openssl(
        &[
            "x509",
            "-in",
            "ca.pem",
            "-noout",
            "-ext",
            "basicConstraints,keyUsage",
            "-subject",
        ],
        dir.path(),
    );
    assert!(ok, "{text}");
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("kura acme peer CA"), "{text}");

    // The keys are PKCS#8 and belong to their certificates.
    for (key, cert) in [("tls.key", "tls.crt"), ("ca-key.pem", "ca.pem")] {
        let (ok, from_key) = openssl(&["pkey", "-in", key, "-pubout"], dir.path());
        assert!(ok, "{from_key}");
        let (ok, from_cert) = openssl(&["x509", "-in", cert, "-noout", "-pubkey"], dir.path());
        assert!(ok, "{from_cert}");
        assert_eq!(from_key, from_cert, "{key} does not match {cert}");
        let head = std::fs::read_to_string(dir.path().join(key)).unwrap();
        assert!(
            head.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{key} is not PKCS#8"
        );
    }
}

#[test]
fn openssl_rejects_a_leaf_from_another_account_and_accepts_rotation_bundles() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let acme = AccountHandle::new("acme").unwrap();
    let pki = AccountPki::generate(&acme, &CaOptions::default(), now).unwrap();
    let other = AccountPki::generate(
        &AccountHandle::new("bravo").unwrap(),
        &CaOptions::default(),
        now,
    )
    .unwrap();
    std::fs::write(dir.path().join("other.pem"), other.trust_bundle().to_pem()).unwrap();
    write(
        dir.path(),
        &pki.issue_leaf(&request(), now).unwrap().to_secret_data(),
    );
    let (ok, text) = openssl(&["verify", "-CAfile", "other.pem", "tls.crt"], dir.path());
    assert!(!ok, "{text}");

    // During a rotation the old leaf verifies against the two-CA bundle, and a
    // new leaf too; both CAs share a subject, so this exercises AKI matching.
    let rotating = pki
        .begin_rotation(&acme, &CaOptions::default(), now)
        .unwrap();
    let old = rotating.issue_leaf(&request(), now).unwrap();
    let rotating = rotating.promote_next().unwrap();
    let new = rotating.issue_leaf(&request(), now).unwrap();
    std::fs::write(
        dir.path().join("bundle.pem"),
        rotating.trust_bundle().to_pem(),
    )
    .unwrap();
    std::fs::write(dir.path().join("old.crt"), old.cert_pem()).unwrap();
    std::fs::write(dir.path().join("new.crt"), new.cert_pem()).unwrap();
    for leaf in ["old.crt", "new.crt"] {
        let (ok, text) = openssl(&["verify", "-CAfile", "bundle.pem", leaf], dir.path());
        assert!(ok, "{leaf}: {text}");
    }
    let done = rotating.drop_previous().unwrap();
    std::fs::write(dir.path().join("final.pem"), done.trust_bundle().to_pem()).unwrap();
    let (ok, text) = openssl(&["verify", "-CAfile", "final.pem", "old.crt"], dir.path());
    assert!(!ok, "{text}");
}
