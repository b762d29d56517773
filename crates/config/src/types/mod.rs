//! Typed config values: [`Duration`], [`ByteSize`] and [`Secret`].

mod duration;
mod secret;
mod size;

pub use duration::{Duration, DurationError};
pub use secret::{REDACTED, Secret};
pub use size::{ByteSize, ByteSizeError};

/// Splits `"1.5"` into its integer and fraction digits; `None` unless it is digits with at most
/// one dot and at least one digit.
fn split_decimal(number: &str) -> Option<(&str, &str)> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    (digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty())).then_some((int, frac))
}

/// `int.frac * unit` in whole units of the smallest kind, truncating what is left of the fraction;
/// `None` on overflow.
fn scale(int: &str, frac: &str, unit: u128) -> Option<u128> {
    let whole = if int.is_empty() {
        0
    } else {
        int.parse::<u128>().ok()?
    };
    let frac = &frac[..frac.len().min(18)];
    let part = if frac.is_empty() {
        0
    } else {
        let denominator = 10u128.pow(u32::try_from(frac.len()).ok()?);
        frac.parse::<u128>().ok()?.checked_mul(unit)? / denominator
    };
    whole.checked_mul(unit)?.checked_add(part)
}
