//! HTTP/1.x request framing for a server that answers every request the same way.
//!
//! A backend behind a load balancer must never get the framing wrong: if it misjudges where one request
//! ends, the next pipelined request is read from the middle of a body and the connection is desynchronised,
//! which a benchmark would report as the proxy's fault. So this module does the framing strictly (request
//! line, header syntax, `Content-Length`, `Connection`) and ignores everything a fixed answer does not need
//! (the target, other headers). It does no I/O: [`Session`] takes bytes in and gives response bytes out,
//! which keeps the pipelining and body-skipping cases testable without sockets.
//!
//! What is refused, and why:
//! - Anything that is not a well-formed HTTP/1.0 or HTTP/1.1 head: `400` and close, since after garbage
//!   there is no way to find where the next request starts.
//! - `Transfer-Encoding` (chunked bodies): `501` and close. Load generators do not send it, and guessing
//!   the body length would desynchronise the connection.
//! - Heads over [`MAX_HEAD_BYTES`] or with more than [`MAX_HEADERS`] fields: `431` and close, so a client
//!   cannot make the server buffer without bound.

use std::fmt;

/// Largest request line plus headers accepted; real clients send well under 1 KiB.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields accepted in one request.
pub const MAX_HEADERS: usize = 100;

/// The framing facts of one request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes from the start of the buffer to the end of the blank line closing the head (including any
    /// empty lines before the request line, which RFC 9112 §2.2 asks servers to skip).
    pub head_len: usize,
    /// `Content-Length` of the body that follows, 0 without one.
    pub body_len: u64,
    /// The connection stays open after the response: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only
    /// with `Connection: keep-alive` (what `ab -k` and old clients send).
    pub keep_alive: bool,
    /// `HEAD` request: the response carries the headers of a `GET` but no body.
    pub head_method: bool,
    /// `Expect: 100-continue`: the client (curl, for large uploads) waits for an interim response before
    /// sending the body.
    pub expect_continue: bool,
}

/// Why a request was refused; each maps to the status code sent before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    RequestLine,
    Version,
    HeaderLine,
    ContentLength,
    TransferEncoding,
    TooLarge,
}

impl Malformed {
    /// Status code and reason phrase of the error response.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Malformed::RequestLine | Malformed::HeaderLine | Malformed::ContentLength => {
                (400, "Bad Request")
            }
            Malformed::Version => (505, "HTTP Version Not Supported"),
            Malformed::TransferEncoding => (501, "Not Implemented"),
            Malformed::TooLarge => (431, "Request Header Fields Too Large"),
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::RequestLine => "malformed request line",
            Malformed::Version => "unsupported HTTP version",
            Malformed::HeaderLine => "malformed header field",
            Malformed::ContentLength => "invalid Content-Length",
            Malformed::TransferEncoding => "Transfer-Encoding is not supported",
            Malformed::TooLarge => "request head too large",
        })
    }
}

/// Result of looking for a request head at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    Complete(RequestHead),
    /// No complete head yet, and nothing wrong so far: read more.
    Partial,
    Invalid(Malformed),
}

/// Looks for one request head at the start of `buf`.
///
/// Lines may end in CRLF or a bare LF (RFC 9112 §2.2 allows accepting LF, and it makes the server usable
/// with `nc`). An incomplete request line is checked as far as it goes, so binary garbage (a TLS
/// handshake, say) is refused at once rather than after [`MAX_HEAD_BYTES`].
pub fn parse_head(buf: &[u8]) -> Parse {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    if start > MAX_HEAD_BYTES {
        return Parse::Invalid(Malformed::TooLarge);
    }
    let mut lines = Vec::new();
    let mut pos = start;
    let head_len = loop {
        let Some(newline) = buf[pos..].iter().position(|&b| b == b'\n') else {
            if buf.len() - start > MAX_HEAD_BYTES {
                return Parse::Invalid(Malformed::TooLarge);
            }
            if lines.is_empty() && !request_line_prefix_ok(&buf[pos..]) {
                return Parse::Invalid(Malformed::RequestLine);
            }
            return Parse::Partial;
        };
        let end = pos + newline;
        if end + 1 - start > MAX_HEAD_BYTES {
            return Parse::Invalid(Malformed::TooLarge);
        }
        let line = buf[pos..end].strip_suffix(b"\r").unwrap_or(&buf[pos..end]);
        pos = end + 1;
        if line.is_empty() {
            break pos;
        }
        if lines.len() > MAX_HEADERS {
            return Parse::Invalid(Malformed::TooLarge);
        }
        lines.push(line);
    };
    match head(&lines) {
        Ok(mut head) => {
            head.head_len = head_len;
            Parse::Complete(head)
        }
        Err(e) => Parse::Invalid(e),
    }
}

/// Interprets the request line and header lines (without line ends); `head_len` is left 0.
fn head(lines: &[&[u8]]) -> Result<RequestHead, Malformed> {
    let (request_line, fields) = lines.split_first().ok_or(Malformed::RequestLine)?;
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed::RequestLine);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Malformed::RequestLine);
    }
    if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic() || b >= 0x80) {
        return Err(Malformed::RequestLine);
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(Malformed::Version);
        }
        _ => return Err(Malformed::RequestLine),
    };

    let mut body_len: Option<u64> = None;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    for field in fields {
        let colon = field
            .iter()
            .position(|&b| b == b':')
            .ok_or(Malformed::HeaderLine)?;
        let (name, value) = (&field[..colon], trim_ows(&field[colon + 1..]));
        // An empty name, whitespace before the colon, or a leading space (obsolete line folding) are all
        // ways requests are smuggled past proxies that read them differently: refuse them.
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(Malformed::HeaderLine);
        }
        if value.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
            return Err(Malformed::HeaderLine);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_content_length(value)?;
            // Repeated with the same value is tolerated (RFC 9110 §8.6); different values are ambiguous.
            if body_len.is_some_and(|previous| previous != length) {
                return Err(Malformed::ContentLength);
            }
            body_len = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(Malformed::TransferEncoding);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim_ows) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    Ok(RequestHead {
        head_len: 0,
        body_len: body_len.unwrap_or(0),
        keep_alive: !close && (http11 || keep_alive_token),
        head_method: method == b"HEAD",
        expect_continue,
    })
}

fn parse_content_length(value: &[u8]) -> Result<u64, Malformed> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(Malformed::ContentLength);
    }
    value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(Malformed::ContentLength)
    })
}

/// Whether an unfinished first line can still become a request line: a method token, then printable bytes
/// and spaces. Checked so that garbage without a newline is refused at once.
fn request_line_prefix_ok(partial: &[u8]) -> bool {
    let partial = partial.strip_suffix(b"\r").unwrap_or(partial);
    let method_end = partial
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(partial.len());
    partial[..method_end].iter().all(|&b| is_tchar(b))
        && partial[method_end..]
            .iter()
            .all(|&b| b == b' ' || b.is_ascii_graphic() || b >= 0x80)
}

/// RFC 9110 `tchar`: the characters of methods and header names.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// Appends a `200 OK` carrying `body` (headers only for `HEAD`).
pub fn write_ok(out: &mut Vec<u8>, body: &[u8], head_method: bool, keep_alive: bool) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    // Said explicitly either way: HTTP/1.0 clients need `keep-alive` to reuse the connection, and a client
    // told `close` does not send a request that would be lost.
    out.extend_from_slice(if keep_alive {
        b"\r\nConnection: keep-alive\r\n\r\n".as_slice()
    } else {
        b"\r\nConnection: close\r\n\r\n".as_slice()
    });
    if !head_method {
        out.extend_from_slice(body);
    }
}

/// Appends the error response for `why`; the connection is always closed after it.
pub fn write_error(out: &mut Vec<u8>, why: Malformed) {
    let (code, reason) = why.status();
    let body = format!("{why}\n");
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

/// What the connection should do after [`Session::on_data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send the output and read more.
    Read,
    /// Send the output, then close: the last response said `Connection: close`, or the input was refused.
    Close,
}

/// The body still to be skipped and what to answer once it has been.
#[derive(Debug, Clone, Copy)]
struct InBody {
    remaining: u64,
    head_method: bool,
    keep_alive: bool,
}

/// One connection's request stream: bytes in, responses out, with the same body for every request.
///
/// Pipelined requests that arrive together are all answered in one output buffer, so they cost one write.
/// A body is discarded as it arrives, never buffered whole, so an upload of any size uses constant memory.
#[derive(Debug)]
pub struct Session<'b> {
    body: &'b [u8],
    /// Received bytes not consumed yet: at most one unfinished head (bounded by [`MAX_HEAD_BYTES`]).
    pending: Vec<u8>,
    in_body: Option<InBody>,
}

impl<'b> Session<'b> {
    /// A session answering every request with `body`.
    pub fn new(body: &'b [u8]) -> Self {
        Self {
            body,
            pending: Vec::new(),
            in_body: None,
        }
    }

    /// Takes the bytes just read and appends the responses they complete to `out`.
    pub fn on_data(&mut self, input: &[u8], out: &mut Vec<u8>) -> Next {
        self.pending.extend_from_slice(input);
        let mut pos = 0;
        let next = loop {
            if let Some(mut request) = self.in_body.take() {
                let available = (self.pending.len() - pos) as u64;
                let take = request.remaining.min(available);
                // `take` is at most `available`, a buffer length, so it fits usize.
                pos += take as usize;
                request.remaining -= take;
                if request.remaining > 0 {
                    self.in_body = Some(request);
                    break Next::Read;
                }
                write_ok(out, self.body, request.head_method, request.keep_alive);
                if !request.keep_alive {
                    break Next::Close;
                }
                continue;
            }
            match parse_head(&self.pending[pos..]) {
                Parse::Partial => break Next::Read,
                Parse::Invalid(why) => {
                    write_error(out, why);
                    break Next::Close;
                }
                Parse::Complete(head) => {
                    pos += head.head_len;
                    if head.expect_continue && head.body_len > 0 {
                        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    self.in_body = Some(InBody {
                        remaining: head.body_len,
                        head_method: head.head_method,
                        keep_alive: head.keep_alive,
                    });
                }
            }
        };
        self.pending.drain(..pos);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"hello from t (127.0.0.1:1)\n";

    fn complete(buf: &[u8]) -> RequestHead {
        match parse_head(buf) {
            Parse::Complete(head) => head,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn invalid(buf: &[u8]) -> Malformed {
        match parse_head(buf) {
            Parse::Invalid(why) => why,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// Feeds `chunks` one by one and returns the whole output as text and the last decision.
    fn run(chunks: &[&[u8]]) -> (String, Next) {
        let mut session = Session::new(BODY);
        let mut out = Vec::new();
        let mut next = Next::Read;
        for chunk in chunks {
            next = session.on_data(chunk, &mut out);
            if next == Next::Close {
                break;
            }
        }
        (String::from_utf8(out).unwrap(), next)
    }

    fn ok(keep_alive: bool) -> String {
        let mut out = Vec::new();
        write_ok(&mut out, BODY, false, keep_alive);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn simple_get() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = complete(req);
        assert_eq!(head.head_len, req.len());
        assert_eq!(head.body_len, 0);
        assert!(head.keep_alive);
        assert!(!head.head_method);
    }

    #[test]
    fn response_has_correct_content_length() {
        let text = ok(true);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Type: text/plain\r\n"));
        assert!(text.contains(&format!("Content-Length: {}\r\n", BODY.len())));
        assert!(text.ends_with(std::str::from_utf8(BODY).unwrap()));
    }

    #[test]
    fn partial_heads_wait_for_more() {
        for prefix in [
            &b""[..],
            b"\r\n",
            b"GE",
            b"GET / HTTP/1.1",
            b"GET / HTTP/1.1\r\nHost: x\r\n",
        ] {
            assert_eq!(parse_head(prefix), Parse::Partial, "{prefix:?}");
        }
    }

    #[test]
    fn close_semantics() {
        assert!(!complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!complete(b"GET / HTTP/1.1\r\nconnection: Upgrade, CLOSE\r\n\r\n").keep_alive);
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(complete(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").keep_alive);

        let (text, next) = run(&[b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"]);
        assert_eq!(text, ok(false));
        assert_eq!(next, Next::Close);
        let (text, next) = run(&[b"GET / HTTP/1.0\r\n\r\n"]);
        assert_eq!(text, ok(false));
        assert_eq!(next, Next::Close);
        let (text, next) = run(&[b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"]);
        assert_eq!(text, ok(true));
        assert_eq!(next, Next::Read);
    }

    #[test]
    fn pipelined_requests_are_all_answered_in_order() {
        let (text, next) = run(&[
            b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\nConnection: close\r\n\r\n",
        ]);
        assert_eq!(text, ok(true) + &ok(true) + &ok(false));
        assert_eq!(next, Next::Close);
    }

    #[test]
    fn requests_after_close_are_not_answered() {
        let (text, next) =
            run(&[b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"]);
        assert_eq!(text, ok(false));
        assert_eq!(next, Next::Close);
    }

    #[test]
    fn pipelined_requests_split_anywhere() {
        let stream: &[u8] =
            b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\n\nHEAD / HTTP/1.1\r\n\r\n";
        let mut expected = ok(true) + &ok(true);
        let mut head_only = Vec::new();
        write_ok(&mut head_only, BODY, true, true);
        expected += std::str::from_utf8(&head_only).unwrap();
        for split in 0..stream.len() {
            let (text, next) = run(&[&stream[..split], &stream[split..]]);
            assert_eq!(text, expected, "split at {split}");
            assert_eq!(next, Next::Read);
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run(&bytes).0, expected);
    }

    #[test]
    fn bodies_are_skipped_not_parsed() {
        // The body looks like a request; it must not be answered as one.
        let (text, _) = run(&[
            b"POST / HTTP/1.1\r\nContent-Length: 20\r\n\r\nGET /evil HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ]);
        assert_eq!(text, ok(true) + &ok(true));
    }

    #[test]
    fn response_waits_for_the_whole_body() {
        let mut session = Session::new(BODY);
        let mut out = Vec::new();
        session.on_data(
            b"PUT / HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345",
            &mut out,
        );
        assert!(out.is_empty());
        session.on_data(b"6789", &mut out);
        assert!(out.is_empty());
        assert_eq!(session.on_data(b"0", &mut out), Next::Read);
        assert_eq!(String::from_utf8(out).unwrap(), ok(true));
    }

    #[test]
    fn large_bodies_are_not_buffered() {
        let mut session = Session::new(BODY);
        let mut out = Vec::new();
        session.on_data(
            b"POST / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n",
            &mut out,
        );
        let chunk = [b'x'; 10_000];
        for _ in 0..100 {
            session.on_data(&chunk, &mut out);
            assert!(session.pending.is_empty());
        }
        assert_eq!(String::from_utf8(out).unwrap(), ok(true));
    }

    #[test]
    fn expect_continue_gets_an_interim_response() {
        let (text, _) = run(&[
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            b"hi",
        ]);
        assert_eq!(
            text,
            "HTTP/1.1 100 Continue\r\n\r\n".to_string() + &ok(true)
        );
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let req = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(complete(req).head_len, req.len());
    }

    #[test]
    fn repeated_identical_content_length_is_accepted() {
        let head = complete(b"POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length:3\r\n\r\n");
        assert_eq!(head.body_len, 3);
    }

    #[test]
    fn malformed_requests_are_refused() {
        use Malformed::*;
        let cases: &[(&[u8], Malformed)] = &[
            (b"hello\r\n\r\n", RequestLine),
            (b"GET /\r\n\r\n", RequestLine),
            (b"GET  / HTTP/1.1\r\n\r\n", RequestLine),
            (b"GET / HTTP/1.1 extra\r\n\r\n", RequestLine),
            (b"G(T / HTTP/1.1\r\n\r\n", RequestLine),
            (b"GET / FTP/1.1\r\n\r\n", RequestLine),
            (b"GET / HTTP/2.0\r\n\r\n", Version),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Version),
            (b"GET / HTTP/1.1\r\nNo colon\r\n\r\n", HeaderLine),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", HeaderLine),
            (b"GET / HTTP/1.1\r\n: x\r\n\r\n", HeaderLine),
            (b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", HeaderLine),
            (b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", HeaderLine),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                ContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
                ContentLength,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", ContentLength),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                ContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                ContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                TransferEncoding,
            ),
        ];
        for (req, why) in cases {
            assert_eq!(invalid(req), *why, "{:?}", String::from_utf8_lossy(req));
        }
    }

    #[test]
    fn garbage_without_newline_is_refused_at_once() {
        // The start of a TLS ClientHello.
        assert_eq!(invalid(b"\x16\x03\x01\x02\x00\x01"), Malformed::RequestLine);
        assert_eq!(invalid(b"GET /\x01"), Malformed::RequestLine);
    }

    #[test]
    fn oversized_heads_are_refused() {
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD_BYTES + 1, b'a');
        assert_eq!(invalid(&long), Malformed::TooLarge);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"A: b\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(invalid(&many), Malformed::TooLarge);
    }

    #[test]
    fn malformed_gets_400_and_close_after_earlier_responses() {
        let (text, next) = run(&[b"GET / HTTP/1.1\r\n\r\nnonsense\r\n\r\nGET / HTTP/1.1\r\n\r\n"]);
        assert!(text.starts_with(&ok(true)), "{text}");
        let rest = &text[ok(true).len()..];
        assert!(rest.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{rest}");
        assert!(rest.contains("Connection: close\r\n"));
        assert_eq!(rest.matches("HTTP/1.1").count(), 1);
        assert_eq!(next, Next::Close);
    }
}
