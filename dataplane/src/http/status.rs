//! The proxy's own answers: complete, static responses for every error the engine reports.
//!
//! Each is a full HTTP/1.1 response with `Content-Type: text/plain`, a `Content-Length` and a short body
//! naming the status, so a client (or an operator with curl) sees at once who answered. They are static
//! byte strings: answering an error costs no allocation and no formatting.
//!
//! Only `404` and `503` may keep the client connection open, and only when the request had no body (the
//! engine decides; the request was then read completely, so the connection is still in step). Every
//! other error closes it: after a framing error the byte stream cannot be trusted, and after a
//! `502`/`504` the request body may be half-sent.

use bytes::Bytes;

/// A status the proxy answers by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorStatus {
    /// 400: malformed or ambiguous request (framing, smuggling vectors, bad header syntax).
    BadRequest,
    /// 404: no route for this host, path or header.
    NotFound,
    /// 408: the request head (or body) did not arrive in time.
    RequestTimeout,
    /// 417: the request carries an `Expect` the proxy cannot meet (anything but `100-continue`).
    ExpectationFailed,
    /// 431: the request head is too large or has too many header fields.
    HeaderFieldsTooLarge,
    /// 501: a method (`CONNECT`) or transfer coding the proxy does not implement.
    NotImplemented,
    /// 502: the backend refused, reset, or sent an invalid or incomplete response.
    BadGateway,
    /// 503: no backend can take the request (none up, all full past the queue timeout).
    ServiceUnavailable,
    /// 504: the backend did not answer in time.
    GatewayTimeout,
    /// 505: an HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

/// Every status, for tests and for registering counters up front.
pub const ALL: [ErrorStatus; 10] = [
    ErrorStatus::BadRequest,
    ErrorStatus::NotFound,
    ErrorStatus::RequestTimeout,
    ErrorStatus::ExpectationFailed,
    ErrorStatus::HeaderFieldsTooLarge,
    ErrorStatus::NotImplemented,
    ErrorStatus::BadGateway,
    ErrorStatus::ServiceUnavailable,
    ErrorStatus::GatewayTimeout,
    ErrorStatus::VersionNotSupported,
];

/// One complete response: status line, the fixed fields, `$connection` (a whole field line or
/// nothing) and the body "CODE REASON\n". `concat!` cannot count, so the body's length is spelled out
/// and checked by `every_response_is_well_formed`.
macro_rules! response {
    ($code:literal, $reason:literal, $length:literal, $connection:literal) => {
        concat!(
            "HTTP/1.1 ",
            $code,
            " ",
            $reason,
            "\r\n",
            "Content-Type: text/plain\r\n",
            "Content-Length: ",
            $length,
            "\r\n",
            $connection,
            "\r\n",
            $code,
            " ",
            $reason,
            "\n"
        )
        .as_bytes()
    };
}

/// Builds the close and keep-alive variants of one response at compile time.
macro_rules! responses {
    ($code:literal, $reason:literal, $length:literal) => {
        (
            response!($code, $reason, $length, "Connection: close\r\n"),
            response!($code, $reason, $length, ""),
        )
    };
}

impl ErrorStatus {
    /// The numeric status code.
    pub fn code(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::NotFound => 404,
            Self::RequestTimeout => 408,
            Self::ExpectationFailed => 417,
            Self::HeaderFieldsTooLarge => 431,
            Self::NotImplemented => 501,
            Self::BadGateway => 502,
            Self::ServiceUnavailable => 503,
            Self::GatewayTimeout => 504,
            Self::VersionNotSupported => 505,
        }
    }

    /// A stable name for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::RequestTimeout => "request_timeout",
            Self::ExpectationFailed => "expectation_failed",
            Self::HeaderFieldsTooLarge => "header_fields_too_large",
            Self::NotImplemented => "not_implemented",
            Self::BadGateway => "bad_gateway",
            Self::ServiceUnavailable => "service_unavailable",
            Self::GatewayTimeout => "gateway_timeout",
            Self::VersionNotSupported => "version_not_supported",
        }
    }

    /// Whether the client connection may stay open after this answer (given a request without a body).
    pub fn may_keep_alive(self) -> bool {
        matches!(self, Self::NotFound | Self::ServiceUnavailable)
    }

    fn variants(self) -> (&'static [u8], &'static [u8]) {
        match self {
            Self::BadRequest => responses!("400", "Bad Request", "16"),
            Self::NotFound => responses!("404", "Not Found", "14"),
            Self::RequestTimeout => responses!("408", "Request Timeout", "20"),
            Self::ExpectationFailed => responses!("417", "Expectation Failed", "23"),
            Self::HeaderFieldsTooLarge => {
                responses!("431", "Request Header Fields Too Large", "36")
            }
            Self::NotImplemented => responses!("501", "Not Implemented", "20"),
            Self::BadGateway => responses!("502", "Bad Gateway", "16"),
            Self::ServiceUnavailable => responses!("503", "Service Unavailable", "24"),
            Self::GatewayTimeout => responses!("504", "Gateway Timeout", "20"),
            Self::VersionNotSupported => responses!("505", "HTTP Version Not Supported", "31"),
        }
    }

    /// The complete response. `keep_alive` selects the variant without `Connection: close` (only
    /// meaningful where [`may_keep_alive`](Self::may_keep_alive)); `head_only` drops the body, for an
    /// answer to `HEAD` (the client would otherwise read the body as the next response).
    pub fn response(self, keep_alive: bool, head_only: bool) -> Bytes {
        let (close, keep) = self.variants();
        let full = if keep_alive && self.may_keep_alive() {
            keep
        } else {
            close
        };
        if head_only {
            let body = full.len() - (self.reason_len() + 5);
            Bytes::from_static(&full[..body])
        } else {
            Bytes::from_static(full)
        }
    }

    fn reason_len(self) -> usize {
        // The body is "CODE REASON\n"; the status line holds the same reason.
        let (close, _) = self.variants();
        let line_end = close.iter().position(|&b| b == b'\r').unwrap_or(0);
        line_end - "HTTP/1.1 400 ".len()
    }
}

impl std::fmt::Display for ErrorStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> (u16, Option<String>, Vec<(String, String)>, usize) {
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(len) = response.parse(bytes).unwrap() else {
            panic!("incomplete response {:?}", String::from_utf8_lossy(bytes))
        };
        let fields = response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        (
            response.code.unwrap(),
            response.reason.map(str::to_string),
            fields,
            len,
        )
    }

    #[test]
    fn every_response_is_well_formed() {
        for status in ALL {
            for keep_alive in [false, true] {
                let full = status.response(keep_alive, false);
                let (code, reason, fields, head_len) = parse(&full);
                assert_eq!(code, status.code());
                let length: usize = fields
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .unwrap()
                    .1
                    .parse()
                    .unwrap();
                let body = &full[head_len..];
                assert_eq!(
                    body.len(),
                    length,
                    "{status}: Content-Length matches the body"
                );
                assert_eq!(
                    body,
                    format!("{} {}\n", status.code(), reason.unwrap()).as_bytes()
                );
                let closes = fields
                    .iter()
                    .any(|(n, v)| n == "connection" && v == "close");
                assert_eq!(closes, !(keep_alive && status.may_keep_alive()), "{status}");
                assert!(
                    fields
                        .iter()
                        .any(|(n, v)| n == "content-type" && v == "text/plain")
                );

                let head = status.response(keep_alive, true);
                assert_eq!(
                    &head[..],
                    &full[..head_len],
                    "{status}: HEAD answer is the head"
                );
            }
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = ALL.iter().map(|s| s.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }
}
