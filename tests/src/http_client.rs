//! A raw HTTP/1.1 client for the routing tests: one keep-alive connection, requests written as bytes
//! (so a test can send exactly the malformed or pipelined bytes it means), responses read and framed
//! by `Content-Length`, chunked coding or the connection's end.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::http_wire::{WireReader, split_head};

/// One response as the client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Lowercase names, in order.
    pub headers: Vec<(String, String)>,
    /// The body, chunked coding removed.
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct HttpClient {
    reader: WireReader<TcpStream>,
}

impl HttpClient {
    pub fn connect(address: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Self {
            reader: WireReader::new(stream),
        }
    }

    /// The connection's socket (for a writer thread, a shutdown).
    pub fn stream(&self) -> &TcpStream {
        &self.reader.stream
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.stream.write_all(bytes).unwrap();
    }

    /// `GET path` with `Host: host` on this connection; the response.
    pub fn get(&mut self, host: &str, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        self.response().expect("a response")
    }

    /// The next response; `None` if the connection ended first. A `1xx` head is returned as it is
    /// (no body); after a `101` the connection's bytes are the tunnel's ([`HttpClient::raw`]).
    pub fn response(&mut self) -> Option<Response> {
        let head = self.reader.until(b"\r\n\r\n")?;
        let (status_line, headers) = split_head(&head);
        let status = status_line.split(' ').nth(1)?.parse().ok()?;
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if status < 200 || status == 204 || status == 304 {
            return Some(response);
        }
        if response
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            loop {
                let line = self.reader.until(b"\r\n")?;
                let size = String::from_utf8_lossy(&line);
                let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
                if size == 0 {
                    self.reader.until(b"\r\n")?;
                    return Some(response);
                }
                response.body.extend(self.reader.exactly(size)?);
                self.reader.exactly(2)?;
            }
        }
        if let Some(length) = response.header("content-length") {
            let length = length.parse().ok()?;
            response.body = self.reader.exactly(length)?;
            return Some(response);
        }
        while self.reader.fill() {}
        response.body = self.reader.take_buffered();
        Some(response)
    }

    /// Exactly `n` raw bytes (a tunnel's).
    pub fn raw(&mut self, n: usize) -> Option<Vec<u8>> {
        self.reader.exactly(n)
    }

    /// True once the server closed the connection (read returns 0), within the read timeout.
    pub fn closed(&mut self) -> bool {
        self.reader.is_empty() && !self.reader.fill()
    }
}
