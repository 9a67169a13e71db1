//! Per-listener request routing: by header (app-id), then host, then path.
//!
//! Built once per routing table from [`RouteSpec`]s (which the table builder makes from the snapshot's
//! routes); a lookup allocates nothing and costs a few hash lookups whatever the number of hosts:
//!
//! 1. If the listener has header routes (`X-Marathon-App-Id: /app`) and the request carries one of
//!    their headers with a matching value, routing continues among those routes only; if none of them
//!    matches host and path, the ordinary routes are tried.
//! 2. Host: the exact host first, then wildcards from the most specific to the least, then routes
//!    without hosts. `*.example.com` matches one **or more** labels (`a.example.com`,
//!    `a.b.example.com`, never `example.com` itself), as Traefik and nginx do and as marathon-lb users
//!    expect of `*.shop.example.com`. Hosts compare case-insensitively, without the port and a
//!    trailing dot.
//! 3. Path, within the first host level that has any match: an exact path, then the longest prefix
//!    (a byte prefix, as HAProxy's `path_beg` and docker-flow-proxy's `servicePath`), then regular
//!    expressions in route-name order (unanchored, as HAProxy's `path_reg`: write `^` to anchor), then
//!    routes without paths. The path is the raw target up to `?`, **not** percent-decoded (HAProxy
//!    compares raw too); the proxy does no access control by path, so an encoded path at worst
//!    reaches the route its raw bytes name.
//!
//! Two routes claiming the same header value, host and path (same kind) are a conflict: the route
//! whose name sorts first wins, and the build reports the pair ([`Router::conflicts`]) for the caller to
//! log or refuse.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use regex::bytes::Regex;

/// How a route's paths match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathMatch {
    #[default]
    Prefix,
    Exact,
    Regex,
}

/// A header a route requires (app-id routing): the name in any case, the value exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
}

/// One route as the router takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub name: String,
    /// Lowercase host names or `*.`-wildcards; empty: any host.
    pub hosts: Vec<String>,
    /// Empty: every path.
    pub paths: Vec<String>,
    pub path_match: PathMatch,
    pub header: Option<HeaderMatch>,
    /// Opaque to the router: the caller's cluster index.
    pub target: usize,
}

impl RouteSpec {
    /// A route by host names and paths alone (no header match).
    pub fn new(
        name: &str,
        hosts: &[&str],
        paths: &[&str],
        path_match: PathMatch,
        target: usize,
    ) -> Self {
        Self {
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            path_match,
            header: None,
            target,
        }
    }
}

/// The route a request matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    /// Index of the route in the specs the router was built from.
    pub route: usize,
    pub target: usize,
}

/// Two routes that claimed the same header value, host and path; `kept` won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub kept: String,
    pub dropped: String,
    /// The host as written (`*` for routes without hosts).
    pub host: String,
    /// The path as written (empty for routes without paths).
    pub path: String,
}

/// A route the router cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error(
        "route {route:?}: invalid host {host:?} (expected a DNS name or *.domain, without port)"
    )]
    InvalidHost { route: String, host: String },
    #[error("route {route:?}: path {path:?} must start with '/'")]
    InvalidPath { route: String, path: String },
    #[error("route {route:?}: path regex {path:?} does not compile: {error}")]
    InvalidRegex {
        route: String,
        path: String,
        error: String,
    },
    #[error("route {route:?}: header name {name:?} is not a valid field name")]
    InvalidHeader { route: String, name: String },
}

/// The routes of one HTTP listener.
#[derive(Debug, Default)]
pub struct Router {
    /// Header routes, per distinct header name.
    headers: Vec<HeaderRoutes>,
    main: HostRoutes,
    conflicts: Vec<Conflict>,
}

/// The routes that require one header, by its value.
#[derive(Debug)]
struct HeaderRoutes {
    /// Lowercase.
    name: Box<str>,
    by_value: HashMap<Box<[u8]>, HostRoutes>,
}

/// Longest host the router looks up (a DNS name has at most 253 characters).
const MAX_HOST: usize = 255;

impl Router {
    /// Builds the router. Routes are taken in name order, so conflicts resolve the same way whatever
    /// order the specs come in.
    pub fn build(specs: &[RouteSpec]) -> Result<Self, RouterError> {
        let mut order: Vec<usize> = (0..specs.len()).collect();
        order.sort_by(|&a, &b| specs[a].name.cmp(&specs[b].name).then(a.cmp(&b)));
        let mut router = Router::default();
        for index in order {
            router.add(specs, index)?;
        }
        Ok(router)
    }

    fn add(&mut self, specs: &[RouteSpec], index: usize) -> Result<(), RouterError> {
        let spec = &specs[index];
        let matched = RouteMatch {
            route: index,
            target: spec.target,
        };
        let hosts = match &spec.hosts[..] {
            [] => vec![HostKey::Any],
            hosts => hosts
                .iter()
                .map(|h| {
                    HostKey::parse(h).ok_or_else(|| RouterError::InvalidHost {
                        route: spec.name.clone(),
                        host: h.clone(),
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let paths = match &spec.paths[..] {
            [] => vec![PathKey::Every],
            paths => paths
                .iter()
                .map(|p| PathKey::parse(spec, p))
                .collect::<Result<_, _>>()?,
        };
        let table = match &spec.header {
            None => &mut self.main,
            Some(header) => {
                let name = header.name.to_ascii_lowercase();
                if name.is_empty() || !name.bytes().all(super::is_token) {
                    return Err(RouterError::InvalidHeader {
                        route: spec.name.clone(),
                        name: header.name.clone(),
                    });
                }
                let slot = match self.headers.iter().position(|h| *h.name == *name) {
                    Some(slot) => slot,
                    None => {
                        self.headers.push(HeaderRoutes {
                            name: name.into(),
                            by_value: HashMap::new(),
                        });
                        self.headers.len() - 1
                    }
                };
                self.headers[slot]
                    .by_value
                    .entry(header.value.as_bytes().into())
                    .or_default()
            }
        };
        for host in &hosts {
            let paths_table = table.slot(host);
            for path in &paths {
                if let Some(kept) = paths_table.insert(path, matched)
                    && kept.route != index
                {
                    self.conflicts.push(Conflict {
                        kept: specs[kept.route].name.clone(),
                        dropped: spec.name.clone(),
                        host: host.to_string(),
                        path: path.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The conflicts the build resolved.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// Whether any route matches on a header (the names come from [`Router::header_names`]).
    pub fn has_header_routes(&self) -> bool {
        !self.headers.is_empty()
    }

    /// The header names (lowercase) header routes look at.
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(|h| &*h.name)
    }

    /// Routes a request: `authority` is the `Host` value or the absolute target's authority (port and
    /// case allowed), `path` the raw path without query, `header` looks up a request header's value
    /// by its lowercase name.
    pub fn route<'a>(
        &self,
        authority: Option<&[u8]>,
        path: &[u8],
        header: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> Option<RouteMatch> {
        let mut storage = [0u8; MAX_HOST];
        let host = authority.and_then(|a| normalise_host(a, &mut storage));
        let path = if path.is_empty() { b"/" } else { path };
        for scope in &self.headers {
            if let Some(routes) =
                header(&scope.name).and_then(|v| scope.by_value.get(v.trim_ascii()))
                && let Some(found) = routes.find(host, path)
            {
                return Some(found);
            }
        }
        self.main.find(host, path)
    }
}

/// A route's host, as a table key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostKey {
    Exact(String),
    /// `*.example.com` is stored as `example.com`.
    Wildcard(String),
    Any,
}

impl HostKey {
    fn parse(host: &str) -> Option<Self> {
        let host = host.trim().to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        let literal = !wildcard && name.starts_with('[') && name.ends_with(']') && name.len() > 2;
        let valid = if literal {
            name[1..name.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        } else {
            !name.is_empty()
                && name.len() <= MAX_HOST
                && !name.starts_with('.')
                && !name.contains("..")
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        };
        valid.then(|| {
            if wildcard {
                Self::Wildcard(name.to_string())
            } else {
                Self::Exact(name.to_string())
            }
        })
    }
}

impl std::fmt::Display for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(h) => f.write_str(h),
            Self::Wildcard(h) => write!(f, "*.{h}"),
            Self::Any => f.write_str("*"),
        }
    }
}

/// A route's path, as a table key.
#[derive(Debug, Clone)]
enum PathKey {
    Exact(String),
    Prefix(String),
    Regex(Regex),
    Every,
}

impl PathKey {
    fn parse(spec: &RouteSpec, path: &str) -> Result<Self, RouterError> {
        if spec.path_match != PathMatch::Regex && !path.starts_with('/') {
            return Err(RouterError::InvalidPath {
                route: spec.name.clone(),
                path: path.to_string(),
            });
        }
        Ok(match spec.path_match {
            PathMatch::Exact => Self::Exact(path.to_string()),
            PathMatch::Prefix => Self::Prefix(path.to_string()),
            PathMatch::Regex => {
                Self::Regex(Regex::new(path).map_err(|e| RouterError::InvalidRegex {
                    route: spec.name.clone(),
                    path: path.to_string(),
                    error: e.to_string(),
                })?)
            }
        })
    }
}

impl std::fmt::Display for PathKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(p) => write!(f, "{p} (exact)"),
            Self::Prefix(p) => f.write_str(p),
            Self::Regex(r) => write!(f, "{} (regex)", r.as_str()),
            Self::Every => Ok(()),
        }
    }
}

/// Routes by host, for one header scope.
#[derive(Debug, Default)]
struct HostRoutes {
    exact: HashMap<Box<str>, PathRoutes>,
    wildcard: HashMap<Box<str>, PathRoutes>,
    any: PathRoutes,
}

impl HostRoutes {
    fn slot(&mut self, host: &HostKey) -> &mut PathRoutes {
        match host {
            HostKey::Exact(h) => self.exact.entry(h.as_str().into()).or_default(),
            HostKey::Wildcard(h) => self.wildcard.entry(h.as_str().into()).or_default(),
            HostKey::Any => &mut self.any,
        }
    }

    fn find(&self, host: Option<&str>, path: &[u8]) -> Option<RouteMatch> {
        if let Some(host) = host {
            if let Some(found) = self.exact.get(host).and_then(|p| p.find(path)) {
                return Some(found);
            }
            if !self.wildcard.is_empty() {
                // `a.b.example.com` tries `b.example.com`, `example.com`, `com`: most specific first.
                let mut rest = host;
                while let Some(dot) = rest.find('.') {
                    rest = &rest[dot + 1..];
                    if let Some(found) = self.wildcard.get(rest).and_then(|p| p.find(path)) {
                        return Some(found);
                    }
                }
            }
        }
        self.any.find(path)
    }
}

/// Routes by path, for one host.
#[derive(Debug, Default)]
struct PathRoutes {
    exact: HashMap<Box<[u8]>, RouteMatch>,
    /// Longest first.
    prefixes: Vec<(Box<[u8]>, RouteMatch)>,
    /// In route-name order.
    regexes: Vec<(Regex, RouteMatch)>,
    every: Option<RouteMatch>,
}

impl PathRoutes {
    /// Adds a path; returns the route already holding it, if any (which keeps it).
    fn insert(&mut self, path: &PathKey, matched: RouteMatch) -> Option<RouteMatch> {
        match path {
            PathKey::Exact(p) => match self.exact.entry(p.as_bytes().into()) {
                Entry::Occupied(kept) => Some(*kept.get()),
                Entry::Vacant(slot) => {
                    slot.insert(matched);
                    None
                }
            },
            PathKey::Prefix(p) => {
                if let Some((_, kept)) = self.prefixes.iter().find(|(q, _)| **q == *p.as_bytes()) {
                    return Some(*kept);
                }
                // Insert before the first shorter prefix: longest first, ties in name order.
                let at = self
                    .prefixes
                    .iter()
                    .position(|(q, _)| q.len() < p.len())
                    .unwrap_or(self.prefixes.len());
                self.prefixes.insert(at, (p.as_bytes().into(), matched));
                None
            }
            PathKey::Regex(r) => {
                if let Some((_, kept)) = self.regexes.iter().find(|(q, _)| q.as_str() == r.as_str())
                {
                    return Some(*kept);
                }
                self.regexes.push((r.clone(), matched));
                None
            }
            PathKey::Every => match self.every {
                Some(kept) => Some(kept),
                None => {
                    self.every = Some(matched);
                    None
                }
            },
        }
    }

    fn find(&self, path: &[u8]) -> Option<RouteMatch> {
        if let Some(found) = self.exact.get(path) {
            return Some(*found);
        }
        if let Some((_, found)) = self.prefixes.iter().find(|(p, _)| path.starts_with(p)) {
            return Some(*found);
        }
        if let Some((_, found)) = self.regexes.iter().find(|(r, _)| r.is_match(path)) {
            return Some(*found);
        }
        self.every
    }
}

/// The host part of an authority, lowercase, without port and trailing dot, in `storage`.
fn normalise_host<'s>(authority: &[u8], storage: &'s mut [u8; MAX_HOST]) -> Option<&'s str> {
    let host = if authority.first() == Some(&b'[') {
        let close = authority.iter().position(|&b| b == b']')?;
        &authority[..=close]
    } else {
        match authority.iter().rposition(|&b| b == b':') {
            Some(colon) => &authority[..colon],
            None => authority,
        }
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST {
        return None;
    }
    let out = &mut storage[..host.len()];
    out.copy_from_slice(host);
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
