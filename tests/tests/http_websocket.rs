//! WebSocket through Ringway's HTTP routing, end to end with real peers: Debian's `python3-websockets`
//! as the echo backend and as the client (`tests/python/websocket_peer.py`), a real dataplane fed by a
//! scripted controlplane, one HTTP listener routing by host to the WebSocket service and to a plain
//! HTTP service. What a user would check: messages of both kinds come back byte-exact (one of 1 MiB,
//! which crosses the tunnel's splice), the closing handshake completes with 1000 on both ends, the
//! listener keeps answering plain HTTP while a WebSocket is open, and a backend that refuses the
//! upgrade is answered to the client as HTTP, never turned into a tunnel.

use ringway_shared::HttpListener;
use ringway_tests::http_backend::HttpBackend;
use ringway_tests::http_client::HttpClient;
use ringway_tests::http_proxy::{Proxy, RouteSpec, snapshot};
use ringway_tests::net::wait_until;
use ringway_tests::websocket::{Opened, WsClient, WsEchoServer, WsMessage};

/// What the python server answers to an upgrade of `/refuse…` (see its script).
const REFUSED_BODY: &str = "websocket refused by the backend\n";
/// How long the server may take to report a connection's end after the client saw it close.
const SERVER_REPORT_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The WebSocket echo server behind `chat.test`, a plain HTTP backend behind `plain.test`, on one
/// listener.
fn start() -> (tempfile::TempDir, WsEchoServer, HttpBackend, Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let server = WsEchoServer::start(dir.path());
    let plain = HttpBackend::start("plain");
    let mut proxy = Proxy::start();
    let routes: &[RouteSpec<'_>] = &[
        ("chat", &["chat.test"], &[], "chat"),
        ("plain", &["plain.test"], &[], "plain"),
    ];
    let clusters: &[(&str, &[u16])] = &[("chat", &[server.port]), ("plain", &[plain.port()])];
    proxy.apply(snapshot(
        1,
        proxy.address,
        HttpListener::default(),
        routes,
        clusters,
    ));
    (dir, server, plain, proxy)
}

/// `len` bytes that do not compress and repeat no pattern a misplaced copy could hide in.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect()
}

fn plain_answer(proxy: &Proxy) -> (u16, String) {
    let response = HttpClient::connect(proxy.address).get("plain.test", "/");
    (response.status, response.text())
}

#[test]
fn a_websocket_echoes_byte_exact_and_closes_cleanly_while_the_listener_serves_plain_http() {
    let (dir, server, plain, proxy) = start();
    let Opened::Open(mut ws) = WsClient::open(proxy.address, "chat.test", "/echo", dir.path())
    else {
        panic!("the handshake through Ringway was refused");
    };

    for message in [
        WsMessage::Text("hello through ringway: héllo, 世界, \u{1F680}".into()),
        WsMessage::Binary((0..=255u8).chain([13, 10, 0]).collect()),
        WsMessage::Text(String::new()),
    ] {
        assert_eq!(ws.round_trip(&message), message);
    }
    const MIB: usize = 1 << 20;
    let big = noise(MIB);
    match ws.round_trip(&WsMessage::Binary(big.clone())) {
        WsMessage::Binary(echo) => {
            assert_eq!(echo.len(), MIB, "the 1 MiB message came back whole");
            assert!(echo == big, "the 1 MiB message came back byte-exact");
        }
        WsMessage::Text(_) => panic!("the binary message came back as text"),
    }

    // The WebSocket is open: the same listener still routes plain HTTP by host, and the tunnel still
    // carries messages after that.
    assert_eq!(
        plain_answer(&proxy),
        (200, "plain GET / host=plain.test\n".to_string())
    );
    let after = WsMessage::Text("still open".into());
    assert_eq!(ws.round_trip(&after), after);

    assert_eq!(
        ws.close(),
        (Some(1000), "done".to_string()),
        "the closing handshake went both ways through the tunnel"
    );
    assert!(
        wait_until(SERVER_REPORT_LIMIT, || !server.closed().is_empty()),
        "the server never saw the connection end"
    );
    let closed = server.closed();
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0]["path"], "/echo");
    assert_eq!(
        closed[0]["host"], "chat.test",
        "Host reached the backend as sent"
    );
    assert_eq!(
        closed[0]["code"], 1000,
        "the server received the client's close frame"
    );
    assert_eq!(plain.requests(), 1);
}

#[test]
fn an_upgrade_the_backend_refuses_reaches_the_client_as_http_and_never_becomes_a_tunnel() {
    let (dir, server, plain, proxy) = start();

    // The real client sees the backend's answer.
    match WsClient::open(proxy.address, "chat.test", "/refuse", dir.path()) {
        Opened::Refused { status, upgrade } => {
            assert_eq!(status, 426);
            assert_eq!(
                upgrade.as_deref(),
                Some("websocket"),
                "a 426 keeps its Upgrade field"
            );
        }
        Opened::Open(_) => panic!("the refused upgrade opened a WebSocket"),
    }

    // On the wire: the 426 with its body, then the connection is still HTTP: the next request on it is
    // routed by its own host. Had the 426 (which carries `Upgrade: websocket`) opened a tunnel, this
    // request would have gone to the WebSocket server instead.
    let mut client = HttpClient::connect(proxy.address);
    client.send(
        b"GET /refuse HTTP/1.1\r\nHost: chat.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    let refused = client.response().expect("an answer to the upgrade request");
    assert_eq!(refused.status, 426);
    assert_eq!(refused.text(), REFUSED_BODY);
    let next = client.get("plain.test", "/");
    assert_eq!(
        (next.status, next.text()),
        (200, "plain GET / host=plain.test\n".to_string()),
        "the connection kept HTTP framing after the refusal"
    );
    assert_eq!(plain.requests(), 1);
    assert!(
        server.closed().is_empty(),
        "no WebSocket was ever opened: {:?}",
        server.closed()
    );
}
