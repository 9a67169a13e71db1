//! The HTTP path of a worker turned by hand: a table with an HTTP listener is applied, a real client
//! connects to it, and small backends on threads answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ringway_shared::{Snapshot, Timeouts};

use crate::http::router::{PathMatch, RouteSpec};
use crate::routing::http::{self as routes, HttpLimits};
use crate::routing::{ClusterRoute, ListenerKind, ListenerRoute, ListenerSockets, RoutingTable};
use crate::worker::forward::ForwardMode;
use crate::worker::tests::{TestWorker, route};

mod backends;

use backends::{
    backend, echo_backend, forgetful_backend, one_shot_backend, upgrading_backend, watched_backend,
};

/// Applies a table with one HTTP listener routing `specs` to `clusters`; returns its address.
fn install(
    t: &mut TestWorker,
    clusters: Vec<Arc<ClusterRoute>>,
    specs: Vec<RouteSpec>,
) -> SocketAddr {
    install_with(t, clusters, specs, HttpLimits::default())
}

fn install_with(
    t: &mut TestWorker,
    clusters: Vec<Arc<ClusterRoute>>,
    specs: Vec<RouteSpec>,
    limits: HttpLimits,
) -> SocketAddr {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let sockets = Arc::new(ListenerSockets::bind(address, 1).unwrap());
    let http = routes::build(address, limits, specs).unwrap();
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

/// A worker with one HTTP listener whose catch-all route `name` goes to a cluster of `backend`
/// (`maxconn` 100, default timeouts), and a non-blocking client connected to it.
fn one_route(name: &str, backend: SocketAddr) -> (TestWorker, TcpStream) {
    let clusters = vec![route(&[backend], 100, Timeouts::default())];
    let specs = vec![RouteSpec::new(name, &[], &[], PathMatch::Prefix, 0)];
    let mut t = TestWorker::new(ForwardMode::PollSplice);
    let address = install(&mut t, clusters, specs);
    let client = TcpStream::connect(address).unwrap();
    client.set_nonblocking(true).unwrap();
    (t, client)
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
    let alpha = &t.worker.table.clusters[0];
    assert_eq!(
        alpha.slot.http().classes(),
        [0, 2, 0, 0, 0],
        "counted per service"
    );
    assert_eq!(
        alpha.backends[0].slot.http().classes(),
        [0, 2, 0, 0, 0],
        "and per backend"
    );
    assert_eq!(
        t.worker.stats.http_unrouted.classes(),
        [0, 0, 0, 1, 0],
        "the 404 has no service"
    );
    assert_eq!(t.worker.stats.http_reused.get(), 2);
    assert_eq!(
        t.worker.http.pooled, 2,
        "one idle connection to each backend"
    );
    drop(client);
    t.turn_until("the session ends", |w| w.http.sessions.is_empty());
}

/// Reads exactly `n` bytes from a non-blocking client, turning the worker meanwhile.
fn read_exact(t: &mut TestWorker, client: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let what = format!("{n} bytes arrive");
    t.turn_until(&what, |_| {
        if let Ok(k) = client.read(&mut chunk) {
            got.extend_from_slice(&chunk[..k]);
        }
        got.len() >= n
    });
    got
}

#[test]
fn an_upgraded_connection_becomes_a_tunnel_with_the_lease_and_echoes_both_ways() {
    let backend = upgrading_backend();
    let (mut t, mut client) = one_route("ws", backend);
    client
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap();
    let head = b"HTTP/1.1 101 Switching Protocols\r\n";
    let got = read_exact(&mut t, &mut client, head.len());
    assert_eq!(&got[..head.len()], head);
    t.turn_until("the session became a tunnel", |w| {
        w.http.sessions.is_empty() && w.conns.len() == 1
    });
    let route = &t.worker.table.clusters[0];
    assert_eq!(
        route.backends[0].slot.active(),
        1,
        "the tunnel holds the lease"
    );
    assert_eq!(got.len(), 77, "nothing after the 101 head yet");
    for round in 0..3u8 {
        let message = vec![b'a' + round; 10_000];
        client.write_all(&message).unwrap_or_else(|_| {
            // Non-blocking: write what fits, turning the worker.
            panic!("the test's message should fit the socket buffers")
        });
        let echoed = read_exact(&mut t, &mut client, message.len());
        assert_eq!(echoed, message, "round {round}");
    }
    drop(client);
    t.turn_until("the tunnel ends", |w| w.conns.is_empty());
    assert_eq!(
        t.worker.table.clusters[0].backends[0].slot.active(),
        0,
        "and its lease went back"
    );
}

#[test]
fn a_refused_connect_is_502_and_no_backend_is_503() {
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let clusters = vec![
        route(&[refused], 100, Timeouts::default()),
        route(&[], 100, Timeouts::default()),
    ];
    let specs = vec![
        RouteSpec::new("down", &[], &["/down"], PathMatch::Prefix, 0),
        RouteSpec::new("empty", &[], &["/empty"], PathMatch::Prefix, 1),
    ];
    let mut t = TestWorker::new(ForwardMode::PollSplice);
    let address = install(&mut t, clusters, specs);
    for (path, expected) in [
        ("/down", "HTTP/1.1 502 Bad Gateway"),
        ("/empty", "HTTP/1.1 503 Service Unavailable"),
    ] {
        let mut client = TcpStream::connect(address).unwrap();
        client.set_nonblocking(true).unwrap();
        client
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let (status, _) = response(&mut t, &mut client);
        assert_eq!(status, expected);
    }
    t.turn_until("every session ends", |w| w.http.is_empty());
    assert_eq!(t.worker.table.clusters[0].backends[0].slot.active(), 0);
}

/// Writes `request` to a non-blocking client while reading, turning the worker, until `expect` bytes
/// came back.
fn exchange(t: &mut TestWorker, client: &mut TcpStream, request: &[u8], expect: usize) -> Vec<u8> {
    let mut sent = 0;
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    t.turn_until("the exchange completes", |_| {
        if sent < request.len()
            && let Ok(n) = client.write(&request[sent..])
        {
            sent += n;
        }
        while let Ok(n) = client.read(&mut chunk) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        got.len() >= expect
    });
    got
}

#[test]
fn a_large_body_is_spliced_both_ways_byte_exact_and_the_connection_stays_usable() {
    const BODY: usize = 8 << 20;
    let backend = echo_backend();
    let (mut t, mut client) = one_route("echo", backend);
    let body: Vec<u8> = (0..BODY).map(|i| (i * 7 % 251) as u8).collect();
    let mut request =
        format!("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
    request.extend_from_slice(&body);
    // A pipelined request right after the body must not be swallowed by the splice.
    request.extend_from_slice(b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
    let second = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    let got = exchange(
        &mut t,
        &mut client,
        &request,
        head.len() + BODY + second.len(),
    );
    assert_eq!(&got[..head.len()], head.as_bytes());
    assert!(
        got[head.len()..head.len() + BODY] == body[..],
        "the body came back byte-exact"
    );
    assert_eq!(&got[head.len() + BODY..], second.as_bytes());
    assert!(
        t.worker.pools.pipes.idle() >= 1,
        "the body moved through a pipe, given back after"
    );
}

#[test]
fn a_pooled_connection_the_backend_closed_is_not_used_again() {
    let (backend, accepted) = one_shot_backend();
    let (mut t, mut client) = one_route("s", backend);
    for round in 1..=3 {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (status, body) = response(&mut t, &mut client);
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("HTTP/1.1 200 OK", "ok"),
            "round {round}"
        );
        t.turn_until("the closed pooled connection is discarded", |w| {
            w.http.backends.is_empty()
        });
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn a_slow_request_head_gets_408_and_an_idle_connection_closes_silently() {
    let (backend, _) = backend("alpha");
    let clusters = vec![route(&[backend], 100, Timeouts::default())];
    let specs = vec![RouteSpec::new("s", &[], &[], PathMatch::Prefix, 0)];
    let limits = HttpLimits {
        request_head_ms: 200,
        keepalive_ms: 200,
        ..HttpLimits::default()
    };
    let mut t = TestWorker::new(ForwardMode::PollSplice);
    let address = install_with(&mut t, clusters, specs, limits);
    let mut slow = TcpStream::connect(address).unwrap();
    slow.set_nonblocking(true).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
        .unwrap();
    let (status, _) = response(&mut t, &mut slow);
    assert_eq!(status, "HTTP/1.1 408 Request Timeout");
    let mut idle = TcpStream::connect(address).unwrap();
    idle.set_nonblocking(true).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    response(&mut t, &mut idle);
    let mut byte = [0u8; 1];
    t.turn_until("the idle keep-alive connection is closed", |_| {
        matches!(idle.read(&mut byte), Ok(0))
    });
    t.turn_until("every session ends", |w| w.http.sessions.is_empty());
}

#[test]
fn a_request_waits_for_a_free_backend_slot_and_gets_503_after_the_queue_timeout() {
    let (backend, _) = backend("alpha");
    let timeouts = Timeouts {
        queue_ms: 300,
        ..Timeouts::default()
    };
    let clusters = vec![route(&[backend], 1, timeouts)];
    let specs = vec![RouteSpec::new("s", &[], &[], PathMatch::Prefix, 0)];
    let mut t = TestWorker::new(ForwardMode::PollSplice);
    let address = install(&mut t, clusters, specs);
    let route = Arc::clone(&t.worker.table.clusters[0]);
    let held = crate::routing::Lease::acquire(&route.slot, &route.backends[0].slot).unwrap();
    let mut client = TcpStream::connect(address).unwrap();
    client.set_nonblocking(true).unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    t.turn_until("the request is queued", |_| route.slot.waiters() == 1);
    drop(held);
    // A worker's release wakes the waiting workers through their eventfds; this one is turned by hand.
    t.worker.queue_dirty = true;
    let (status, body) = response(&mut t, &mut client);
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "alpha")
    );
    assert_eq!(route.slot.waiters(), 0);
    assert_eq!(
        route.slot.active(),
        0,
        "the request's lease ended with its response"
    );

    let _held = crate::routing::Lease::acquire(&route.slot, &route.backends[0].slot).unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (status, _) = response(&mut t, &mut client);
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(route.slot.waiters(), 0, "it left the queue exactly once");
}

#[test]
fn draining_closes_idle_keep_alive_sessions_and_pooled_connections_at_once() {
    let (backend, _) = backend("alpha");
    let (mut t, mut client) = one_route("s", backend);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    response(&mut t, &mut client);
    assert_eq!(t.worker.http.backends.len(), 1, "pooled");
    assert_eq!(t.worker.http.pooled, 1);
    t.worker.begin_drain();
    let mut byte = [0u8; 1];
    t.turn_until("the idle session and the pooled connection close", |w| {
        w.http.is_empty() && matches!(client.read(&mut byte), Ok(0))
    });
    assert_eq!(t.worker.http.pooled, 0);
}

/// Everything `client` receives until the worker closes it (EOF), turning the worker meanwhile.
fn read_to_eof(t: &mut TestWorker, client: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    t.turn_until("the client connection is closed", |_| {
        match client.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                got.extend_from_slice(&chunk[..n]);
                false
            }
            Err(_) => false,
        }
    });
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_response_in_flight_when_draining_starts_says_connection_close_and_then_the_connection_closes()
{
    let backend = echo_backend();
    let (mut t, mut client) = one_route("s", backend);
    // The echo backend answers once it has the whole body: the request is in flight until then.
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel")
        .unwrap();
    t.turn_until("the request goes to its backend", |w| {
        w.http.backends.len() == 1
    });
    t.worker.begin_drain();
    client.write_all(b"lo").unwrap();
    let got = read_to_eof(&mut t, &mut client);
    let (head, body) = got.split_once("\r\n\r\n").expect("a whole response head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{got:?}");
    assert!(
        head.to_ascii_lowercase()
            .lines()
            .any(|l| l == "connection: close"),
        "the client is told the connection closes: {got:?}"
    );
    assert_eq!(body, "hello", "the whole response, then EOF");
    t.turn_until("the session and its backend connection end", |w| {
        w.http.is_empty()
    });
}

/// A table without listeners whose clusters are `clusters` (the HTTP listener stops; open sessions
/// go on).
fn clusters_only(version: u64, clusters: Vec<Arc<ClusterRoute>>) -> Arc<RoutingTable> {
    Arc::new(RoutingTable {
        version,
        hash: 0,
        snapshot: Arc::new(Snapshot::empty()),
        listeners: Vec::new(),
        clusters,
        retired: Vec::new(),
        failed: Vec::new(),
    })
}

#[test]
fn pooled_connections_to_a_backend_the_snapshot_removed_close_at_once_and_a_moved_one_keeps_its_pool()
 {
    let (kept, _, kept_ended) = watched_backend("kept");
    let (moved, _, moved_ended) = watched_backend("moved");
    let clusters = vec![
        route(&[kept], 100, Timeouts::default()),
        route(&[moved], 100, Timeouts::default()),
    ];
    let specs = vec![
        RouteSpec::new("k", &[], &["/k"], PathMatch::Prefix, 0),
        RouteSpec::new("m", &[], &["/m"], PathMatch::Prefix, 1),
    ];
    let mut t = TestWorker::new(ForwardMode::PollSplice);
    let address = install(&mut t, clusters, specs);
    let mut client = TcpStream::connect(address).unwrap();
    client.set_nonblocking(true).unwrap();
    for path in ["/k", "/m"] {
        client
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(response(&mut t, &mut client).0, "HTTP/1.1 200 OK");
    }
    assert_eq!(
        t.worker.http.pooled, 2,
        "one idle connection to each backend"
    );

    // `moved` leaves its cluster but is still a backend of another one: its pool stays.
    let other = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let kept_route = Arc::clone(&t.worker.table.clusters[0]);
    let table = clusters_only(
        2,
        vec![
            kept_route,
            route(&[other], 100, Timeouts::default()),
            route(&[moved], 100, Timeouts::default()),
        ],
    );
    t.worker.apply_table(table);
    for _ in 0..20 {
        t.worker.turn(&mut Vec::new()).unwrap();
    }
    assert_eq!(t.worker.http.pooled, 2);
    assert_eq!(moved_ended.load(Ordering::SeqCst), 0);

    // Now `moved` is gone from every cluster: its pooled connection closes long before the pool's
    // idle timeout (15 s; `turn_until` gives up after 10 s), `kept`'s stays.
    let kept_route = Arc::clone(&t.worker.table.clusters[0]);
    t.worker.apply_table(clusters_only(3, vec![kept_route]));
    t.turn_until("the backend sees its pooled connection closed", |_| {
        moved_ended.load(Ordering::SeqCst) == 1
    });
    assert_eq!(t.worker.http.pooled, 1);
    assert_eq!(kept_ended.load(Ordering::SeqCst), 0);
}

#[test]
fn a_request_that_fails_on_a_reused_connection_before_any_answer_is_retried_on_a_fresh_one() {
    let (backend, accepted) = forgetful_backend();
    let (mut t, mut client) = one_route("s", backend);
    for round in 1..=3 {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (status, body) = response(&mut t, &mut client);
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("HTTP/1.1 200 OK", "ok"),
            "round {round}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "rounds 2 and 3 failed on the pooled connection and went to a fresh one"
    );
    assert_eq!(t.worker.stats.http_reused.get(), 2);
}
