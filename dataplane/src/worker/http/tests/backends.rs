//! Small backends on threads for the worker's HTTP tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Listens on a free loopback port and serves each connection with `serve` on a thread of its own;
/// returns the address and the count of connections accepted.
fn spawn_backend<F>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) + Clone + Send + 'static,
{
    let (address, accepted, _) = spawn_watched_backend(serve);
    (address, accepted)
}

/// Like [`spawn_backend`], also counting the connections whose `serve` returned (for a backend that
/// serves until EOF: the connections the proxy closed).
fn spawn_watched_backend<F>(serve: F) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) + Clone + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let (counter, ends) = (Arc::clone(&accepted), Arc::clone(&ended));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let serve = serve.clone();
            let ends = Arc::clone(&ends);
            std::thread::spawn(move || {
                serve(stream);
                ends.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (address, accepted, ended)
}

/// A keep-alive backend answering every request head with its name; counts connections.
pub(super) fn backend(name: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    spawn_backend(move |stream| serve_name(stream, name))
}

/// Like [`backend`], also counting the connections that ended (by the proxy closing them).
pub(super) fn watched_backend(
    name: &'static str,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    spawn_watched_backend(move |stream| serve_name(stream, name))
}

/// Answers every request head on `stream` with `name`, until EOF.
fn serve_name(mut stream: TcpStream, name: &str) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..at + 4);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                name.len()
            );
            if stream.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A backend that answers its first request head with a `101` and then echoes raw bytes.
pub(super) fn upgrading_backend() -> SocketAddr {
    spawn_backend(|mut stream| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let at = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let early = buf.split_off(at + 4);
        let _ = stream.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        let _ = stream.write_all(&early);
        loop {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stream.write_all(&chunk[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    })
    .0
}

/// A backend that reads each request's `Content-Length` body whole, then answers with a `200` whose
/// body is that body (as nginx reads a body before its application answers).
pub(super) fn echo_backend() -> SocketAddr {
    spawn_backend(|mut stream| {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let at = loop {
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at;
                }
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
            buf.drain(..at + 4);
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < length {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let mut response =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n").into_bytes();
            response.extend(buf.drain(..length));
            if stream.write_all(&response).is_err() {
                return;
            }
        }
    })
    .0
}

/// A backend that answers one request per connection and then closes it (without saying so).
pub(super) fn one_shot_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    spawn_backend(|mut stream| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    })
}

/// A backend that answers the first request of each connection and closes the connection, without
/// an answer, on the second (as a backend whose keep-alive timeout just struck).
pub(super) fn forgetful_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    spawn_backend(|mut stream| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut answered = false;
        loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                if answered {
                    return; // closes with the request unanswered
                }
                buf.drain(..at + 4);
                answered = true;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                continue;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
}
