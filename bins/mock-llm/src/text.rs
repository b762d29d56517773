//! Deterministic content: answers, token estimates, embeddings, a seeded generator, and the
//! small encoders (base64, RFC 3339 timestamps) the wire formats need.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// How many characters of the last user message the answer quotes.
const QUOTED_CHARS: usize = 40;

/// The full answer the mock gives to `last_user_message` when it is split into `chunks`
/// content chunks: `"mock answer to: "` followed by the message's first 40 characters, padded
/// with `.` to at least `chunks` characters (so that no chunk is empty).
///
/// ```
/// assert_eq!(quorum_mock_llm::expected_answer("hello", 4), "mock answer to: hello");
/// assert_eq!(quorum_mock_llm::expected_answer("", 20), "mock answer to: ....");
/// ```
#[must_use]
pub fn expected_answer(last_user_message: &str, chunks: usize) -> String {
    let mut answer = String::from("mock answer to: ");
    answer.extend(last_user_message.chars().take(QUOTED_CHARS));
    let len = answer.chars().count();
    answer.extend(std::iter::repeat_n('.', chunks.saturating_sub(len)));
    answer
}

/// [`expected_answer`] split into `chunks` non-empty pieces of near-equal length (in
/// characters), in order: what a stream sends as its content deltas.
///
/// ```
/// let pieces = quorum_mock_llm::answer_chunks("hello", 4);
/// assert_eq!(pieces.len(), 4);
/// assert_eq!(pieces.concat(), "mock answer to: hello");
/// ```
#[must_use]
pub fn answer_chunks(last_user_message: &str, chunks: usize) -> Vec<String> {
    let answer = expected_answer(last_user_message, chunks);
    let chunks = chunks.max(1);
    let chars: Vec<char> = answer.chars().collect();
    let (base, extra) = (chars.len() / chunks, chars.len() % chunks);
    let mut pieces = Vec::with_capacity(chunks);
    let mut start = 0;
    for i in 0..chunks {
        let len = base + usize::from(i < extra);
        pieces.push(chars[start..start + len].iter().collect());
        start += len;
    }
    pieces
}

/// The prompt-token estimate: characters / 4, rounded up, at least 1.
#[must_use]
pub fn estimate_tokens(chars: usize) -> u64 {
    u64::try_from(chars.div_ceil(4).max(1)).unwrap_or(u64::MAX)
}

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A lock-free seeded SplitMix64 generator shared by all requests.
#[derive(Debug)]
pub(crate) struct Rng(AtomicU64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    pub(crate) fn reseed(&self, seed: u64) {
        self.0.store(seed, Ordering::Relaxed);
    }

    pub(crate) fn next_u64(&self) -> u64 {
        mix(self
            .0
            .fetch_add(GOLDEN, Ordering::Relaxed)
            .wrapping_add(GOLDEN))
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&self) -> f64 {
        // 53 random bits as the mantissa: exact in f64.
        #[expect(clippy::cast_precision_loss, reason = "53 bits fit an f64 exactly")]
        let value = (self.next_u64() >> 11) as f64;
        value / (1u64 << 53) as f64
    }
}

/// A deterministic unit-length vector of `dim` floats for `text`.
pub(crate) fn embedding(text: &str, dim: usize) -> Vec<f32> {
    // FNV-1a of the text seeds the sequence.
    let mut state = text.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    });
    let mut values: Vec<f64> = (0..dim)
        .map(|_| {
            state = state.wrapping_add(GOLDEN);
            #[expect(clippy::cast_precision_loss, reason = "53 bits fit an f64 exactly")]
            let unit = (mix(state) >> 11) as f64 / (1u64 << 53) as f64;
            unit.mul_add(2.0, -1.0)
        })
        .collect();
    let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm > 0.0 {
        values.iter_mut().for_each(|v| *v /= norm);
    }
    #[expect(clippy::cast_possible_truncation, reason = "values are in [-1, 1]")]
    values.into_iter().map(|v| v as f32).collect()
}

/// Standard base64 (with padding) of the little-endian bytes of `values`, as OpenAI's
/// `encoding_format: "base64"` returns embeddings.
pub(crate) fn base64_f32(values: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `time` as RFC 3339 in UTC with nanoseconds, e.g. `2024-05-01T12:00:00.123456789Z` (the form
/// Ollama's `created_at` has).
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = String::with_capacity(30);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_nanos()
    );
    out
}

/// Howard Hinnant's `civil_from_days` for days since 1970-01-01 (non-negative).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_are_deterministic_and_split_evenly() {
        let long = "x".repeat(100);
        assert_eq!(
            expected_answer(&long, 16),
            format!("mock answer to: {}", "x".repeat(40))
        );
        // Multi-byte characters are counted and cut as characters.
        let pieces = answer_chunks("héllo wörld ✓", 5);
        assert_eq!(pieces.concat(), "mock answer to: héllo wörld ✓");
        let lens: Vec<usize> = pieces.iter().map(|p| p.chars().count()).collect();
        assert_eq!(lens, [6, 6, 6, 6, 5]); // 29 characters
        // More chunks than characters: padded so that no chunk is empty.
        let pieces = answer_chunks("", 30);
        assert_eq!(pieces.len(), 30);
        assert!(pieces.iter().all(|p| p.chars().count() == 1));
        assert_eq!(answer_chunks("a", 0).len(), 1);
    }

    #[test]
    fn token_estimate_rounds_up() {
        assert_eq!(estimate_tokens(0), 1);
        assert_eq!(estimate_tokens(4), 1);
        assert_eq!(estimate_tokens(5), 2);
        assert_eq!(estimate_tokens(400), 100);
    }

    #[test]
    fn rng_is_seeded_and_uniform() {
        let (a, b) = (Rng::new(7), Rng::new(7));
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..5).map(|_| b.next_u64()).collect::<Vec<_>>());
        a.reseed(7);
        assert_eq!(a.next_u64(), first[0]);
        let rng = Rng::new(1);
        let below: usize = (0..10_000).filter(|_| rng.next_f64() < 0.3).count();
        assert!((2_700..3_300).contains(&below), "{below}");
        assert!((0..1000).all(|_| (0.0..1.0).contains(&rng.next_f64())));
    }

    #[test]
    fn embeddings_are_unit_vectors_per_text() {
        let a = embedding("hello", 16);
        assert_eq!(a.len(), 16);
        assert_eq!(a, embedding("hello", 16));
        assert_ne!(a, embedding("hellp", 16));
        let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        // 1.0f32 = 00 00 80 3F; 2.0f32 = 00 00 00 40.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(base64_f32(&[]), "");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_251_199, 5); // 2024-02-29T23:59:59Z
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.000000005Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000000Z");
    }
}
