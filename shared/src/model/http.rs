//! The HTTP part of the snapshot: listener limits, routes, and backend connection reuse.
//!
//! Routes live at the top of the snapshot and name their listener by address. Matching rules (the
//! dataplane's router applies them): a header route before host routes; an exact host before a
//! wildcard (`*.example.com`, one or more labels) before a route with no hosts; then an exact path,
//! the longest byte prefix, a regex. Hosts are lowercase, without port or trailing dot; paths are
//! compared raw (not percent-decoded), without the query string.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{Listener, ModelError, Protocol, display_name, invalid};

/// Default largest request head in bytes (then `431`).
pub const DEFAULT_MAX_HEADER_BYTES: u32 = 16 * 1024;
/// Default most request header fields (then `431`).
pub const DEFAULT_MAX_HEADERS: u16 = 100;
/// Most header fields a listener may allow: the head parser's fixed array.
pub const MAX_HEADERS_LIMIT: u16 = 256;
/// Largest request head a listener may allow.
pub const MAX_HEADER_BYTES_LIMIT: u32 = 1024 * 1024;
/// Default time a client has to send a whole request head (slowloris; then `408`).
pub const DEFAULT_REQUEST_HEAD_TIMEOUT_MS: u32 = 10_000;
/// Default idle time of a kept-alive client connection between requests.
pub const DEFAULT_KEEPALIVE_TIMEOUT_MS: u32 = 60_000;
/// Default time an idle pooled backend connection is kept.
pub const DEFAULT_POOL_IDLE_MS: u32 = 15_000;
/// Default idle backend connections kept per backend on one worker.
pub const DEFAULT_POOL_MAX_IDLE: u32 = 64;

/// Limits of an HTTP listener, applied before a route is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpListener {
    pub max_header_bytes: u32,
    pub max_headers: u16,
    pub request_head_ms: u32,
    pub keepalive_ms: u32,
    /// marathon-lb's app-id port: routes match `X-Marathon-App-Id` (header routes) only.
    pub app_id_routing: bool,
}

impl Default for HttpListener {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            request_head_ms: DEFAULT_REQUEST_HEAD_TIMEOUT_MS,
            keepalive_ms: DEFAULT_KEEPALIVE_TIMEOUT_MS,
            app_id_routing: false,
        }
    }
}

impl HttpListener {
    pub(super) fn validate(&self, at: impl Fn() -> String) -> Result<(), ModelError> {
        if !(1..=MAX_HEADER_BYTES_LIMIT).contains(&self.max_header_bytes) {
            return Err(invalid(
                format!("{}.max_header_bytes", at()),
                format!("must be 1..={MAX_HEADER_BYTES_LIMIT}"),
            ));
        }
        if !(1..=MAX_HEADERS_LIMIT).contains(&self.max_headers) {
            return Err(invalid(
                format!("{}.max_headers", at()),
                format!("must be 1..={MAX_HEADERS_LIMIT}"),
            ));
        }
        for (name, value) in [
            ("request_head_ms", self.request_head_ms),
            ("keepalive_ms", self.keepalive_ms),
        ] {
            if value == 0 {
                return Err(invalid(format!("{}.{name}", at()), "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Backend connection reuse of a cluster that serves HTTP routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterHttp {
    pub pool_idle_ms: u32,
    /// Idle connections kept per backend per worker; 0 turns reuse off.
    pub pool_max_idle: u32,
}

impl Default for ClusterHttp {
    fn default() -> Self {
        Self {
            pool_idle_ms: DEFAULT_POOL_IDLE_MS,
            pool_max_idle: DEFAULT_POOL_MAX_IDLE,
        }
    }
}

impl ClusterHttp {
    pub(super) fn validate(&self, at: impl Fn() -> String) -> Result<(), ModelError> {
        if self.pool_idle_ms == 0 {
            return Err(invalid(
                format!("{}.pool_idle_ms", at()),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// How a route's `paths` match a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathMatch {
    /// Byte prefix (HAProxy's `path_beg`, docker-flow-proxy's default).
    Prefix,
    Exact,
    /// A regular expression (Rust `regex` syntax), unanchored as HAProxy's `path_reg`.
    Regex,
}

/// A request header that must have one value: marathon-lb's `X-Marathon-App-Id` routing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Lowercase field name.
    pub name: String,
    /// Compared exactly.
    pub value: String,
}

/// Where the requests of one service on one HTTP listener go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The HTTP listener's address.
    pub listener: SocketAddr,
    /// The service's name; unique per listener.
    pub name: String,
    /// Lowercase host names or `*.`-wildcards, without port; empty means any host.
    pub hosts: Vec<String>,
    /// Empty means every path.
    pub paths: Vec<String>,
    pub path_match: PathMatch,
    pub header: Option<HeaderMatch>,
    pub cluster: String,
}

/// Checks each route against its listener and cluster, and that no two routes of a listener claim the
/// same requests.
pub(super) fn validate_routes(
    routes: &[Route],
    listeners: &[Listener],
    clusters: &HashSet<&str>,
) -> Result<(), ModelError> {
    let http_listeners: HashMap<SocketAddr, &Listener> = listeners
        .iter()
        .filter(|l| l.protocol == Protocol::Http)
        .map(|l| (l.address, l))
        .collect();
    let mut names = HashSet::with_capacity(routes.len());
    let mut claims: HashMap<Claim<'_>, &str> = HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        let at = || {
            format!(
                "routes[{}@{}]",
                display_name(&route.name, i),
                route.listener
            )
        };
        if route.name.is_empty() {
            return Err(invalid(format!("{}.name", at()), "must not be empty"));
        }
        if !http_listeners.contains_key(&route.listener) {
            return Err(invalid(
                format!("{}.listener", at()),
                format!("no HTTP listener on {}", route.listener),
            ));
        }
        if !names.insert((route.listener, route.name.as_str())) {
            return Err(invalid(
                format!("{}.name", at()),
                "another route of this listener has the same name",
            ));
        }
        if !clusters.contains(route.cluster.as_str()) {
            return Err(invalid(
                format!("{}.cluster", at()),
                format!("no cluster named {:?}", route.cluster),
            ));
        }
        for (j, host) in route.hosts.iter().enumerate() {
            if let Err(reason) = check_host(host) {
                return Err(invalid(format!("{}.hosts[{j}]", at()), reason));
            }
        }
        for (j, path) in route.paths.iter().enumerate() {
            if route.path_match != PathMatch::Regex && !path.starts_with('/') {
                return Err(invalid(format!("{}.paths[{j}]", at()), "must start with /"));
            }
            if path.is_empty() || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(invalid(
                    format!("{}.paths[{j}]", at()),
                    "must be non-empty without spaces or control characters",
                ));
            }
        }
        if let Some(header) = &route.header {
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if header.name.is_empty()
                || !header
                    .name
                    .bytes()
                    .all(|b| token(b) && !b.is_ascii_uppercase())
            {
                return Err(invalid(
                    format!("{}.header.name", at()),
                    "must be a lowercase header field name",
                ));
            }
        }
        for claim in claims_of(route) {
            if let Some(other) = claims.insert(claim, &route.name) {
                return Err(invalid(
                    format!("{}.paths", at()),
                    format!("route {other:?} of the same listener claims the same host and path"),
                ));
            }
        }
    }
    Ok(())
}

/// One (header, host, path, match) a route answers for; two routes of a listener may not share one.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Claim<'a> {
    listener: SocketAddr,
    header: Option<&'a HeaderMatch>,
    host: Option<&'a str>,
    path: Option<&'a str>,
    path_match: PathMatch,
}

/// The claims of `route`: its hosts times its paths, walked in place (no copies per route).
fn claims_of(route: &Route) -> impl Iterator<Item = Claim<'_>> {
    or_any(&route.hosts).flat_map(move |host| {
        or_any(&route.paths).map(move |path| Claim {
            listener: route.listener,
            header: route.header.as_ref(),
            host,
            path,
            // Without paths the kind does not matter: "every path" is one claim.
            path_match: if path.is_some() {
                route.path_match
            } else {
                PathMatch::Prefix
            },
        })
    })
}

/// The items of `list` as `Some`, or one `None` ("any") when it is empty.
fn or_any(list: &[String]) -> impl Iterator<Item = Option<&str>> {
    list.iter()
        .map(|item| Some(item.as_str()))
        .chain(list.is_empty().then_some(None))
}

/// A host of a route: lowercase DNS labels, optionally `*.` in front; no port, no trailing dot.
fn check_host(host: &str) -> Result<(), &'static str> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return Err("must be a host name of 1 to 253 characters");
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err("must be lowercase DNS labels (a-z, 0-9, -, _) or *.name, without port");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{field_of, sample};
    use super::super::{Cluster, Snapshot};
    use super::*;

    const HTTP: &str = "127.0.0.1:18081";

    fn route(name: &str, hosts: &[&str], paths: &[&str]) -> Route {
        Route {
            listener: HTTP.parse().unwrap(),
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            path_match: PathMatch::Prefix,
            header: None,
            cluster: "web".into(),
        }
    }

    fn snapshot(
        routes: Vec<Route>,
        edit: impl FnOnce(&mut Vec<Listener>, &mut Vec<Cluster>),
    ) -> Snapshot {
        let base = sample();
        let mut listeners = base.listeners;
        listeners.push(Listener::http(
            "http",
            HTTP.parse().unwrap(),
            HttpListener::default(),
        ));
        let mut clusters = base.clusters;
        clusters[0].http = Some(ClusterHttp::default());
        edit(&mut listeners, &mut clusters);
        Snapshot::with_routes(1, listeners, routes, clusters).unwrap()
    }

    #[test]
    fn http_listeners_and_routes_are_valid_and_hashed() {
        let a = snapshot(
            vec![route(
                "shop",
                &["shop.example.com", "*.shop.example.com"],
                &["/api"],
            )],
            |_, _| {},
        );
        a.validate().unwrap();
        let b = snapshot(
            vec![route("shop", &["shop.example.com"], &["/api"])],
            |_, _| {},
        );
        assert_ne!(a.hash, b.hash, "routes are part of the content hash");
    }

    #[test]
    fn each_http_invariant_names_its_field() {
        let at = "routes[shop@127.0.0.1:18081]";
        let cases: Vec<(Snapshot, String)> = vec![
            (
                snapshot(vec![route("shop", &["Shop.example.com"], &[])], |_, _| {}),
                format!("{at}.hosts[0]"),
            ),
            (
                snapshot(
                    vec![route("shop", &["shop.example.com:80"], &[])],
                    |_, _| {},
                ),
                format!("{at}.hosts[0]"),
            ),
            (
                snapshot(vec![route("shop", &[], &["api"])], |_, _| {}),
                format!("{at}.paths[0]"),
            ),
            (
                snapshot(
                    vec![Route {
                        cluster: "nope".into(),
                        ..route("shop", &[], &[])
                    }],
                    |_, _| {},
                ),
                format!("{at}.cluster"),
            ),
            (
                snapshot(
                    vec![Route {
                        listener: "127.0.0.1:18080".parse().unwrap(),
                        ..route("shop", &[], &[])
                    }],
                    |_, _| {},
                ),
                "routes[shop@127.0.0.1:18080].listener".to_string(),
            ),
            (
                snapshot(
                    vec![route("shop", &[], &[]), route("shop", &["a.example"], &[])],
                    |_, _| {},
                ),
                format!("{at}.name"),
            ),
            (
                snapshot(
                    vec![
                        route("cart", &["a.example"], &["/x", "/y"]),
                        route("shop", &["b.example", "a.example"], &["/y"]),
                    ],
                    |_, _| {},
                ),
                format!("{at}.paths"),
            ),
            (
                snapshot(vec![], |l, _| l[1].http.as_mut().unwrap().max_headers = 0),
                "listeners[http].http.max_headers".to_string(),
            ),
            (
                snapshot(vec![], |l, _| l[1].cluster = Some("web".into())),
                "listeners[http].cluster".to_string(),
            ),
            (
                snapshot(vec![], |_, c| c[0].http.as_mut().unwrap().pool_idle_ms = 0),
                "clusters[web].http.pool_idle_ms".to_string(),
            ),
        ];
        for (s, field) in cases {
            assert_eq!(field_of(s.validate().unwrap_err()), field);
        }
    }

    #[test]
    fn different_match_kinds_or_headers_do_not_conflict() {
        let exact = Route {
            path_match: PathMatch::Exact,
            ..route("exact", &[], &["/a"])
        };
        let app = Route {
            header: Some(HeaderMatch {
                name: "x-marathon-app-id".into(),
                value: "/shop".into(),
            }),
            ..route("app", &[], &[])
        };
        snapshot(
            vec![
                route("prefix", &[], &["/a"]),
                exact,
                app,
                route("any", &[], &[]),
            ],
            |_, _| {},
        )
        .validate()
        .unwrap();
    }
}
