//! The heads the proxy forwards: rebuilt from the parsed spans into one buffer (the only copy of head
//! bytes), with CRLF line ends whatever the sender used.
//!
//! - Hop-by-hop fields (RFC 9110 §7.6.1) are dropped: `Connection` and every field it names,
//!   `Keep-Alive`, `Proxy-Connection`, `TE` (we do not promise trailers). `Upgrade` stays only on an
//!   upgrade request, its `101`, and a `426`. `Transfer-Encoding` stays: bodies are forwarded as they came.
//!   `Host`, `Content-Length` and `Transfer-Encoding` are never dropped because `Connection` names them
//!   (a classic trick to make a proxy strip framing).
//! - `X-Forwarded-For`: the client's values, then the client address, in one field. Client-supplied
//!   `X-Forwarded-Proto` and `X-Forwarded-Port` are dropped and ours set, as HAProxy does (Sōzu keeps
//!   the client's, which lets a client claim it came over TLS).
//! - `Host` passes unchanged. The request line keeps the client's version: an HTTP/1.0 request is
//!   forwarded as HTTP/1.0 with `Connection: keep-alive` (so the backend connection can be pooled and
//!   the backend never answers it with chunked coding, which a 1.0 client cannot read); a 1.1 request
//!   goes as 1.1.
//! - The proxy decides the client connection's fate: the response carries `Connection: close` when the
//!   proxy will close, `Connection: keep-alive` to an HTTP/1.0 client it keeps.

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::BytesMut;

use super::framing::{RequestFraming, ResponseFraming, list_elements};
use super::head::{Field, FieldName, RequestHead, ResponseHead, Version};

/// How the client reached the proxy, for `X-Forwarded-*`. Later: PROXY-protocol addresses, TLS,
/// sticky cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewriteContext {
    pub client: IpAddr,
    pub listener_port: u16,
    pub scheme: Scheme,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// Room for the fields the proxy adds, so the head is built in one allocation.
const ADDED_FIELDS_ROOM: usize = 160;

/// Writes the request head to forward into `out`.
pub fn request_head(
    head: &RequestHead,
    framing: &RequestFraming,
    buf: &[u8],
    ctx: &RewriteContext,
    out: &mut BytesMut,
) {
    out.reserve(head.len + ADDED_FIELDS_ROOM);
    let http10 = head.version == Version::Http10;
    out.extend_from_slice(head.method_span.of(buf));
    out.extend_from_slice(b" ");
    out.extend_from_slice(head.target.of(buf));
    out.extend_from_slice(if http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let named = write_end_to_end_fields(out, &head.fields, buf, |kind| match kind {
        FieldName::XForwardedFor | FieldName::XForwardedProto | FieldName::XForwardedPort => {
            Some(false)
        }
        FieldName::Upgrade => Some(framing.upgrade),
        FieldName::Expect => Some(framing.expect_continue),
        FieldName::Host | FieldName::ContentLength | FieldName::TransferEncoding => Some(true),
        _ => None,
    });
    out.extend_from_slice(b"X-Forwarded-For: ");
    for field in head.fields_of(FieldName::XForwardedFor) {
        if !named.names(field, buf) && !field.value.is_empty() {
            out.extend_from_slice(field.value.of(buf));
            out.extend_from_slice(b", ");
        }
    }
    // Writing to a BytesMut cannot fail.
    let _ = write!(
        out,
        "{}\r\nX-Forwarded-Proto: {}\r\nX-Forwarded-Port: {}\r\n",
        ctx.client.to_canonical(),
        ctx.scheme.as_str(),
        ctx.listener_port
    );
    if framing.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// What the proxy tells the client about its connection in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientConnection {
    /// HTTP/1.1 client, connection kept: no `Connection` field.
    Keep,
    /// HTTP/1.0 client, connection kept: `Connection: keep-alive`.
    KeepHttp10,
    /// The proxy closes after this response: `Connection: close`.
    Close,
    /// A `101`: `Connection: upgrade`.
    Upgrade,
    /// A 1xx: no `Connection` field.
    Interim,
}

/// Writes the response head to forward into `out`.
pub fn response_head(
    head: &ResponseHead,
    framing: &ResponseFraming,
    buf: &[u8],
    client: ClientConnection,
    out: &mut BytesMut,
) {
    out.reserve(head.len + ADDED_FIELDS_ROOM);
    out.extend_from_slice(match head.version {
        Version::Http10 => b"HTTP/1.0 ",
        Version::Http11 => b"HTTP/1.1 ",
    });
    let _ = write!(out, "{:03} ", head.status);
    out.extend_from_slice(head.reason.of(buf));
    out.extend_from_slice(b"\r\n");
    write_end_to_end_fields(out, &head.fields, buf, |kind| match kind {
        // A 426 must name the protocols it wants (RFC 9110 §15.5.22).
        FieldName::Upgrade => Some(framing.switching || head.status == 426),
        FieldName::ContentLength => {
            Some(!framing.drop_length && framing.normalised_length.is_none())
        }
        FieldName::TransferEncoding => Some(true),
        _ => None,
    });
    if let Some(length) = framing.normalised_length {
        let _ = write!(out, "Content-Length: {length}\r\n");
    }
    out.extend_from_slice(match client {
        ClientConnection::Keep | ClientConnection::Interim => b"",
        ClientConnection::KeepHttp10 => b"Connection: keep-alive\r\n",
        ClientConnection::Close => b"Connection: close\r\n",
        ClientConnection::Upgrade => b"Connection: upgrade\r\n",
    });
    out.extend_from_slice(b"\r\n");
}

/// Writes the fields of a forwarded head, in order, except the hop-by-hop ones: `Connection`,
/// `Keep-Alive`, `Proxy-Connection` and `TE` always go; `decide` rules on the fields its direction
/// treats specially (`Some(keep)`), and every other field goes if `Connection` names it. Returns the
/// names `Connection` listed, for fields the caller writes itself.
fn write_end_to_end_fields<'a>(
    out: &mut BytesMut,
    fields: &'a [Field],
    buf: &[u8],
    decide: impl Fn(FieldName) -> Option<bool>,
) -> ConnectionNames<'a> {
    let named = ConnectionNames::of(fields, buf);
    for field in fields {
        let keep = match field.kind {
            FieldName::Connection
            | FieldName::KeepAlive
            | FieldName::ProxyConnection
            | FieldName::Te => false,
            kind => decide(kind).unwrap_or_else(|| !named.names(field, buf)),
        };
        if keep {
            write_field(out, field, buf);
        }
    }
    named
}

fn write_field(out: &mut BytesMut, field: &Field, buf: &[u8]) {
    out.extend_from_slice(field.name.of(buf));
    out.extend_from_slice(b": ");
    out.extend_from_slice(field.value.of(buf));
    out.extend_from_slice(b"\r\n");
}

/// The field names listed in `Connection` (besides `close`, `keep-alive`, `upgrade`), which are
/// hop-by-hop. Kept as the `Connection` fields themselves: no allocation.
struct ConnectionNames<'a> {
    fields: &'a [Field],
    any: bool,
}

impl<'a> ConnectionNames<'a> {
    fn of(fields: &'a [Field], buf: &[u8]) -> Self {
        let any = fields
            .iter()
            .filter(|f| f.kind == FieldName::Connection)
            .flat_map(|f| list_elements(f.value.of(buf)))
            .any(|t| {
                !t.eq_ignore_ascii_case(b"close")
                    && !t.eq_ignore_ascii_case(b"keep-alive")
                    && !t.eq_ignore_ascii_case(b"upgrade")
            });
        Self { fields, any }
    }

    fn names(&self, field: &Field, buf: &[u8]) -> bool {
        if !self.any {
            return false;
        }
        let name = field.name.of(buf);
        self.fields
            .iter()
            .filter(|f| f.kind == FieldName::Connection)
            .flat_map(|f| list_elements(f.value.of(buf)))
            .any(|t| t.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
