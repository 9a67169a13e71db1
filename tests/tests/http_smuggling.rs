//! Request smuggling and malformed messages end to end: every vector of the HTTP reference's §2.2
//! table (and its "other desync vectors" line) sent over a real socket to a real dataplane fed by a
//! scripted controlplane. What a user would check: each one gets the protocol's error answer with
//! `Connection: close`, the connection then closes, and the backend never sees a connection or a byte;
//! a valid request on the same listener still reaches it. Malformed responses from a misbehaving backend
//! reach the client as `502`, never as the backend's bytes. (The sans-io session tests check the same
//! vectors one level down, with the close reasons.)

use std::io::{Read, Write};
use std::net::TcpStream;

use ringway_shared::HttpListener;
use ringway_tests::backends::ScriptedBackend;
use ringway_tests::http_backend::HttpBackend;
use ringway_tests::http_client::HttpClient;
use ringway_tests::http_proxy::{Proxy, RouteSpec, snapshot};

/// Each request vector with the status the client must get.
const REQUEST_VECTORS: &[(&str, &[u8], u16)] = &[
    ("CL.TE", b"POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400),
    ("TE.CL", b"POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400),
    ("CL.0", b"POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 0\r\nContent-Length: 37\r\n\r\nGET /admin HTTP/1.1\r\nHost: s.test\r\n\r\n", 400),
    ("0.CL", b"POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 37\r\nContent-Length: 0\r\n\r\nGET /admin HTTP/1.1\r\nHost: s.test\r\n\r\n", 400),
    ("two equal lengths", b"POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd", 400),
    ("two lengths in one line", b"POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 4, 4\r\n\r\nabcd", 400),
    ("two different lengths", b"POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    ("length +4", b"POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: +4\r\n\r\nabcd", 400),
    ("length -1", b"POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: -1\r\n\r\n", 400),
    ("length 0x4", b"POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 0x4\r\n\r\nabcd", 400),
    ("empty length", b"POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length:\r\n\r\n", 400),
    ("length overflowing 64 bits", b"POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 184467440737095516160\r\n\r\n", 400),
    ("coding after chunked", b"POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
    ("coding without chunked", b"POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("unknown coding before chunked", b"POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501),
    ("two TE lines, last not chunked", b"POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", 400),
    ("chunked twice", b"POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("space before the colon", b"POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
    ("obs-fold", b"POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", 400),
    ("empty field name", b"GET / HTTP/1.1\r\nHost: s.test\r\n: empty\r\n\r\n", 400),
    ("bare CR in a value", b"GET / HTTP/1.1\r\nHost: s.test\r\nX-A: a\rb\r\n\r\n", 400),
    ("NUL in a value", b"GET / HTTP/1.1\r\nHost: s.test\r\nX-A: a\x00b\r\n\r\n", 400),
    ("CTL in a value", b"GET / HTTP/1.1\r\nHost: s.test\r\nX-A: a\x0bb\r\n\r\n", 400),
    ("two hosts", b"GET / HTTP/1.1\r\nHost: s.test\r\nHost: t.test\r\n\r\n", 400),
    ("expectation other than 100-continue", b"POST / HTTP/1.1\r\nHost: s.test\r\nExpect: x 100-continue\r\nContent-Length: 1\r\n\r\nA", 417),
];

#[test]
fn every_smuggling_vector_gets_its_error_answer_and_never_reaches_the_backend() {
    let backend = HttpBackend::start("s");
    let mut proxy = Proxy::start();
    let routes: &[RouteSpec<'_>] = &[("s", &["s.test", "t.test"], &[], "s")];
    let clusters: &[(&str, &[u16])] = &[("s", &[backend.port()])];
    proxy.apply(snapshot(
        1,
        proxy.address,
        HttpListener::default(),
        routes,
        clusters,
    ));

    for (name, request, status) in REQUEST_VECTORS {
        let mut client = HttpClient::connect(proxy.address);
        client.send(request);
        let response = client
            .response()
            .unwrap_or_else(|| panic!("{name}: no answer"));
        assert_eq!(response.status, *status, "{name}");
        assert_eq!(response.header("connection"), Some("close"), "{name}");
        assert!(client.closed(), "{name}: the connection stays open");
    }
    assert_eq!(
        backend.counters().accepted(),
        0,
        "a refused request made the proxy connect to the backend"
    );
    assert_eq!(backend.requests(), 0);

    // The listener and the route work: the refusals were the vectors', not a broken setup's.
    let mut client = HttpClient::connect(proxy.address);
    assert_eq!(client.get("s.test", "/").status, 200);
    assert_eq!(backend.requests(), 1);
}

/// Each response vector: the request path that makes the scripted backend send it.
const RESPONSE_VECTORS: &[(&str, &[u8])] = &[
    (
        "/two-lengths",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ),
    ("/no-colon", b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n"),
    (
        "/obs-fold",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
    ),
    ("/garbage", b"garbage\r\n\r\n"),
    (
        "/nul",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    ),
];

#[test]
fn malformed_responses_reach_the_client_as_502() {
    let backend = ScriptedBackend::start(|stream| {
        let Some(path) = request_path(stream) else {
            return;
        };
        let answer = RESPONSE_VECTORS.iter().find(|(p, _)| *p == path).map_or(
            &b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"[..],
            |(_, a)| *a,
        );
        let _ = stream.write_all(answer);
    });
    let mut proxy = Proxy::start();
    let routes: &[RouteSpec<'_>] = &[("bad", &["bad.test"], &[], "bad")];
    let clusters: &[(&str, &[u16])] = &[("bad", &[backend.port()])];
    proxy.apply(snapshot(
        1,
        proxy.address,
        HttpListener::default(),
        routes,
        clusters,
    ));

    for (path, sent) in RESPONSE_VECTORS {
        let mut client = HttpClient::connect(proxy.address);
        let response = client.get("bad.test", path);
        assert_eq!(response.status, 502, "{path}");
        let shown = String::from_utf8_lossy(sent);
        assert!(
            !response.text().contains("garbage") && response.header("x-a").is_none(),
            "{path}: the backend's bytes reached the client: {shown:?}"
        );
    }
    // The route reaches the backend, which answers a path it does not know with 404.
    let mut client = HttpClient::connect(proxy.address);
    assert_eq!(client.get("bad.test", "/other").status, 404);
}

/// Reads one request head from `stream`; its target.
fn request_path(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split(' ').nth(1).map(str::to_string)
}
