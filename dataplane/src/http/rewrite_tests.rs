use super::*;
use crate::http::framing::{self, RequestContext};
use crate::http::head::{Method, ResponseHead, parse_response, scan_and_parse_request};

fn ctx() -> RewriteContext {
    RewriteContext {
        client: "192.0.2.7".parse().unwrap(),
        listener_port: 8080,
        scheme: Scheme::Http,
    }
}

fn forward_request(buf: &[u8], ctx: &RewriteContext) -> String {
    let (head, len) = scan_and_parse_request(buf, 65536).unwrap();
    let framing = framing::request(&head, &buf[..len]).unwrap();
    let mut out = BytesMut::new();
    request_head(&head, &framing, &buf[..len], ctx, &mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

#[test]
fn drops_hop_by_hop_fields_and_sets_forwarded_ones() {
    let out = forward_request(
        b"GET /x HTTP/1.1\nHost: a\nConnection: keep-alive, X-Secret\nKeep-Alive: 5\nX-Secret: s\nTE: trailers\n\
          Proxy-Connection: close\nX-Forwarded-Proto: https\nX-Forwarded-Port: 443\nX-Forwarded-For: 10.0.0.1\n\
          x-forwarded-for: 10.0.0.2\nAccept: */*\n\n",
        &ctx(),
    );
    assert_eq!(
        out,
        "GET /x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\
         X-Forwarded-For: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 8080\r\n\r\n"
    );
}

#[test]
fn connection_cannot_strip_framing_or_host() {
    let out = forward_request(
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, Host, Transfer-Encoding\r\nContent-Length: 2\r\n\r\n",
        &ctx(),
    );
    assert!(out.contains("\r\nHost: a\r\n"), "{out}");
    assert!(out.contains("\r\nContent-Length: 2\r\n"), "{out}");
}

#[test]
fn upgrade_requests_keep_upgrade() {
    let out = forward_request(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
        &ctx(),
    );
    assert!(out.contains("Upgrade: websocket\r\n"), "{out}");
    assert!(out.ends_with("Connection: upgrade\r\n\r\n"), "{out}");
    let plain = forward_request(
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
        &ctx(),
    );
    assert!(!plain.contains("Upgrade"), "{plain}");
}

#[test]
fn http10_requests_stay_http10_and_ask_to_keep_the_connection() {
    let out = forward_request(b"GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &ctx());
    let v6 = RewriteContext {
        client: "::ffff:198.51.100.1".parse().unwrap(),
        scheme: Scheme::Https,
        ..ctx()
    };
    assert_eq!(
        out,
        "GET / HTTP/1.0\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 8080\r\n\
         Connection: keep-alive\r\n\r\n"
    );
    let out = forward_request(
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        &v6,
    );
    assert!(out.contains("Expect: 100-continue\r\n"), "{out}");
    assert!(
        out.contains("X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-Proto: https\r\n"),
        "{out}"
    );
}

fn forward_response(buf: &[u8], method: Method, upgrade: bool, client: ClientConnection) -> String {
    let mut head = ResponseHead::default();
    parse_response(buf, &mut head).unwrap();
    let request = RequestContext {
        method,
        version: Version::Http11,
        upgrade,
    };
    let framing = framing::response(&head, buf, request).unwrap();
    let mut out = BytesMut::new();
    response_head(&head, &framing, buf, client, &mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

#[test]
fn response_heads() {
    let out = forward_response(
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 3\r\nContent-Length: 2\r\nSet-Cookie: a=b\r\n\r\n",
        Method::Get,
        false,
        ClientConnection::Keep,
    );
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a=b\r\n\r\n"
    );

    let out = forward_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        Method::Get,
        false,
        ClientConnection::KeepHttp10,
    );
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n"
    );

    let out = forward_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        Method::Get,
        false,
        ClientConnection::Close,
    );
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );

    let out = forward_response(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n",
        Method::Get,
        true,
        ClientConnection::Upgrade,
    );
    assert_eq!(
        out,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\nConnection: upgrade\r\n\r\n"
    );

    let out = forward_response(
        b"HTTP/1.1 400 Bad Request\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
        Method::Get,
        true,
        ClientConnection::Keep,
    );
    assert!(
        !out.contains("Upgrade"),
        "a refused upgrade does not carry Upgrade: {out}"
    );
}
