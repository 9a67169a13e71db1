//! Real TCP backends on loopback, with counters the tests assert on.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// Counts what a backend saw.
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: AtomicUsize,
    pub active: AtomicUsize,
    pub peak: AtomicUsize,
}

impl Counters {
    fn opened(&self) {
        self.accepted.fetch_add(1, Ordering::SeqCst);
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    fn closed(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

struct Server {
    port: u16,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(handler: impl Fn(&mut TcpStream) + Send + Sync + 'static) -> Self {
        // A deep accept queue: a burst of hundreds of connects must not overflow it, or dropped SYNs
        // would turn into retransmits and proxy connect timeouts that are the test's fault.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        socket.listen(BACKLOG).unwrap();
        let listener = TcpListener::from(socket);
        let port = listener.local_addr().unwrap().port();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        {
            let (counters, stop) = (counters.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                            stream
                                .set_read_timeout(Some(Duration::from_secs(60)))
                                .unwrap();
                            counters.opened();
                            let (counters, handler) = (counters.clone(), handler.clone());
                            thread::spawn(move || {
                                let mut stream = stream;
                                handler(&mut stream);
                                // Count the close before the socket closes: once our FIN is out, the
                                // proxy may hand the freed slot to the next client at once.
                                counters.closed();
                                drop(stream);
                            });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        }
        Self {
            port,
            counters,
            stop,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag and closes the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Accept queue length of the test backends.
const BACKLOG: i32 = 4096;

/// Echoes every byte back; on the client's FIN it finishes echoing and closes.
pub struct EchoBackend {
    server: Server,
}

impl EchoBackend {
    pub fn start() -> Self {
        Self {
            server: Server::start(|stream| {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = stream.shutdown(Shutdown::Write);
            }),
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    pub fn counters(&self) -> &Counters {
        &self.server.counters
    }
}

/// Writes its name on connect, then holds the connection until the client closes (or for `hold`), so
/// tests can count concurrency at the backend.
pub struct NamedBackend {
    server: Server,
    pub name: String,
}

impl NamedBackend {
    pub fn start(name: &str) -> Self {
        let label = format!("{name}\n");
        Self {
            server: Server::start(move |stream| {
                if stream.write_all(label.as_bytes()).is_err() {
                    return;
                }
                // Hold until the client closes; the tests decide how long a connection lives.
                let mut buf = [0u8; 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            }),
            name: name.to_string(),
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    pub fn counters(&self) -> &Counters {
        &self.server.counters
    }
}

/// Reads the backend name a [`NamedBackend`] greets with.
pub fn read_name(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte)? {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed before the name",
                ));
            }
            _ if byte[0] == b'\n' => break,
            _ => name.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&name).into_owned())
}

/// Runs a test's own `handler` on every accepted connection (on its own thread): for backends that
/// misbehave on purpose (flood, reset, half-close).
pub struct ScriptedBackend {
    server: Server,
}

impl ScriptedBackend {
    pub fn start(handler: impl Fn(&mut TcpStream) + Send + Sync + 'static) -> Self {
        Self {
            server: Server::start(handler),
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    pub fn counters(&self) -> &Counters {
        &self.server.counters
    }
}
