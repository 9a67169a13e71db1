use proptest::prelude::*;

use super::*;
use crate::http::framing::{self, RequestError, RequestFraming};

const LIMIT: usize = DEFAULT_MAX_HEADER_BYTES;

fn request(buf: &[u8]) -> Result<RequestHead, HeadError> {
    scan_and_parse_request(buf, LIMIT).map(|(head, _)| head)
}

#[test]
fn parses_a_request_head_into_spans() {
    let buf = b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-Thing:  spaced value \r\ncontent-LENGTH: 0\r\n\r\nnext";
    let head = request(buf).unwrap();
    assert_eq!(head.len, buf.len() - 4);
    assert_eq!(head.method, Method::Get);
    assert_eq!(head.method_span.of(buf), b"GET");
    assert_eq!(head.target.of(buf), b"/a?b=c");
    assert_eq!(head.version, Version::Http11);
    let fields: Vec<_> = head
        .fields
        .iter()
        .map(|f| (f.name.of(buf), f.value.of(buf), f.kind))
        .collect();
    assert_eq!(
        fields,
        [
            (&b"Host"[..], &b"example.com"[..], FieldName::Host),
            (b"X-Thing", b"spaced value", FieldName::Other),
            (b"content-LENGTH", b"0", FieldName::ContentLength),
        ]
    );
    assert_eq!(head.value(buf, "x-thing"), Some(&b"spaced value"[..]));
}

#[test]
fn scanner_finds_the_end_across_reads_and_accepts_bare_lf() {
    let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
    let mut scanner = HeadScanner::default();
    for end in 1..buf.len() {
        let found = scanner.find_end(&buf[..end], LIMIT).unwrap();
        if end < buf.len() - 4 {
            assert_eq!(found, None, "at {end}");
        } else {
            assert_eq!(found, Some(buf.len() - 4), "at {end}");
        }
    }
    for bare in [
        &b"GET / HTTP/1.1\nHost: a\n\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
    ] {
        let head = request(bare).unwrap();
        assert_eq!(head.len, bare.len());
        assert_eq!(head.fields.len(), 1);
    }
}

#[test]
fn scanner_limits_the_head() {
    let mut buf = b"GET / HTTP/1.1\r\nX: ".to_vec();
    buf.resize(LIMIT, b'a');
    let mut scanner = HeadScanner::default();
    assert_eq!(scanner.find_end(&buf[..LIMIT - 1], LIMIT), Ok(None));
    assert_eq!(
        scanner.find_end(&buf, LIMIT),
        Err(HeadError::TooLarge { limit: LIMIT })
    );
    // A head that ends exactly at the limit fits, whatever follows.
    let mut exact = b"GET / HTTP/1.1\r\nX: ".to_vec();
    exact.resize(LIMIT - 4, b'a');
    exact.extend_from_slice(b"\r\n\r\nmore bytes of a pipelined request");
    assert_eq!(
        HeadScanner::default().find_end(&exact, LIMIT),
        Ok(Some(LIMIT))
    );
}

#[test]
fn version_errors_tell_505_from_400() {
    assert_eq!(
        request(b"GET / HTTP/2.0\r\n\r\n").unwrap_err(),
        HeadError::Version
    );
    assert_eq!(
        request(b"GET / HTTP/1.2\r\n\r\n").unwrap_err(),
        HeadError::Version
    );
    assert!(matches!(
        request(b"GET / XTTP/1.1\r\n\r\n").unwrap_err(),
        HeadError::Malformed(_)
    ));
    assert!(matches!(
        request(b"GET / HTTP/1.1 extra\r\n\r\n").unwrap_err(),
        HeadError::Malformed(_)
    ));
}

#[test]
fn refuses_malformed_fields() {
    let cases: [&[u8]; 9] = [
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
    ];
    for case in cases {
        assert!(
            matches!(request(case), Err(HeadError::Malformed(_))),
            "{:?}: {:?}",
            String::from_utf8_lossy(case),
            request(case)
        );
    }
}

#[test]
fn limits_the_number_of_fields() {
    let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=DEFAULT_MAX_HEADERS {
        buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
    assert_eq!(
        request(&buf).unwrap_err(),
        HeadError::TooManyFields {
            limit: DEFAULT_MAX_HEADERS
        }
    );
}

#[test]
fn parses_a_response_head() {
    let buf = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    let mut head = ResponseHead::default();
    parse_response(&buf[..buf.len() - 3], &mut head).unwrap();
    assert_eq!(head.status, 404);
    assert_eq!(head.reason.of(buf), b"Not Found");
    assert_eq!(head.version, Version::Http11);
    assert_eq!(head.fields.len(), 2);
    assert_eq!(head.fields[1].kind, FieldName::Connection);

    for bad in [
        &b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
    ] {
        assert!(
            parse_response(bad, &mut head).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// The outcome of scanning and parsing a request delivered in pieces, in owned form for comparing.
#[derive(Debug, PartialEq)]
enum Outcome {
    Incomplete,
    Head(HeadError),
    Framing(RequestError),
    Request {
        len: usize,
        method: Vec<u8>,
        target: Vec<u8>,
        version: Version,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
        framing: RequestFraming,
    },
}

fn outcome(input: &[u8], cuts: &[usize]) -> Outcome {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    cuts.sort_unstable();
    cuts.push(input.len());
    let mut scanner = HeadScanner::default();
    for end in cuts {
        match scanner.find_end(&input[..end], LIMIT) {
            Err(e) => return Outcome::Head(e),
            Ok(None) => continue,
            Ok(Some(len)) => {
                let buf = &input[..len];
                let mut head = RequestHead::default();
                if let Err(e) = parse_request(buf, DEFAULT_MAX_HEADERS, &mut head) {
                    return Outcome::Head(e);
                }
                return match framing::request(&head, buf) {
                    Err(e) => Outcome::Framing(e),
                    Ok(framing) => Outcome::Request {
                        len,
                        method: head.method_span.of(buf).to_vec(),
                        target: head.target.of(buf).to_vec(),
                        version: head.version,
                        fields: head
                            .fields
                            .iter()
                            .map(|f| (f.name.of(buf).to_vec(), f.value.of(buf).to_vec()))
                            .collect(),
                        framing,
                    },
                };
            }
        }
    }
    Outcome::Incomplete
}

/// Requests that are mostly valid, with the fields that matter to framing mixed in.
fn request_strategy() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        Just("Host: example.com".to_string()),
        Just("Content-Length: 5".to_string()),
        Just("Transfer-Encoding: chunked".to_string()),
        Just("Connection: close".to_string()),
        Just("Expect: 100-continue".to_string()),
        "[A-Za-z-]{1,12}: [ -~]{0,30}".prop_map(|s| s),
    ];
    (
        prop_oneof![Just("GET"), Just("POST"), Just("HEAD"), Just("OPTIONS")],
        "/[a-z0-9/?=&%.-]{0,40}",
        prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0")],
        prop::collection::vec(field, 0..8),
        prop_oneof![Just("\r\n"), Just("\n")],
        prop::collection::vec(any::<u8>(), 0..30),
    )
        .prop_map(|(method, target, version, fields, eol, tail)| {
            let mut out = format!("{method} {target} {version}{eol}");
            for f in fields {
                out.push_str(f.trim_end());
                out.push_str(eol);
            }
            out.push_str(eol);
            let mut out = out.into_bytes();
            out.extend_from_slice(&tail);
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Delivered in pieces cut anywhere, a request parses exactly as it does whole.
    #[test]
    fn split_requests_parse_as_whole(
        input in request_strategy(),
        cuts in prop::collection::vec(0usize..400, 0..10),
    ) {
        let whole = outcome(&input, &[]);
        prop_assert_ne!(&whole, &Outcome::Incomplete);
        prop_assert_eq!(outcome(&input, &cuts), whole);
    }

    /// The same for arbitrary bytes (mostly errors or incomplete), and nothing panics.
    #[test]
    fn split_bytes_parse_as_whole(
        input in prop::collection::vec(any::<u8>(), 0..300),
        cuts in prop::collection::vec(0usize..300, 0..10),
    ) {
        prop_assert_eq!(outcome(&input, &cuts), outcome(&input, &[]));
    }
}
