//! Reading raw Redis replies ([`redis::Value`]) without copying payloads twice.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use quorum_queue::{DeadLetter, DeadLetterReason, Headers, MessageId, QueueError};
use redis::Value;

use crate::error::unexpected;

/// The fields of one stream entry, split into what the queue uses.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    pub(crate) payload: Bytes,
    pub(crate) headers: Headers,
    /// The `id` field: the message id when it differs from the entry id.
    pub(crate) id: Option<String>,
    /// Deliveries before this entry (`dc`).
    pub(crate) prior: u32,
    /// Dead letters: `p`, `n`, `why`, `reason`, `at`.
    pub(crate) priority: u8,
    pub(crate) count: u32,
    pub(crate) why: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) at_ms: Option<u64>,
}

pub(crate) fn array(what: &'static str, value: Value) -> Result<Vec<Value>, QueueError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(unexpected(
            what,
            format!("expected an array, got {other:?}"),
        )),
    }
}

pub(crate) fn bytes(what: &'static str, value: Value) -> Result<Vec<u8>, QueueError> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        other => Err(unexpected(
            what,
            format!("expected a string, got {other:?}"),
        )),
    }
}

pub(crate) fn string(what: &'static str, value: Value) -> Result<String, QueueError> {
    let b = bytes(what, value)?;
    String::from_utf8(b).map_err(|e| unexpected(what, format!("not UTF-8: {e}")))
}

pub(crate) fn int(what: &'static str, value: &Value) -> Result<i64, QueueError> {
    match value {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| unexpected(what, format!("expected an integer, got {b:?}"))),
        other => Err(unexpected(
            what,
            format!("expected an integer, got {other:?}"),
        )),
    }
}

fn lossy(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Parses a flat `[field, value, ...]` list.
pub(crate) fn fields(what: &'static str, value: Value) -> Result<Fields, QueueError> {
    let items = array(what, value)?;
    let mut out = Fields::default();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let k = bytes(what, k)?;
        match k.as_slice() {
            b"d" => out.payload = Bytes::from(bytes(what, v)?),
            b"id" => out.id = Some(lossy(bytes(what, v)?)),
            b"dc" => out.prior = small(what, &v)?,
            b"p" => out.priority = small(what, &v)?,
            b"n" => out.count = small(what, &v)?,
            b"why" => out.why = Some(lossy(bytes(what, v)?)),
            b"reason" => out.reason = Some(lossy(bytes(what, v)?)),
            b"at" => out.at_ms = u64::try_from(int(what, &v)?).ok(),
            name => {
                if let Some(header) = name.strip_prefix(b"h:") {
                    out.headers
                        .insert(lossy(header.to_vec()), lossy(bytes(what, v)?));
                }
            }
        }
    }
    Ok(out)
}

fn small<T: TryFrom<i64>>(what: &'static str, v: &Value) -> Result<T, QueueError> {
    let i = int(what, v)?;
    T::try_from(i).map_err(|_| unexpected(what, format!("{i} out of range")))
}

/// A dead-letter stream entry `[entry_id, fields]` as a [`DeadLetter`].
pub(crate) fn dead_letter(value: Value) -> Result<DeadLetter, QueueError> {
    const WHAT: &str = "dead letter entry";
    let mut entry = array(WHAT, value)?.into_iter();
    let (Some(eid), Some(f)) = (entry.next(), entry.next()) else {
        return Err(unexpected(WHAT, "expected [id, fields]"));
    };
    let eid = string(WHAT, eid)?;
    let f = fields(WHAT, f)?;
    let reason = match f.why.as_deref() {
        Some("max") => DeadLetterReason::MaxDeliveries {
            max: f
                .reason
                .as_deref()
                .and_then(|r| r.parse().ok())
                .unwrap_or(f.count),
        },
        _ => DeadLetterReason::Terminated(f.reason.unwrap_or_default()),
    };
    let mut letter = DeadLetter::new(
        MessageId::from_text(f.id.unwrap_or(eid)),
        f.payload,
        f.count,
        reason,
    )
    .with_headers(f.headers)
    .with_priority(f.priority);
    if let Some(ms) = f.at_ms {
        letter = letter.with_time(UNIX_EPOCH + Duration::from_millis(ms));
    }
    Ok(letter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn fields_split_payload_headers_and_bookkeeping() {
        let f = fields(
            "t",
            Value::Array(vec![
                bulk("h:job"),
                bulk("7"),
                bulk("d"),
                bulk("payload"),
                bulk("id"),
                bulk("1-0"),
                bulk("dc"),
                bulk("2"),
                bulk("other"),
                bulk("ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(f.payload, "payload");
        assert_eq!(f.headers.get("job"), Some("7"));
        assert_eq!(f.headers.len(), 1);
        assert_eq!(f.id.as_deref(), Some("1-0"));
        assert_eq!(f.prior, 2);
    }

    #[test]
    fn bad_replies_are_errors_not_panics() {
        assert!(fields("t", Value::Int(3)).is_err());
        assert!(fields("t", Value::Array(vec![bulk("dc"), bulk("x")])).is_err());
        assert!(fields("t", Value::Array(vec![bulk("dc"), bulk("-1")])).is_err());
        assert!(dead_letter(Value::Array(vec![bulk("1-0")])).is_err());
        assert!(int("t", &Value::Nil).is_err());
        // An odd trailing field is ignored.
        assert!(fields("t", Value::Array(vec![bulk("d")])).is_ok());
    }

    #[test]
    fn dead_letters_parse_both_reasons() {
        let entry = |why: &str, reason: &str| {
            Value::Array(vec![
                bulk("5-0"),
                Value::Array(vec![
                    bulk("id"),
                    bulk("1-0"),
                    bulk("p"),
                    bulk("2"),
                    bulk("n"),
                    bulk("3"),
                    bulk("why"),
                    bulk(why),
                    bulk("reason"),
                    bulk(reason),
                    bulk("at"),
                    bulk("1000"),
                    bulk("d"),
                    bulk("x"),
                ]),
            ])
        };
        let max = dead_letter(entry("max", "3")).unwrap();
        assert_eq!(max.reason, DeadLetterReason::MaxDeliveries { max: 3 });
        assert_eq!(max.id, MessageId::from_text("1-0"));
        assert_eq!((max.priority, max.delivery_count), (2, 3));
        assert_eq!(
            max.dead_lettered_at,
            Some(UNIX_EPOCH + Duration::from_secs(1))
        );
        let term = dead_letter(entry("term", "bad prompt")).unwrap();
        assert_eq!(
            term.reason,
            DeadLetterReason::Terminated("bad prompt".into())
        );
    }
}
