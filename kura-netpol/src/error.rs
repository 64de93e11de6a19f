//! The crate's single error type.

use std::net::IpAddr;

use ipnet::IpNet;

/// Everything that can go wrong in this crate.
///
/// Every variant carries the offending input so that a caller can report it
/// without keeping its own copy. The enum is `#[non_exhaustive]`: match on the
/// variants you handle and keep a wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Text that is not an IPv4/IPv6 CIDR or bare address.
    #[error("{}invalid CIDR {input:?} at byte {position}: {reason}", line_prefix(*line))]
    InvalidCidr {
        /// The offending entry, as written (without surrounding whitespace).
        input: String,
        /// 1-based line number when the entry came from a multi-line list.
        line: Option<usize>,
        /// 0-based byte offset into `input` where the problem starts.
        position: usize,
        /// What is wrong at `position`.
        reason: CidrErrorReason,
    },
    /// A CIDR whose address has bits set beyond the prefix length, parsed with
    /// [`HostBits::Reject`](crate::HostBits::Reject).
    #[error(
        "{}CIDR {input:?} has host bits set (address {address} is inside {network}); \
         write {network} if that is the network you mean",
        line_prefix(*line)
    )]
    HostBitsSet {
        /// The offending entry, as written.
        input: String,
        /// 1-based line number when the entry came from a multi-line list.
        line: Option<usize>,
        /// The address as written.
        address: IpAddr,
        /// The network that clearing the host bits would give.
        network: IpNet,
    },
    /// `0.0.0.0/0` or `::/0` as a client range without
    /// [`ClientCidrRules::dangerously_allow_any_address`](crate::ClientCidrRules::dangerously_allow_any_address).
    #[error(
        "client CIDR {cidr} admits every address; \
         refusing unless any-address access is explicitly allowed"
    )]
    AnyAddress {
        /// The refused range (after aggregation).
        cidr: IpNet,
    },
    /// A client range broader than the configured broadest prefix length.
    #[error("client CIDR {cidr} is broader than the broadest allowed prefix /{broadest}")]
    TooBroad {
        /// The refused range (after aggregation).
        cidr: IpNet,
        /// The broadest (shortest) prefix length allowed for its address family.
        broadest: u8,
    },
    /// A prefix length limit that does not exist for the address family.
    #[error("broadest prefix /{prefix} is out of range for {family} (maximum /{max})")]
    InvalidPrefixLimit {
        /// `"IPv4"` or `"IPv6"`.
        family: &'static str,
        /// The requested limit.
        prefix: u8,
        /// The longest prefix length of the family.
        max: u8,
    },
    /// Text that is not a Kubernetes quantity.
    #[error("invalid quantity {input:?} at byte {position}: {reason}")]
    InvalidQuantity {
        /// The offending text.
        input: String,
        /// 0-based byte offset into `input` where the problem starts.
        position: usize,
        /// What is wrong at `position`.
        reason: QuantityErrorReason,
    },
    /// A well-formed quantity that Kubernetes would not accept as a bandwidth
    /// (the kubelet allows 1k to 1P bits per second).
    #[error(
        "bandwidth {input:?} is out of range: \
         must be between {min} and {max} bits per second"
    )]
    BandwidthOutOfRange {
        /// The quantity as written.
        input: String,
        /// Smallest accepted value, bits per second.
        min: u64,
        /// Largest accepted value, bits per second.
        max: u64,
    },
    /// A bandwidth annotation whose value could not be parsed.
    #[error("annotation {annotation}: {source}")]
    InvalidBandwidthAnnotation {
        /// The annotation key.
        annotation: &'static str,
        /// Why its value was refused.
        #[source]
        source: Box<Error>,
    },
    /// A Kubernetes object name or label value that the API server would refuse.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidName {
        /// Which name: `"instance name"`, `"namespace"`, `"account handle"`, ...
        kind: &'static str,
        /// The refused value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A port number of 0, or two roles sharing one port.
    #[error("invalid port configuration: {reason}")]
    InvalidPorts {
        /// Why the ports were refused.
        reason: String,
    },
    /// A rendered object could not be serialised.
    #[error("cannot serialise {what} as {format}: {message}")]
    Serialize {
        /// What was being serialised.
        what: &'static str,
        /// `"YAML"` or `"JSON"`.
        format: &'static str,
        /// The serialiser's message.
        message: String,
    },
}

fn line_prefix(line: Option<usize>) -> String {
    match line {
        Some(line) => format!("line {line}: "),
        None => String::new(),
    }
}

impl Error {
    /// The 1-based line number for errors that came from a multi-line CIDR list.
    pub fn line(&self) -> Option<usize> {
        match self {
            Error::InvalidCidr { line, .. } | Error::HostBitsSet { line, .. } => *line,
            _ => None,
        }
    }

    pub(crate) fn with_line(mut self, at: usize) -> Self {
        if let Error::InvalidCidr { line, .. } | Error::HostBitsSet { line, .. } = &mut self {
            *line = Some(at);
        }
        self
    }
}

/// Why a CIDR did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrErrorReason {
    /// The entry is empty.
    #[error("empty input")]
    Empty,
    /// A character that cannot appear in an address or prefix length.
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    /// The address part is not a valid IPv4 or IPv6 address.
    #[error("not an IPv4 or IPv6 address")]
    InvalidAddress,
    /// Nothing after the `/`.
    #[error("missing prefix length after '/'")]
    MissingPrefixLength,
    /// A second `/`.
    #[error("more than one '/'")]
    ExtraSlash,
    /// A prefix length written with a leading zero (ambiguous in some tools).
    #[error("prefix length has a leading zero")]
    PrefixLeadingZero,
    /// A prefix length longer than the address.
    #[error("prefix length {got} is longer than {max}")]
    PrefixTooLong {
        /// The prefix length as written (saturated at `u32::MAX`).
        got: u32,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

/// Why a Kubernetes quantity did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantityErrorReason {
    /// The input is empty.
    #[error("empty input")]
    Empty,
    /// No digits where a number was expected.
    #[error("expected a digit")]
    ExpectedDigit,
    /// A suffix that is not one of `m k M G T P E Ki Mi Gi Ti Pi Ei` or an exponent.
    #[error(
        "unknown suffix {0:?} (expected m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or e<exp>)"
    )]
    UnknownSuffix(String),
    /// More significant digits than this implementation keeps exactly.
    #[error("more than {max} significant digits")]
    TooManyDigits {
        /// The limit.
        max: usize,
    },
    /// A decimal exponent outside the supported range.
    #[error("exponent out of range (|exponent| must be at most {max})")]
    ExponentOutOfRange {
        /// The limit.
        max: i32,
    },
}
