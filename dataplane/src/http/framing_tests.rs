use super::*;
use crate::http::head::{ResponseHead, parse_response, scan_and_parse_request};

fn frame(buf: &[u8]) -> Result<RequestFraming, RequestError> {
    let (head, len) = scan_and_parse_request(buf, 65536).unwrap();
    request(&head, &buf[..len])
}

fn body(buf: &[u8]) -> BodyKind {
    frame(buf).unwrap().body
}

#[test]
fn bodies_by_length_and_coding() {
    assert_eq!(body(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), BodyKind::None);
    assert_eq!(
        body(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
        BodyKind::None
    );
    assert_eq!(
        body(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0042\r\n\r\n"),
        BodyKind::Length(42)
    );
    assert_eq!(
        body(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n"),
        BodyKind::Chunked
    );
    assert_eq!(
        body(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
        BodyKind::Chunked
    );
    assert_eq!(
        body(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        BodyKind::Chunked
    );
    assert_eq!(
        body(b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n"),
        BodyKind::Length(3)
    );
}

/// Every smuggling vector of the reference's §2.2 table and its "other desync vectors" line, at the
/// framing level. The session tests check the same vectors end to end (answer sent, nothing
/// forwarded).
#[test]
fn smuggling_vectors_are_refused() {
    use RequestError::*;
    let cases: &[(&[u8], RequestError)] = &[
        // CL + TE, in both orders (CL.TE and TE.CL).
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", LengthAndChunked),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", LengthAndChunked),
        // CL.0 / 0.CL: a zero length next to another one.
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n", DuplicateLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\n", DuplicateLength),
        // Duplicate CL, same value (strict), also in one line.
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", DuplicateLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", InvalidLength),
        // CL not 1*DIGIT.
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", InvalidLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", InvalidLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", InvalidLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", InvalidLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", InvalidLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", InvalidLength),
        // TE whose last coding is not chunked, over one or several lines.
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", NotChunkedLast),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", NotChunkedLast),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", NotChunkedLast),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", NotChunkedLast),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", NotChunkedLast),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", NotChunkedLast),
        // Duplicate TE lines: chunked twice.
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", ChunkedTwice),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", ChunkedTwice),
        // Unknown coding (RFC 9112 §6.1: 501).
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n", UnknownCoding),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br, chunked\r\n\r\n", UnknownCoding),
        // TE in HTTP/1.0.
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", ChunkedInHttp10),
        // Host rules.
        (b"GET / HTTP/1.1\r\n\r\n", MissingHost),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", DuplicateHost),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", InvalidHost),
        (b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", InvalidHost),
        (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", InvalidHost),
        (b"GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n", InvalidHost),
        (b"GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n", HostMismatch),
        (b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", InvalidTarget),
        (b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", InvalidTarget),
        (b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", InvalidTarget),
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", InvalidTarget),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", Connect),
        // Expect-based desync: only an exact 100-continue, once.
        (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: y 100-continue\r\nContent-Length: 1\r\n\r\n", Expectation),
        (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\n", DuplicateExpect),
    ];
    for (input, error) in cases {
        assert_eq!(
            frame(input),
            Err(*error),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn statuses_of_refusals() {
    assert_eq!(
        RequestError::UnknownCoding.status(),
        ErrorStatus::NotImplemented
    );
    assert_eq!(RequestError::Connect.status(), ErrorStatus::NotImplemented);
    assert_eq!(
        RequestError::Expectation.status(),
        ErrorStatus::ExpectationFailed
    );
    assert_eq!(
        RequestError::LengthAndChunked.status(),
        ErrorStatus::BadRequest
    );
}

#[test]
fn targets_and_authorities() {
    let buf: &[u8] = b"GET /p/q?x=1 HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n";
    let f = frame(buf).unwrap();
    assert_eq!(f.form, TargetForm::Origin);
    assert_eq!(f.path.of(buf), b"/p/q");
    assert_eq!(f.authority.unwrap().of(buf), b"Example.COM:8080");

    let buf: &[u8] = b"GET HTTP://a.example/x?y HTTP/1.1\r\nHost: A.example\r\n\r\n";
    let f = frame(buf).unwrap();
    assert_eq!(f.form, TargetForm::Absolute);
    assert_eq!(f.authority.unwrap().of(buf), b"a.example");
    assert_eq!(f.path.of(buf), b"/x");

    let buf: &[u8] = b"GET http://a.example?y HTTP/1.1\r\nHost: a.example\r\n\r\n";
    assert_eq!(frame(buf).unwrap().path.of(buf), b"");

    let buf: &[u8] = b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
    let f = frame(buf).unwrap();
    assert_eq!((f.form, f.path.of(buf)), (TargetForm::Asterisk, &b"*"[..]));

    // IP literals, an empty Host (valid, RFC 9112 §3.2), HTTP/1.0 without Host.
    frame(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n").unwrap();
    frame(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    assert!(
        frame(b"GET / HTTP/1.1\r\nHost:\r\n\r\n")
            .unwrap()
            .authority
            .unwrap()
            .is_empty()
    );
    assert_eq!(frame(b"GET / HTTP/1.0\r\n\r\n").unwrap().authority, None);
}

#[test]
fn keep_alive_upgrade_and_expect() {
    let f = frame(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert!(f.keep_alive && !f.upgrade && !f.expect_continue);
    assert!(
        !frame(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .keep_alive
    );
    assert!(!frame(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
    assert!(
        frame(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .keep_alive
    );

    let ws = frame(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert!(ws.upgrade);
    // Upgrade without the connection option, or in HTTP/1.0, is not an upgrade request.
    assert!(
        !frame(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")
            .unwrap()
            .upgrade
    );
    assert!(
        !frame(b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
            .unwrap()
            .upgrade
    );

    assert!(
        frame(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .expect_continue
    );
    // HTTP/1.0 expectations are ignored.
    assert!(
        !frame(b"PUT / HTTP/1.0\r\nExpect: whatever\r\n\r\n")
            .unwrap()
            .expect_continue
    );
}

fn respond(buf: &[u8], method: Method, upgrade: bool) -> Result<ResponseFraming, ResponseError> {
    let mut head = ResponseHead::default();
    parse_response(buf, &mut head).unwrap();
    response(
        &head,
        buf,
        RequestContext {
            method,
            version: Version::Http11,
            upgrade,
        },
    )
}

#[test]
fn response_framing() {
    let ok = |buf: &[u8]| respond(buf, Method::Get, false).unwrap();
    let f = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    assert_eq!((f.body, f.reusable), (BodyKind::Length(5), true));
    let f = ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!((f.body, f.reusable), (BodyKind::Chunked, true));
    let f = ok(b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!((f.body, f.reusable), (BodyKind::UntilClose, false));
    let f = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n");
    assert_eq!((f.body, f.reusable), (BodyKind::Length(5), false));
    let f = ok(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n");
    assert!(!f.reusable);
    assert!(ok(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n").reusable);
    // CL + TE: chunked, CL dropped, connection not reused.
    let f = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(
        (f.body, f.drop_length, f.reusable),
        (BodyKind::Chunked, true, false)
    );
    // TE not ending in chunked: until close.
    let f = ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_eq!((f.body, f.reusable), (BodyKind::UntilClose, false));
    // Equal lengths are merged into one.
    let f = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n");
    assert_eq!((f.body, f.normalised_length), (BodyKind::None, Some(0)));
    assert_eq!(
        ok(b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n").normalised_length,
        Some(7)
    );
    // No body whatever the fields say.
    for bodiless in [
        &b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"[..],
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert_eq!(ok(bodiless).body, BodyKind::None);
    }
    let head = respond(
        b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n",
        Method::Head,
        false,
    )
    .unwrap();
    assert_eq!(head.body, BodyKind::None);
    assert!(ok(b"HTTP/1.1 100 Continue\r\n\r\n").informational);
    assert!(ok(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n").informational);
}

#[test]
fn invalid_responses() {
    let bad = |buf: &[u8]| respond(buf, Method::Get, false).unwrap_err();
    assert_eq!(
        bad(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
        ResponseError::UnexpectedSwitch
    );
    assert_eq!(
        bad(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        ResponseError::InvalidLength
    );
    assert_eq!(
        bad(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"),
        ResponseError::InvalidLength
    );
    assert_eq!(
        bad(b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"),
        ResponseError::InvalidLength
    );
    assert_eq!(
        bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
        ResponseError::ChunkedTwice
    );
    assert_eq!(
        bad(b"HTTP/1.1 099 Odd\r\n\r\n"),
        ResponseError::InvalidStatus
    );
    let switch = respond(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        Method::Get,
        true,
    )
    .unwrap();
    assert!(switch.switching && !switch.reusable);

    let mut head = ResponseHead::default();
    let buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    parse_response(buf, &mut head).unwrap();
    let to_http10 = RequestContext {
        method: Method::Get,
        version: Version::Http10,
        upgrade: false,
    };
    assert_eq!(
        response(&head, buf, to_http10),
        Err(ResponseError::ChunkedToHttp10)
    );

    // To an HTTP/1.0 request, only an explicit keep-alive keeps the backend connection.
    let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n";
    parse_response(buf, &mut head).unwrap();
    assert!(!response(&head, buf, to_http10).unwrap().reusable);
    let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n";
    parse_response(buf, &mut head).unwrap();
    assert!(response(&head, buf, to_http10).unwrap().reusable);
}
