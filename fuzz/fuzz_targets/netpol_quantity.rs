//! Arbitrary text through kura-netpol's Kubernetes quantity and bandwidth
//! parsers never panics, and every parsed quantity round-trips through its
//! canonical text with the same value.
#![no_main]

use kura_netpol::{Bandwidth, Quantity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(q) = Quantity::parse(&text) {
        let again = Quantity::parse(&q.to_string()).expect("canonical quantity re-parses");
        assert_eq!(again, q);
        assert_eq!(again.to_integer_ceil(), q.to_integer_ceil());
    }
    if let Ok(b) = Bandwidth::parse(&text) {
        assert!(
            (Bandwidth::MIN_BITS_PER_SECOND..=Bandwidth::MAX_BITS_PER_SECOND)
                .contains(&b.bits_per_second())
        );
    }
});
