//! Server-Sent Events framing as Marathon's Jetty servlet writes it (discovery.md §1.3): `event: <type>` and
//! `data: <json>` lines ending in CRLF, an empty line ending each event, and a heartbeat that is a bare `\r`
//! and `\n` flushed separately, so a line ending may be split across reads.
//!
//! The parser is incremental and accepts CR, LF and CRLF line endings, as the SSE specification requires.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; empty when the server sent none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// A line longer than this is garbage, not an event: it is dropped rather than buffered without bound.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Feeds bytes in, takes events out.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` starting the next one belongs to that line ending.
    after_cr: bool,
    event: String,
    data: Vec<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes `chunk`, returning the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in chunk {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut events);
                }
                b'\n' => self.end_line(&mut events),
                _ if self.line.len() < MAX_LINE => self.line.push(byte),
                _ => {}
            }
        }
        events
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) {
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        if line.is_empty() {
            if !self.event.is_empty() || !self.data.is_empty() {
                events.push(SseEvent {
                    event: std::mem::take(&mut self.event),
                    data: std::mem::take(&mut self.data).join("\n"),
                });
            }
            return;
        }
        if line.starts_with(':') {
            return; // a comment
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => self.data.push(value.to_string()),
            _ => {} // id, retry: Marathon sends neither
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marathon's `examples/events.txt`, verbatim, with the CRLF line endings of the wire.
    const EVENTS_TXT: &str = include_str!("../../../../tests/fixtures/marathon/events.txt");

    /// The file with CRLF endings; the quoted file stops after the last `data:` line, where the wire has the
    /// blank line that ends every event.
    fn wire() -> Vec<u8> {
        let mut text = EVENTS_TXT.replace("\r\n", "\n").replace('\n', "\r\n");
        text.push_str("\r\n");
        text.into_bytes()
    }

    #[test]
    fn the_documented_stream_parses_in_any_split() {
        let bytes = wire();
        let whole = SseParser::new().feed(&bytes);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].event, "event_stream_attached");
        assert!(
            whole[0]
                .data
                .contains("\"remoteAddress\":\"0:0:0:0:0:0:0:1\"")
        );
        assert_eq!(whole[1].event, "status_update_event");
        assert!(whole[1].data.contains("TASK_FAILED"));
        assert!(whole[2].data.contains("TASK_RUNNING"));
        // Every split point, including between \r and \n.
        for cut in 0..bytes.len() {
            let mut p = SseParser::new();
            let mut events = p.feed(&bytes[..cut]);
            events.extend(p.feed(&bytes[cut..]));
            assert_eq!(events, whole, "split at {cut}");
        }
    }

    #[test]
    fn heartbeats_dispatch_nothing_and_lf_or_cr_endings_work() {
        let mut p = SseParser::new();
        assert!(p.feed(b"\r").is_empty());
        assert!(p.feed(b"\n").is_empty());
        assert!(p.feed(b"\r\n\r\n").is_empty());
        let events = p.feed(b"event: a\ndata: {}\n\nevent: b\rdata:x\rdata: y\r\r: comment\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "a".into(),
                    data: "{}".into()
                },
                SseEvent {
                    event: "b".into(),
                    data: "x\ny".into()
                },
            ]
        );
    }
}
