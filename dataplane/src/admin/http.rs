//! Just enough HTTP/1.1 for an admin endpoint: one GET per connection, answered and closed.
//!
//! The endpoint serves operators and monitoring (a scrape every few seconds), so simplicity wins over
//! throughput: no keep-alive, no bodies in, a small bounded request head.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Longest request head accepted; admin requests are a request line and a few headers.
pub const MAX_HEAD: usize = 8 * 1024;
/// A client that sends its request slower than this is dropped.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub query: String,
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request head longer than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("malformed request line {0:?}")]
    Malformed(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one request head from `stream`.
pub fn read_request(stream: &mut TcpStream) -> Result<Request, HttpError> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(HttpError::TooLarge);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_request_line(&head)
}

fn parse_request_line(head: &[u8]) -> Result<Request, HttpError> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]).into_owned();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed(line));
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(HttpError::Malformed(line));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
    })
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(
        status: u16,
        reason: &'static str,
        content_type: &'static str,
        body: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            status,
            reason,
            content_type,
            body: body.into(),
        }
    }

    pub fn text(status: u16, reason: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status, reason, "text/plain; charset=utf-8", body)
    }

    pub fn json(body: impl Into<Vec<u8>>) -> Self {
        Self::new(200, "OK", "application/json", body)
    }

    /// Writes the response; `head_only` for HEAD requests.
    pub fn write_to(&self, stream: &mut impl Write, head_only: bool) -> io::Result<()> {
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        stream.write_all(head.as_bytes())?;
        if !head_only {
            stream.write_all(&self.body)?;
        }
        stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let r = parse_request_line(b"GET /stats?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.query.as_str()),
            ("GET", "/stats", "x=1")
        );
        assert!(parse_request_line(b"GET /\r\n\r\n").is_err());
        assert!(parse_request_line(b"GET stats HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request_line(b"\x16\x03\x01 garbage\r\n\r\n").is_err());
    }

    #[test]
    fn responses_carry_length_and_close() {
        let mut out = Vec::new();
        Response::text(503, "Service Unavailable", "DRAINING\n")
            .write_to(&mut out, false)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("Content-Length: 9\r\n") && text.ends_with("\r\n\r\nDRAINING\n"));
    }
}
