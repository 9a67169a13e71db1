//! The HTTP engine's per-request work: routing among 5,000 virtual hosts on one listener, parsing a
//! browser's request head (scan, tokenize, framing decision), rebuilding it for the backend, and one
//! whole keep-alive exchange through the session state machine.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ringway_benches::{BROWSER_REQUEST, VIRTUAL_HOSTS, vhost_routes};
use ringway_dataplane::http::framing;
use ringway_dataplane::http::head::{
    DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS, HeadScanner, RequestHead, parse_request,
};
use ringway_dataplane::http::rewrite::{self, RewriteContext, Scheme};
use ringway_dataplane::http::router::Router;
use ringway_dataplane::http::session::{Action, Event, HttpSession, SessionConfig};

fn no_headers(_: &str) -> Option<&'static [u8]> {
    None
}

fn routing(c: &mut Criterion) {
    let router = Router::build(&vhost_routes(VIRTUAL_HOSTS)).unwrap();
    let mut group = c.benchmark_group("http_route_5000_hosts");
    let cases: [(&str, &[u8], &[u8]); 5] = [
        ("exact_host", b"app-4321.example.com", b"/"),
        (
            "exact_host_port_case",
            b"APP-4321.Example.com:8080",
            b"/index.html",
        ),
        (
            "exact_host_prefix",
            b"app-4320.example.com",
            b"/static/app.js",
        ),
        ("wildcard_host", b"www.eu.app-4320.example.net", b"/"),
        ("unknown_host", b"nowhere.example.org", b"/x"),
    ];
    for (name, host, path) in cases {
        group.bench_with_input(
            BenchmarkId::from_parameter(name),
            &(host, path),
            |b, (host, path)| {
                b.iter(|| router.route(black_box(Some(*host)), black_box(*path), no_headers))
            },
        );
    }
    group.finish();
    c.bench_function("http_router_build_5000_hosts", |b| {
        let routes = vhost_routes(VIRTUAL_HOSTS);
        b.iter(|| Router::build(black_box(&routes)).unwrap())
    });
}

fn config() -> SessionConfig {
    SessionConfig {
        max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        max_headers: DEFAULT_MAX_HEADERS,
        rewrite: RewriteContext {
            client: "192.0.2.1".parse().unwrap(),
            listener_port: 80,
            scheme: Scheme::Http,
        },
    }
}

fn parsing(c: &mut Criterion) {
    let mut head = RequestHead::default();
    c.bench_function("http_parse_browser_request_head", |b| {
        b.iter(|| {
            let len = HeadScanner::default()
                .find_end(black_box(BROWSER_REQUEST), DEFAULT_MAX_HEADER_BYTES)
                .unwrap()
                .unwrap();
            parse_request(&BROWSER_REQUEST[..len], DEFAULT_MAX_HEADERS, &mut head).unwrap();
            framing::request(&head, BROWSER_REQUEST).unwrap()
        })
    });
    let framing = framing::request(&head, BROWSER_REQUEST).unwrap();
    let ctx = config().rewrite;
    c.bench_function("http_rewrite_browser_request_head", |b| {
        b.iter(|| {
            let mut out = BytesMut::new();
            rewrite::request_head(&head, &framing, BROWSER_REQUEST, &ctx, &mut out);
            out
        })
    });
}

/// One keep-alive exchange: request in, head to the backend, response back, ready for the next.
fn exchange(c: &mut Criterion) {
    let router = Router::build(&vhost_routes(VIRTUAL_HOSTS)).unwrap();
    let response: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\nHello, world!";
    let mut session = HttpSession::new(config());
    let mut out: Vec<Action> = Vec::with_capacity(16);
    c.bench_function("http_session_keepalive_exchange", |b| {
        b.iter(|| {
            out.clear();
            session.handle(
                Event::ClientData(black_box(BROWSER_REQUEST)),
                &router,
                &mut out,
            );
            session.handle(Event::BackendReady { reused: true }, &router, &mut out);
            session.handle(Event::BackendData(black_box(response)), &router, &mut out);
            assert!(out.contains(&Action::ReleaseBackend));
            for action in &out {
                let sent = match action {
                    Action::SendClient(b) => Event::ClientSent(b.len()),
                    Action::SendBackend(b) => Event::BackendSent(b.len()),
                    _ => continue,
                };
                let mut ignored = Vec::new();
                session.handle(sent, &router, &mut ignored);
            }
        })
    });
}

criterion_group!(benches, routing, parsing, exchange);
criterion_main!(benches);
