//! Safety rails for client CIDRs: the ranges admitted to the cache port.

use crate::cidr::{Cidr, CidrSet};
use crate::error::Error;

/// The rules a set of client CIDRs must pass before it is rendered into a
/// policy.
///
/// Client CIDRs open the cache port to addresses outside the cluster, so a
/// typo (`/1` for `/21`) or a pasted `0.0.0.0/0` would expose a tenant's cache
/// to the world. By default:
///
/// - `0.0.0.0/0` and `::/0` are refused; only
///   [`dangerously_allow_any_address`](Self::dangerously_allow_any_address)
///   lifts that.
/// - Ranges broader than `/8` (IPv4) or `/32` (IPv6, one provider allocation)
///   are refused; see [`broadest_ipv4_prefix`](Self::broadest_ipv4_prefix).
///
/// The checks run on the *aggregated* set, so a range cannot slip through by
/// being split into pieces (`0.0.0.0/1` + `128.0.0.0/1` is `0.0.0.0/0`).
///
/// ```
/// use kura_netpol::{CidrSet, ClientCidrRules, Error, HostBits};
///
/// let rules = ClientCidrRules::new();
/// let ok = CidrSet::parse_list("172.16.0.0/22, 172.16.4.0/22", HostBits::Reject)?;
/// let clients = rules.check(&ok, &CidrSet::new())?;
/// assert_eq!(clients.allowed().len(), 1, "aggregated to 172.16.0.0/21");
///
/// let split_world = CidrSet::parse_list("0.0.0.0/1 128.0.0.0/1", HostBits::Reject)?;
/// assert!(matches!(rules.check(&split_world, &CidrSet::new()), Err(Error::AnyAddress { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientCidrRules {
    broadest_ipv4: u8,
    broadest_ipv6: u8,
    allow_any_address: bool,
}

impl Default for ClientCidrRules {
    fn default() -> Self {
        ClientCidrRules {
            broadest_ipv4: Self::DEFAULT_BROADEST_IPV4,
            broadest_ipv6: Self::DEFAULT_BROADEST_IPV6,
            allow_any_address: false,
        }
    }
}

impl ClientCidrRules {
    /// Default broadest IPv4 client prefix: `/8`.
    pub const DEFAULT_BROADEST_IPV4: u8 = 8;
    /// Default broadest IPv6 client prefix: `/32`.
    pub const DEFAULT_BROADEST_IPV6: u8 = 32;

    /// The default rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the broadest (shortest) IPv4 prefix length accepted, 1 to 32.
    ///
    /// `0` is refused here: use
    /// [`dangerously_allow_any_address`](Self::dangerously_allow_any_address).
    pub fn broadest_ipv4_prefix(mut self, prefix: u8) -> Result<Self, Error> {
        if prefix == 0 || prefix > 32 {
            return Err(Error::InvalidPrefixLimit {
                family: "IPv4",
                prefix,
                max: 32,
            });
        }
        self.broadest_ipv4 = prefix;
        Ok(self)
    }

    /// Sets the broadest (shortest) IPv6 prefix length accepted, 1 to 128.
    pub fn broadest_ipv6_prefix(mut self, prefix: u8) -> Result<Self, Error> {
        if prefix == 0 || prefix > 128 {
            return Err(Error::InvalidPrefixLimit {
                family: "IPv6",
                prefix,
                max: 128,
            });
        }
        self.broadest_ipv6 = prefix;
        Ok(self)
    }

    /// Accepts `0.0.0.0/0` and `::/0`: the cache port becomes reachable from
    /// every address that can route to a node, and only the cache's own
    /// authentication stands between a tenant's data and the internet.
    ///
    /// This only lifts the refusal of `/0`; other ranges broader than the
    /// configured limit are still refused.
    pub fn dangerously_allow_any_address(mut self) -> Self {
        self.allow_any_address = true;
        self
    }

    /// The broadest IPv4 prefix length accepted.
    pub fn broadest_ipv4(&self) -> u8 {
        self.broadest_ipv4
    }

    /// The broadest IPv6 prefix length accepted.
    pub fn broadest_ipv6(&self) -> u8 {
        self.broadest_ipv6
    }

    /// Checks `allowed` minus `except` against the rules and returns the
    /// validated client set.
    ///
    /// Both sets are aggregated; `except` is reduced to the parts that lie
    /// inside `allowed` (an exception outside every allowed range is a no-op).
    pub fn check(&self, allowed: &CidrSet, except: &CidrSet) -> Result<ClientCidrs, Error> {
        let allowed = allowed.aggregate();
        for cidr in &allowed {
            let broadest = if cidr.is_ipv4() {
                self.broadest_ipv4
            } else {
                self.broadest_ipv6
            };
            if cidr.is_any() {
                if !self.allow_any_address {
                    return Err(Error::AnyAddress { cidr: cidr.net() });
                }
            } else if cidr.prefix_len() < broadest {
                return Err(Error::TooBroad {
                    cidr: cidr.net(),
                    broadest,
                });
            }
        }
        // Keep only the exceptions that remove something: allowed ∩ except.
        let except = allowed.subtract(&allowed.subtract(except));
        Ok(ClientCidrs { allowed, except })
    }
}

/// Client CIDRs that passed [`ClientCidrRules::check`]: aggregated allowed
/// ranges and the exceptions inside them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientCidrs {
    allowed: CidrSet,
    except: CidrSet,
}

/// One `ipBlock` (or Cilium `fromCIDRSet` entry): a range and the holes in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IpBlock {
    /// The range.
    pub cidr: Cidr,
    /// Networks strictly inside `cidr` that are not admitted.
    pub except: Vec<Cidr>,
}

impl ClientCidrs {
    /// No client ranges: the policy renders no client rule.
    pub fn none() -> Self {
        Self::default()
    }

    /// The allowed ranges, aggregated.
    pub fn allowed(&self) -> &CidrSet {
        &self.allowed
    }

    /// The exceptions, aggregated, each inside an allowed range.
    pub fn except(&self) -> &CidrSet {
        &self.except
    }

    /// Whether there are no client ranges.
    pub fn is_empty(&self) -> bool {
        self.allowed.is_empty()
    }

    /// Exactly the admitted addresses: allowed minus except, aggregated.
    pub fn effective(&self) -> CidrSet {
        self.allowed.subtract(&self.except)
    }

    /// The ranges as `ipBlock`s: one per allowed range, each listing the
    /// exceptions strictly inside it. An allowed range that is excepted
    /// entirely is left out (Kubernetes requires `except` to be a strict
    /// subset of `cidr`).
    pub fn ip_blocks(&self) -> Vec<IpBlock> {
        ip_blocks(&self.allowed, &self.except)
    }
}

/// `ipBlock`s for an aggregated allow set and an aggregated except set.
pub(crate) fn ip_blocks(allowed: &CidrSet, except: &CidrSet) -> Vec<IpBlock> {
    allowed
        .iter()
        .filter(|cidr| !except.iter().any(|e| e.contains(cidr)))
        .map(|cidr| IpBlock {
            cidr: *cidr,
            except: except
                .iter()
                .filter(|e| cidr.contains(e))
                .copied()
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostBits;

    fn set(s: &str) -> CidrSet {
        CidrSet::parse_list(s, HostBits::Reject).unwrap()
    }

    #[test]
    fn any_address_needs_the_named_opt_in() {
        let rules = ClientCidrRules::new();
        for world in ["0.0.0.0/0", "::/0"] {
            assert!(matches!(
                rules.check(&set(world), &CidrSet::new()),
                Err(Error::AnyAddress { .. })
            ));
            let clients = rules
                .dangerously_allow_any_address()
                .check(&set(world), &CidrSet::new())
                .unwrap();
            assert_eq!(clients.allowed(), &set(world));
        }
    }

    #[test]
    fn broad_ranges_are_refused_by_family() {
        let rules = ClientCidrRules::new();
        assert_eq!(
            rules.check(&set("10.0.0.0/7"), &CidrSet::new()),
            Err(Error::TooBroad {
                cidr: "10.0.0.0/7".parse().unwrap(),
                broadest: 8
            })
        );
        assert!(rules.check(&set("10.0.0.0/8"), &CidrSet::new()).is_ok());
        assert!(rules.check(&set("2001:db8::/32"), &CidrSet::new()).is_ok());
        assert!(rules.check(&set("2001:db8::/31"), &CidrSet::new()).is_err());
        // Aggregation happens first: two /9s are one /8, two /8s are a /7.
        assert!(
            rules
                .check(&set("10.0.0.0/9 10.128.0.0/9"), &CidrSet::new())
                .is_ok()
        );
        assert!(
            rules
                .check(&set("10.0.0.0/8 11.0.0.0/8"), &CidrSet::new())
                .is_err()
        );
        let strict = rules.broadest_ipv4_prefix(16).unwrap();
        assert!(strict.check(&set("10.0.0.0/15"), &CidrSet::new()).is_err());
        // Opting into /0 does not lift the limit for other broad ranges.
        let any = rules.dangerously_allow_any_address();
        assert!(any.check(&set("0.0.0.0/1"), &CidrSet::new()).is_err());
        assert!(rules.broadest_ipv4_prefix(0).is_err());
        assert!(rules.broadest_ipv4_prefix(33).is_err());
        assert!(rules.broadest_ipv6_prefix(129).is_err());
        assert_eq!(rules.broadest_ipv6_prefix(48).unwrap().broadest_ipv6(), 48);
    }

    #[test]
    fn except_is_clipped_to_the_allowed_ranges() {
        let clients = ClientCidrRules::new()
            .check(
                &set("172.16.0.0/16 192.168.0.0/24"),
                &set("172.16.5.0/24 10.0.0.0/8 192.168.0.0/24"),
            )
            .unwrap();
        assert_eq!(clients.except(), &set("172.16.5.0/24 192.168.0.0/24"));
        let blocks = clients.ip_blocks();
        assert_eq!(
            blocks,
            vec![IpBlock {
                cidr: "172.16.0.0/16".parse().unwrap(),
                except: vec!["172.16.5.0/24".parse().unwrap()],
            }]
        );
        assert!(
            !clients
                .effective()
                .contains_addr("172.16.5.9".parse().unwrap())
        );
        assert!(
            clients
                .effective()
                .contains_addr("172.16.6.9".parse().unwrap())
        );
    }
}
