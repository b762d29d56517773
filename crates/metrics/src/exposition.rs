//! A strict reader for the text exposition format, so tests (ours and embedders') can check that
//! `GET /metrics` is valid and read sample values back without string matching.

use std::collections::BTreeMap;
use std::fmt;

/// One sample line: `name{label="value",…} 1.5`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's metric name (with suffixes such as `_total` or `_bucket`).
    pub name: String,
    /// Its labels, sorted by key.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Why a line of exposition text is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses Prometheus / OpenMetrics text into its samples, checking every line.
///
/// Accepts `# HELP`, `# TYPE`, `# UNIT` and `# EOF` comments, sample lines with optional labels and
/// an optional timestamp, and blank lines. A sample must belong to a family declared by a `# TYPE`
/// line before it (its name equal to the family name or the family name plus a standard suffix).
///
/// # Errors
/// Returns the first invalid line: an unknown comment, a bad metric or label name, an unquoted or
/// unterminated label value, a value that is not a number, a sample of an undeclared family, or text
/// after `# EOF`.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    let mut families: Vec<String> = Vec::new();
    let mut eof = false;
    for (i, line) in text.lines().enumerate() {
        let err = |message: String| ParseError {
            line: i + 1,
            message,
        };
        if eof {
            return Err(err("text after # EOF".into()));
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("EOF") => eof = true,
                Some("TYPE") => {
                    let name = parts.next().unwrap_or_default();
                    let kind = parts.next().unwrap_or_default();
                    check_name(name).map_err(err)?;
                    const KINDS: &[&str] = &[
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "stateset",
                        "gaugehistogram",
                        "unknown",
                        "untyped",
                    ];
                    if !KINDS.contains(&kind) {
                        return Err(err(format!("unknown metric type {kind:?}")));
                    }
                    families.push(name.to_owned());
                }
                Some("HELP") | Some("UNIT") => {
                    check_name(parts.next().unwrap_or_default()).map_err(err)?;
                }
                other => {
                    return Err(err(format!("unknown comment {:?}", other.unwrap_or(""))));
                }
            }
            continue;
        }
        let sample = parse_sample(line).map_err(err)?;
        if !families.iter().any(|f| belongs_to(&sample.name, f)) {
            return Err(err(format!(
                "sample {:?} has no # TYPE line before it",
                sample.name
            )));
        }
        samples.push(sample);
    }
    Ok(samples)
}

/// The value of the first sample named `name` whose labels include every pair in `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn belongs_to(sample: &str, family: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "", "_total", "_created", "_bucket", "_count", "_sum", "_info", "_gcount", "_gsum",
    ];
    sample
        .strip_prefix(family)
        .is_some_and(|rest| SUFFIXES.contains(&rest))
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("invalid metric name {name:?}"))
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("sample without a value: {line:?}"))?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        rest = parse_labels(body, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let raw = fields
        .next()
        .ok_or_else(|| format!("sample {name:?} has no value"))?;
    let value = match raw {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => raw
            .parse::<f64>()
            .map_err(|_| format!("sample {name:?} has a value that is not a number: {raw:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<f64>()
            .map_err(|_| format!("sample {name:?} has an invalid timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err(format!("sample {name:?} has trailing text"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `k="v",…}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut body: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        if let Some(rest) = body.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = body
            .find('=')
            .ok_or_else(|| format!("label without a value in {body:?}"))?;
        let key = &body[..eq];
        check_name(key).map_err(|_| format!("invalid label name {key:?}"))?;
        let after = body[eq + 1..]
            .strip_prefix('"')
            .ok_or_else(|| format!("label {key:?} has an unquoted value"))?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err(format!("label {key:?} has an invalid escape")),
                },
                Some((_, c)) => value.push(c),
                None => return Err(format!("label {key:?} has an unterminated value")),
            }
        };
        labels.insert(key.to_owned(), value);
        body = &after[end + 1..];
        body = body.strip_prefix(',').unwrap_or(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_with_labels_and_escapes() {
        let text = "# HELP quorum_calls Calls.\n# TYPE quorum_calls counter\n\
                    quorum_calls_total{model=\"a\\\"b\",outcome=\"ok\"} 3\n# EOF\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].labels["model"], "a\"b");
        assert_eq!(
            value(&samples, "quorum_calls_total", &[("outcome", "ok")]),
            Some(3.0)
        );
        assert_eq!(
            value(&samples, "quorum_calls_total", &[("outcome", "err")]),
            None
        );
    }

    #[test]
    fn rejects_invalid_lines() {
        let cases = [
            ("x 1\n", "no # TYPE line"),
            ("# TYPE x counter\nx_total{a=b} 1\n", "unquoted value"),
            ("# TYPE x gauge\nx abc\n", "not a number"),
            ("# TYPE x gauge\nx{a=\"1} 2\n", "unterminated"),
            ("# TYPE x wat\n", "unknown metric type"),
            ("# EOF\n# TYPE x gauge\n", "after # EOF"),
            ("# TYPE 1x gauge\n", "invalid metric name"),
            ("# BOGUS\n", "unknown comment"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn histogram_suffixes_belong_to_their_family() {
        let text = "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(value(&samples, "h_bucket", &[("le", "+Inf")]), Some(2.0));
    }
}
