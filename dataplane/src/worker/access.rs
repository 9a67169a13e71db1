//! The access log (`--access-log`), target `ringway::access`: one `connection` event as a TCP
//! connection (or an upgraded HTTP connection's tunnel) ends, and one `request` event per finished HTTP
//! exchange. Nothing here runs unless the flag is on.

use std::borrow::Cow;
use std::net::SocketAddr;

use crate::close::CloseReason;
use crate::http::session::ExchangeSummary;
use crate::worker::conn::Conn;

/// What the worker knows of an exchange beyond its summary.
pub(in crate::worker) struct RequestContext<'a> {
    pub client: Option<SocketAddr>,
    /// The service the request was routed to (`None`: no route, or refused before routing).
    pub service: Option<&'a str>,
    /// The backend that was picked for it, if one was.
    pub backend: Option<SocketAddr>,
    pub duration_ms: u64,
}

/// Writes the `request` line of one exchange (target `ringway::access`).
pub(in crate::worker) fn log_request(context: &RequestContext<'_>, summary: &ExchangeSummary) {
    let line = summary.request.as_ref();
    let method = line.map_or(Cow::Borrowed("-"), |l| String::from_utf8_lossy(l.method()));
    let host = line
        .and_then(|l| l.host())
        .map_or(Cow::Borrowed("-"), String::from_utf8_lossy);
    let path = line.map_or(Cow::Borrowed("-"), |l| {
        String::from_utf8_lossy(path_of(l.target()))
    });
    let head = line.map_or(0, |l| l.head.len() as u64);
    let from = if summary.error.is_some() {
        "proxy"
    } else if summary.status != 0 {
        "backend"
    } else {
        "-"
    };
    tracing::info!(
        target: "ringway::access",
        client = %OrDash(context.client),
        service = context.service.unwrap_or("-"),
        backend = %OrDash(context.backend),
        method = &*method,
        host = &*host,
        path = &*path,
        status = summary.status,
        from,
        bytes_in = summary.request_bytes,
        body_in = summary.request_bytes.saturating_sub(head),
        bytes_out = summary.response_bytes,
        duration_ms = context.duration_ms,
        retried = summary.retried,
        "request"
    );
}

/// Writes the `connection` line of a TCP connection as it ends.
pub(in crate::worker) fn log_connection(conn: &Conn, reason: CloseReason, now_ms: u64) {
    let client = socket2::SockRef::from(&conn.client)
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket());
    tracing::info!(
        target: "ringway::access",
        client = %OrDash(client),
        service = %conn.route.name,
        backend = %OrDash(conn.lease.as_ref().map(|l| l.backend.address)),
        bytes_in = conn.up.delivered,
        bytes_out = conn.down.delivered,
        duration_ms = now_ms.saturating_sub(conn.opened_ms),
        outcome = reason.name(),
        reset = reason.resets(),
        "connection"
    );
}

/// An optional address shown as `-` when absent (formatted in place: no string per line).
struct OrDash(Option<SocketAddr>);

impl std::fmt::Display for OrDash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(address) => address.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// The path of a request target, without its query: an absolute-form target
/// (`http://host/p?q`) loses its scheme and authority, an asterisk-form or authority-form one
/// (`*`, `host:443`) is shown as it is.
fn path_of(target: &[u8]) -> &[u8] {
    let path = match target.windows(3).position(|w| w == b"://") {
        Some(at) if !target.starts_with(b"/") => {
            let rest = &target[at + 3..];
            rest.iter()
                .position(|&b| b == b'/' || b == b'?')
                .map_or(&b"/"[..], |slash| &rest[slash..])
        }
        _ => target,
    };
    match path.iter().position(|&b| b == b'?') {
        Some(0) => b"/",
        Some(query) => &path[..query],
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::path_of;

    #[test]
    fn the_logged_path_drops_the_query_and_an_absolute_form_s_scheme_and_authority() {
        for (target, path) in [
            ("/", "/"),
            ("/a/b?x=1&y=2", "/a/b"),
            ("/a?", "/a"),
            ("http://example.com/shop/cart?id=3", "/shop/cart"),
            ("http://example.com", "/"),
            ("http://example.com?q", "/"),
            ("*", "*"),
            ("example.com:443", "example.com:443"),
            ("/redirect?to=http://x/y", "/redirect"),
        ] {
            assert_eq!(
                std::str::from_utf8(path_of(target.as_bytes())).unwrap(),
                path,
                "{target}"
            );
        }
    }
}
