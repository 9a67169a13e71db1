//! How long a message body is, and which messages are refused (RFC 9112 §6, and the smuggling table of
//! the project's HTTP reference, §2.2).
//!
//! A front proxy and a backend that disagree on where a request ends let an attacker smuggle a second
//! request past the proxy. The rules below make every request either unambiguous or refused, and never
//! forwarded when refused:
//!
//! - `Content-Length` and `Transfer-Encoding` together: **400** (Envoy's strict choice; the RFC also
//!   allows dropping `Content-Length`, but a message that carries both was built to confuse someone).
//! - More than one `Content-Length`, even with equal values (`42, 42` included): **400** (strict;
//!   simplest to reason about). Not `1*DIGIT` (`+5`, `-1`, hex, empty, overflow): **400**.
//! - `Transfer-Encoding` whose last coding over all its lines is not `chunked` (`chunked, identity`),
//!   or `chunked` applied twice: **400**; a coding we do not know: **501**; any in HTTP/1.0: **400**.
//! - Obs-fold, a space before the colon, bare CR, NUL or another CTL, an empty field name: **400**
//!   (the tokenizer refuses them; see [`super::head`]).
//! - `Host` missing in HTTP/1.1, more than one `Host`, or an invalid one: **400**. An absolute-form
//!   target whose authority differs from `Host`: **400** (the RFC says to use the target's, but the
//!   backend would still see the other `Host`; refusing keeps both views equal).
//! - `Expect` other than `100-continue`: **417**; several `Expect` fields: **400** (obfuscated
//!   `Expect` is a known desync vector).
//! - `CONNECT`: **501** (a reverse proxy has no business opening tunnels to arbitrary authorities).
//!
//! Responses follow the RFC: 1xx (but 101), 204, 304 and answers to `HEAD` have no body; `101` is only
//! valid as the answer to an upgrade request; `Content-Length` with `Transfer-Encoding` means chunked,
//! drops the length and makes the backend connection unusable for another request; no length at all
//! means the body runs until the backend closes.

use super::head::{Field, FieldName, Method, RequestHead, ResponseHead, Span, Version};
use super::is_token;
use super::status::ErrorStatus;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// The form of a request target (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    Origin,
    Absolute,
    /// `OPTIONS *`.
    Asterisk,
}

/// Why a request is refused. Each maps to the status the client gets ([`RequestError::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    #[error("more than one Content-Length")]
    DuplicateLength,
    #[error("Content-Length is not a decimal number")]
    InvalidLength,
    #[error("the last transfer coding is not chunked")]
    NotChunkedLast,
    #[error("chunked applied more than once")]
    ChunkedTwice,
    #[error("unknown transfer coding")]
    UnknownCoding,
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    ChunkedInHttp10,
    #[error("no Host in an HTTP/1.1 request")]
    MissingHost,
    #[error("more than one Host")]
    DuplicateHost,
    #[error("invalid Host")]
    InvalidHost,
    #[error("the target's authority differs from Host")]
    HostMismatch,
    #[error("invalid request target")]
    InvalidTarget,
    #[error("CONNECT is not supported")]
    Connect,
    #[error("unsupported expectation")]
    Expectation,
    #[error("more than one Expect")]
    DuplicateExpect,
}

impl RequestError {
    pub fn status(self) -> ErrorStatus {
        match self {
            Self::UnknownCoding | Self::Connect => ErrorStatus::NotImplemented,
            Self::Expectation => ErrorStatus::ExpectationFailed,
            _ => ErrorStatus::BadRequest,
        }
    }
}

/// What the engine needs to know about a valid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFraming {
    pub body: BodyKind,
    pub form: TargetForm,
    /// The authority to route by: the target's (absolute-form) or `Host`'s value. `None` for an
    /// HTTP/1.0 request without either.
    pub authority: Option<Span>,
    /// The path to route by: the target without scheme, authority and query (`*` for asterisk-form).
    pub path: Span,
    /// The client wants the connection kept after this exchange.
    pub keep_alive: bool,
    /// An upgrade request (`Connection: upgrade` and `Upgrade`, HTTP/1.1 only).
    pub upgrade: bool,
    /// `Expect: 100-continue` (HTTP/1.1 only; HTTP/1.0 expectations are ignored, RFC 9110 §10.1.1).
    pub expect_continue: bool,
}

/// Decides a request's framing and routing inputs, or why it is refused.
pub fn request(head: &RequestHead, buf: &[u8]) -> Result<RequestFraming, RequestError> {
    if head.method == Method::Connect {
        return Err(RequestError::Connect);
    }
    let http11 = head.version == Version::Http11;
    let (form, target_authority, path) = target(head, buf)?;

    let mut host = None;
    let mut length = None;
    let mut codings = Codings::default();
    let mut tokens = ConnectionTokens::default();
    let mut has_upgrade = false;
    let mut expect = None;
    let (mut lengths, mut expects) = (0, 0);
    for field in &head.fields {
        let value = field.value.of(buf);
        match field.kind {
            FieldName::Host => {
                if host.replace(field.value).is_some() {
                    return Err(RequestError::DuplicateHost);
                }
                if !valid_authority(value, true) {
                    return Err(RequestError::InvalidHost);
                }
            }
            FieldName::ContentLength => {
                length = Some(parse_length(value)?);
                lengths += 1;
            }
            FieldName::TransferEncoding => codings.add(value),
            FieldName::Connection => tokens.add(value),
            FieldName::Upgrade => has_upgrade = true,
            FieldName::Expect => {
                expect = Some(field);
                expects += 1;
            }
            _ => {}
        }
    }

    if lengths > 1 {
        return Err(RequestError::DuplicateLength);
    }
    if expects > 1 {
        return Err(RequestError::DuplicateExpect);
    }
    let body = match (codings.seen, length) {
        (true, Some(_)) => return Err(RequestError::LengthAndChunked),
        (true, None) if !http11 => return Err(RequestError::ChunkedInHttp10),
        (true, None) => {
            codings.check_request()?;
            BodyKind::Chunked
        }
        (false, Some(0) | None) => BodyKind::None,
        (false, Some(n)) => BodyKind::Length(n),
    };

    let authority = match (target_authority, host) {
        (Some(t), Some(h)) if !t.of(buf).eq_ignore_ascii_case(h.of(buf)) => {
            return Err(RequestError::HostMismatch);
        }
        (Some(t), _) => Some(t),
        (None, Some(h)) => Some(h),
        (None, None) if http11 => return Err(RequestError::MissingHost),
        (None, None) => None,
    };

    let expect_continue = match expect {
        Some(field) if http11 => {
            if !field.value.of(buf).eq_ignore_ascii_case(b"100-continue") {
                return Err(RequestError::Expectation);
            }
            true
        }
        _ => false,
    };

    Ok(RequestFraming {
        body,
        form,
        authority,
        path,
        keep_alive: if http11 {
            !tokens.close
        } else {
            tokens.keep_alive && !tokens.close
        },
        upgrade: http11 && tokens.upgrade && has_upgrade,
        expect_continue,
    })
}

/// The target's form, its authority (absolute-form) and the path to route by.
fn target(
    head: &RequestHead,
    buf: &[u8],
) -> Result<(TargetForm, Option<Span>, Span), RequestError> {
    let span = head.target;
    let raw = span.of(buf);
    let path_end = |from: usize| {
        let rest = &raw[from..];
        let end = rest.iter().position(|&b| b == b'?').unwrap_or(rest.len());
        Span::new(span.start as usize + from, span.start as usize + from + end)
    };
    match raw.first() {
        Some(b'/') => Ok((TargetForm::Origin, None, path_end(0))),
        Some(b'*') if raw.len() == 1 && head.method == Method::Options => {
            Ok((TargetForm::Asterisk, None, span))
        }
        _ => {
            let scheme_len = if starts_with_ignore_case(raw, b"http://") {
                7
            } else if starts_with_ignore_case(raw, b"https://") {
                8
            } else {
                return Err(RequestError::InvalidTarget);
            };
            let rest = &raw[scheme_len..];
            let authority_len = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(rest.len());
            let authority = &rest[..authority_len];
            if authority.is_empty() || !valid_authority(authority, false) {
                return Err(RequestError::InvalidTarget);
            }
            let start = span.start as usize + scheme_len;
            let authority = Span::new(start, start + authority_len);
            let path = match rest.get(authority_len) {
                Some(b'/') => path_end(scheme_len + authority_len),
                // `http://host` and `http://host?q` have an empty path, which means `/`.
                _ => Span::new(authority.end as usize, authority.end as usize),
            };
            Ok((TargetForm::Absolute, Some(authority), path))
        }
    }
}

fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack.len() >= prefix.len() && haystack[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// `uri-host [ ":" port ]`: a reg-name (unreserved, sub-delims, pct-encoded) or an IP literal in
/// brackets, and an optional decimal port. No userinfo (`@`), no whitespace, no path. An empty value
/// is valid in `Host` (RFC 9112 §3.2), never in a target.
fn valid_authority(value: &[u8], empty_ok: bool) -> bool {
    if value.is_empty() {
        return empty_ok;
    }
    let (host, port) = if value[0] == b'[' {
        let Some(close) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        match &value[close + 1..] {
            [] => (&value[..0], None),
            [b':', port @ ..] => (&value[..0], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        }
    };
    let host_ok = host.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    });
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    host_ok && port_ok && (value[0] == b'[' || !host.is_empty())
}

/// `Content-Length = 1*DIGIT`, nothing else (httparse has trimmed the surrounding whitespace).
fn parse_length(value: &[u8]) -> Result<u64, RequestError> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(RequestError::InvalidLength);
    }
    Ok(value
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// The transfer codings of a message, over all its `Transfer-Encoding` lines.
#[derive(Debug, Default)]
struct Codings {
    seen: bool,
    /// At least one coding was named.
    any: bool,
    /// The last coding named so far is `chunked`.
    chunked_last: bool,
    /// `chunked` was named before another coding, or twice.
    misplaced_chunked: bool,
    /// A well-formed coding we do not know.
    unknown: bool,
    /// An element that is not a bare token (parameters, stray characters).
    malformed: bool,
}

/// Transfer codings other than `chunked` that the RFC registers (and we forward untouched).
const KNOWN_CODINGS: [&[u8]; 5] = [b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress"];

impl Codings {
    fn add(&mut self, value: &[u8]) {
        self.seen = true;
        for coding in list_elements(value) {
            self.any = true;
            if self.chunked_last {
                self.misplaced_chunked = true;
            }
            let chunked = coding.eq_ignore_ascii_case(b"chunked");
            if !chunked && !KNOWN_CODINGS.iter().any(|k| k.eq_ignore_ascii_case(coding)) {
                if coding.iter().all(|&b| is_token(b)) {
                    self.unknown = true;
                } else {
                    self.malformed = true;
                }
            }
            self.chunked_last = chunked;
        }
    }

    /// Chunked is the final coding, exactly once, and well-formed.
    fn is_chunked(&self) -> bool {
        self.any && self.chunked_last && !self.malformed
    }

    /// A request's codings: the framing errors (400) before the unknown coding (501), so that
    /// `chunked, identity` is a 400.
    fn check_request(&self) -> Result<(), RequestError> {
        if !self.is_chunked() {
            Err(RequestError::NotChunkedLast)
        } else if self.misplaced_chunked {
            Err(RequestError::ChunkedTwice)
        } else if self.unknown {
            Err(RequestError::UnknownCoding)
        } else {
            Ok(())
        }
    }
}

/// The non-empty elements of a comma-separated list, trimmed of optional whitespace.
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|e| e.trim_ascii())
        .filter(|e| !e.is_empty())
}

/// The `Connection` options that matter to framing.
#[derive(Debug, Default, Clone, Copy)]
struct ConnectionTokens {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

impl ConnectionTokens {
    fn add(&mut self, value: &[u8]) {
        for token in list_elements(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            }
        }
    }

    fn of<'a>(fields: impl Iterator<Item = &'a Field>, buf: &[u8]) -> Self {
        let mut tokens = Self::default();
        for field in fields.filter(|f| f.kind == FieldName::Connection) {
            tokens.add(field.value.of(buf));
        }
        tokens
    }
}

/// Why a response is refused (the client gets a 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("101 Switching Protocols to a request that did not ask to upgrade")]
    UnexpectedSwitch,
    #[error("Content-Length values differ or are not decimal")]
    InvalidLength,
    #[error("chunked applied more than once")]
    ChunkedTwice,
    #[error("Transfer-Encoding in a response to an HTTP/1.0 request")]
    ChunkedToHttp10,
    #[error("status code outside 100..=999")]
    InvalidStatus,
}

/// What the engine needs to know about a valid response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFraming {
    pub body: BodyKind,
    /// A 1xx other than 101: forwarded (to HTTP/1.1 clients), then another head follows.
    pub informational: bool,
    /// `101 Switching Protocols` to an upgrade request: the connection becomes a tunnel.
    pub switching: bool,
    /// The backend connection may carry another request after this response.
    pub reusable: bool,
    /// The `Content-Length` to write instead of the backend's fields: `Some` when they must be
    /// normalised (several equal values), `None` to forward them as they are.
    pub normalised_length: Option<u64>,
    /// Drop every `Content-Length` (it came with `Transfer-Encoding`).
    pub drop_length: bool,
}

/// What the request asked, as the response framing needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestContext {
    pub method: Method,
    pub version: Version,
    pub upgrade: bool,
}

/// Decides a response's framing, or why it is refused.
pub fn response(
    head: &ResponseHead,
    buf: &[u8],
    request: RequestContext,
) -> Result<ResponseFraming, ResponseError> {
    let status = head.status;
    if !(100..=999).contains(&status) {
        return Err(ResponseError::InvalidStatus);
    }
    let tokens = ConnectionTokens::of(head.fields.iter(), buf);
    // An HTTP/1.0 exchange persists only if the response says keep-alive (RFC 9112 §9.3), whatever
    // version the backend answers a 1.0 request with.
    let keeps_alive = match (head.version, request.version) {
        (Version::Http11, Version::Http11) => !tokens.close,
        _ => tokens.keep_alive && !tokens.close,
    };
    let mut framing = ResponseFraming {
        body: BodyKind::None,
        informational: false,
        switching: false,
        reusable: keeps_alive,
        normalised_length: None,
        drop_length: false,
    };
    if status == 101 {
        if !request.upgrade {
            return Err(ResponseError::UnexpectedSwitch);
        }
        framing.switching = true;
        framing.reusable = false;
        return Ok(framing);
    }
    if status < 200 {
        framing.informational = true;
        return Ok(framing);
    }
    let bodiless = request.method == Method::Head || status == 204 || status == 304;

    let mut codings = Codings::default();
    let mut length: Option<u64> = None;
    let mut length_fields = 0;
    let mut length_error = false;
    for field in &head.fields {
        let value = field.value.of(buf);
        match field.kind {
            // Unknown codings are fine in a response: unless chunked comes last, the body runs until
            // the backend closes.
            FieldName::TransferEncoding => codings.add(value),
            FieldName::ContentLength => {
                length_fields += 1;
                // `42, 42` and repeated equal fields are one length (RFC 9110 §8.6).
                for element in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    match parse_length(element) {
                        Ok(n) if length.is_none_or(|l| l == n) => length = Some(n),
                        _ => length_error = true,
                    }
                }
            }
            _ => {}
        }
    }
    if bodiless {
        return Ok(framing);
    }
    if codings.seen {
        if request.version == Version::Http10 {
            return Err(ResponseError::ChunkedToHttp10);
        }
        framing.drop_length = length_fields > 0;
        if framing.drop_length {
            framing.reusable = false;
        }
        let chunked = codings.is_chunked();
        if chunked && codings.misplaced_chunked {
            return Err(ResponseError::ChunkedTwice);
        }
        framing.body = if chunked {
            BodyKind::Chunked
        } else {
            framing.reusable = false;
            BodyKind::UntilClose
        };
        return Ok(framing);
    }
    if length_error {
        return Err(ResponseError::InvalidLength);
    }
    match length {
        Some(n) => {
            if length_fields > 1
                || head
                    .fields_of(FieldName::ContentLength)
                    .any(|f| f.value.of(buf).contains(&b','))
            {
                framing.normalised_length = Some(n);
            }
            framing.body = if n == 0 {
                BodyKind::None
            } else {
                BodyKind::Length(n)
            };
        }
        None => {
            framing.body = BodyKind::UntilClose;
            framing.reusable = false;
        }
    }
    Ok(framing)
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
