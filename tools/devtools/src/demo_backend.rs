//! `ringway-demo-backend`: an HTTP/1.1 server that answers every request with
//! `hello from NAME (ADDR)`, so a demo shows which backend the load balancer picked, and a benchmark has a
//! cheap, predictable target.
//!
//! One thread per connection with blocking std I/O: a demo or a `wrk -c50` run needs tens of connections,
//! and this keeps the server obviously correct. Threads get a small stack so thousands of idle
//! connections stay cheap, and every connection has read and write timeouts so a client that vanishes
//! does not pin a thread forever.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::http::{Next, Session};

/// A connection with no request for this long is closed (the same order as a proxy's idle timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// After the last response of a closing connection, how long unread input is drained so that closing does
/// not reset the connection (which can destroy the response before the client reads it).
const LINGER: Duration = Duration::from_millis(500);
/// Stack of each connection thread: the handler needs a read buffer and little else.
const CONNECTION_STACK: usize = 128 * 1024;
const READ_BUFFER: usize = 16 * 1024;
/// Accept errors (usually EMFILE under load) are logged at most this often.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// HTTP demo backend for Ringway: answers every request with "hello from NAME (ADDR)".
#[derive(Debug, Clone, Parser)]
#[command(name = "ringway-demo-backend", version, about)]
pub struct Cli {
    /// Address to listen on, e.g. 127.0.0.1:19001 (port 0 picks a free port, shown in the start line).
    #[arg(long, env = "DEMO_LISTEN", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Name in every response, to tell backends apart (default: the listen address).
    #[arg(long, env = "DEMO_NAME", value_name = "NAME")]
    pub name: Option<String>,
}

/// A bound demo backend, ready to [`run`](DemoBackend::run).
#[derive(Debug)]
pub struct DemoBackend {
    listener: TcpListener,
    addr: SocketAddr,
    name: String,
    body: Arc<[u8]>,
}

impl DemoBackend {
    /// Binds `listen` now, so that a port already in use is reported before anything else happens.
    pub fn bind(listen: SocketAddr, name: Option<String>) -> io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let name = name.unwrap_or_else(|| addr.to_string());
        let body = format!("hello from {name} ({addr})\n").into_bytes().into();
        Ok(Self {
            listener,
            addr,
            name,
            body,
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The body every response carries.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Accepts connections forever, each served on its own thread.
    ///
    /// Accept errors do not stop the server: running out of file descriptors during a load test is
    /// temporary, so it backs off briefly and goes on, logging at most once a second.
    pub fn run(self) -> ! {
        let mut last_log: Option<Instant> = None;
        let mut suppressed = 0u64;
        loop {
            match self.listener.accept() {
                Ok((stream, _peer)) => {
                    let body = Arc::clone(&self.body);
                    let spawned = thread::Builder::new()
                        .name("demo-conn".into())
                        .stack_size(CONNECTION_STACK)
                        .spawn(move || {
                            // Errors here are the client's doing (reset, timeout); nothing to report.
                            let _ = serve_connection(stream, &body);
                        });
                    if let Err(e) = spawned {
                        eprintln!("ringway-demo-backend: cannot start a connection thread: {e}");
                        thread::sleep(Duration::from_millis(10));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    if last_log.is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL) {
                        eprintln!(
                            "ringway-demo-backend: accept failed: {e} ({suppressed} more not shown)"
                        );
                        last_log = Some(Instant::now());
                        suppressed = 0;
                    } else {
                        suppressed += 1;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// Serves one connection until the client closes it, asks for `Connection: close`, sends something
/// unparseable, or stays idle for [`IDLE_TIMEOUT`].
pub fn serve_connection(mut stream: TcpStream, body: &[u8]) -> io::Result<()> {
    // Each batch of responses is one write; without this, Nagle could hold a response back waiting for
    // the ACK of the previous one.
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut session = Session::new(body);
    let mut buf = vec![0u8; READ_BUFFER];
    let mut out = Vec::with_capacity(READ_BUFFER);
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.clear();
        let next = session.on_data(&buf[..n], &mut out);
        stream.write_all(&out)?;
        if next == Next::Close {
            return linger_close(stream, &mut buf);
        }
    }
}

/// Closes after the last response without a reset: send FIN, then read and drop whatever the client still
/// sends (pipelined requests after `Connection: close`, the rest of a refused request) for a short while.
/// Closing a socket with unread input makes the kernel send RST, and a client that receives RST before
/// reading the response loses it.
fn linger_close(stream: TcpStream, buf: &mut [u8]) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)?;
    let deadline = Instant::now() + LINGER;
    let mut stream = stream;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::io::BufRead;
    use std::io::BufReader;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("DEMO_LISTEN") && help.contains("DEMO_NAME"));
    }

    #[test]
    fn name_defaults_to_the_bound_address() {
        let server = DemoBackend::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(server.name(), addr.to_string());
        assert_eq!(
            server.body(),
            format!("hello from {addr} ({addr})\n").as_bytes()
        );
    }

    /// Reads one response: status line, headers, and a body of the announced `Content-Length`.
    fn read_response(reader: &mut BufReader<TcpStream>) -> (String, Vec<String>, String) {
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut headers = Vec::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                length = v.parse().unwrap();
            }
            headers.push(line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (
            status.trim_end().to_string(),
            headers,
            String::from_utf8(body).unwrap(),
        )
    }

    #[test]
    fn two_keep_alive_requests_on_one_connection() {
        let server =
            DemoBackend::bind("127.0.0.1:0".parse().unwrap(), Some("web-t".into())).unwrap();
        let addr = server.local_addr();
        thread::spawn(move || server.run());

        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let expected = format!("hello from web-t ({addr})\n");

        writer
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let (status, headers, body) = read_response(&mut reader);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(headers.contains(&"Connection: keep-alive".to_string()));
        assert!(headers.contains(&"Content-Type: text/plain".to_string()));
        assert_eq!(body, expected);

        writer
            .write_all(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
            .unwrap();
        let (status, headers, body) = read_response(&mut reader);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(headers.contains(&"Connection: close".to_string()));
        assert_eq!(body, expected);
        // The server closes after a `Connection: close` request.
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}
