//! Every smuggling vector of the HTTP reference's §2.2 table and its "other desync vectors" line, end
//! to end: the client gets the answer, and nothing reaches a backend (no connect, no byte).

use super::*;

/// Sends `request` on a fresh session; asserts the answer's status, that no backend was asked for or
/// sent anything, and that the connection closes.
fn refused(request: &[u8], status: u16) {
    let mut h = Harness::new();
    let actions = h.client(request);
    let shown = String::from_utf8_lossy(request);
    let answer = to_client(&actions);
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status} ")),
        "{shown:?} got {answer:?}"
    );
    assert!(answer.contains("Connection: close\r\n"), "{shown:?}");
    assert!(
        connects(&actions).is_empty(),
        "{shown:?} asked for a backend"
    );
    assert!(
        to_backend(&actions).is_empty(),
        "{shown:?} reached a backend"
    );
    let Some((CloseReason::Rejected(why), true)) = closed(&actions) else {
        panic!("{shown:?} did not close: {actions:?}")
    };
    assert_eq!(why.code(), status);
    assert_eq!(summaries(&actions)[0].status, status);
    // What the client sends next is never read.
    assert!(h.client(b"GET /any HTTP/1.1\r\nHost: a\r\n\r\n").is_empty());
}

#[test]
fn content_length_with_transfer_encoding() {
    // CL.TE and TE.CL: refused, not normalised (the design's strict choice).
    refused(b"POST /any HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400);
    refused(b"POST /any HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400);
}

#[test]
fn duplicate_and_malformed_content_length() {
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    );
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    );
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\nabcd",
        400,
    );
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd",
        400,
    );
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        400,
    );
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nContent-Length: 0x4\r\n\r\nabcd",
        400,
    );
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
        400,
    );
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
        400,
    );
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nContent-Length: 184467440737095516160\r\n\r\n",
        400,
    );
}

#[test]
fn cl_0_and_0_cl() {
    // CL.0: a zero length next to the real one; 0.CL: the real one first.
    refused(b"POST /any HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    refused(b"POST /any HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nContent-Length: 0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

#[test]
fn transfer_encoding_not_ending_in_chunked() {
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        400,
    );
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
    );
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
        400,
    );
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
        501,
    );
}

#[test]
fn duplicate_transfer_encoding_lines() {
    // Only the last line's last coding decides, and chunked may appear once.
    refused(b"POST /any HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", 400);
    refused(b"POST /any HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
}

#[test]
fn transfer_encoding_in_http10() {
    refused(
        b"POST /any HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn header_syntax() {
    // Obs-fold, space before the colon, an empty field name, bare CR, NUL and other CTLs.
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
        400,
    );
    refused(
        b"GET /any HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\tfolded\r\n\r\n",
        400,
    );
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
        400,
    );
    refused(b"GET /any HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", 400);
    refused(b"GET /any HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", 400);
    refused(b"GET /any HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n", 400);
    refused(b"GET /any HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400);
    refused(b"GET /any HTTP/1.1\r\nHost: a\r\nX-A: a\x0bb\r\n\r\n", 400);
    refused(b"GET /a\x00y HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    refused(b"GET /any HTTP/1.1\r\nHost: a\r\nX\x00A: b\r\n\r\n", 400);
}

#[test]
fn hosts() {
    refused(b"GET /any HTTP/1.1\r\n\r\n", 400);
    refused(
        b"GET /any HTTP/1.1\r\nHost: one.example\r\nHost: two.example\r\n\r\n",
        400,
    );
    refused(
        b"GET /any HTTP/1.1\r\nHost: one.example@two.example\r\n\r\n",
        400,
    );
    refused(
        b"GET http://one.example/any HTTP/1.1\r\nHost: two.example\r\n\r\n",
        400,
    );
}

#[test]
fn expectations() {
    refused(
        b"POST /any HTTP/1.1\r\nHost: a\r\nExpect: x 100-continue\r\nContent-Length: 1\r\n\r\nA",
        417,
    );
    refused(b"POST /any HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nA", 400);
}

#[test]
fn methods_versions_and_sizes() {
    refused(
        b"CONNECT one.example:443 HTTP/1.1\r\nHost: one.example:443\r\n\r\n",
        501,
    );
    refused(b"GET /any HTTP/2.0\r\nHost: a\r\n\r\n", 505);
    refused(b"GET /any HTTX/1.1\r\nHost: a\r\n\r\n", 400);
    let mut long = b"GET /any HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    long.resize(2000, b'b');
    refused(&long, 431);
    let mut many = b"GET /any HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..=DEFAULT_MAX_HEADERS {
        many.extend_from_slice(format!("X{i}:\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let mut h = Harness::with_routes(&[route("any", &[], &[], 1)]);
    h.session.config.max_header_bytes = 64 * 1024;
    let answer = to_client(&h.client(&many));
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
}

#[test]
fn a_space_before_the_length_is_whitespace_and_normalised() {
    // ` 5` is OWS then 5 (RFC 9110 §5.5): accepted, and the backend sees a clean field.
    let mut h = Harness::new();
    h.client(b"POST /any HTTP/1.1\r\nHost: a\r\nContent-Length:   5\t\r\n\r\nhello");
    let sent = String::from_utf8(to_backend(&h.ready(false))).unwrap();
    assert!(sent.contains("\r\nContent-Length: 5\r\n"), "{sent}");
    assert!(sent.ends_with("\r\n\r\nhello"));
}

#[test]
fn trailers_are_forwarded_as_body_never_merged_into_the_head() {
    let mut h = Harness::new();
    h.client(b"POST /any HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 50\r\n\r\n");
    let sent = String::from_utf8(to_backend(&h.ready(false))).unwrap();
    let (head, body) = sent.split_once("\r\n\r\n").unwrap();
    assert!(!head.contains("Content-Length"), "{head}");
    assert_eq!(body, "0\r\nContent-Length: 50\r\n\r\n");
}
