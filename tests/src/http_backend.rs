//! A small HTTP/1.1 backend for the HTTP routing tests: keep-alive, pipelining, `Content-Length` and
//! chunked bodies (echoed as they arrive, in the framing they came in), and `Upgrade` (a `101`, then a
//! raw echo). A `GET` is answered with `<name> <method> <target> host=<host>` so a test sees which
//! backend served which request. Every request it receives is counted, as is every connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backends::{Counters, ScriptedBackend};
use crate::http_wire::{WireReader, split_head};

pub struct HttpBackend {
    server: ScriptedBackend,
    requests: Arc<AtomicUsize>,
    pub name: String,
}

impl HttpBackend {
    pub fn start(name: &str) -> Self {
        let requests = Arc::new(AtomicUsize::new(0));
        let (label, seen) = (name.to_string(), Arc::clone(&requests));
        let server = ScriptedBackend::start(move |stream| serve(stream, &label, &seen));
        Self {
            server,
            requests,
            name: name.to_string(),
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Connections accepted.
    pub fn counters(&self) -> &Counters {
        self.server.counters()
    }

    /// Requests received (heads parsed).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve(stream: &mut TcpStream, name: &str, requests: &AtomicUsize) {
    let mut writer = stream.try_clone().unwrap();
    let mut conn = WireReader::new(stream);
    while let Some(head) = conn.until(b"\r\n\r\n") {
        requests.fetch_add(1, Ordering::SeqCst);
        let (request_line, headers) = split_head(&head);
        let line: Vec<&str> = request_line.split(' ').collect();
        let (method, target) = (
            line.first().copied().unwrap_or(""),
            line.get(1).copied().unwrap_or(""),
        );
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let host = header("host").unwrap_or("").to_string();
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if header("upgrade").is_some() {
            let _ = writer.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            );
            if !conn.is_empty() {
                let _ = writer.write_all(&conn.take_buffered());
            }
            let mut buf = [0u8; 16 * 1024];
            loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if writer.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let length: Option<u64> = header("content-length").and_then(|v| v.parse().ok());
        let ok = if chunked {
            let _ = writer.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nX-Backend: {name}\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .as_bytes(),
            );
            echo_chunked(&mut conn, &mut writer)
        } else if let Some(length) = length.filter(|n| *n > 0) {
            let _ = writer.write_all(
                format!("HTTP/1.1 200 OK\r\nX-Backend: {name}\r\nContent-Length: {length}\r\n\r\n")
                    .as_bytes(),
            );
            echo_length(&mut conn, &mut writer, length)
        } else {
            let body = format!("{name} {method} {target} host={host}\n");
            writer
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nX-Backend: {name}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .is_ok()
        };
        if !ok || close {
            return;
        }
    }
}

fn echo_length(
    conn: &mut WireReader<&mut TcpStream>,
    writer: &mut TcpStream,
    mut left: u64,
) -> bool {
    while left > 0 {
        let Some(bytes) = conn.some(left.min(1 << 20) as usize) else {
            return false;
        };
        left -= bytes.len() as u64;
        if writer.write_all(&bytes).is_err() {
            return false;
        }
    }
    true
}

/// Decodes a chunked body and sends each chunk on as it arrives (chunked again).
fn echo_chunked(conn: &mut WireReader<&mut TcpStream>, writer: &mut TcpStream) -> bool {
    loop {
        let Some(line) = conn.until(b"\r\n") else {
            return false;
        };
        let size_text = String::from_utf8_lossy(&line);
        let size_text = size_text.trim().split(';').next().unwrap_or("");
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return false;
        };
        if size == 0 {
            // Trailers (none expected) and the final CRLF.
            let _ = conn.until(b"\r\n");
            return writer.write_all(b"0\r\n\r\n").is_ok();
        }
        let mut left = size;
        if writer
            .write_all(format!("{size:x}\r\n").as_bytes())
            .is_err()
        {
            return false;
        }
        while left > 0 {
            let Some(bytes) = conn.some(left) else {
                return false;
            };
            left -= bytes.len();
            if writer.write_all(&bytes).is_err() {
                return false;
            }
        }
        if conn.until(b"\r\n").is_none() || writer.write_all(b"\r\n").is_err() {
            return false;
        }
    }
}
