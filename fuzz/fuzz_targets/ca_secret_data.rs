//! Arbitrary bytes as CA and leaf Secret data never panic kura-ca.
#![no_main]

use kura_ca::time::OffsetDateTime;
use kura_ca::{AccountPki, PeerIdentity, SecretData, TrustBundle, validate_leaf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Split the input into up to four Secret entries on 0x00 separators.
    let mut parts = data.splitn(4, |b| *b == 0);
    let mut next = || parts.next().unwrap_or_default().to_vec();
    let (a, b, c, d) = (next(), next(), next(), next());
    let secret = SecretData::from([
        ("ca.pem".to_owned(), a.clone()),
        ("ca-key.pem".to_owned(), b.clone()),
        ("tls.crt".to_owned(), c.clone()),
        ("tls.key".to_owned(), d.clone()),
        ("next-ca.pem".to_owned(), c),
        ("next-ca-key.pem".to_owned(), d),
    ]);
    let now = OffsetDateTime::UNIX_EPOCH + kura_ca::time::Duration::days(20_000);
    let _ = AccountPki::from_secret_data(&secret, now);
    let _ = PeerIdentity::from_secret_data(&secret);
    if let Ok(trust) = TrustBundle::from_pem(&a) {
        let _ = validate_leaf(&secret, &trust, &["kura-a-peers.ns.svc.cluster.local"], now);
    }
    let _ = kura_ca::AccountHandle::new(String::from_utf8_lossy(&b).into_owned());
    let _ = kura_ca::HostName::new(String::from_utf8_lossy(&b).into_owned());
});
