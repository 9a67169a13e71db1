//! HTTP routing end to end: a real dataplane gets snapshots with HTTP listeners and routes from a
//! scripted controlplane, real backends on loopback answer (the project's HTTP test backend: keep-alive,
//! pipelining, chunked and streamed bodies, `Upgrade`), and a raw-socket client checks what a user
//! would: routing by host, wildcard and path on one keep-alive connection, route changes on an open
//! connection, backend reuse, bodies byte-exact both ways, pipelining, the upgrade tunnel, the
//! proxy's own answers (400, 404, 408, 431, 502, 503), 5,000 virtual hosts on one listener, and a real
//! nginx backend restarted under keep-alive load without a single error reaching a client.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringway_shared::HttpListener;
use ringway_tests::http_backend::HttpBackend;
use ringway_tests::http_client::HttpClient;
use ringway_tests::http_proxy::{Proxy, RouteSpec, snapshot};
use ringway_tests::net::{free_port, local};

#[test]
fn requests_are_routed_by_host_wildcard_and_longest_prefix_and_route_changes_apply_on_open_connections()
 {
    let (shop, wild, api) = (
        HttpBackend::start("shop"),
        HttpBackend::start("wild"),
        HttpBackend::start("api"),
    );
    let mut proxy = Proxy::start();
    let routes: &[RouteSpec<'_>] = &[
        ("shop", &["shop.test"], &[], "shop"),
        ("wild", &["*.wild.test"], &[], "wild"),
        ("api", &["shop.test"], &["/api"], "api"),
        ("v2", &["shop.test"], &["/api/v2"], "wild"),
    ];
    let clusters: &[(&str, &[u16])] = &[
        ("shop", &[shop.port()]),
        ("wild", &[wild.port()]),
        ("api", &[api.port()]),
    ];
    proxy.apply(snapshot(
        1,
        proxy.address,
        HttpListener::default(),
        routes,
        clusters,
    ));

    let mut client = HttpClient::connect(proxy.address);
    for (host, path, expected) in [
        ("shop.test", "/", "shop GET / host=shop.test"),
        ("a.wild.test", "/x", "wild GET /x host=a.wild.test"),
        (
            "SHOP.test:80",
            "/api/v2/items?q=1",
            "wild GET /api/v2/items?q=1 host=SHOP.test:80",
        ),
        ("shop.test", "/api/v1", "api GET /api/v1 host=shop.test"),
        ("a.b.wild.test", "/", "wild GET / host=a.b.wild.test"),
        ("shop.test", "/apiary", "api GET /apiary host=shop.test"),
    ] {
        let response = client.get(host, path);
        assert_eq!(response.status, 200, "{host}{path}");
        assert_eq!(response.text().trim_end(), expected, "{host}{path}");
    }
    let missing = client.get("wild.test", "/");
    assert_eq!(
        missing.status, 404,
        "a wildcard does not match its own domain"
    );
    assert_eq!(
        client.get("shop.test", "/").status,
        200,
        "the connection stays open after a 404"
    );

    // The same connection: the next request follows the new routes.
    let moved: &[RouteSpec<'_>] = &[("shop", &["shop.test"], &[], "wild")];
    proxy.apply(snapshot(
        2,
        proxy.address,
        HttpListener::default(),
        moved,
        clusters,
    ));
    let response = client.get("shop.test", "/after");
    assert_eq!(response.text().trim_end(), "wild GET /after host=shop.test");

    assert_eq!(shop.requests(), 2);
    assert_eq!(
        shop.counters().accepted(),
        1,
        "both requests to shop on one pooled backend connection"
    );
    assert_eq!(wild.requests(), 4);
    assert_eq!(wild.counters().accepted(), 1);

    // Seen from outside: requests per service and backend by status class, the 404 as unrouted.
    let admin = proxy.dataplane.admin_address();
    let stats = ringway_tests::http::stats(admin);
    let service = ringway_tests::http::find_service(&stats, "shop").unwrap();
    assert_eq!(service["http"]["status"]["2xx"], 2, "{service}");
    assert_eq!(
        service["backends"][0]["http"]["status"]["2xx"], 2,
        "{service}"
    );
    let unrouted: u64 = stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w["http_unrouted"]["errors"]["not_found"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(unrouted, 1);
    let (_, metrics) = ringway_tests::http::get(admin, "/metrics").unwrap();
    assert!(
        metrics.contains("ringway_service_http_requests_total{class=\"2xx\",service=\"shop\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ringway_http_request_duration_seconds_count{service=\"shop\"} 2"),
        "{metrics}"
    );
}

/// Writes `request` on a new connection and reads until the proxy closes it; the bytes received.
fn one_shot(address: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut got).unwrap();
    got
}

#[test]
fn the_access_log_has_one_json_line_per_request_routed_or_not() {
    let shop = HttpBackend::start("shop");
    let mut proxy = Proxy::start_with(&["--access-log"]);
    let routes: &[RouteSpec<'_>] = &[("shop", &["shop.test"], &["/cart"], "shop")];
    let clusters: &[(&str, &[u16])] = &[("shop", &[shop.port()])];
    proxy.apply(snapshot(
        1,
        proxy.address,
        HttpListener::default(),
        routes,
        clusters,
    ));
    let routed = b"POST /cart/items?id=3 HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\nContent-Length: 11\r\n\r\nhello world";
    let answer = one_shot(proxy.address, routed);
    assert!(answer.starts_with(b"HTTP/1.1 200 "), "{answer:?}");
    let unknown = b"GET /x?y HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n";
    let refused = one_shot(proxy.address, unknown);
    assert!(refused.starts_with(b"HTTP/1.1 404 "), "{refused:?}");

    let mut lines = Vec::new();
    let logged = ringway_tests::wait_until(Duration::from_secs(10), || {
        lines = proxy.dataplane.proc.events("request");
        lines.len() >= 2
    });
    assert!(logged, "two request lines in the access log: {lines:?}");
    assert_eq!(lines.len(), 2, "one line per request: {lines:?}");
    let field = |line: &serde_json::Value, name: &str| line["fields"][name].clone();
    let (first, second) = if field(&lines[0], "status") == 200 {
        (&lines[0], &lines[1])
    } else {
        (&lines[1], &lines[0])
    };
    for (line, expected) in [
        (
            first,
            serde_json::json!({
                "service": "shop", "backend": local(shop.port()).to_string(), "method": "POST",
                "host": "shop.test", "path": "/cart/items", "status": 200, "from": "backend",
                "bytes_in": routed.len(), "body_in": 11, "bytes_out": answer.len(),
            }),
        ),
        (
            second,
            serde_json::json!({
                "service": "-", "backend": "-", "method": "GET", "host": "nowhere.test",
                "path": "/x", "status": 404, "from": "proxy", "bytes_in": unknown.len(),
                "body_in": 0, "bytes_out": refused.len(),
            }),
        ),
    ] {
        assert_eq!(line["target"], "ringway::access", "{line}");
        for (name, value) in expected.as_object().unwrap() {
            assert_eq!(&field(line, name), value, "{name} in {line}");
        }
        let client = field(line, "client");
        assert!(
            client.as_str().is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{line}"
        );
        assert!(field(line, "duration_ms").is_u64(), "{line}");
    }
}

#[test]
fn bodies_pipelining_and_upgrades_pass_through_byte_exact() {
    let echo = HttpBackend::start("echo");
    let mut proxy = Proxy::start();
    let routes: &[RouteSpec<'_>] = &[("echo", &[], &[], "echo")];
    let clusters: &[(&str, &[u16])] = &[("echo", &[echo.port()])];
    proxy.apply(snapshot(
        1,
        proxy.address,
        HttpListener::default(),
        routes,
        clusters,
    ));

    // Pipelining: three requests in one write, three answers in order.
    let mut client = HttpClient::connect(proxy.address);
    client.send(
        b"GET /1 HTTP/1.1\r\nHost: p\r\n\r\nGET /2 HTTP/1.1\r\nHost: p\r\n\r\nGET /3 HTTP/1.1\r\nHost: p\r\n\r\n",
    );
    for i in 1..=3 {
        let response = client.response().unwrap();
        assert_eq!(response.text().trim_end(), format!("echo GET /{i} host=p"));
    }

    // Chunked both ways.
    let chunks: Vec<Vec<u8>> = (0..64u32)
        .map(|i| (0..(1000 + i * 977)).map(|j| (i + j) as u8).collect())
        .collect();
    let mut request =
        b"POST /chunked HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in &chunks {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    client.send(&request);
    let response = client.response().unwrap();
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert!(
        response.body == chunks.concat(),
        "the chunked body came back byte-exact"
    );

    // 100 MiB with Content-Length both ways (the body moves with splice), written from a thread while
    // the response streams back.
    const BIG: usize = 100 << 20;
    let pattern: Arc<Vec<u8>> = Arc::new((0..BIG).map(|i| (i % 253) as u8).collect());
    let mut big = HttpClient::connect(proxy.address);
    let mut writer = big.stream().try_clone().unwrap();
    let body = Arc::clone(&pattern);
    let sender = std::thread::spawn(move || {
        writer
            .write_all(
                format!("PUT /big HTTP/1.1\r\nHost: p\r\nContent-Length: {BIG}\r\n\r\n").as_bytes(),
            )
            .unwrap();
        writer.write_all(&body).unwrap();
    });
    let response = big.response().unwrap();
    sender.join().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), BIG);
    assert!(response.body == *pattern, "100 MiB came back byte-exact");

    // Upgrade: the 101, then raw bytes both ways.
    let mut ws = HttpClient::connect(proxy.address);
    ws.send(b"GET /chat HTTP/1.1\r\nHost: p\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let switching = ws.response().unwrap();
    assert_eq!(switching.status, 101);
    for message in [
        &b"hello"[..],
        &[0u8, 1, 2, 255, 13, 10][..],
        &vec![7u8; 200_000][..],
    ] {
        ws.send(message);
        assert_eq!(ws.raw(message.len()).unwrap(), message);
    }
}

#[test]
fn malformed_slow_and_unservable_requests_get_the_proxys_answers() {
    let backend = HttpBackend::start("b");
    let refused = free_port();
    let mut proxy = Proxy::start();
    let routes: &[RouteSpec<'_>] = &[
        ("ok", &[], &["/"], "ok"),
        ("refused", &[], &["/refused"], "refused"),
        ("empty", &[], &["/empty"], "empty"),
    ];
    let clusters: &[(&str, &[u16])] = &[
        ("ok", &[backend.port()]),
        ("refused", &[refused]),
        ("empty", &[]),
    ];
    let limits = HttpListener {
        max_header_bytes: 2048,
        request_head_ms: 500,
        ..HttpListener::default()
    };
    proxy.apply(snapshot(1, proxy.address, limits, routes, clusters));

    // Smuggling: Content-Length and Transfer-Encoding together.
    let mut client = HttpClient::connect(proxy.address);
    client.send(b"POST / HTTP/1.1\r\nHost: s\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(client.response().unwrap().status, 400);
    assert!(client.closed(), "the connection closes after a 400");
    assert_eq!(
        backend.requests(),
        0,
        "the ambiguous request never reached the backend"
    );

    // An oversized head.
    let mut client = HttpClient::connect(proxy.address);
    client.send(
        format!(
            "GET / HTTP/1.1\r\nHost: s\r\nX-Big: {}\r\n\r\n",
            "a".repeat(4096)
        )
        .as_bytes(),
    );
    assert_eq!(client.response().unwrap().status, 431);

    // Slowloris: a head that never ends.
    let mut client = HttpClient::connect(proxy.address);
    client.send(b"GET / HTTP/1.1\r\nHost: s\r\n");
    let started = std::time::Instant::now();
    assert_eq!(client.response().unwrap().status, 408);
    assert!(started.elapsed() < Duration::from_secs(10));

    // No backend listening, and no backend at all.
    let mut client = HttpClient::connect(proxy.address);
    assert_eq!(client.get("s", "/refused").status, 502);
    let mut client = HttpClient::connect(proxy.address);
    assert_eq!(client.get("s", "/empty").status, 503);
    assert_eq!(
        client.get("s", "/").status,
        200,
        "a 503 keeps the connection"
    );
    assert_eq!(backend.requests(), 1);
}

#[test]
fn five_thousand_virtual_hosts_on_one_listener_each_reach_their_own_service() {
    const HOSTS: usize = 5_000;
    let (even, odd) = (HttpBackend::start("even"), HttpBackend::start("odd"));
    let mut proxy = Proxy::start();
    let names: Vec<String> = (0..HOSTS).map(|i| format!("vhost-{i:04}")).collect();
    let hosts: Vec<[&str; 1]> = names.iter().map(|n| [n.as_str()]).collect();
    let routes: Vec<RouteSpec<'_>> = names
        .iter()
        .zip(&hosts)
        .map(|(name, host)| (name.as_str(), &host[..], &[][..], name.as_str()))
        .collect();
    let ports = [[even.port()], [odd.port()]];
    let clusters: Vec<(&str, &[u16])> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (name.as_str(), &ports[i % 2][..]))
        .collect();
    proxy.apply(snapshot(
        1,
        proxy.address,
        HttpListener::default(),
        &routes,
        &clusters,
    ));

    let mut client = HttpClient::connect(proxy.address);
    for i in (0..HOSTS).step_by(333).chain([HOSTS - 1]) {
        let host = &names[i];
        let served_by = if i % 2 == 0 { "even" } else { "odd" };
        let response = client.get(host, "/");
        assert_eq!(response.status, 200, "{host}");
        assert_eq!(
            response.text().trim_end(),
            format!("{served_by} GET / host={host}")
        );
    }
    assert_eq!(client.get("vhost-5000", "/").status, 404);
}

/// What each client thread saw: answers by backend name, and anything that was not a 200.
#[derive(Default)]
struct Seen {
    by_backend: std::collections::HashMap<String, usize>,
    failures: Vec<String>,
}

#[test]
fn a_backend_restart_under_keep_alive_load_costs_clients_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const CLIENTS: usize = 4;
    const MAX_REQUESTS_PER_CLIENT: usize = 50_000;
    const PHASE_REQUESTS: usize = 400;
    let limit = Duration::from_secs(60);

    let dir = tempfile::tempdir().unwrap();
    let mut a = ringway_tests::nginx::Nginx::start(dir.path(), "nginx-a", free_port());
    let b = ringway_tests::nginx::Nginx::start(dir.path(), "nginx-b", free_port());
    let mut proxy = Proxy::start();
    proxy.apply(snapshot(
        1,
        proxy.address,
        HttpListener::default(),
        &[("web", &[], &[], "web")],
        &[("web", &[a.port, b.port])],
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, restarted, done) = (stop.clone(), restarted.clone(), done.clone());
            let address = proxy.address;
            std::thread::spawn(move || {
                // Before the restart, then after it.
                let mut seen = [Seen::default(), Seen::default()];
                let mut client = HttpClient::connect(address);
                for _ in 0..MAX_REQUESTS_PER_CLIENT {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let phase = restarted.load(Ordering::SeqCst) as usize;
                    client.send(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n");
                    match client.response() {
                        Some(r) if r.status == 200 => {
                            *seen[phase]
                                .by_backend
                                .entry(r.text().trim_end().into())
                                .or_default() += 1;
                        }
                        Some(r) => seen[phase]
                            .failures
                            .push(format!("{} {}", r.status, r.text())),
                        None => {
                            seen[phase].failures.push("connection closed".into());
                            client = HttpClient::connect(address);
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                seen
            })
        })
        .collect();

    let reached =
        |n: usize| ringway_tests::net::wait_until(limit, || done.load(Ordering::SeqCst) >= n);
    assert!(reached(PHASE_REQUESTS), "the load started");
    a.restart();
    restarted.store(true, Ordering::SeqCst);
    let after = done.load(Ordering::SeqCst);
    assert!(
        reached(after + PHASE_REQUESTS),
        "the load went on after the restart"
    );
    stop.store(true, Ordering::SeqCst);

    let mut after_restart = std::collections::HashMap::new();
    for client in clients {
        let seen = client.join().unwrap();
        for phase in &seen {
            assert!(
                phase.failures.is_empty(),
                "a client saw {:?} while {} restarted",
                phase.failures,
                a.name
            );
        }
        for (backend, n) in &seen[1].by_backend {
            *after_restart.entry(backend.clone()).or_insert(0) += n;
        }
    }
    assert!(
        after_restart.contains_key("nginx-a") && after_restart.contains_key("nginx-b"),
        "both backends served after the restart: {after_restart:?}"
    );
}
