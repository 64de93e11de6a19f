//! Kubernetes quantities (`750M`, `10Gi`, `1.5e9`) and pod bandwidth limits.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, QuantityErrorReason};

/// Most significant digits kept exactly (fits `u128`).
const MAX_DIGITS: usize = 38;
/// Largest decimal exponent accepted, written or implied by the digits.
const MAX_EXPONENT: i32 = 1000;

/// The suffix of a [`Quantity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Suffix {
    /// No suffix.
    None,
    /// `m`: 10⁻³.
    Milli,
    /// `k`: 10³.
    Kilo,
    /// `M`: 10⁶.
    Mega,
    /// `G`: 10⁹.
    Giga,
    /// `T`: 10¹².
    Tera,
    /// `P`: 10¹⁵.
    Peta,
    /// `E`: 10¹⁸.
    Exa,
    /// `Ki`: 2¹⁰.
    Kibi,
    /// `Mi`: 2²⁰.
    Mebi,
    /// `Gi`: 2³⁰.
    Gibi,
    /// `Ti`: 2⁴⁰.
    Tebi,
    /// `Pi`: 2⁵⁰.
    Pebi,
    /// `Ei`: 2⁶⁰.
    Exbi,
    /// `e<n>` (or `E<n>`): 10ⁿ.
    Exponent(i32),
}

impl Suffix {
    /// `(power of ten, power of two)` this suffix multiplies by.
    fn scale(self) -> (i32, u32) {
        match self {
            Suffix::None => (0, 0),
            Suffix::Milli => (-3, 0),
            Suffix::Kilo => (3, 0),
            Suffix::Mega => (6, 0),
            Suffix::Giga => (9, 0),
            Suffix::Tera => (12, 0),
            Suffix::Peta => (15, 0),
            Suffix::Exa => (18, 0),
            Suffix::Kibi => (0, 10),
            Suffix::Mebi => (0, 20),
            Suffix::Gibi => (0, 30),
            Suffix::Tebi => (0, 40),
            Suffix::Pebi => (0, 50),
            Suffix::Exbi => (0, 60),
            Suffix::Exponent(e) => (e, 0),
        }
    }

    fn from_text(text: &str) -> Option<Suffix> {
        Some(match text {
            "" => Suffix::None,
            "m" => Suffix::Milli,
            "k" => Suffix::Kilo,
            "M" => Suffix::Mega,
            "G" => Suffix::Giga,
            "T" => Suffix::Tera,
            "P" => Suffix::Peta,
            "E" => Suffix::Exa,
            "Ki" => Suffix::Kibi,
            "Mi" => Suffix::Mebi,
            "Gi" => Suffix::Gibi,
            "Ti" => Suffix::Tebi,
            "Pi" => Suffix::Pebi,
            "Ei" => Suffix::Exbi,
            _ => return None,
        })
    }
}

impl fmt::Display for Suffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Suffix::None => "",
            Suffix::Milli => "m",
            Suffix::Kilo => "k",
            Suffix::Mega => "M",
            Suffix::Giga => "G",
            Suffix::Tera => "T",
            Suffix::Peta => "P",
            Suffix::Exa => "E",
            Suffix::Kibi => "Ki",
            Suffix::Mebi => "Mi",
            Suffix::Gibi => "Gi",
            Suffix::Tebi => "Ti",
            Suffix::Pebi => "Pi",
            Suffix::Exbi => "Ei",
            Suffix::Exponent(e) => return write!(f, "e{e}"),
        };
        f.write_str(text)
    }
}

/// A Kubernetes resource quantity, parsed exactly.
///
/// Grammar (from `k8s.io/apimachinery/pkg/api/resource`):
/// `[+-]digits[.digits](suffix)` where suffix is one of
/// `m k M G T P E Ki Mi Gi Ti Pi Ei` or an exponent `e<n>` / `E<n>`; `1.` and
/// `.5` are numbers too. This implementation keeps up to 38 significant digits
/// and decimal exponents up to ±1000, and refuses anything beyond instead of
/// rounding.
///
/// Two quantities are equal when they were written the same way up to
/// insignificant zeros and a `+` sign (`1.50M` equals `1.5M`, not `1500k`).
/// [`Display`](fmt::Display) writes that canonical form and parsing it gives
/// the same quantity back.
///
/// ```
/// use kura_netpol::Quantity;
///
/// let q: Quantity = "1.50Gi".parse()?;
/// assert_eq!(q.to_string(), "1.5Gi");
/// assert_eq!(q.to_integer_ceil(), Some(1_610_612_736));
/// assert_eq!("500m".parse::<Quantity>()?.to_integer_ceil(), Some(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quantity {
    negative: bool,
    /// Significant digits, without leading or trailing zeros.
    significand: u128,
    /// Power of ten applied to `significand` by the number part.
    exp10: i32,
    suffix: Suffix,
}

impl Quantity {
    /// Parses a quantity; see the type documentation for the grammar.
    pub fn parse(input: &str) -> Result<Quantity, Error> {
        let invalid = |position: usize, reason: QuantityErrorReason| Error::InvalidQuantity {
            input: input.to_owned(),
            position,
            reason,
        };
        if input.is_empty() {
            return Err(invalid(0, QuantityErrorReason::Empty));
        }
        let bytes = input.as_bytes();
        let mut pos = 0;
        let negative = match bytes.first() {
            Some(b'-') => {
                pos = 1;
                true
            }
            Some(b'+') => {
                pos = 1;
                false
            }
            _ => false,
        };
        let mut significand: u128 = 0;
        let mut digits = 0usize;
        let mut pending_zeros: i64 = 0;
        let mut fraction_digits: i64 = 0;
        let mut seen_digit = false;
        let mut seen_point = false;
        while let Some(&b) = bytes.get(pos) {
            match b {
                b'0'..=b'9' => {
                    seen_digit = true;
                    if seen_point {
                        fraction_digits += 1;
                    }
                    let d = u128::from(b - b'0');
                    if d == 0 {
                        if significand != 0 {
                            pending_zeros += 1;
                        }
                    } else {
                        let needed = digits
                            .saturating_add(usize::try_from(pending_zeros).unwrap_or(usize::MAX));
                        if needed >= MAX_DIGITS {
                            return Err(invalid(
                                pos,
                                QuantityErrorReason::TooManyDigits { max: MAX_DIGITS },
                            ));
                        }
                        for _ in 0..pending_zeros {
                            significand *= 10;
                        }
                        significand = significand * 10 + d;
                        digits = needed + 1;
                        pending_zeros = 0;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                _ => break,
            }
            pos += 1;
        }
        if !seen_digit {
            return Err(invalid(pos, QuantityErrorReason::ExpectedDigit));
        }
        let out_of_range = |position| {
            invalid(
                position,
                QuantityErrorReason::ExponentOutOfRange { max: MAX_EXPONENT },
            )
        };
        let exp10 = if significand == 0 {
            0
        } else {
            let e = pending_zeros - fraction_digits;
            i32::try_from(e)
                .ok()
                .filter(|e| e.abs() <= MAX_EXPONENT)
                .ok_or_else(|| out_of_range(0))?
        };
        let rest = &input[pos..];
        let suffix = match Suffix::from_text(rest) {
            Some(suffix) => suffix,
            None => {
                let exponent = rest
                    .strip_prefix('e')
                    .or_else(|| rest.strip_prefix('E'))
                    .filter(|e| {
                        let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                    });
                match exponent {
                    None => {
                        return Err(invalid(
                            pos,
                            QuantityErrorReason::UnknownSuffix(rest.to_owned()),
                        ));
                    }
                    Some(text) => {
                        let value = text
                            .parse::<i32>()
                            .ok()
                            .filter(|e| e.abs() <= MAX_EXPONENT)
                            .ok_or_else(|| out_of_range(pos + 1))?;
                        Suffix::Exponent(value)
                    }
                }
            }
        };
        Ok(Quantity {
            negative: negative && significand != 0,
            significand,
            exp10,
            suffix,
        })
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// Whether the quantity is zero.
    pub fn is_zero(&self) -> bool {
        self.significand == 0
    }

    /// The suffix as written.
    pub fn suffix(&self) -> Suffix {
        self.suffix
    }

    /// The value rounded up to an integer (towards positive infinity, like
    /// the Go client's `Quantity.Value()`), or `None` when it does not fit
    /// in an `i128`.
    pub fn to_integer_ceil(&self) -> Option<i128> {
        let (suffix_exp10, exp2) = self.suffix.scale();
        let exp10 = self.exp10 + suffix_exp10;
        let mut value = U256::from(self.significand);
        for _ in 0..exp2 {
            value.mul_small(2)?;
        }
        let mut inexact = false;
        if exp10 >= 0 {
            for _ in 0..exp10 {
                value.mul_small(10)?;
            }
        } else {
            for _ in 0..exp10.unsigned_abs() {
                if value.is_zero() {
                    break;
                }
                inexact |= value.div_small(10) != 0;
            }
        }
        let magnitude = i128::try_from(value.to_u128()?).ok()?;
        Some(match (self.negative, inexact) {
            (false, false) => magnitude,
            (false, true) => magnitude.checked_add(1)?,
            // Rounding towards +inf drops the fraction of a negative value.
            (true, _) => -magnitude,
        })
    }

    /// The canonical quantity for an integer, with the largest decimal suffix
    /// that keeps it exact (`750000000` → `750M`).
    pub fn from_integer(value: u64) -> Quantity {
        const SUFFIXES: [(Suffix, u64); 6] = [
            (Suffix::Exa, 1_000_000_000_000_000_000),
            (Suffix::Peta, 1_000_000_000_000_000),
            (Suffix::Tera, 1_000_000_000_000),
            (Suffix::Giga, 1_000_000_000),
            (Suffix::Mega, 1_000_000),
            (Suffix::Kilo, 1_000),
        ];
        let (suffix, divisor) = SUFFIXES
            .iter()
            .copied()
            .find(|&(_, d)| value != 0 && value % d == 0)
            .unwrap_or((Suffix::None, 1));
        let mut significand = u128::from(value / divisor);
        let mut exp10 = 0;
        while significand != 0 && significand % 10 == 0 {
            significand /= 10;
            exp10 += 1;
        }
        Quantity {
            negative: false,
            significand,
            exp10,
            suffix,
        }
    }
}

impl FromStr for Quantity {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        let digits = self.significand.to_string();
        if self.exp10 >= 0 {
            f.write_str(&digits)?;
            if self.significand != 0 {
                for _ in 0..self.exp10 {
                    f.write_str("0")?;
                }
            }
        } else {
            let fraction = self.exp10.unsigned_abs() as usize;
            if digits.len() > fraction {
                let (int, frac) = digits.split_at(digits.len() - fraction);
                write!(f, "{int}.{frac}")?;
            } else {
                write!(f, "0.{}{digits}", "0".repeat(fraction - digits.len()))?;
            }
        }
        write!(f, "{}", self.suffix)
    }
}

/// A 256-bit unsigned integer, just enough for exact quantity scaling.
#[derive(Clone, Copy)]
struct U256([u64; 4]);

impl U256 {
    fn from(value: u128) -> Self {
        U256([value as u64, (value >> 64) as u64, 0, 0])
    }

    fn is_zero(&self) -> bool {
        self.0.iter().all(|&limb| limb == 0)
    }

    /// Multiplies in place; `None` on overflow.
    fn mul_small(&mut self, factor: u64) -> Option<()> {
        let mut carry: u128 = 0;
        for limb in &mut self.0 {
            let product = u128::from(*limb) * u128::from(factor) + carry;
            *limb = product as u64;
            carry = product >> 64;
        }
        (carry == 0).then_some(())
    }

    /// Divides in place and returns the remainder.
    fn div_small(&mut self, divisor: u64) -> u64 {
        let mut remainder: u128 = 0;
        for limb in self.0.iter_mut().rev() {
            let current = (remainder << 64) | u128::from(*limb);
            *limb = (current / u128::from(divisor)) as u64;
            remainder = current % u128::from(divisor);
        }
        remainder as u64
    }

    fn to_u128(self) -> Option<u128> {
        (self.0[2] == 0 && self.0[3] == 0)
            .then(|| u128::from(self.0[0]) | (u128::from(self.0[1]) << 64))
    }
}

/// A pod bandwidth limit for the `kubernetes.io/egress-bandwidth` and
/// `kubernetes.io/ingress-bandwidth` annotations, in bits per second.
///
/// Accepts what the kubelet accepts: a quantity between `1k` and `1P`
/// after rounding up to whole bits per second.
///
/// ```
/// use kura_netpol::Bandwidth;
///
/// assert_eq!(Bandwidth::parse("750M")?.bits_per_second(), 750_000_000);
/// assert_eq!(Bandwidth::parse("10Gi")?.bits_per_second(), 10_737_418_240);
/// assert_eq!(Bandwidth::from_bits_per_second(1_500_000_000)?.to_string(), "1500M");
/// assert!(Bandwidth::parse("10 Mbit").is_err());
/// assert!(Bandwidth::parse("100").is_err(), "below 1k");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bandwidth {
    quantity: Quantity,
    bits_per_second: u64,
}

impl Bandwidth {
    /// Smallest bandwidth the kubelet accepts: 1 kbit/s.
    pub const MIN_BITS_PER_SECOND: u64 = 1_000;
    /// Largest bandwidth the kubelet accepts: 1 Pbit/s.
    pub const MAX_BITS_PER_SECOND: u64 = 1_000_000_000_000_000;

    /// Parses and range-checks a bandwidth quantity.
    pub fn parse(input: &str) -> Result<Bandwidth, Error> {
        let quantity = Quantity::parse(input)?;
        Self::from_quantity(quantity, input)
    }

    /// A bandwidth from a parsed quantity.
    pub fn from_quantity(quantity: Quantity, input: &str) -> Result<Bandwidth, Error> {
        let out_of_range = || Error::BandwidthOutOfRange {
            input: input.to_owned(),
            min: Self::MIN_BITS_PER_SECOND,
            max: Self::MAX_BITS_PER_SECOND,
        };
        let value = quantity.to_integer_ceil().ok_or_else(out_of_range)?;
        let bits_per_second = u64::try_from(value)
            .ok()
            .filter(|v| (Self::MIN_BITS_PER_SECOND..=Self::MAX_BITS_PER_SECOND).contains(v))
            .ok_or_else(out_of_range)?;
        Ok(Bandwidth {
            quantity,
            bits_per_second,
        })
    }

    /// A bandwidth of `bits_per_second`, written with the largest exact
    /// decimal suffix.
    pub fn from_bits_per_second(bits_per_second: u64) -> Result<Bandwidth, Error> {
        let quantity = Quantity::from_integer(bits_per_second);
        Self::from_quantity(quantity, &quantity.to_string())
    }

    /// A bandwidth of `mbps` megabits (10⁶ bits) per second.
    pub fn from_megabits_per_second(mbps: u64) -> Result<Bandwidth, Error> {
        let bits = mbps.saturating_mul(1_000_000);
        Self::from_bits_per_second(bits)
    }

    /// The limit in bits per second.
    pub fn bits_per_second(&self) -> u64 {
        self.bits_per_second
    }

    /// The quantity as parsed (or built).
    pub fn quantity(&self) -> Quantity {
        self.quantity
    }
}

impl FromStr for Bandwidth {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Bandwidth::parse(s)
    }
}

/// Writes the canonical quantity, suitable as an annotation value.
impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.quantity, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    fn err(s: &str) -> (usize, QuantityErrorReason) {
        match Quantity::parse(s) {
            Err(Error::InvalidQuantity {
                input,
                position,
                reason,
            }) => {
                assert_eq!(input, s);
                (position, reason)
            }
            other => panic!("{s:?}: expected InvalidQuantity, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_kubernetes_grammar() {
        let cases: &[(&str, i128, &str)] = &[
            ("750M", 750_000_000, "750M"),
            ("1G", 1_000_000_000, "1G"),
            ("10Gi", 10_737_418_240, "10Gi"),
            ("1.5Gi", 1_610_612_736, "1.5Gi"),
            ("+1.50k", 1_500, "1.5k"),
            ("1.", 1, "1"),
            (".5", 1, "0.5"),
            ("0.001", 1, "0.001"),
            ("100m", 1, "100m"),
            ("1000", 1000, "1000"),
            ("0", 0, "0"),
            ("-0.0", 0, "0"),
            ("-1.5", -1, "-1.5"),
            ("1e3", 1000, "1e3"),
            ("1E3", 1000, "1e3"),
            ("1e+3", 1000, "1e3"),
            ("25e-1", 3, "25e-1"),
            ("1E", 1_000_000_000_000_000_000, "1E"),
            ("1Ei", 1 << 60, "1Ei"),
            ("007", 7, "7"),
        ];
        for &(input, value, canonical) in cases {
            let quantity = q(input);
            assert_eq!(quantity.to_integer_ceil(), Some(value), "{input}");
            assert_eq!(quantity.to_string(), canonical, "{input}");
            assert_eq!(q(canonical), quantity, "{input}");
        }
    }

    #[test]
    fn refuses_everything_else_with_a_position() {
        assert_eq!(err(""), (0, QuantityErrorReason::Empty));
        assert_eq!(err("M"), (0, QuantityErrorReason::ExpectedDigit));
        assert_eq!(err("-"), (1, QuantityErrorReason::ExpectedDigit));
        assert_eq!(err("."), (1, QuantityErrorReason::ExpectedDigit));
        assert_eq!(
            err("10 Mbit"),
            (2, QuantityErrorReason::UnknownSuffix(" Mbit".into()))
        );
        assert_eq!(
            err("1KB"),
            (1, QuantityErrorReason::UnknownSuffix("KB".into()))
        );
        assert_eq!(
            err("1.2.3"),
            (3, QuantityErrorReason::UnknownSuffix(".3".into()))
        );
        assert_eq!(
            err("1e"),
            (1, QuantityErrorReason::UnknownSuffix("e".into()))
        );
        assert_eq!(
            err("1Mi3"),
            (1, QuantityErrorReason::UnknownSuffix("Mi3".into()))
        );
        assert_eq!(
            err("1e1001"),
            (2, QuantityErrorReason::ExponentOutOfRange { max: 1000 })
        );
        assert_eq!(
            err("123456789012345678901234567890123456789"),
            (38, QuantityErrorReason::TooManyDigits { max: 38 })
        );
        assert_eq!(
            err(&format!("1{}", "0".repeat(1001))),
            (0, QuantityErrorReason::ExponentOutOfRange { max: 1000 })
        );
    }

    #[test]
    fn huge_and_tiny_values_are_exact() {
        assert_eq!(q("1e40").to_integer_ceil(), None);
        assert_eq!(q("1e-1000").to_integer_ceil(), Some(1));
        // 21 significant digits times 2^60, then scaled down: must not overflow.
        assert_eq!(
            q("0.000000000000000000000000000000000000300000000000000000001Ei").to_integer_ceil(),
            Some(1)
        );
        assert_eq!(
            q("99999999999999999999999999999999999999e-37").to_integer_ceil(),
            Some(10)
        );
        assert_eq!(q("1e39").to_integer_ceil(), None, "beyond i128::MAX");
        assert_eq!(q("1e38").to_integer_ceil(), Some(10i128.pow(38)));
    }

    #[test]
    fn bandwidth_follows_the_kubelet_limits() {
        assert_eq!(Bandwidth::parse("1k").unwrap().bits_per_second(), 1_000);
        assert_eq!(
            Bandwidth::parse("1P").unwrap().bits_per_second(),
            1_000_000_000_000_000
        );
        for bad in ["999", "1.1P", "-1M", "0", "500m", "1e40"] {
            assert!(
                matches!(
                    Bandwidth::parse(bad),
                    Err(Error::BandwidthOutOfRange { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Bandwidth::parse("fast"),
            Err(Error::InvalidQuantity { .. })
        ));
        assert_eq!(
            Bandwidth::from_megabits_per_second(750)
                .unwrap()
                .to_string(),
            "750M"
        );
        assert_eq!(
            Bandwidth::from_bits_per_second(1234).unwrap().to_string(),
            "1234"
        );
        assert_eq!(
            Bandwidth::from_bits_per_second(120_000)
                .unwrap()
                .to_string(),
            "120k"
        );
        assert!(Bandwidth::from_bits_per_second(10).is_err());
        assert!(Bandwidth::from_megabits_per_second(u64::MAX).is_err());
    }
}
