//! An incremental newline-delimited JSON line splitter.

/// Turns a byte stream, fed in arbitrary chunks, into complete lines (one JSON value each).
///
/// Handles lines split across chunks (even inside a UTF-8 character or between `\r` and `\n`),
/// `\n` and `\r\n` line ends, and blank lines (skipped). Invalid UTF-8 is replaced, never a
/// panic; the caller's JSON decoding then reports it.
///
/// ```
/// use quorum_llm_ollama::NdjsonSplitter;
///
/// let mut lines = NdjsonSplitter::new();
/// assert!(lines.feed(b"{\"a\":").is_empty());
/// assert_eq!(lines.feed(b"1}\r\n\n{\"b\":2}\n{\"c\""), ["{\"a\":1}", "{\"b\":2}"]);
/// assert_eq!(lines.finish().as_deref(), Some("{\"c\""));
/// ```
#[derive(Debug, Default)]
pub struct NdjsonSplitter {
    line: Vec<u8>,
}

impl NdjsonSplitter {
    /// A splitter at the start of a stream.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk of bytes; returns the non-blank lines it completed, in order,
    /// without their line ends.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            if let Some(line) = self.take_line() {
                lines.push(line);
            }
        }
        self.line.extend_from_slice(rest);
        lines
    }

    /// Ends the stream: a last line without a line end is returned rather than lost.
    pub fn finish(&mut self) -> Option<String> {
        self.take_line()
    }

    /// Whether part of a line is buffered.
    #[must_use]
    pub fn has_partial_line(&self) -> bool {
        !self.line.is_empty()
    }

    fn take_line(&mut self) -> Option<String> {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let text = String::from_utf8_lossy(&line);
        let trimmed = text.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = NdjsonSplitter::new();
        let mut lines: Vec<String> = chunks.iter().flat_map(|c| splitter.feed(c)).collect();
        lines.extend(splitter.finish());
        lines
    }

    #[test]
    fn every_split_point_gives_the_same_lines() {
        let text = "{\"message\":{\"content\":\"é€\"}}\r\n\n  \n{\"done\":true}\n{\"tail\":1}";
        let bytes = text.as_bytes();
        let whole = all(&[bytes]);
        assert_eq!(
            whole,
            [
                "{\"message\":{\"content\":\"é€\"}}",
                "{\"done\":true}",
                "{\"tail\":1}"
            ]
        );
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(all(&[a, b]), whole, "split at {split}");
        }
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(all(&single), whole);
    }

    #[test]
    fn cr_lf_split_between_chunks() {
        let mut s = NdjsonSplitter::new();
        assert!(s.feed(b"{}\r").is_empty());
        assert!(s.has_partial_line());
        assert_eq!(s.feed(b"\n"), ["{}"]);
        assert!(!s.has_partial_line());
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_a_panic() {
        assert_eq!(all(&[b"\xff{}\n"]), ["\u{fffd}{}"]);
    }

    #[test]
    fn empty_input_gives_nothing() {
        assert!(all(&[b"", b"\n\r\n"]).is_empty());
    }
}
