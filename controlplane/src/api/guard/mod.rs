//! Who may call the API: checked on every request before it is routed.
//!
//! The API listens on loopback by default, where every local process and every browser page open on the
//! host can reach it. A page cannot read the answers of another origin, but it can *send* requests: a form
//! or `fetch(…, {mode: "no-cors"})` POSTs `text/plain`, an `<img>` GETs, and a page whose DNS name was
//! rebound to 127.0.0.1 even talks to the API as its own origin. So, in this order:
//!
//! 1. **Cross-site requests are refused** (403): `Sec-Fetch-Site: cross-site` or `same-site`, or an
//!    `Origin` that is not the API's own (`http://` + the address it listens on; for a wildcard address,
//!    the `Host` the request was sent to) nor in `--api-allowed-origins`. Browsers send `Origin` on every
//!    POST/PUT/DELETE and on cross-origin GETs; tools (curl, docker-flow-swarm-listener) send neither
//!    header, so they are unaffected.
//! 2. **Without a token, the `Host` must be an address, `localhost`, or a host of
//!    `--api-allowed-origins`** (403): that is what defeats DNS rebinding, where the page's origin is the
//!    attacker's own name. With a token the page cannot authenticate anyway.
//! 3. **The token** (401), when one is set: `Authorization: Bearer <token>`, or Basic auth with the token
//!    as the password (any user name), or, on docker-flow-proxy's routes only (its callers cannot set
//!    headers), `?token=<token>`. Compared in constant time.
//! 4. **A body must be JSON** (415): POST, PUT and PATCH with a body need `Content-Type: application/json`.
//!    That is a type a browser cannot send across origins without a preflight, which Ringway never
//!    answers.

use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use hyper::header::{self, HeaderMap};
use hyper::{Method, StatusCode};

use super::http::ApiError;

/// How requests are let in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// The token every request must carry, if set.
    pub token: Option<String>,
    /// `--api-allowed-origins`, normalized (see [`normalize_origin`]).
    pub allowed_origins: Vec<String>,
}

/// What the request says about itself, for [`Guard::check`].
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    /// The request is for docker-flow-proxy's routes, where `?token=` is accepted.
    pub dfp: bool,
}

/// [`Access`] bound to the address the API listens on.
#[derive(Debug, Clone)]
pub struct Guard {
    access: Access,
    listen: SocketAddr,
    /// The API's own origins when it listens on one address (empty for a wildcard address).
    own_origins: Vec<String>,
}

impl Guard {
    pub fn new(access: Access, listen: SocketAddr) -> Self {
        let mut own_origins = Vec::new();
        if !listen.ip().is_unspecified() {
            own_origins.push(format!("http://{listen}"));
            if listen.ip().is_loopback() {
                own_origins.push(format!("http://localhost:{}", listen.port()));
            }
        }
        Self {
            access,
            listen,
            own_origins,
        }
    }

    pub fn has_token(&self) -> bool {
        self.access.token.is_some()
    }

    /// Lets the request in or says why not (see the module docs for the order).
    pub fn check(&self, request: RequestHead<'_>) -> Result<(), ApiError> {
        let headers = request.headers;
        let forbidden = |field: &str, message: String| {
            Err(ApiError::new(StatusCode::FORBIDDEN, field, message))
        };
        if let Some(site) = header_str(headers, "sec-fetch-site")
            && matches!(site, "cross-site" | "same-site")
        {
            return forbidden(
                "sec-fetch-site",
                format!(
                    "sec-fetch-site: {site}: a page of another site cannot call the API (see docs/api.md, Security)"
                ),
            );
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("(not text)");
            if !self.origin_allowed(origin, headers) {
                return forbidden(
                    "origin",
                    format!(
                        "origin: {origin} is not the API's own origin; a page of another site cannot call \
                         the API (allow an origin with --api-allowed-origins)"
                    ),
                );
            }
        }
        if self.access.token.is_none()
            && let Some(host) = header_str(headers, "host")
            && !self.host_allowed(host)
        {
            return forbidden(
                "host",
                format!(
                    "host: {host:?} is a name the API does not know; without --api-token only an address, \
                     localhost or a host of --api-allowed-origins may be used (this stops DNS rebinding)"
                ),
            );
        }
        if let Some(token) = &self.access.token
            && !authorized(
                headers,
                request.dfp.then_some(request.query).flatten(),
                token,
            )
        {
            let how = if request.dfp {
                "Authorization: Bearer <token>, Basic auth with the token as password, or ?token=<token>"
            } else {
                "Authorization: Bearer <token>, or Basic auth with the token as password"
            };
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authorization",
                format!("authorization: a valid token is required ({how})"),
            ));
        }
        if matches!(*request.method, Method::POST | Method::PUT | Method::PATCH)
            && has_body(headers)
        {
            let given = header_str(headers, "content-type").unwrap_or("");
            let essence = given.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "content-type",
                    format!(
                        "content-type: {given:?}: a request body must be sent as application/json \
                         (curl: -H 'Content-Type: application/json')"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn origin_allowed(&self, origin: &str, headers: &HeaderMap) -> bool {
        let origin = origin.to_ascii_lowercase();
        if self.own_origins.contains(&origin) || self.access.allowed_origins.contains(&origin) {
            return true;
        }
        // On a wildcard address, the API's origin is whichever of the host's addresses the request
        // was sent to: the Host header, if it is an address (a name could be rebound) on our port.
        self.own_origins.is_empty()
            && header_str(headers, "host").is_some_and(|host| {
                host_address(host).is_some_and(|(ip, port)| {
                    port == Some(self.listen.port())
                        && origin == format!("http://{}", host.to_ascii_lowercase())
                        && !ip.is_unspecified()
                })
            })
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let name = match host_address(&host) {
            Some(_) => return true,
            None => host
                .rsplit_once(':')
                .map_or(host.as_str(), |(name, _)| name),
        };
        name == "localhost"
            || self
                .access
                .allowed_origins
                .iter()
                .any(|o| origin_host(o) == Some(name))
    }
}

/// A `Host` value that is an address: the IP and the port, if given.
fn host_address(host: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(address) = host.parse::<SocketAddr>() {
        return Some((address.ip(), Some(address.port())));
    }
    host.trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .ok()
        .map(|ip| (ip, None))
}

/// The host part of a normalized origin (`https://api.example:8443` → `api.example`).
fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin.split_once("://")?.1;
    Some(match rest.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => rest,
    })
}

/// An origin as a browser sends it: `scheme://host[:port]`, lowercase, without a default port or a path.
pub fn normalize_origin(text: &str) -> Result<String, String> {
    let lower = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let bad = || {
        format!("{text:?} is not an origin like https://ops.example.com or http://10.0.0.1:8080")
    };
    let (scheme, rest) = lower.split_once("://").ok_or_else(bad)?;
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return Err(bad()),
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad());
    }
    let rest = match rest.rsplit_once(':') {
        Some((host, port)) if port == default_port && !host.ends_with(':') => host,
        _ => rest,
    };
    Ok(format!("{scheme}://{rest}"))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Whether a request announces a body (a length above zero, or chunked).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || header_str(headers, "content-length").is_some_and(|l| l != "0")
}

/// Whether the request carries `token`: Bearer, Basic password, or (where `query` is given) `?token=`.
pub fn authorized(headers: &HeaderMap, query: Option<&str>, token: &str) -> bool {
    let expected = token.as_bytes();
    let from_header = headers.get_all(header::AUTHORIZATION).iter().any(|value| {
        let value = value.as_bytes();
        if let Some(given) = value.strip_prefix(b"Bearer ") {
            return same_bytes(given, expected);
        }
        value
            .strip_prefix(b"Basic ")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .and_then(|pair| {
                let colon = pair.iter().position(|b| *b == b':')?;
                Some(same_bytes(&pair[colon + 1..], expected))
            })
            .unwrap_or(false)
    });
    from_header
        || query.is_some_and(|query| {
            query.split('&').any(|pair| {
                pair.strip_prefix("token=")
                    .and_then(|v| super::http::decode(v, true).ok())
                    .is_some_and(|given| same_bytes(given.as_bytes(), expected))
            })
        })
}

/// Compares in time that depends only on the lengths, not on where the first difference is, so a caller
/// cannot find the token byte by byte by timing refusals.
fn same_bytes(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        difference |= given.get(i).copied().unwrap_or(!e) ^ e;
    }
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests;
