//! Server-sent events framing: turns a byte stream split at arbitrary offsets into whole
//! events, and events back into bytes. Handles `\n` and `\r\n` line ends, multi-line
//! `data:`, comments and a bounded buffer for a peer that never ends an event.

/// One event: its `event:` name (if any) and its `data:` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn data(data: impl Into<String>) -> Self {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }

    /// The wire form, ending with the blank line that terminates an event.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 16);
        if let Some(e) = &self.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(e.as_bytes());
            out.push(b'\n');
        }
        for line in self.data.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }

    /// `data: [DONE]`, the OpenAI end-of-stream marker.
    pub fn is_done(&self) -> bool {
        self.data.trim() == "[DONE]"
    }
}

/// Why a stream could not be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event grew past {0} bytes without ending")]
    TooLarge(usize),
}

/// Incremental parser: feed chunks, take whole events.
#[derive(Debug, Clone)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a boundary (minus the separator's length).
    searched: usize,
    max_event: usize,
}

impl SseParser {
    /// `max_event` bounds the bytes held for one unfinished event.
    pub fn new(max_event: usize) -> Self {
        SseParser {
            buf: Vec::new(),
            searched: 0,
            max_event,
        }
    }

    /// Adds a chunk and returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        loop {
            let Some((end, skip)) = find_boundary(&self.buf, self.searched) else {
                self.searched = self.buf.len().saturating_sub(2);
                break;
            };
            let raw: Vec<u8> = self.buf.drain(..end + skip).take(end).collect();
            self.searched = 0;
            if let Some(e) = parse_event(&raw) {
                events.push(e);
            }
        }
        if self.buf.len() > self.max_event {
            return Err(SseError::TooLarge(self.max_event));
        }
        Ok(events)
    }

    /// The last event when the stream ended without a blank line.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let raw = std::mem::take(&mut self.buf);
        self.searched = 0;
        parse_event(&raw)
    }
}

/// Position of the first blank line (end of an event) and the length of the separator.
fn find_boundary(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

fn parse_event(raw: &[u8]) -> Option<SseEvent> {
    let text = String::from_utf8_lossy(raw);
    let mut event = None;
    let mut data: Vec<&str> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if event.is_none() && data.is_empty() {
        return None;
    }
    Some(SseEvent {
        event,
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str =
        "event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: {\"b\":\n data-cont\r\n\r\ndata: [DONE]\n\n";

    #[test]
    fn frames_events_split_at_every_offset() {
        let whole = SseParser::new(1 << 20).push(STREAM.as_bytes()).expect("frames");
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].event.as_deref(), Some("message_start"));
        assert_eq!(whole[1].data, "{\"b\":");
        assert!(whole[2].is_done());
        for cut in 0..STREAM.len() {
            let mut p = SseParser::new(1 << 20);
            let mut got = p.push(&STREAM.as_bytes()[..cut]).expect("frames");
            got.extend(p.push(&STREAM.as_bytes()[cut..]).expect("frames"));
            assert_eq!(got, whole, "split at {cut}");
        }
    }

    #[test]
    fn round_trips_and_bounds_unfinished_events() {
        let e = SseEvent {
            event: Some("x".into()),
            data: "a\nb".into(),
        };
        let back = SseParser::new(1024).push(&e.to_bytes()).expect("frames");
        assert_eq!(back, vec![e]);
        let mut p = SseParser::new(8);
        assert_eq!(p.push(b"data: 0123456789"), Err(SseError::TooLarge(8)));
        let mut p = SseParser::new(64);
        assert!(p.push(b"data: tail").expect("frames").is_empty());
        assert_eq!(p.finish(), Some(SseEvent::data("tail")));
    }
}
