//! A minimal HTTP/1.1 server for the test doubles (std threads, one per connection, keep-alive), optionally
//! behind TLS (rustls, with a certificate from [`crate::tls::TestCa`]), and a minimal blocking client for
//! the tests' own writes (etcd keys). Only what the doubles need: request line, headers, `Content-Length`
//! bodies; responses with a length, or a raw stream the handler writes itself. The server counts its open
//! connections, so a test can assert how many a client holds at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// How often idle connection threads look at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// One request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path with query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// Every value of header `name` (case-insensitive).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The value of query parameter `name`; `Some("")` for a bare `?name`.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| v.to_string())
        })
    }
}

/// What a handler answers.
pub enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// The handler takes the connection and writes the whole response itself.
    Stream(Box<dyn FnOnce(Stream) + Send>),
}

/// A connection handed to a [`Reply::Stream`] handler: plain or TLS, written as one byte stream; it counts
/// as open until dropped.
pub struct Stream {
    transport: Transport,
    socket: TcpStream,
    _open: OpenGuard,
}

impl Stream {
    /// Cuts the connection both ways, as a dying server would.
    pub fn shutdown(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.transport.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.transport.flush()
    }
}

/// The bytes of one connection: the socket, or TLS over it.
enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// Counts a connection as open while it lives.
struct OpenGuard(Arc<Counters>);

impl OpenGuard {
    fn new(counters: &Arc<Counters>) -> Self {
        let open = counters.open.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_open.fetch_max(open, Ordering::SeqCst);
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(counters))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Counters {
    open: AtomicUsize,
    max_open: AtomicUsize,
    accepted: AtomicUsize,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Reply::Full {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl ToString) -> Self {
        if let Reply::Full { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }
}

/// The handler type.
pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A server on a free loopback port; stops accepting when dropped.
pub struct HttpServer {
    port: u16,
    stop: Arc<AtomicBool>,
    tls: bool,
    counters: Arc<Counters>,
}

impl HttpServer {
    pub fn start(handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self::serve(listener, handler, None)
    }

    /// Serves on `port` (to bring a double back where it was).
    pub fn start_on(port: u16, handler: Handler) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        Self::serve(listener, handler, None)
    }

    /// Serves HTTPS with `tls` on a free port.
    pub fn start_tls(handler: Handler, tls: Arc<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self::serve(listener, handler, Some(tls))
    }

    fn serve(
        listener: TcpListener,
        handler: Handler,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let stopping = Arc::clone(&stop);
        let is_tls = tls.is_some();
        let counting = Arc::clone(&counters);
        thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let open = OpenGuard::new(&counting);
                        let (handler, stopping, tls) =
                            (Arc::clone(&handler), Arc::clone(&stopping), tls.clone());
                        thread::spawn(move || connection(stream, tls, open, &handler, &stopping));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            port,
            stop,
            tls: is_tls,
            counters,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, or `https://` when serving TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Stops accepting and answering, as a dead process would (dropping does the same).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// The most connections that were open at the same time.
    pub fn max_open_connections(&self) -> usize {
        self.counters.max_open.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted_connections(&self) -> usize {
        self.counters.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn connection(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    open: OpenGuard,
    handler: &Handler,
    stop: &AtomicBool,
) {
    stream.set_nonblocking(false).unwrap();
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(POLL)).unwrap();
    let socket = stream.try_clone().unwrap();
    let transport = match tls {
        None => Transport::Plain(stream),
        Some(config) => {
            let Ok(session) = rustls::ServerConnection::new(config) else {
                return;
            };
            Transport::Tls(Box::new(rustls::StreamOwned::new(session, stream)))
        }
    };
    let mut reader = BufReader::new(transport);
    loop {
        let request = match read_request(&mut reader, stop) {
            Some(request) => request,
            None => return,
        };
        if stop.load(Ordering::SeqCst) {
            // A stopped server is a dead process: kept-alive connections get no answer either.
            let _ = socket.shutdown(Shutdown::Both);
            return;
        }
        match handler(&request) {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
                for (k, v) in &headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                // One write: a head and a body in two small segments would meet Nagle and the client's
                // delayed ACK, and every answer would take 40 ms longer than a real server's.
                let mut response = head.into_bytes();
                response.extend_from_slice(&body);
                let writer = reader.get_mut();
                if writer
                    .write_all(&response)
                    .and_then(|()| writer.flush())
                    .is_err()
                {
                    return;
                }
            }
            Reply::Stream(write) => {
                socket.set_read_timeout(None).unwrap();
                write(Stream {
                    transport: reader.into_inner(),
                    socket,
                    _open: open,
                });
                return;
            }
        }
        if stop.load(Ordering::SeqCst) {
            let _ = socket.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Reads one request; `None` on end of stream, garbage, or stop.
fn read_request(reader: &mut BufReader<Transport>, stop: &AtomicBool) -> Option<Request> {
    let mut line = String::new();
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (k, v) = header.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Other",
    }
}

/// A response read by [`request`].
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One blocking request to 127.0.0.1:`port` with `Connection: close`; bounded by a 10 s timeout.
pub fn request(
    port: u16,
    method: &str,
    target: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = crate::net::connect(port)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    }) {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}
