//! Reading HTTP/1.1 off a blocking stream, for the routing tests' raw client ([`crate::http_client`])
//! and backend ([`crate::http_backend`]): a buffer that keeps what was read past one message
//! (pipelining), and the split of a message head into its first line and headers.

use std::io::Read;

/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 64 * 1024;

/// A stream read through a buffer that keeps what was read past a message.
pub struct WireReader<S> {
    pub stream: S,
    buf: Vec<u8>,
}

impl<S: Read> WireReader<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads once more into the buffer; false once the stream ended or failed (or timed out).
    pub fn fill(&mut self) -> bool {
        let mut chunk = [0u8; READ_CHUNK];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Everything up to and including the next `end` (`\r\n`, or the blank line ending a head).
    pub fn until(&mut self, end: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(at) = self.buf.windows(end.len()).position(|w| w == end) {
                return Some(self.buf.drain(..at + end.len()).collect());
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Exactly `n` bytes.
    pub fn exactly(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Up to `max` bytes (at least one unless the stream ended).
    pub fn some(&mut self, max: usize) -> Option<Vec<u8>> {
        if self.buf.is_empty() && !self.fill() {
            return None;
        }
        let n = max.min(self.buf.len());
        Some(self.buf.drain(..n).collect())
    }

    /// Nothing read and not yet taken.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Everything read and not yet taken.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// A message head (as [`WireReader::until`] returned it) split into its first line and its headers,
/// names lowercased, values trimmed, in order.
pub fn split_head(head: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (first, headers)
}
