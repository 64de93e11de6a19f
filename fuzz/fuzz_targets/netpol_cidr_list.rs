//! Arbitrary text through kura-netpol's CIDR-list parser and the set
//! operations never panics, and every parsed CIDR round-trips through its
//! canonical text.
#![no_main]

use kura_netpol::{Cidr, CidrSet, ClientCidrRules, HostBits, parse_cidr_list};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Cidr::parse(&text, HostBits::Reject);
    let mut set = CidrSet::new();
    for policy in [HostBits::Reject, HostBits::Clear] {
        for entry in parse_cidr_list(&text, policy) {
            if let Ok(parsed) = entry {
                let again: Cidr = parsed
                    .cidr
                    .to_string()
                    .parse()
                    .expect("canonical CIDR re-parses");
                assert_eq!(again, parsed.cidr);
                set.insert(parsed.cidr);
            }
        }
    }
    let aggregated = set.aggregate();
    assert!(aggregated.is_aggregated());
    let a: CidrSet = set.iter().step_by(2).copied().collect();
    let b: CidrSet = set.iter().skip(1).step_by(2).copied().collect();
    let diff = a.subtract(&b);
    assert!(!diff.overlaps_set(&b));
    let _ = ClientCidrRules::new().check(&a, &b).map(|c| c.ip_blocks());
});
