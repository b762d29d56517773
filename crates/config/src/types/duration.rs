use std::fmt;
use std::str::FromStr;

use super::{scale, split_decimal};

const NANOS: [(&str, u128); 8] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("ns", 1),
];

/// A span of time written with units: `"250ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"1.5s"`,
/// `"100us"`, `"2d"` (units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, `d`; parts may be combined).
///
/// A bare number is rejected, because `timeout: 30` does not say whether it means seconds or
/// milliseconds. Displays in a compact canonical form that parses back to the same value
/// (`1h30m`, `1s500ms`, `0s`).
///
/// ```
/// use quorum_config::Duration;
/// let d: Duration = "1h30m".parse()?;
/// assert_eq!(d.as_std(), std::time::Duration::from_secs(5400));
/// assert_eq!(d.to_string(), "1h30m");
/// assert_eq!("1.5s".parse::<Duration>()?.to_string(), "1s500ms");
/// assert!("30".parse::<Duration>().is_err());
/// # Ok::<(), quorum_config::DurationError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// Wraps a `std::time::Duration`.
    #[must_use]
    pub const fn new(duration: std::time::Duration) -> Self {
        Self(duration)
    }

    /// A duration of whole seconds.
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// A duration of whole milliseconds.
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    /// The `std::time::Duration` inside.
    #[must_use]
    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(duration: std::time::Duration) -> Self {
        Self(duration)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(duration: Duration) -> Self {
        duration.0
    }
}

/// Why a string is not a [`Duration`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The string is empty.
    #[error("invalid duration: empty string")]
    Empty,
    /// A number without a unit, e.g. `"30"`.
    #[error(
        "invalid duration \"{input}\": missing unit, e.g. \"{number}s\" (units: ns, us, ms, s, m, h, d)"
    )]
    MissingUnit {
        /// The whole input.
        input: String,
        /// The number that lacks a unit.
        number: String,
    },
    /// An unknown unit, e.g. `"5x"`.
    #[error(
        "invalid duration \"{input}\": unknown unit \"{unit}\" (units: ns, us, ms, s, m, h, d)"
    )]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit as written.
        unit: String,
    },
    /// A unit without a number before it, or a malformed number (negative, two dots...).
    #[error("invalid duration \"{input}\": expected a non-negative number before each unit")]
    InvalidNumber {
        /// The whole input.
        input: String,
    },
    /// More than `std::time::Duration` can hold.
    #[error("invalid duration \"{input}\": too large")]
    TooLarge {
        /// The whole input.
        input: String,
    },
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, DurationError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(DurationError::Empty);
        }
        let owned = || input.to_owned();
        let is_number = |c: char| c.is_ascii_digit() || c == '.';
        let mut total: u128 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let split = rest.find(|c: char| !is_number(c)).unwrap_or(rest.len());
            let (number, tail) = rest.split_at(split);
            let split = tail.find(is_number).unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(split);
            rest = tail;
            let (int, frac) = split_decimal(number)
                .ok_or_else(|| DurationError::InvalidNumber { input: owned() })?;
            if unit.is_empty() {
                return Err(DurationError::MissingUnit {
                    input: owned(),
                    number: number.to_owned(),
                });
            }
            let Some(&(_, nanos)) = NANOS.iter().find(|(name, _)| *name == unit) else {
                return Err(DurationError::UnknownUnit {
                    input: owned(),
                    unit: unit.to_owned(),
                });
            };
            total = scale(int, frac, nanos)
                .and_then(|part| total.checked_add(part))
                .ok_or_else(|| DurationError::TooLarge { input: owned() })?;
        }
        let secs = u64::try_from(total / 1_000_000_000)
            .map_err(|_| DurationError::TooLarge { input: owned() })?;
        let nanos = u32::try_from(total % 1_000_000_000)
            .map_err(|_| DurationError::TooLarge { input: owned() })?;
        Ok(Self(std::time::Duration::new(secs, nanos)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut left = self.0.as_nanos();
        if left == 0 {
            return f.write_str("0s");
        }
        for (unit, nanos) in NANOS.iter().filter(|(unit, _)| *unit != "µs") {
            if left >= *nanos {
                write!(f, "{}{unit}", left / nanos)?;
                left %= nanos;
            }
        }
        Ok(())
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\" or \"250ms\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    fn parse(s: &str) -> Result<Std, String> {
        s.parse::<Duration>()
            .map(Duration::as_std)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse("250ms").unwrap(), Std::from_millis(250));
        assert_eq!(parse("30s").unwrap(), Std::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Std::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Std::from_secs(3600));
        assert_eq!(parse("1h30m").unwrap(), Std::from_secs(5400));
        assert_eq!(parse("1.5s").unwrap(), Std::from_millis(1500));
        assert_eq!(parse(".5s").unwrap(), Std::from_millis(500));
        assert_eq!(parse("100us").unwrap(), Std::from_micros(100));
        assert_eq!(parse("100µs").unwrap(), Std::from_micros(100));
        assert_eq!(parse("7ns").unwrap(), Std::from_nanos(7));
        assert_eq!(parse("2d").unwrap(), Std::from_secs(172_800));
        assert_eq!(parse(" 0s ").unwrap(), Std::ZERO);
        assert_eq!(
            parse("0.0000000001s").unwrap(),
            Std::ZERO,
            "below a nanosecond truncates"
        );
    }

    #[test]
    fn rejects_bad_input_with_clear_messages() {
        assert_eq!(parse("").unwrap_err(), "invalid duration: empty string");
        assert_eq!(
            parse("30").unwrap_err(),
            r#"invalid duration "30": missing unit, e.g. "30s" (units: ns, us, ms, s, m, h, d)"#
        );
        assert_eq!(
            parse("1h30").unwrap_err(),
            r#"invalid duration "1h30": missing unit, e.g. "30s" (units: ns, us, ms, s, m, h, d)"#
        );
        assert_eq!(
            parse("5x").unwrap_err(),
            r#"invalid duration "5x": unknown unit "x" (units: ns, us, ms, s, m, h, d)"#
        );
        assert_eq!(
            parse("5 s").unwrap_err(),
            r#"invalid duration "5 s": unknown unit " s" (units: ns, us, ms, s, m, h, d)"#
        );
        assert_eq!(
            parse("-1s").unwrap_err(),
            r#"invalid duration "-1s": expected a non-negative number before each unit"#
        );
        assert_eq!(
            parse("s").unwrap_err(),
            r#"invalid duration "s": expected a non-negative number before each unit"#
        );
        assert_eq!(
            parse("1.2.3s").unwrap_err(),
            r#"invalid duration "1.2.3s": expected a non-negative number before each unit"#
        );
        assert_eq!(
            parse("99999999999999999999999d").unwrap_err(),
            r#"invalid duration "99999999999999999999999d": too large"#
        );
        assert!(parse(&"9".repeat(60)).is_err());
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        for (input, shown) in [
            ("250ms", "250ms"),
            ("90m", "1h30m"),
            ("1.5s", "1s500ms"),
            ("2d", "2d"),
            ("0s", "0s"),
            ("1d1h1m1s1ms1us1ns", "1d1h1m1s1ms1us1ns"),
        ] {
            let d: Duration = input.parse().unwrap();
            assert_eq!(d.to_string(), shown);
            assert_eq!(shown.parse::<Duration>().unwrap(), d);
        }
        let max = Duration::new(Std::MAX);
        assert_eq!(max.to_string().parse::<Duration>().unwrap(), max);
    }

    #[test]
    fn serde_uses_the_string_form() {
        let d = Duration::from_millis(1500);
        assert_eq!(serde_json::to_string(&d).unwrap(), r#""1s500ms""#);
        assert_eq!(serde_json::from_str::<Duration>(r#""1s500ms""#).unwrap(), d);
        let err = serde_json::from_str::<Duration>("30")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(r#"invalid duration "30": missing unit"#),
            "{err}"
        );
    }
}
