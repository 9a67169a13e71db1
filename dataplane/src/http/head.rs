//! Request and response heads: finding where a head ends, tokenizing it with `httparse`, and keeping the
//! result as spans into the received bytes.
//!
//! A head is parsed once, when it is complete: [`HeadScanner`] remembers how far earlier attempts looked
//! for the blank line, so a head that trickles in byte by byte costs linear time, not quadratic
//! (httparse #217). The parsed head holds no borrowed slices and allocates nothing per field: fields
//! are [`Span`]s into the head bytes, stored in a vector the caller reuses from request to request.
//!
//! Bare-LF line ends are accepted in heads (RFC 9112 §2.2 allows it, and httparse and HAProxy do): heads
//! are rebuilt with CRLF before they are forwarded, so no peer sees the difference. Chunked framing,
//! which is forwarded as it came, accepts CRLF only (see [`super::chunked`]).

use std::mem::MaybeUninit;

/// Default limit on the bytes of a request head (request line, fields, blank line).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default limit on the number of header fields of a request.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Limit on a response head: backends send large `Set-Cookie`s; beyond this the response is a 502.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Limit on the number of header fields of a response.
pub const MAX_RESPONSE_HEADERS: usize = 200;
/// The largest `max_headers` a listener may configure (the tokenizer's field array lives on the stack).
pub const MAX_HEADERS_LIMIT: usize = 512;

/// A byte range of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        debug_assert!(start <= end && end <= u32::MAX as usize);
        Self {
            start: start as u32,
            end: end as u32,
        }
    }

    /// The bytes of this span in `buf` (the head it was parsed from).
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The span of `inner`, a sub-slice of `outer`. Integer arithmetic on addresses, no `unsafe`.
    fn within(outer: &[u8], inner: &[u8]) -> Self {
        Self::try_within(outer, inner).expect("httparse returns slices of the head")
    }

    /// The span of `inner` if it is a sub-slice of `outer`: httparse returns a static empty string,
    /// not a slice of the head, for a reason phrase with obs-text.
    fn try_within(outer: &[u8], inner: &[u8]) -> Option<Self> {
        let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
        (start + inner.len() <= outer.len()).then(|| Self::new(start, start + inner.len()))
    }
}

/// The HTTP versions the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// The request methods the engine treats specially; everything else is `Other` and forwarded as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Connect,
    Other,
}

impl Method {
    fn classify(token: &[u8]) -> Self {
        match token {
            b"GET" => Self::Get,
            b"HEAD" => Self::Head,
            b"POST" => Self::Post,
            b"PUT" => Self::Put,
            b"DELETE" => Self::Delete,
            b"OPTIONS" => Self::Options,
            b"CONNECT" => Self::Connect,
            _ => Self::Other,
        }
    }
}

/// Header fields the engine acts on, recognised once at parse time (names compare case-insensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldName {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    /// The request's `TE` (accepted transfer codings), not `Transfer-Encoding`.
    Te,
    Upgrade,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedPort,
    Other,
}

impl FieldName {
    fn classify(name: &[u8]) -> Self {
        const KNOWN: [(&[u8], FieldName); 12] = [
            (b"host", FieldName::Host),
            (b"content-length", FieldName::ContentLength),
            (b"transfer-encoding", FieldName::TransferEncoding),
            (b"connection", FieldName::Connection),
            (b"keep-alive", FieldName::KeepAlive),
            (b"proxy-connection", FieldName::ProxyConnection),
            (b"te", FieldName::Te),
            (b"upgrade", FieldName::Upgrade),
            (b"expect", FieldName::Expect),
            (b"x-forwarded-for", FieldName::XForwardedFor),
            (b"x-forwarded-proto", FieldName::XForwardedProto),
            (b"x-forwarded-port", FieldName::XForwardedPort),
        ];
        KNOWN
            .iter()
            .find(|(known, _)| known.len() == name.len() && known.eq_ignore_ascii_case(name))
            .map_or(Self::Other, |(_, kind)| *kind)
    }
}

/// One header field: spans of its name and its value (httparse trims the value's surrounding
/// whitespace), and what the engine knows the name to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: Span,
    pub value: Span,
    pub kind: FieldName,
}

/// Why a head could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("head larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("more than {limit} header fields")]
    TooManyFields { limit: usize },
    #[error("HTTP version not supported")]
    Version,
    #[error("malformed head: {0}")]
    Malformed(httparse::Error),
}

/// Finds the end of a head in a buffer that grows between calls, looking at each byte once.
#[derive(Debug, Default, Clone)]
pub struct HeadScanner {
    /// Bytes already searched without finding the blank line.
    scanned: usize,
}

impl HeadScanner {
    /// Forgets earlier attempts, for the next head.
    pub fn reset(&mut self) {
        self.scanned = 0;
    }

    /// The length of the head at the start of `buf` (through its blank line), `Ok(None)` if more bytes
    /// are needed, or an error once the head cannot fit in `limit` bytes. `buf` must start where the
    /// head starts and only grow between calls until [`reset`](Self::reset).
    pub fn find_end(&mut self, buf: &[u8], limit: usize) -> Result<Option<usize>, HeadError> {
        // A blank line is LF, optional CR, LF: the last two bytes already searched may begin one.
        let from = self.scanned.saturating_sub(2);
        let window = &buf[from..buf.len().min(limit)];
        let mut at = 0;
        while let Some(lf) = window[at..].iter().position(|&b| b == b'\n') {
            let lf = at + lf;
            match &window[lf + 1..] {
                [b'\n', ..] => return Ok(Some(from + lf + 2)),
                [b'\r', b'\n', ..] => return Ok(Some(from + lf + 3)),
                _ => at = lf + 1,
            }
        }
        if buf.len() >= limit {
            return Err(HeadError::TooLarge { limit });
        }
        self.scanned = buf.len();
        Ok(None)
    }
}

/// A parsed request head. Reused from request to request: [`parse_request`] overwrites it.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Bytes of the head, through the blank line.
    pub len: usize,
    pub method: Method,
    pub method_span: Span,
    pub target: Span,
    pub version: Version,
    pub fields: Vec<Field>,
}

impl Default for RequestHead {
    fn default() -> Self {
        Self {
            len: 0,
            method: Method::Get,
            method_span: Span::default(),
            target: Span::default(),
            version: Version::Http11,
            fields: Vec::new(),
        }
    }
}

impl RequestHead {
    /// The fields of one kind, in order.
    pub fn fields_of(&self, kind: FieldName) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(move |f| f.kind == kind)
    }

    /// The value of the first field named `name` (lowercase), for header routing.
    pub fn value<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.fields
            .iter()
            .find(|f| f.name.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value.of(buf))
    }
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub len: usize,
    pub version: Version,
    pub status: u16,
    /// The reason phrase (may be empty). The status line is rebuilt from version, status and reason:
    /// httparse skips empty lines before it, so it does not start the buffer.
    pub reason: Span,
    pub fields: Vec<Field>,
}

impl Default for ResponseHead {
    fn default() -> Self {
        Self {
            len: 0,
            version: Version::Http11,
            status: 0,
            reason: Span::default(),
            fields: Vec::new(),
        }
    }
}

impl ResponseHead {
    pub fn fields_of(&self, kind: FieldName) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(move |f| f.kind == kind)
    }
}

fn version(minor: Option<u8>) -> Result<Version, HeadError> {
    match minor {
        Some(0) => Ok(Version::Http10),
        Some(1) => Ok(Version::Http11),
        _ => Err(HeadError::Version),
    }
}

fn malformed(e: httparse::Error, limit: usize) -> HeadError {
    match e {
        httparse::Error::Version => HeadError::Version,
        httparse::Error::TooManyHeaders => HeadError::TooManyFields { limit },
        other => HeadError::Malformed(other),
    }
}

/// Whether the request line is three tokens, the last `HTTP/<digit>.<digit>`.
fn names_a_version(buf: &[u8]) -> bool {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut tokens = line.split(|&b| b == b' ');
    let version = tokens.nth(2).unwrap_or_default();
    tokens.next().is_none()
        && matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit())
}

fn collect_fields(buf: &[u8], parsed: &[httparse::Header<'_>], fields: &mut Vec<Field>) {
    fields.clear();
    fields.extend(parsed.iter().map(|h| Field {
        name: Span::within(buf, h.name.as_bytes()),
        value: Span::within(buf, h.value),
        kind: FieldName::classify(h.name.as_bytes()),
    }));
}

/// Parses the complete request head `buf` (as delimited by [`HeadScanner::find_end`]) into `head`.
/// `max_fields` is capped at [`MAX_HEADERS_LIMIT`].
pub fn parse_request(
    buf: &[u8],
    max_fields: usize,
    head: &mut RequestHead,
) -> Result<(), HeadError> {
    let max_fields = max_fields.min(MAX_HEADERS_LIMIT);
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_LIMIT];
    let mut request = httparse::Request::new(&mut []);
    let status = request
        .parse_with_uninit_headers(buf, &mut storage[..max_fields])
        .map_err(|e| match malformed(e, max_fields) {
            // httparse reports any bad third token as a version error; only a well-formed other version
            // (`HTTP/2.0`) deserves 505, garbage is a 400.
            HeadError::Version if !names_a_version(buf) => HeadError::Malformed(e),
            other => other,
        })?;
    let httparse::Status::Complete(len) = status else {
        // The scanner found a blank line, so a head that is still partial is malformed (for example a
        // request line cut by a bare LF).
        return Err(HeadError::Malformed(httparse::Error::NewLine));
    };
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Err(HeadError::Malformed(httparse::Error::Token));
    };
    head.len = len;
    head.version = version(request.version)?;
    head.method = Method::classify(method.as_bytes());
    head.method_span = Span::within(buf, method.as_bytes());
    head.target = Span::within(buf, target.as_bytes());
    collect_fields(buf, request.headers, &mut head.fields);
    Ok(())
}

/// Parses the complete response head `buf` into `head`. Obs-fold and a space before the colon are
/// rejected (the RFC lets a proxy refuse them; Envoy answers 502).
pub fn parse_response(buf: &[u8], head: &mut ResponseHead) -> Result<(), HeadError> {
    let mut storage =
        [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut response, buf, &mut storage)
        .map_err(|e| malformed(e, MAX_RESPONSE_HEADERS))?;
    let httparse::Status::Complete(len) = status else {
        return Err(HeadError::Malformed(httparse::Error::NewLine));
    };
    let Some(code) = response.code else {
        return Err(HeadError::Malformed(httparse::Error::Status));
    };
    head.len = len;
    head.version = version(response.version)?;
    head.status = code;
    head.reason = response
        .reason
        .and_then(|r| Span::try_within(buf, r.as_bytes()))
        .unwrap_or_default();
    collect_fields(buf, response.headers, &mut head.fields);
    Ok(())
}

/// Finds the request head at the start of `buf` and parses it: the head and its length (the unit tests'
/// shorthand; the session feeds the scanner as bytes arrive).
#[cfg(test)]
pub(crate) fn scan_and_parse_request(
    buf: &[u8],
    limit: usize,
) -> Result<(RequestHead, usize), HeadError> {
    let len = HeadScanner::default()
        .find_end(buf, limit)?
        .expect("complete head");
    let mut head = RequestHead::default();
    parse_request(&buf[..len], DEFAULT_MAX_HEADERS, &mut head)?;
    Ok((head, len))
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
