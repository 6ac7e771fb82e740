//! A bounded, incremental server-sent-events decoder for upstream (neuron)
//! streams, after the WHATWG `text/event-stream` parsing rules.
//!
//! It owns framing only: lines (`\n`, `\r\n` or `\r`, split anywhere across
//! reads, even inside a multi-byte character or a CRLF), fields (`data:`
//! with or without the space, `event:`, comments), and dispatch on a blank
//! line. It does not parse the JSON inside `data`, and knows nothing of
//! `[DONE]`.
//!
//! Memory is bounded by `max_line` (promise 11): a line longer than
//! `max_line` bytes, or an event whose data grows past `max_line`, is an
//! error instead of unbounded buffering, so a decoder holds at most about
//! `3 * max_line` bytes (the current line, the event's data and its name). After an error the decoder only
//! repeats it; the stream should be abandoned.
//!
//! Unlike the WHATWG rules, [`SseDecoder::finish`] dispatches an event that
//! the stream ended without a blank line after: some servers omit the last
//! one. A stream cut mid-line therefore yields a truncated `data`, which the
//! caller's JSON parse rejects.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if the event had a non-empty one.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Why a stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line, or one event's data, exceeded the limit (in bytes).
    #[error("SSE line longer than {0} bytes")]
    LineTooLong(usize),
    /// A line was not valid UTF-8.
    #[error("SSE stream is not UTF-8")]
    NotUtf8,
}

const BOM: &str = "\u{feff}";

/// Incremental decoder: [`push`](Self::push) bytes as they arrive, then
/// [`finish`](Self::finish) at the end of the body.
#[derive(Debug)]
pub struct SseDecoder {
    max_line: usize,
    /// The current, unterminated line.
    line: Vec<u8>,
    /// The last byte seen was `\r`: a `\n` right after it ends no new line.
    after_cr: bool,
    /// No line has been completed yet (a leading BOM is skipped).
    first_line: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    failed: Option<SseError>,
}

impl SseDecoder {
    /// A decoder that accepts lines (and event data) of at most `max_line`
    /// bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            data: String::new(),
            has_data: false,
            event: None,
            failed: None,
        }
    }

    /// Feed the next bytes of the body; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let mut events = Vec::new();
        match self.push_inner(bytes, &mut events) {
            Ok(()) => Ok(events),
            Err(err) => Err(self.fail(err)),
        }
    }

    /// The body ended: the last, unterminated line is taken as complete and
    /// a pending event is dispatched. The decoder is then ready for a new
    /// stream.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if !self.line.is_empty() {
            // Non-empty, so it cannot dispatch by itself.
            if let Err(err) = self.end_line() {
                return Err(self.fail(err));
            }
        }
        let event = self.dispatch();
        *self = Self::new(self.max_line);
        Ok(event)
    }

    fn fail(&mut self, err: SseError) -> SseError {
        *self = Self::new(self.max_line);
        self.failed = Some(err.clone());
        err
    }

    fn push_inner(&mut self, bytes: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut rest = bytes;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some((b'\n', tail)) = rest.split_first() {
                rest = tail;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (segment, terminator) = rest.split_at(pos);
            self.append(segment)?;
            rest = match terminator.split_first() {
                Some((b'\r', tail)) => match tail.split_first() {
                    Some((b'\n', tail)) => tail,
                    Some(_) => tail,
                    None => {
                        self.after_cr = true;
                        tail
                    }
                },
                Some((_, tail)) => tail,
                None => terminator,
            };
            if let Some(event) = self.end_line()? {
                events.push(event);
            }
        }
        self.append(rest)
    }

    fn append(&mut self, segment: &[u8]) -> Result<(), SseError> {
        if self.line.len() + segment.len() > self.max_line {
            return Err(SseError::LineTooLong(self.max_line));
        }
        self.line.extend_from_slice(segment);
        Ok(())
    }

    /// Interpret the completed line; a blank line dispatches.
    fn end_line(&mut self) -> Result<Option<SseEvent>, SseError> {
        let bytes = std::mem::take(&mut self.line);
        let mut line = String::from_utf8(bytes).map_err(|_| SseError::NotUtf8)?;
        if std::mem::take(&mut self.first_line) && line.starts_with(BOM) {
            line.drain(..BOM.len());
        }
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match field {
            // A comment: the field name is empty.
            "" => {}
            "data" => {
                let sep = usize::from(self.has_data);
                if self.data.len() + sep + value.len() > self.max_line {
                    return Err(SseError::LineTooLong(self.max_line));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()).filter(|e| !e.is_empty()),
            // `id`, `retry` and unknown fields mean nothing to a proxy.
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
        })
    }

    /// Bytes held between calls: at most `3 * max_line` (line, data, name).
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.line.len() + self.data.len() + self.event.as_ref().map_or(0, String::len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
        }
    }

    /// All events of `chunks`, fed one by one, then `finish`; or the error.
    fn decode<'a>(
        max_line: usize,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<SseEvent>, SseError> {
        let mut decoder = SseDecoder::new(max_line);
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(decoder.push(chunk)?);
            assert!(decoder.buffered() <= 3 * max_line);
        }
        events.extend(decoder.finish()?);
        Ok(events)
    }

    fn decode_bytewise(max_line: usize, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        decode(max_line, bytes.chunks(1))
    }

    #[test]
    fn openai_stream_decodes() {
        let body = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        let want = vec![
            ev(None, r#"{"a":1}"#),
            ev(None, r#"{"b":2}"#),
            ev(None, "[DONE]"),
        ];
        assert_eq!(decode(1024, [&body[..]]).unwrap(), want);
        assert_eq!(decode_bytewise(1024, body).unwrap(), want);
    }

    #[test]
    fn line_endings_fields_and_comments() {
        let body = b": keepalive\r\nevent: message_start\r\ndata:x\r\rdata: a\ndata:  b\nid: 7\nretry: 5\nbogus\n\n";
        let want = vec![ev(Some("message_start"), "x"), ev(None, "a\n b")];
        assert_eq!(decode(1024, [&body[..]]).unwrap(), want);
        assert_eq!(decode_bytewise(1024, body).unwrap(), want);
    }

    #[test]
    fn crlf_split_across_pushes_is_one_line_end() {
        let mut d = SseDecoder::new(64);
        assert!(d.push(b"data: a\r").unwrap().is_empty());
        // The \n completes the CRLF; the next \r\n is the blank line.
        assert!(d.push(b"\n").unwrap().is_empty());
        assert_eq!(d.push(b"\r\n").unwrap(), vec![ev(None, "a")]);
        // A lone \r followed by an empty push keeps waiting for a \n.
        assert!(d.push(b"data: b\r").unwrap().is_empty());
        assert!(d.push(b"").unwrap().is_empty());
        assert_eq!(d.push(b"\n\n").unwrap(), vec![ev(None, "b")]);
    }

    #[test]
    fn multibyte_char_split_across_pushes() {
        let body = "data: h\u{e9}llo \u{1f600}\n\n".as_bytes();
        for cut in 0..body.len() {
            let (a, b) = body.split_at(cut);
            assert_eq!(
                decode(64, [a, b]).unwrap(),
                vec![ev(None, "h\u{e9}llo \u{1f600}")]
            );
        }
    }

    #[test]
    fn empty_data_dispatches_and_field_only_event_does_not() {
        let body = b"data\n\nevent: x\n\ndata:\ndata:\n\n";
        assert_eq!(
            decode(64, [&body[..]]).unwrap(),
            vec![ev(None, ""), ev(None, "\n")]
        );
    }

    #[test]
    fn leading_bom_is_skipped_once() {
        let body = "\u{feff}data: a\n\n\u{feff}data: b\n\n".as_bytes();
        assert_eq!(decode_bytewise(64, body).unwrap()[0], ev(None, "a"));
        // A BOM later is part of the field name: an unknown field.
        assert_eq!(decode(64, [body]).unwrap().len(), 1);
    }

    #[test]
    fn finish_dispatches_an_unterminated_event() {
        assert_eq!(
            decode(64, [&b"data: [DONE]"[..]]).unwrap(),
            vec![ev(None, "[DONE]")]
        );
        assert_eq!(
            decode(64, [&b"data: a\n"[..]]).unwrap(),
            vec![ev(None, "a")]
        );
        assert_eq!(decode(64, [&b": only a comment"[..]]).unwrap(), vec![]);
    }

    #[test]
    fn line_limit_is_enforced_without_a_newline() {
        let mut d = SseDecoder::new(16);
        assert!(d.push(b"data: 0123456789").is_ok()); // exactly 16 bytes
        assert_eq!(d.push(b"x"), Err(SseError::LineTooLong(16)));
        // Sticky, and nothing more is buffered.
        assert_eq!(d.push(b"\n\n"), Err(SseError::LineTooLong(16)));
        assert_eq!(d.finish(), Err(SseError::LineTooLong(16)));
        assert_eq!(d.buffered(), 0);
        let endless = vec![b'a'; 1 << 20];
        let mut d = SseDecoder::new(1024);
        assert!(d.push(&endless).is_err());
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn event_data_is_bounded_too() {
        let body = b"data: 0123456789\ndata: 0123456789\n\n";
        assert_eq!(decode(16, [&body[..]]), Err(SseError::LineTooLong(16)));
        assert!(decode(21, [&body[..]]).is_ok());
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert_eq!(decode(64, [&b"data: \xff\n\n"[..]]), Err(SseError::NotUtf8));
        assert_eq!(decode(64, [&b"data: \xff"[..]]), Err(SseError::NotUtf8));
    }

    /// SSE-ish bytes: the pieces that matter to a decoder, in any order.
    pub(crate) fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"data:".to_vec()),
            Just(b"data: ".to_vec()),
            Just(b"event: ".to_vec()),
            Just(b": c".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n\n".to_vec()),
            Just("\u{e9}\u{1f600}".as_bytes().to_vec()),
            "[a-z {}\":,]{0,12}".prop_map(String::into_bytes),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    /// Cut `bytes` at the given (sorted, deduplicated) positions.
    fn split_at_points(bytes: &[u8], mut cuts: Vec<usize>) -> Vec<&[u8]> {
        cuts.iter_mut().for_each(|c| *c %= bytes.len() + 1);
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::new();
        let mut from = 0;
        for cut in cuts {
            pieces.push(&bytes[from..cut]);
            from = cut;
        }
        pieces.push(&bytes[from..]);
        pieces
    }

    /// Events, encoded with one line ending per stream, with or without the
    /// space after `data:`, and comments in between.
    fn encode(events: &[(Option<String>, Vec<String>)], eol: &str, space: bool) -> Vec<u8> {
        let mut out = String::new();
        for (name, lines) in events {
            out.push_str(&format!(": ping{eol}"));
            if let Some(name) = name {
                out.push_str(&format!("event: {name}{eol}"));
            }
            for line in lines {
                let sep = if space || line.starts_with(' ') {
                    ": "
                } else {
                    ":"
                };
                out.push_str(&format!("data{sep}{line}{eol}"));
            }
            out.push_str(eol);
        }
        out.into_bytes()
    }

    proptest! {
        #[test]
        fn splitting_never_changes_the_events(
            bytes in sse_bytes(),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
            max_line in prop_oneof![Just(8usize), Just(64), Just(4096)],
        ) {
            let whole = decode(max_line, [&bytes[..]]);
            prop_assert_eq!(&decode(max_line, split_at_points(&bytes, cuts)), &whole);
            prop_assert_eq!(&decode_bytewise(max_line, &bytes), &whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let whole = decode(32, [&bytes[..]]);
            prop_assert_eq!(decode(32, split_at_points(&bytes, cuts)), whole);
        }

        #[test]
        fn encoded_events_decode_back(
            events in prop::collection::vec(
                (
                    prop::option::of("[a-z_]{1,12}"),
                    prop::collection::vec("[^\r\n]{0,16}", 1..4),
                ),
                0..8,
            ),
            eol in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
            space in any::<bool>(),
        ) {
            let bytes = encode(&events, eol, space);
            let want: Vec<SseEvent> = events
                .iter()
                .map(|(name, lines)| SseEvent { event: name.clone(), data: lines.join("\n") })
                .collect();
            prop_assert_eq!(decode_bytewise(1 << 16, &bytes), Ok(want.clone()));
            prop_assert_eq!(decode(1 << 16, [&bytes[..]]), Ok(want));
        }
    }
}
