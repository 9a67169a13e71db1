//! The HTTP path of a worker turned by hand: a table with an HTTP listener is applied, a real client
//! connects to it, and small backends on threads answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ringway_shared::{Snapshot, Timeouts};

use crate::http::router::{PathMatch, RouteSpec};
use crate::routing::http::{self as routes, HttpLimits};
use crate::routing::{ClusterRoute, ListenerKind, ListenerRoute, ListenerSockets, RoutingTable};
use crate::worker::forward::ForwardMode;
use crate::worker::tests::{TestWorker, route};

/// A keep-alive backend answering every request head with its name; counts connections.
fn backend(name: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
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
            });
        }
    });
    (address, accepted)
}

/// Applies a table with one HTTP listener routing `specs` to `clusters`; returns its address.
fn install(
    t: &mut TestWorker,
    clusters: Vec<Arc<ClusterRoute>>,
    specs: Vec<RouteSpec>,
) -> SocketAddr {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let sockets = Arc::new(ListenerSockets::bind(address, 1).unwrap());
    let http = routes::build(address, HttpLimits::default(), specs).unwrap();
    let snapshot = Snapshot::empty();
    let table = RoutingTable {
        version: 1,
        hash: 0,
        snapshot: Arc::new(snapshot),
        listeners: vec![ListenerRoute {
            name: "http".into(),
            address,
            kind: ListenerKind::Http(Box::new(http)),
            sockets,
        }],
        clusters,
        retired: Vec::new(),
        failed: Vec::new(),
    };
    t.worker.apply_table(Arc::new(table));
    address
}

/// Turns the worker until `client` has a complete response (by `Content-Length`); returns its status
/// line and body.
fn response(t: &mut TestWorker, client: &mut TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut done = None;
    t.turn_until("a complete response", |_| {
        if let Ok(n) = client.read(&mut chunk) {
            got.extend_from_slice(&chunk[..n]);
        }
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        if got.len() < end + 4 + length {
            return false;
        }
        let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]).to_string();
        done = Some((head.lines().next().unwrap_or("").to_string(), body));
        true
    });
    done.unwrap()
}

#[test]
fn requests_on_one_connection_are_routed_by_host_and_reuse_pooled_backend_connections() {
    let (a, a_conns) = backend("alpha");
    let (b, b_conns) = backend("beta");
    let clusters = vec![
        route(&[a], 100, Timeouts::default()),
        route(&[b], 100, Timeouts::default()),
    ];
    let specs = vec![
        RouteSpec::new("a", &["a.test"], &[], PathMatch::Prefix, 0),
        RouteSpec::new("b", &["*.b.test"], &[], PathMatch::Prefix, 1),
    ];
    let mut t = TestWorker::new(ForwardMode::PollSplice);
    let address = install(&mut t, clusters, specs);
    let mut client = TcpStream::connect(address).unwrap();
    client.set_nonblocking(true).unwrap();
    for (host, expected) in [
        ("a.test", "alpha"),
        ("x.b.test", "beta"),
        ("A.TEST:80", "alpha"),
        ("y.z.b.test", "beta"),
    ] {
        client
            .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .unwrap();
        let (status, body) = response(&mut t, &mut client);
        assert_eq!(status, "HTTP/1.1 200 OK", "{host}");
        assert_eq!(body, expected, "{host}");
    }
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")
        .unwrap();
    let (status, _) = response(&mut t, &mut client);
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(
        a_conns.load(Ordering::SeqCst),
        1,
        "the second request to alpha reused the pooled connection"
    );
    assert_eq!(b_conns.load(Ordering::SeqCst), 1);
    assert_eq!(t.worker.stats.http_requests.get(), 5);
    drop(client);
    t.turn_until("the session ends", |w| w.http.sessions.is_empty());
}
