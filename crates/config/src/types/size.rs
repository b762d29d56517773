use std::fmt;
use std::str::FromStr;

use super::{scale, split_decimal};

const BINARY: [(&str, u64); 5] = [
    ("PiB", 1 << 50),
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
];
const DECIMAL: [(&str, u64); 5] = [
    ("PB", 1_000_000_000_000_000),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
];

/// A number of bytes written with a unit: binary `KiB`/`MiB`/`GiB`/`TiB`/`PiB`, decimal
/// `KB`/`MB`/`GB`/`TB`/`PB`, or `B`; a bare integer is a number of bytes. Units are
/// case-insensitive, fractions are allowed with a unit (`"1.5GiB"`, rounded down to whole bytes)
/// and a space may separate number and unit.
///
/// Displays in the largest unit that represents the value exactly, binary first (`10MiB`,
/// `10MB`, `100B`), which parses back to the same value.
///
/// ```
/// use quorum_config::ByteSize;
/// let size: ByteSize = "10MiB".parse()?;
/// assert_eq!(size.bytes(), 10 * 1024 * 1024);
/// assert_eq!(ByteSize::new(10_000_000).to_string(), "10MB");
/// assert_eq!("4096".parse::<ByteSize>()?.to_string(), "4KiB");
/// # Ok::<(), quorum_config::ByteSizeError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteSize(u64);

impl ByteSize {
    /// A size of `bytes` bytes.
    #[must_use]
    pub const fn new(bytes: u64) -> Self {
        Self(bytes)
    }

    /// The number of bytes.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl From<u64> for ByteSize {
    fn from(bytes: u64) -> Self {
        Self(bytes)
    }
}

/// Why a string is not a [`ByteSize`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ByteSizeError {
    /// The string is empty.
    #[error("invalid byte size: empty string")]
    Empty,
    /// Not a non-negative number followed by an optional unit.
    #[error(
        "invalid byte size \"{input}\": expected a non-negative number and a unit, e.g. \"10MiB\""
    )]
    InvalidNumber {
        /// The whole input.
        input: String,
    },
    /// An unknown unit.
    #[error(
        "invalid byte size \"{input}\": unknown unit \"{unit}\" (units: B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB)"
    )]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit as written.
        unit: String,
    },
    /// A fraction of a byte (`"1.5"` without a unit).
    #[error(
        "invalid byte size \"{input}\": a number without a unit counts bytes and must be whole"
    )]
    Fractional {
        /// The whole input.
        input: String,
    },
    /// More than 2^64 - 1 bytes.
    #[error("invalid byte size \"{input}\": too large")]
    TooLarge {
        /// The whole input.
        input: String,
    },
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(input: &str) -> Result<Self, ByteSizeError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(ByteSizeError::Empty);
        }
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit = unit.trim_start();
        let (int, frac) = split_decimal(number).ok_or_else(|| ByteSizeError::InvalidNumber {
            input: input.to_owned(),
        })?;
        let multiplier = if unit.is_empty() {
            if !frac.is_empty() {
                return Err(ByteSizeError::Fractional {
                    input: input.to_owned(),
                });
            }
            1
        } else if unit.eq_ignore_ascii_case("b") {
            1
        } else {
            BINARY
                .iter()
                .chain(&DECIMAL)
                .find(|(name, _)| name.eq_ignore_ascii_case(unit))
                .map(|&(_, m)| m)
                .ok_or_else(|| ByteSizeError::UnknownUnit {
                    input: input.to_owned(),
                    unit: unit.to_owned(),
                })?
        };
        scale(int, frac, u128::from(multiplier))
            .and_then(|bytes| u64::try_from(bytes).ok())
            .map(Self)
            .ok_or_else(|| ByteSizeError::TooLarge {
                input: input.to_owned(),
            })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exact = BINARY
            .iter()
            .chain(&DECIMAL)
            .find(|(_, m)| self.0 != 0 && self.0.is_multiple_of(*m));
        match exact {
            Some((unit, m)) => write!(f, "{}{unit}", self.0 / m),
            None => write!(f, "{}B", self.0),
        }
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte size such as \"10MiB\" or a number of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ByteSize, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<u64, String> {
        s.parse::<ByteSize>()
            .map(ByteSize::bytes)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_units() {
        assert_eq!(parse("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse("10MB").unwrap(), 10_000_000);
        assert_eq!(parse("100B").unwrap(), 100);
        assert_eq!(parse("100").unwrap(), 100);
        assert_eq!(parse("10 mib").unwrap(), 10 << 20);
        assert_eq!(parse("1.5KiB").unwrap(), 1536);
        assert_eq!(parse("0").unwrap(), 0);
        assert_eq!(parse("16PiB").unwrap(), 16 << 50);
    }

    #[test]
    fn rejects_bad_input_with_clear_messages() {
        assert_eq!(parse(" ").unwrap_err(), "invalid byte size: empty string");
        assert_eq!(
            parse("-1").unwrap_err(),
            r#"invalid byte size "-1": expected a non-negative number and a unit, e.g. "10MiB""#
        );
        assert_eq!(
            parse("MiB").unwrap_err(),
            r#"invalid byte size "MiB": expected a non-negative number and a unit, e.g. "10MiB""#
        );
        assert_eq!(
            parse("10XB").unwrap_err(),
            r#"invalid byte size "10XB": unknown unit "XB" (units: B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB)"#
        );
        assert_eq!(
            parse("1.5").unwrap_err(),
            r#"invalid byte size "1.5": a number without a unit counts bytes and must be whole"#
        );
        assert_eq!(
            parse("16EiB").unwrap_err(),
            r#"invalid byte size "16EiB": unknown unit "EiB" (units: B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB)"#
        );
        assert_eq!(
            parse("20000PiB").unwrap_err(),
            r#"invalid byte size "20000PiB": too large"#
        );
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        for (bytes, shown) in [
            (10 << 20, "10MiB"),
            (10_000_000, "10MB"),
            (1_024_000, "1000KiB"),
            (1536, "1536B"),
            (1 << 30, "1GiB"),
            (0, "0B"),
            (u64::MAX, "18446744073709551615B"),
        ] {
            let size = ByteSize::new(bytes);
            assert_eq!(size.to_string(), shown);
            assert_eq!(shown.parse::<ByteSize>().unwrap(), size);
        }
    }

    #[test]
    fn serde_accepts_numbers_and_strings() {
        assert_eq!(
            serde_json::from_str::<ByteSize>("1024").unwrap(),
            ByteSize::new(1024)
        );
        assert_eq!(
            serde_json::from_str::<ByteSize>(r#""1KiB""#).unwrap(),
            ByteSize::new(1024)
        );
        assert!(serde_json::from_str::<ByteSize>("-1").is_err());
        assert_eq!(
            serde_json::to_string(&ByteSize::new(1024)).unwrap(),
            r#""1KiB""#
        );
    }
}
