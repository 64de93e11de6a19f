//! Property tests: aggregation against interval arithmetic, subtraction and
//! containment against a naive address-by-address model, and round trips of
//! the parsers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kura_netpol::ipnet::{IpNet, Ipv4Net, Ipv6Net};
use kura_netpol::{Bandwidth, Cidr, CidrSet, ClientCidrRules, HostBits, Quantity, parse_cidr_list};
use proptest::prelude::*;

fn v4(addr: u32, len: u8) -> Cidr {
    Cidr::from_net_clearing_host_bits(IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap()))
}

fn v6(addr: u128, len: u8) -> Cidr {
    Cidr::from_net_clearing_host_bits(IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap()))
}

/// IPv4 prefixes clustered in 10.0.0.0/16 (so they overlap and touch), plus
/// some from anywhere.
fn clustered_v4() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        4 => (0u32..=0xffff, 16u8..=32).prop_map(|(low, len)| v4(0x0a00_0000 | low, len)),
        1 => (any::<u32>(), 0u8..=32).prop_map(|(a, len)| v4(a, len)),
    ]
}

fn clustered_v6() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        4 => (0u128..=0xffff, 112u8..=128)
            .prop_map(|(low, len)| v6(0xfd00_u128 << 112 | low, len)),
        1 => (any::<u128>(), 0u8..=128).prop_map(|(a, len)| v6(a, len)),
    ]
}

fn mixed_set() -> impl Strategy<Value = CidrSet> {
    prop::collection::vec(prop_oneof![clustered_v4(), clustered_v6()], 0..40)
        .prop_map(|v| v.into_iter().collect())
}

/// Inclusive interval of a network: (is IPv6, first, last).
fn interval(c: &Cidr) -> (bool, u128, u128) {
    match c.net() {
        IpNet::V4(n) => (
            false,
            u32::from(n.network()).into(),
            u32::from(n.broadcast()).into(),
        ),
        IpNet::V6(n) => (true, n.network().into(), n.broadcast().into()),
    }
}

/// Naive union: sort and merge overlapping or touching intervals, per family.
fn union(set: &CidrSet) -> Vec<(bool, u128, u128)> {
    let mut all: Vec<_> = set.iter().map(interval).collect();
    all.sort();
    let mut out: Vec<(bool, u128, u128)> = Vec::new();
    for (fam, s, e) in all {
        match out.last_mut() {
            Some(last) if last.0 == fam && s <= last.2.saturating_add(1) => {
                last.2 = last.2.max(e);
            }
            _ => out.push((fam, s, e)),
        }
    }
    out
}

/// Minimal prefix decomposition of an interval: greedily take the largest
/// aligned block that starts at the cursor and fits.
fn decompose(fam: bool, start: u128, end: u128) -> Vec<Cidr> {
    let bits: u32 = if fam { 128 } else { 32 };
    let mut out = Vec::new();
    let mut cursor = start;
    loop {
        let mut size_log = if cursor == 0 {
            bits
        } else {
            cursor.trailing_zeros().min(bits)
        };
        while size_log > 0 {
            let last = if size_log >= 128 {
                u128::MAX
            } else {
                cursor + ((1u128 << size_log) - 1)
            };
            if last <= end {
                break;
            }
            size_log -= 1;
        }
        let len = (bits - size_log) as u8;
        out.push(if fam {
            v6(cursor, len)
        } else {
            v4(cursor as u32, len)
        });
        let last = if size_log >= 128 {
            u128::MAX
        } else {
            cursor + ((1u128 << size_log) - 1)
        };
        if last >= end {
            return out;
        }
        cursor = last + 1;
    }
}

fn naive_contains(set: &CidrSet, addr: IpAddr) -> bool {
    set.iter().any(|c| {
        let (fam, s, e) = interval(c);
        let (afam, a) = match addr {
            IpAddr::V4(a) => (false, u128::from(u32::from(a))),
            IpAddr::V6(a) => (true, u128::from(a)),
        };
        fam == afam && s <= a && a <= e
    })
}

/// Prefixes inside a 256-address universe, 10.0.0.0/24, so every address
/// can be checked.
fn small_set() -> impl Strategy<Value = CidrSet> {
    prop::collection::vec((0u32..=255, 24u8..=32), 0..12).prop_map(|v| {
        v.into_iter()
            .map(|(low, len)| v4(0x0a00_0000 | low, len))
            .collect()
    })
}

fn universe() -> impl Iterator<Item = IpAddr> {
    (0u32..256).map(|low| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | low)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn aggregate_covers_exactly_the_same_addresses(set in mixed_set()) {
        let agg = set.aggregate();
        prop_assert_eq!(union(&agg), union(&set));
    }

    #[test]
    fn aggregate_is_minimal_and_disjoint(set in mixed_set()) {
        let agg = set.aggregate();
        let expected: Vec<Cidr> = union(&set)
            .into_iter()
            .flat_map(|(fam, s, e)| decompose(fam, s, e))
            .collect();
        prop_assert_eq!(agg.as_slice(), expected.as_slice());
        for pair in agg.as_slice().windows(2) {
            prop_assert!(!pair[0].overlaps(&pair[1]), "{:?} overlaps {:?}", pair[0], pair[1]);
        }
    }

    #[test]
    fn aggregate_is_idempotent(set in mixed_set()) {
        let once = set.aggregate();
        prop_assert!(once.is_aggregated());
        prop_assert_eq!(once.aggregate(), once);
    }

    #[test]
    fn aggregate_ignores_order_and_duplicates(mut cidrs in prop::collection::vec(clustered_v4(), 0..30)) {
        let a: CidrSet = cidrs.iter().copied().collect();
        cidrs.reverse();
        cidrs.extend(cidrs.clone());
        let b: CidrSet = cidrs.into_iter().collect();
        prop_assert_eq!(a.aggregate(), b.aggregate());
    }

    #[test]
    fn subtract_and_contains_agree_with_the_naive_model(a in small_set(), b in small_set()) {
        let diff = a.subtract(&b);
        prop_assert!(diff.is_aggregated());
        for addr in universe() {
            let in_a = naive_contains(&a, addr);
            let in_b = naive_contains(&b, addr);
            prop_assert_eq!(a.contains_addr(addr), in_a);
            prop_assert_eq!(diff.contains_addr(addr), in_a && !in_b, "{}", addr);
        }
        prop_assert_eq!(a.overlaps_set(&b), universe().any(|x| naive_contains(&a, x) && naive_contains(&b, x)));
        for c in b.iter() {
            let all_in = universe().filter(|x| c.contains_addr(*x)).all(|x| naive_contains(&a, x));
            prop_assert_eq!(a.covers(c), all_in, "{:?}", c);
            let any_in = universe().filter(|x| c.contains_addr(*x)).any(|x| naive_contains(&a, x));
            prop_assert_eq!(a.overlaps(c), any_in, "{:?}", c);
        }
    }

    #[test]
    fn rendered_ip_blocks_admit_exactly_allowed_minus_except(a in small_set(), b in small_set()) {
        prop_assume!(!a.is_empty());
        let clients = ClientCidrRules::new().check(&a, &b).unwrap();
        let blocks = clients.ip_blocks();
        for addr in universe() {
            let admitted = blocks.iter().any(|block| {
                block.cidr.contains_addr(addr) && !block.except.iter().any(|e| e.contains_addr(addr))
            });
            let expected = naive_contains(&a, addr) && !naive_contains(&b, addr);
            prop_assert_eq!(admitted, expected, "{}", addr);
            prop_assert_eq!(clients.effective().contains_addr(addr), expected);
        }
        for block in &blocks {
            for e in &block.except {
                // Kubernetes requires except to be a strict subset of cidr.
                prop_assert!(block.cidr.contains(e) && block.cidr != *e);
            }
        }
    }

    #[test]
    fn cidr_display_round_trips(c in prop_oneof![clustered_v4(), clustered_v6()]) {
        let text = c.to_string();
        prop_assert_eq!(text.parse::<Cidr>().unwrap(), c);
        let listed = CidrSet::parse_list(&format!("# header\n{text}, {text}\n"), HostBits::Reject).unwrap();
        prop_assert_eq!(listed.as_slice(), &[c]);
    }

    #[test]
    fn cidr_parsers_never_panic(text in "\\PC{0,64}") {
        let _ = Cidr::parse(&text, HostBits::Clear);
        let _ = parse_cidr_list(&text, HostBits::Reject).count();
    }

    #[test]
    fn host_bits_policy_is_reported(addr in any::<u32>(), len in 0u8..32) {
        let text = format!("{}/{len}", Ipv4Addr::from(addr));
        let canonical = v4(addr, len);
        let has_host_bits = canonical.network() != IpAddr::V4(Ipv4Addr::from(addr));
        let cleared = Cidr::parse(&text, HostBits::Clear).unwrap();
        prop_assert_eq!(cleared.cidr, canonical);
        prop_assert_eq!(cleared.host_bits_cleared_from.is_some(), has_host_bits);
        prop_assert_eq!(Cidr::parse(&text, HostBits::Reject).is_err(), has_host_bits);
    }

    #[test]
    fn quantity_parsing_round_trips(
        sign in prop_oneof![Just(""), Just("+"), Just("-")],
        int in "[0-9]{0,12}",
        frac in prop::option::of("[0-9]{0,8}"),
        suffix in prop_oneof![
            Just(String::new()),
            prop::sample::select(vec!["m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
                .prop_map(str::to_owned),
            (prop_oneof![Just("e"), Just("E")], -30i32..30).prop_map(|(e, n)| format!("{e}{n}")),
        ],
    ) {
        let number = match &frac {
            Some(f) => format!("{int}.{f}"),
            None => int.clone(),
        };
        prop_assume!(number.bytes().any(|b| b.is_ascii_digit()));
        let text = format!("{sign}{number}{suffix}");
        let q = Quantity::parse(&text).unwrap();
        let canonical = q.to_string();
        let again = Quantity::parse(&canonical).unwrap();
        prop_assert_eq!(again, q);
        prop_assert_eq!(again.to_string(), canonical.clone());
        prop_assert_eq!(again.to_integer_ceil(), q.to_integer_ceil());
    }

    #[test]
    fn quantity_parser_never_panics(text in "\\PC{0,40}") {
        if let Ok(q) = Quantity::parse(&text) {
            prop_assert_eq!(Quantity::parse(&q.to_string()).unwrap(), q);
            let _ = q.to_integer_ceil();
        }
        let _ = Bandwidth::parse(&text);
    }

    #[test]
    fn bandwidth_round_trips_through_its_annotation_value(
        bits in Bandwidth::MIN_BITS_PER_SECOND..=Bandwidth::MAX_BITS_PER_SECOND,
    ) {
        let b = Bandwidth::from_bits_per_second(bits).unwrap();
        let parsed = Bandwidth::parse(&b.to_string()).unwrap();
        prop_assert_eq!(parsed.bits_per_second(), bits);
        prop_assert_eq!(parsed, b);
    }
}
