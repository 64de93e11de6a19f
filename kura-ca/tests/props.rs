//! Property tests: name capping, name validation, PEM round-trips, total parsing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::OnceLock;

use kura_ca::names::{account_scoped_name, ca_secret_name, peer_service_name};
use kura_ca::*;
use proptest::prelude::*;
use time::OffsetDateTime;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn handle() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,120}[a-z0-9])?"
}

fn cas() -> &'static Vec<AccountCa> {
    static CAS: OnceLock<Vec<AccountCa>> = OnceLock::new();
    CAS.get_or_init(|| {
        (0..4)
            .map(|i| {
                AccountCa::generate(
                    &AccountHandle::new(format!("acct{i}")).unwrap(),
                    &CaOptions::default(),
                    OffsetDateTime::now_utc(),
                )
                .unwrap()
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn capped_names_are_short_stable_and_valid(h in handle(), suffix in prop::sample::select(vec!["peers", "peer-ca"])) {
        let a = AccountHandle::new(h.clone()).unwrap();
        let name = account_scoped_name(&a, suffix);
        prop_assert!(name.len() <= 63);
        prop_assert!(is_dns_label(&name), "{name}");
        prop_assert_eq!(&name, &account_scoped_name(&AccountHandle::new(h.clone()).unwrap(), suffix));
        let full = format!("kura-{h}-{suffix}");
        if full.len() <= 63 {
            prop_assert_eq!(name, full);
        } else {
            prop_assert!(name.starts_with("kura-"));
            prop_assert_eq!(name.len() - name.rfind('-').unwrap(), 9);
        }
    }

    #[test]
    fn distinct_long_handles_get_distinct_names(a in "[a-z]{60,100}", b in "[a-z]{60,100}") {
        prop_assume!(a != b);
        let (ha, hb) = (AccountHandle::new(a).unwrap(), AccountHandle::new(b).unwrap());
        prop_assert_ne!(peer_service_name(&ha), peer_service_name(&hb));
        prop_assert_ne!(ca_secret_name(&ha), ca_secret_name(&hb));
    }

    #[test]
    fn name_validation_is_total_and_exact(s in ".{0,80}") {
        let ok = Namespace::new(s.clone()).is_ok();
        prop_assert_eq!(ok, is_dns_label(&s));
        let _ = AccountHandle::new(s.clone());
        let _ = InstanceName::new(s.clone());
        let _ = HostName::new(s);
    }

    #[test]
    fn trust_bundle_pem_round_trips(picks in prop::collection::vec(0usize..4, 1..6)) {
        let certs: Vec<_> = picks.iter().map(|i| cas()[*i].cert_der().clone()).collect();
        let bundle = TrustBundle::new(certs).unwrap();
        let back = TrustBundle::from_pem(bundle.to_pem().as_bytes()).unwrap();
        prop_assert_eq!(&back, &bundle);
        // CRLF line endings (a Secret edited on Windows) decode to the same bundle.
        let crlf = bundle.to_pem().replace('\n', "\r\n");
        prop_assert_eq!(TrustBundle::from_pem(crlf.as_bytes()).unwrap(), bundle);
    }

    #[test]
    fn ca_secret_data_round_trips(i in 0usize..4) {
        let ca = &cas()[i];
        let back = AccountCa::from_secret_data(&ca.to_secret_data(), OffsetDateTime::now_utc()).unwrap();
        prop_assert_eq!(back.to_secret_data(), ca.to_secret_data());
    }

    #[test]
    fn mangled_pem_never_panics(i in 0usize..4, cut in 0usize..2000, flip in 0usize..2000, byte in any::<u8>()) {
        let mut pem = cas()[i].cert_pem().as_bytes().to_vec();
        if flip < pem.len() { pem[flip] = byte; }
        pem.truncate(cut);
        let _ = TrustBundle::from_pem(&pem);
        let data = SecretData::from([
            ("ca.pem".to_owned(), pem.clone()),
            ("ca-key.pem".to_owned(), pem.clone()),
            ("tls.crt".to_owned(), pem.clone()),
            ("tls.key".to_owned(), pem),
        ]);
        let _ = AccountPki::from_secret_data(&data, OffsetDateTime::now_utc());
        let _ = PeerIdentity::from_secret_data(&data);
    }
}
