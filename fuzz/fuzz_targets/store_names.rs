//! Arbitrary strings as keys, namespaces, accounts and digests (what HTTP paths carry) never
//! panic kura-store; accepted keys satisfy the documented grammar and digests round-trip.
#![no_main]

use kura_store::{Account, Digest, Key, Namespace};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data).into_owned();
    if let Ok(k) = Key::new(s.clone()) {
        let k = k.as_str();
        assert!(!k.is_empty() && k.len() <= kura_store::MAX_KEY_LEN);
        assert!(!k.bytes().any(|b| b < 0x20 || b == 0x7f));
        assert!(!k.starts_with('/'));
        assert!(!k.split('/').any(|seg| seg == ".." || seg == "."));
    }
    let _ = Account::new(s.clone());
    let _ = Namespace::new(s.clone());
    if let Ok(d) = Digest::from_hex(&s) {
        assert_eq!(d.to_hex(), s.to_ascii_lowercase());
        assert_eq!(Digest::from_hex(&d.to_hex()).ok(), Some(d));
    }
});
