//! CIDRs and CIDR sets: parsing, canonical form, aggregation, subtraction.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv4Subnets, Ipv6Net, Ipv6Subnets};

use crate::error::{CidrErrorReason, Error};

/// What to do with a CIDR whose address has bits set beyond the prefix length,
/// such as `10.1.2.3/8`.
///
/// Such input usually means the writer pasted a host address where a network
/// was meant, so silently accepting `10.0.0.0/8` may admit far more than
/// intended. There is no default: every parse states its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostBits {
    /// Refuse the input with [`Error::HostBitsSet`], naming the network that
    /// clearing the host bits would give.
    Reject,
    /// Clear the host bits and accept the network, reporting the original
    /// address in [`ParsedCidr::host_bits_cleared_from`].
    Clear,
}

/// An IPv4 or IPv6 network in canonical form: no bits set beyond the prefix
/// length.
///
/// Ordering puts every IPv4 network before every IPv6 network, then orders by
/// network address and prefix length. [`Display`](fmt::Display) always writes
/// the prefix length (`10.0.0.1/32`), which is what Kubernetes `ipBlock.cidr`
/// requires. [`FromStr`] parses with [`HostBits::Reject`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr(IpNet);

/// The result of parsing one CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParsedCidr {
    /// The canonical network.
    pub cidr: Cidr,
    /// The address as written when it had host bits set and
    /// [`HostBits::Clear`] cleared them; `None` when the input was canonical.
    pub host_bits_cleared_from: Option<IpAddr>,
}

impl Cidr {
    /// Wraps a network that is already canonical.
    ///
    /// Fails with [`Error::HostBitsSet`] when `net` has host bits set; use
    /// [`Cidr::from_net_clearing_host_bits`] to clear them instead.
    pub fn new(net: IpNet) -> Result<Self, Error> {
        let canonical = net.trunc();
        if canonical == net {
            Ok(Cidr(net))
        } else {
            Err(Error::HostBitsSet {
                input: net.to_string(),
                line: None,
                address: net.addr(),
                network: canonical,
            })
        }
    }

    /// Wraps a network, clearing any host bits.
    pub fn from_net_clearing_host_bits(net: IpNet) -> Self {
        Cidr(net.trunc())
    }

    /// The network holding exactly one address (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Self {
        Cidr(IpNet::from(addr))
    }

    /// Parses an IPv4 or IPv6 CIDR (`10.0.0.0/8`, `fd00::/8`) or a bare
    /// address (taken as `/32` or `/128`).
    ///
    /// The input must be exactly the CIDR: no whitespace, zone ids or
    /// leading zeros in the prefix length. Errors name the offending input
    /// and the byte offset of the problem.
    ///
    /// ```
    /// use kura_netpol::{Cidr, HostBits};
    ///
    /// let parsed = Cidr::parse("10.1.2.3/8", HostBits::Clear)?;
    /// assert_eq!(parsed.cidr.to_string(), "10.0.0.0/8");
    /// assert!(parsed.host_bits_cleared_from.is_some());
    /// assert!(Cidr::parse("10.1.2.3/8", HostBits::Reject).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(input: &str, host_bits: HostBits) -> Result<ParsedCidr, Error> {
        let invalid = |position: usize, reason: CidrErrorReason| Error::InvalidCidr {
            input: input.to_owned(),
            line: None,
            position,
            reason,
        };
        if input.is_empty() {
            return Err(invalid(0, CidrErrorReason::Empty));
        }
        if let Some((position, c)) = input
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '/')))
        {
            return Err(invalid(position, CidrErrorReason::UnexpectedChar(c)));
        }
        let (addr_text, prefix) = match input.split_once('/') {
            None => (input, None),
            Some((addr, prefix)) => (addr, Some(prefix)),
        };
        let address =
            IpAddr::from_str(addr_text).map_err(|_| invalid(0, CidrErrorReason::InvalidAddress))?;
        let max: u8 = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(text) => {
                let start = addr_text.len() + 1;
                if let Some(offset) = text.find('/') {
                    return Err(invalid(start + offset, CidrErrorReason::ExtraSlash));
                }
                if text.is_empty() {
                    return Err(invalid(start, CidrErrorReason::MissingPrefixLength));
                }
                if let Some((offset, c)) = text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
                    return Err(invalid(start + offset, CidrErrorReason::UnexpectedChar(c)));
                }
                if text.len() > 1 && text.starts_with('0') {
                    return Err(invalid(start, CidrErrorReason::PrefixLeadingZero));
                }
                let got = text.bytes().fold(0u32, |acc, b| {
                    acc.saturating_mul(10).saturating_add(u32::from(b - b'0'))
                });
                match u8::try_from(got) {
                    Ok(len) if len <= max => len,
                    _ => {
                        return Err(invalid(start, CidrErrorReason::PrefixTooLong { got, max }));
                    }
                }
            }
        };
        let net = IpNet::new(address, prefix_len)
            .map_err(|_| invalid(0, CidrErrorReason::InvalidAddress))?;
        let canonical = net.trunc();
        if canonical == net {
            return Ok(ParsedCidr {
                cidr: Cidr(net),
                host_bits_cleared_from: None,
            });
        }
        match host_bits {
            HostBits::Reject => Err(Error::HostBitsSet {
                input: input.to_owned(),
                line: None,
                address,
                network: canonical,
            }),
            HostBits::Clear => Ok(ParsedCidr {
                cidr: Cidr(canonical),
                host_bits_cleared_from: Some(address),
            }),
        }
    }

    /// The network as an [`IpNet`].
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// The first address of the network.
    pub fn network(&self) -> IpAddr {
        self.0.network()
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Whether this is an IPv4 network.
    pub fn is_ipv4(&self) -> bool {
        matches!(self.0, IpNet::V4(_))
    }

    /// Whether this network is every address of its family (`/0`).
    pub fn is_any(&self) -> bool {
        self.0.prefix_len() == 0
    }

    /// Whether `addr` is inside this network.
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        self.0.contains(&addr)
    }

    /// Whether every address of `other` is inside this network.
    pub fn contains(&self, other: &Cidr) -> bool {
        self.0.contains(&other.0)
    }

    /// Whether the two networks share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.0.contains(&other.0) || other.0.contains(&self.0)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cidr({})", self.0)
    }
}

impl FromStr for Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cidr::parse(s, HostBits::Reject).map(|parsed| parsed.cidr)
    }
}

impl TryFrom<IpNet> for Cidr {
    type Error = Error;

    fn try_from(net: IpNet) -> Result<Self, Self::Error> {
        Cidr::new(net)
    }
}

impl From<Cidr> for IpNet {
    fn from(cidr: Cidr) -> Self {
        cidr.0
    }
}

impl From<IpAddr> for Cidr {
    fn from(addr: IpAddr) -> Self {
        Cidr::host(addr)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a list of CIDRs: entries separated by newlines, commas or
/// whitespace; `#` starts a comment that runs to the end of the line.
///
/// Yields one result per entry, in input order. Errors carry the 1-based line
/// number ([`Error::line`]); parsing goes on after an error so that a caller
/// can report every bad entry at once. Use [`CidrSet::parse_list`] to stop at
/// the first error instead.
///
/// ```
/// use kura_netpol::{parse_cidr_list, HostBits};
///
/// let text = "10.0.0.0/8, 192.168.1.7\n# office\nfd00::/8\nbogus\n";
/// let results: Vec<_> = parse_cidr_list(text, HostBits::Reject).collect();
/// assert_eq!(results.len(), 4);
/// assert_eq!(results[3].as_ref().unwrap_err().line(), Some(4));
/// ```
pub fn parse_cidr_list(
    text: &str,
    host_bits: HostBits,
) -> impl Iterator<Item = Result<ParsedCidr, Error>> + '_ {
    text.split('\n').enumerate().flat_map(move |(index, line)| {
        let content = match line.find('#') {
            Some(hash) => &line[..hash],
            None => line,
        };
        content
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(move |entry| Cidr::parse(entry, host_bits).map_err(|e| e.with_line(index + 1)))
    })
}

/// A set of canonical CIDRs, kept sorted (IPv4 first) and free of duplicates.
///
/// The set keeps the networks it was given; [`CidrSet::aggregate`] gives the
/// minimal set of networks covering the same addresses. Set operations that
/// build a new set ([`subtract`](CidrSet::subtract)) return aggregated sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CidrSet {
    cidrs: Vec<Cidr>,
}

type Intervals = (Vec<(u32, u32)>, Vec<(u128, u128)>);

impl CidrSet {
    /// The empty set.
    pub fn new() -> Self {
        CidrSet::default()
    }

    /// Parses a list of CIDRs (see [`parse_cidr_list`]) into a set, failing
    /// on the first invalid entry.
    pub fn parse_list(text: &str, host_bits: HostBits) -> Result<Self, Error> {
        parse_cidr_list(text, host_bits)
            .map(|parsed| parsed.map(|p| p.cidr))
            .collect()
    }

    /// Adds a network; returns `false` when it was already present.
    pub fn insert(&mut self, cidr: Cidr) -> bool {
        match self.cidrs.binary_search(&cidr) {
            Ok(_) => false,
            Err(index) => {
                self.cidrs.insert(index, cidr);
                true
            }
        }
    }

    /// The networks, sorted.
    pub fn as_slice(&self) -> &[Cidr] {
        &self.cidrs
    }

    /// Iterates over the networks, sorted.
    pub fn iter(&self) -> std::slice::Iter<'_, Cidr> {
        self.cidrs.iter()
    }

    /// Number of networks (not addresses).
    pub fn len(&self) -> usize {
        self.cidrs.len()
    }

    /// Whether the set holds no network.
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty()
    }

    /// The minimal set of networks covering exactly the same addresses:
    /// nested networks are dropped and adjacent ones merged
    /// (`10.0.0.0/25` + `10.0.0.128/25` = `10.0.0.0/24`).
    ///
    /// Uses [`IpNet::aggregate`].
    pub fn aggregate(&self) -> CidrSet {
        let nets: Vec<IpNet> = self.cidrs.iter().map(|c| c.0).collect();
        // ipnet returns canonical networks, IPv4 first, each family sorted.
        let mut cidrs: Vec<Cidr> = IpNet::aggregate(&nets).into_iter().map(Cidr).collect();
        cidrs.sort_unstable();
        CidrSet { cidrs }
    }

    /// Whether the set is already minimal (equal to its [`aggregate`](Self::aggregate)).
    pub fn is_aggregated(&self) -> bool {
        *self == self.aggregate()
    }

    /// Whether `addr` is inside one of the networks.
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains_addr(addr))
    }

    /// Whether every address of `cidr` is in the set (possibly spread over
    /// several of its networks).
    pub fn covers(&self, cidr: &Cidr) -> bool {
        let (v4, v6) = self.intervals();
        match cidr.0 {
            IpNet::V4(n) => interval_covers(&v4, (n.network().into(), n.broadcast().into())),
            IpNet::V6(n) => interval_covers(&v6, (n.network().into(), n.broadcast().into())),
        }
    }

    /// Whether some address of `cidr` is in the set.
    pub fn overlaps(&self, cidr: &Cidr) -> bool {
        self.cidrs.iter().any(|c| c.overlaps(cidr))
    }

    /// Whether the two sets share at least one address.
    pub fn overlaps_set(&self, other: &CidrSet) -> bool {
        let (a4, a6) = self.intervals();
        let (b4, b6) = other.intervals();
        intervals_overlap(&a4, &b4) || intervals_overlap(&a6, &b6)
    }

    /// The addresses of `self` that are not in `other`, as a minimal set.
    ///
    /// ```
    /// use kura_netpol::{CidrSet, HostBits};
    ///
    /// let all = CidrSet::parse_list("10.0.0.0/24", HostBits::Reject)?;
    /// let hole = CidrSet::parse_list("10.0.0.0/26", HostBits::Reject)?;
    /// let rest: Vec<String> = all.subtract(&hole).iter().map(ToString::to_string).collect();
    /// assert_eq!(rest, ["10.0.0.64/26", "10.0.0.128/25"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subtract(&self, other: &CidrSet) -> CidrSet {
        let (a4, a6) = self.intervals();
        let (b4, b6) = other.intervals();
        let mut cidrs = Vec::new();
        for (start, end) in interval_difference(&a4, &b4) {
            cidrs.extend(
                Ipv4Subnets::new(Ipv4Addr::from(start), Ipv4Addr::from(end), 0)
                    .map(|n: Ipv4Net| Cidr(IpNet::V4(n))),
            );
        }
        for (start, end) in interval_difference(&a6, &b6) {
            cidrs.extend(
                Ipv6Subnets::new(Ipv6Addr::from(start), Ipv6Addr::from(end), 0)
                    .map(|n: Ipv6Net| Cidr(IpNet::V6(n))),
            );
        }
        CidrSet { cidrs }
    }

    /// The IPv4 networks.
    pub fn ipv4(&self) -> impl Iterator<Item = &Cidr> {
        self.cidrs.iter().filter(|c| c.is_ipv4())
    }

    /// The IPv6 networks.
    pub fn ipv6(&self) -> impl Iterator<Item = &Cidr> {
        self.cidrs.iter().filter(|c| !c.is_ipv4())
    }

    /// Sorted, merged, inclusive address intervals per family.
    fn intervals(&self) -> Intervals {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for cidr in &self.cidrs {
            match cidr.0 {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        (merge_intervals(v4), merge_intervals(v6))
    }
}

impl FromIterator<Cidr> for CidrSet {
    fn from_iter<I: IntoIterator<Item = Cidr>>(iter: I) -> Self {
        let mut cidrs: Vec<Cidr> = iter.into_iter().collect();
        cidrs.sort_unstable();
        cidrs.dedup();
        CidrSet { cidrs }
    }
}

impl Extend<Cidr> for CidrSet {
    fn extend<I: IntoIterator<Item = Cidr>>(&mut self, iter: I) {
        self.cidrs.extend(iter);
        self.cidrs.sort_unstable();
        self.cidrs.dedup();
    }
}

impl<'a> IntoIterator for &'a CidrSet {
    type Item = &'a Cidr;
    type IntoIter = std::slice::Iter<'a, Cidr>;

    fn into_iter(self) -> Self::IntoIter {
        self.cidrs.iter()
    }
}

impl IntoIterator for CidrSet {
    type Item = Cidr;
    type IntoIter = std::vec::IntoIter<Cidr>;

    fn into_iter(self) -> Self::IntoIter {
        self.cidrs.into_iter()
    }
}

impl From<Cidr> for CidrSet {
    fn from(cidr: Cidr) -> Self {
        CidrSet { cidrs: vec![cidr] }
    }
}

/// An unsigned address type used by the interval helpers.
trait Addr: Copy + Ord {
    const MAX: Self;
    fn inc(self) -> Self;
    fn dec(self) -> Self;
}

impl Addr for u32 {
    const MAX: Self = u32::MAX;
    fn inc(self) -> Self {
        self.saturating_add(1)
    }
    fn dec(self) -> Self {
        self.saturating_sub(1)
    }
}

impl Addr for u128 {
    const MAX: Self = u128::MAX;
    fn inc(self) -> Self {
        self.saturating_add(1)
    }
    fn dec(self) -> Self {
        self.saturating_sub(1)
    }
}

/// Sorts and merges overlapping or adjacent inclusive intervals.
fn merge_intervals<T: Addr>(mut intervals: Vec<(T, T)>) -> Vec<(T, T)> {
    intervals.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(intervals.len());
    for (start, end) in intervals {
        if let Some(last) = merged.last_mut()
            && start <= last.1.inc()
        {
            last.1 = last.1.max(end);
            continue;
        }
        merged.push((start, end));
    }
    merged
}

/// Whether `target` lies inside one of the merged intervals.
fn interval_covers<T: Addr>(merged: &[(T, T)], target: (T, T)) -> bool {
    // The last interval starting at or before the target's start.
    let index = merged.partition_point(|&(start, _)| start <= target.0);
    index > 0 && merged[index - 1].1 >= target.1
}

/// Whether two merged interval lists intersect.
fn intervals_overlap<T: Addr>(a: &[(T, T)], b: &[(T, T)]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].1 < b[j].0 {
            i += 1;
        } else if b[j].1 < a[i].0 {
            j += 1;
        } else {
            return true;
        }
    }
    false
}

/// `a` minus `b`, both merged; the result is merged.
fn interval_difference<T: Addr>(a: &[(T, T)], b: &[(T, T)]) -> Vec<(T, T)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(start, end) in a {
        let mut cursor = start;
        let mut open = true;
        while j < b.len() && b[j].1 < cursor {
            j += 1;
        }
        let mut k = j;
        while open && k < b.len() && b[k].0 <= end {
            let (hole_start, hole_end) = b[k];
            if hole_start > cursor {
                out.push((cursor, hole_start.dec()));
            }
            if hole_end >= end {
                open = false;
            } else {
                cursor = hole_end.inc();
                k += 1;
            }
        }
        if open {
            out.push((cursor, end));
        }
        debug_assert!(end <= T::MAX);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn set(s: &str) -> CidrSet {
        CidrSet::parse_list(s, HostBits::Reject).unwrap()
    }

    fn strings(set: &CidrSet) -> Vec<String> {
        set.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn parses_networks_and_bare_addresses() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("192.168.1.7").to_string(), "192.168.1.7/32");
        assert_eq!(cidr("fd00::/8").to_string(), "fd00::/8");
        assert_eq!(cidr("2001:db8::1").to_string(), "2001:db8::1/128");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::/0").to_string(), "::/0");
    }

    fn reason(input: &str) -> (usize, CidrErrorReason) {
        match Cidr::parse(input, HostBits::Reject) {
            Err(Error::InvalidCidr {
                input: got,
                position,
                reason,
                line: None,
            }) => {
                assert_eq!(got, input);
                (position, reason)
            }
            other => panic!("{input:?}: expected InvalidCidr, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_input_and_position() {
        assert_eq!(reason(""), (0, CidrErrorReason::Empty));
        assert_eq!(
            reason("10.0.0.0/8 "),
            (10, CidrErrorReason::UnexpectedChar(' '))
        );
        assert_eq!(
            reason("fe80::1%eth0"),
            (7, CidrErrorReason::UnexpectedChar('%'))
        );
        assert_eq!(
            reason("10.0.0.0/"),
            (9, CidrErrorReason::MissingPrefixLength)
        );
        assert_eq!(reason("10.0.0.0/8/9"), (10, CidrErrorReason::ExtraSlash));
        assert_eq!(
            reason("10.0.0.0/08"),
            (9, CidrErrorReason::PrefixLeadingZero)
        );
        assert_eq!(
            reason("10.0.0.0/33"),
            (9, CidrErrorReason::PrefixTooLong { got: 33, max: 32 })
        );
        assert_eq!(
            reason("::/99999999999"),
            (
                3,
                CidrErrorReason::PrefixTooLong {
                    got: u32::MAX,
                    max: 128
                }
            )
        );
        assert_eq!(reason("10.0.0/8"), (0, CidrErrorReason::InvalidAddress));
        assert_eq!(reason("010.0.0.0/8"), (0, CidrErrorReason::InvalidAddress));
        assert_eq!(reason("/8"), (0, CidrErrorReason::InvalidAddress));
    }

    #[test]
    fn host_bits_are_an_explicit_choice() {
        let err = Cidr::parse("10.1.2.3/8", HostBits::Reject).unwrap_err();
        assert_eq!(
            err,
            Error::HostBitsSet {
                input: "10.1.2.3/8".into(),
                line: None,
                address: "10.1.2.3".parse().unwrap(),
                network: "10.0.0.0/8".parse().unwrap(),
            }
        );
        assert!(err.to_string().contains("write 10.0.0.0/8"), "{err}");
        let parsed = Cidr::parse("10.1.2.3/8", HostBits::Clear).unwrap();
        assert_eq!(parsed.cidr, cidr("10.0.0.0/8"));
        assert_eq!(
            parsed.host_bits_cleared_from,
            Some("10.1.2.3".parse().unwrap())
        );
        let canonical = Cidr::parse("10.0.0.0/8", HostBits::Clear).unwrap();
        assert_eq!(canonical.host_bits_cleared_from, None);
        assert!(Cidr::new("10.1.0.0/8".parse().unwrap()).is_err());
    }

    #[test]
    fn list_parser_reports_every_bad_line() {
        let text =
            "10.0.0.0/8\n\n  # comment only\n10.0.0.1/8 # typo\nfd00::/8, 192.168.0.0/16\nnope";
        let results: Vec<_> = parse_cidr_list(text, HostBits::Reject).collect();
        assert_eq!(results.len(), 5);
        assert_eq!(results[1].as_ref().unwrap_err().line(), Some(4));
        assert_eq!(results[4].as_ref().unwrap_err().line(), Some(6));
        let message = results[4].as_ref().unwrap_err().to_string();
        assert!(
            message.starts_with("line 6: invalid CIDR \"nope\""),
            "{message}"
        );
        assert!(CidrSet::parse_list(text, HostBits::Reject).is_err());
        assert_eq!(
            strings(&set("10.0.0.0/8 fd00::/8,192.168.0.0/16")),
            ["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"]
        );
    }

    #[test]
    fn sets_sort_ipv4_first_and_deduplicate() {
        let s = set("fd00::/8\n10.0.0.0/8\n10.0.0.0/8\n1.2.3.4");
        assert_eq!(strings(&s), ["1.2.3.4/32", "10.0.0.0/8", "fd00::/8"]);
        let mut s2 = CidrSet::new();
        assert!(s2.insert(cidr("fd00::/8")));
        assert!(s2.insert(cidr("10.0.0.0/8")));
        assert!(!s2.insert(cidr("10.0.0.0/8")));
        assert_eq!(strings(&s2), ["10.0.0.0/8", "fd00::/8"]);
    }

    #[test]
    fn aggregate_merges_and_drops_nested() {
        let s = set("10.0.0.0/25 10.0.0.128/25 10.0.0.7 10.0.1.0/24 fd00::/9 fd80::/9 fd00::1");
        assert_eq!(strings(&s.aggregate()), ["10.0.0.0/23", "fd00::/8"]);
        assert!(s.aggregate().is_aggregated());
        assert!(!s.is_aggregated());
        assert!(CidrSet::new().aggregate().is_empty());
    }

    #[test]
    fn contains_covers_overlaps() {
        let s = set("10.0.0.0/25 10.0.0.128/25 fd00::/8");
        assert!(s.contains_addr("10.0.0.200".parse().unwrap()));
        assert!(!s.contains_addr("10.0.1.0".parse().unwrap()));
        assert!(s.covers(&cidr("10.0.0.0/24")), "spread over two networks");
        assert!(!s.covers(&cidr("10.0.0.0/23")));
        assert!(s.overlaps(&cidr("10.0.0.0/16")));
        assert!(!s.overlaps(&cidr("11.0.0.0/8")));
        assert!(s.overlaps_set(&set("fd12::/16")));
        assert!(!s.overlaps_set(&set("fe80::/10 11.0.0.0/8")));
    }

    #[test]
    fn subtract_at_the_edges_of_the_address_space() {
        let all = set("0.0.0.0/0 ::/0");
        let rest = all.subtract(&set("0.0.0.0/1 255.255.255.255 ::/1"));
        assert_eq!(
            strings(&rest),
            [
                "128.0.0.0/2",
                "192.0.0.0/3",
                "224.0.0.0/4",
                "240.0.0.0/5",
                "248.0.0.0/6",
                "252.0.0.0/7",
                "254.0.0.0/8",
                "255.0.0.0/9",
                "255.128.0.0/10",
                "255.192.0.0/11",
                "255.224.0.0/12",
                "255.240.0.0/13",
                "255.248.0.0/14",
                "255.252.0.0/15",
                "255.254.0.0/16",
                "255.255.0.0/17",
                "255.255.128.0/18",
                "255.255.192.0/19",
                "255.255.224.0/20",
                "255.255.240.0/21",
                "255.255.248.0/22",
                "255.255.252.0/23",
                "255.255.254.0/24",
                "255.255.255.0/25",
                "255.255.255.128/26",
                "255.255.255.192/27",
                "255.255.255.224/28",
                "255.255.255.240/29",
                "255.255.255.248/30",
                "255.255.255.252/31",
                "255.255.255.254/32",
                "8000::/1"
            ]
        );
        assert!(all.subtract(&all).is_empty());
        assert_eq!(all.subtract(&CidrSet::new()), all);
    }

    #[test]
    fn serde_round_trip_is_strict() {
        let c: Cidr = serde_json::from_str("\"10.0.0.0/8\"").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"10.0.0.0/8\"");
        assert!(serde_json::from_str::<Cidr>("\"10.0.0.1/8\"").is_err());
    }
}
