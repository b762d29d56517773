//! A small incremental Server-Sent Events parser (the WHATWG `text/event-stream` rules).
//!
//! Wire-format-neutral: it knows nothing about any provider's events. Some servers send
//! unnamed `data:` events ending in a sentinel (`data: [DONE]`), others name every event
//! (`event: message_start`...). Provider crates feed it the bytes of a streamed body, in
//! whatever chunks the network delivers, and decode the [`SseEvent`]s it completes. It has no
//! dependencies, so it is available without the `http` feature.

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (empty when none was given, meaning `message`).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` field seen, if any.
    pub id: Option<String>,
}

/// Turns a byte stream, fed in arbitrary chunks, into [`SseEvent`]s.
///
/// Handles lines split across chunks (even inside a UTF-8 character or between `\r` and `\n`),
/// `\n`, `\r\n` and `\r` line ends, comments (`: keep-alive`), fields without a colon, one
/// optional space after the colon, multi-line `data`, and a leading byte-order mark. Invalid
/// UTF-8 is replaced, never a panic.
///
/// Unnamed events, with a `[DONE]` sentinel:
///
/// ```
/// use quorum_llm::sse::SseParser;
///
/// let mut parser = SseParser::new();
/// assert!(parser.feed(b"data: hel").is_empty());
/// let events = parser.feed(b"lo\r\n\r\n: comment\n\ndata: [DONE]\n\n");
/// let data: Vec<_> = events.iter().map(|e| e.data.as_str()).collect();
/// assert_eq!(data, ["hello", "[DONE]"]);
/// ```
///
/// Named events:
///
/// ```
/// use quorum_llm::sse::SseParser;
///
/// let mut parser = SseParser::new();
/// assert!(parser.feed(b"event: ping\r\ndata: {\"type\":").is_empty());
/// let events = parser.feed(b"\"ping\"}\r\n\r\n");
/// assert_eq!(events[0].event, "ping");
/// assert_eq!(events[0].data, "{\"type\":\"ping\"}");
/// ```
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    started: bool,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
}

impl SseParser {
    /// A parser at the start of a stream.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk of bytes; returns the events it completed, in order.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if !self.started && !chunk.is_empty() {
            self.started = true;
            if let Some(rest) = chunk.strip_prefix(b"\xEF\xBB\xBF".as_slice()) {
                chunk = rest;
            }
        }
        for &byte in chunk {
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\n' => self.end_line(&mut events),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut events);
                }
                other => self.line.push(other),
            }
        }
        events
    }

    /// Ends the stream: a final event that was not followed by a blank line (or whose last line
    /// had no line end) is returned rather than lost.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.line.is_empty() {
            let mut sink = Vec::new();
            self.end_line(&mut sink);
        }
        self.dispatch()
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            events.extend(self.dispatch());
            return;
        }
        if line[0] == b':' {
            return; // a comment
        }
        let line = String::from_utf8_lossy(&line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => value.clone_into(&mut self.event),
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields are ignored
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events: Vec<SseEvent> = chunks.iter().flat_map(|c| parser.feed(c)).collect();
        events.extend(parser.finish());
        events
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    // Moved from quorum-llm-openai's copy of the parser.

    #[test]
    fn every_split_point_gives_the_same_events() {
        let text = "data: {\"a\":\"é\"}\r\n\r\n: ping\r\n\r\nevent: error\ndata: x\ndata:y\n\ndata: [DONE]\n\n";
        let bytes = text.as_bytes();
        let whole = all(&[bytes]);
        assert_eq!(data(&whole), ["{\"a\":\"é\"}", "x\ny", "[DONE]"]);
        assert_eq!(whole[1].event, "error");
        assert_eq!(whole[2].event, "");
        for split in 0..bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(all(&[a, b]), whole, "split at {split}");
        }
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(all(&single), whole);
    }

    #[test]
    fn cr_only_line_ends_and_cr_lf_across_chunks() {
        assert_eq!(
            data(&all(&[b"data: a\r\rdata: b\r", b"\n\r\n"])),
            ["a", "b"]
        );
    }

    #[test]
    fn comments_and_empty_events_dispatch_nothing() {
        assert!(all(&[b": keep-alive\n\n\n\nevent: ping\n\n"]).is_empty());
    }

    #[test]
    fn field_without_colon_and_without_space() {
        let events = all(&[b"data\n\ndata:nospace\n\ndata:  two spaces\n\n"]);
        assert_eq!(data(&events), ["", "nospace", " two spaces"]);
    }

    #[test]
    fn unterminated_final_event_is_kept_by_finish() {
        let mut parser = SseParser::new();
        assert!(parser.feed(b"data: [DONE]").is_empty());
        assert_eq!(parser.finish().map(|e| e.data), Some("[DONE]".into()));
        assert_eq!(parser.finish(), None);
    }

    #[test]
    fn bom_is_skipped_and_ids_are_kept() {
        let events = all(&[b"\xEF\xBB\xBFid: 7\ndata: x\n\n"]);
        assert_eq!(events[0].id.as_deref(), Some("7"));
        assert_eq!(events[0].data, "x");
    }

    #[test]
    fn invalid_utf8_is_replaced_not_a_panic() {
        let events = all(&[b"data: \xff\xfe\n\n"]);
        assert_eq!(events[0].data, "\u{fffd}\u{fffd}");
    }

    // Moved from quorum-llm-anthropic's copy of the parser (named events).

    #[test]
    fn named_events_survive_every_split_point() {
        let text = "event: message_start\r\ndata: {\"a\":\"é\"}\r\n\r\n: c\n\nevent: ping\ndata: {}\n\nevent: error\ndata: x\ndata:y\n\n";
        let bytes = text.as_bytes();
        let whole = all(&[bytes]);
        let names: Vec<_> = whole.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(names, ["message_start", "ping", "error"]);
        assert_eq!(whole[0].data, "{\"a\":\"é\"}");
        assert_eq!(whole[2].data, "x\ny");
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(all(&[a, b]), whole, "split at {split}");
        }
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(all(&single), whole);
    }

    #[test]
    fn cr_only_line_ends_keep_event_names() {
        let events = all(&[b"event: a\rdata: 1\r\r", b"data: 2\r", b"\n\r\n"]);
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].event.as_str(), events[0].data.as_str()),
            ("a", "1")
        );
        assert_eq!(
            (events[1].event.as_str(), events[1].data.as_str()),
            ("", "2")
        );
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_does_not_leak_its_name() {
        let events = all(&[b"event: lonely\n\ndata: x\n\n"]);
        assert_eq!(
            events,
            [SseEvent {
                event: String::new(),
                data: "x".into(),
                id: None,
            }]
        );
    }

    #[test]
    fn unterminated_final_named_event_is_kept_by_finish() {
        let mut parser = SseParser::new();
        assert!(parser.feed(b"event: message_stop\ndata: {}").is_empty());
        let last = parser.finish().unwrap();
        assert_eq!(
            (last.event.as_str(), last.data.as_str()),
            ("message_stop", "{}")
        );
        assert_eq!(parser.finish(), None);
    }

    #[test]
    fn bom_and_bad_utf8() {
        let events = all(&[b"\xEF\xBB\xBFdata: \xff\n\n"]);
        assert_eq!(events[0].data, "\u{fffd}");
    }

    // Edge cases of the shared parser.

    #[test]
    fn an_id_with_nul_is_ignored_and_ids_persist_across_events() {
        let events = all(&[b"id: 1\ndata: a\n\nid: x\0y\ndata: b\n\ndata: c\n\n"]);
        let ids: Vec<_> = events.iter().map(|e| e.id.as_deref()).collect();
        assert_eq!(ids, [Some("1"), Some("1"), Some("1")]);
    }

    #[test]
    fn empty_input_and_empty_chunks_give_nothing() {
        let mut parser = SseParser::new();
        assert!(parser.feed(b"").is_empty());
        // The byte-order mark is only skipped at the real start, after empty chunks too.
        assert!(parser.feed(b"\xEF\xBB\xBFdata: x").is_empty());
        assert_eq!(parser.finish().map(|e| e.data), Some("x".into()));
        assert_eq!(SseParser::new().finish(), None);
    }
}
