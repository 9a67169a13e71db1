//! What an HTTP service asks for: which requests reach it ([`RouteMatch`]), the limits of the listener it is
//! served on ([`HttpListenerSettings`]), and the checks every source applies to host names, paths and
//! regexes, so that nothing a source accepts can make a dataplane NACK the snapshot.
//!
//! Rules (the dataplane's router, `docs/configuration.md` "HTTP routing"):
//! - A host is a lowercase DNS name or a `*.` wildcard (one or more labels in front of the suffix), without
//!   a port; a trailing dot is dropped, upper case is lowered. No hosts: any host.
//! - A `prefix` or `exact` path starts with `/`; a `regex` path is a regular expression (the `regex` crate's
//!   syntax) matched against the path without its query string. No paths: every path.
//! - Two services *claim* the same requests on one listener when they share a (host, path) pair with the same
//!   match kind (and the same header, for app-id routes): [`RouteMatch::claims`] lists the pairs.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How a route's paths are compared with a request's path (docker-flow-proxy's `pathType`: `path_beg`,
/// `path`, `path_reg`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PathMatch {
    /// The path starts with the route's path, byte for byte (HAProxy's `path_beg`).
    #[default]
    Prefix,
    /// The path is the route's path.
    Exact,
    /// The route's path is a regular expression that matches somewhere in the path (`path_reg`).
    Regex,
}

impl PathMatch {
    /// Parses the services file's / Ringway label's value (`prefix`, `exact`, `regex`).
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "prefix" => Some(Self::Prefix),
            "exact" => Some(Self::Exact),
            "regex" => Some(Self::Regex),
            _ => None,
        }
    }

    /// Parses docker-flow-proxy's `pathType` (`path_beg`, `path`, `path_reg`).
    pub fn parse_dfp(value: &str) -> Option<Self> {
        match value.trim() {
            "path_beg" => Some(Self::Prefix),
            "path" => Some(Self::Exact),
            "path_reg" => Some(Self::Regex),
            _ => None,
        }
    }
}

impl fmt::Display for PathMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Prefix => "prefix",
            Self::Exact => "exact",
            Self::Regex => "regex",
        })
    }
}

/// Which requests on one listener reach a service. Hosts and paths are checked ([`check_host`],
/// [`check_path`]), sorted and without duplicates, so equal matches compare equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RouteMatch {
    /// Lowercase names or `*.` wildcards; empty: any host.
    pub hosts: Vec<String>,
    /// Empty: every path.
    pub paths: Vec<String>,
    pub path_match: PathMatch,
}

impl RouteMatch {
    /// A match with `hosts` and `paths` sorted and deduplicated.
    pub fn new(
        hosts: impl IntoIterator<Item = String>,
        paths: impl IntoIterator<Item = String>,
        path_match: PathMatch,
    ) -> Self {
        let sorted = |items: BTreeSet<String>| items.into_iter().collect::<Vec<_>>();
        Self {
            hosts: sorted(hosts.into_iter().collect()),
            paths: sorted(paths.into_iter().collect()),
            path_match,
        }
    }

    /// Every (host, path) pair this match claims; `None` stands for "any host" / "every path". Walks the
    /// lists in place (no copies): the compiler and the services file call it for every route.
    pub fn claims(&self) -> impl Iterator<Item = Claim<'_>> {
        let kind = self.path_match;
        or_any(&self.hosts).flat_map(move |host| {
            or_any(&self.paths).map(move |path| Claim {
                host,
                path,
                // "every path" is the same claim whatever the match kind says.
                kind: if path.is_none() {
                    PathMatch::Prefix
                } else {
                    kind
                },
            })
        })
    }
}

/// The items of `list` as `Some`, or one `None` ("any") when it is empty.
fn or_any(list: &[String]) -> impl Iterator<Item = Option<&str>> {
    list.iter()
        .map(|item| Some(item.as_str()))
        .chain(list.is_empty().then_some(None))
}

/// One (host, path, kind) a route answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Claim<'a> {
    pub host: Option<&'a str>,
    pub path: Option<&'a str>,
    pub kind: PathMatch,
}

impl fmt::Display for Claim<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.host.unwrap_or("any host");
        match self.path {
            None => write!(f, "{host}, every path"),
            Some(path) => write!(f, "{host}, {} path {path:?}", self.kind),
        }
    }
}

/// Per-listener HTTP limits a service asks for (services file); `None` takes the model's default. Services
/// sharing a listener must not disagree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HttpListenerSettings {
    pub max_header_bytes: Option<u32>,
    pub max_headers: Option<u16>,
    pub request_head_ms: Option<u32>,
    pub keepalive_ms: Option<u32>,
}

impl HttpListenerSettings {
    /// The settings of `self`, each unset one taken from `other`; `Err` names the first field both set to
    /// different values.
    pub fn combine(self, other: Self) -> Result<Self, &'static str> {
        fn one<T: PartialEq + Copy>(
            a: Option<T>,
            b: Option<T>,
            name: &'static str,
        ) -> Result<Option<T>, &'static str> {
            match (a, b) {
                (Some(x), Some(y)) if x != y => Err(name),
                (a, b) => Ok(a.or(b)),
            }
        }
        Ok(Self {
            max_header_bytes: one(
                self.max_header_bytes,
                other.max_header_bytes,
                "http_max_header_bytes",
            )?,
            max_headers: one(self.max_headers, other.max_headers, "http_max_headers")?,
            request_head_ms: one(
                self.request_head_ms,
                other.request_head_ms,
                "timeout_request_head_ms",
            )?,
            keepalive_ms: one(
                self.keepalive_ms,
                other.keepalive_ms,
                "timeout_keepalive_ms",
            )?,
        })
    }
}

/// marathon-lb's and proxymatic's HTTP port, the default `--vhost-port`.
pub const DEFAULT_VHOST_PORT: u16 = 80;
/// Longest host name (RFC 1035).
const MAX_HOST_LEN: usize = 253;
/// Longest label of a host name.
const MAX_LABEL_LEN: usize = 63;
/// Longest path or regex a route may carry; far above anything real, it bounds what a source can make every
/// dataplane compile.
pub const MAX_PATH_LEN: usize = 2_048;
/// Compiled size a route's regex may reach (the `regex` crate's `size_limit`), so a label cannot make
/// every dataplane build a huge automaton.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A host as routes carry it: lowercased, trailing dot dropped; or why it cannot be one.
pub fn check_host(host: &str) -> Result<String, String> {
    let lowered = host.trim().to_ascii_lowercase();
    let name = lowered.strip_suffix('.').unwrap_or(&lowered);
    if name.is_empty() {
        return Err("empty host name".into());
    }
    if name.contains(':') {
        return Err(format!(
            "{host:?}: a host takes no port (the listener's address has it)"
        ));
    }
    if name.len() > MAX_HOST_LEN {
        return Err(format!("{host:?}: longer than {MAX_HOST_LEN} characters"));
    }
    let rest = match name.strip_prefix("*.") {
        Some(rest) => rest,
        None => name,
    };
    for label in rest.split('.') {
        let valid = !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err(format!(
                "{host:?} is not a host name (letters, digits, '-', '_' in dot-separated labels; \
                 a wildcard is \"*.\" in front of a name)"
            ));
        }
    }
    Ok(name.to_string())
}

/// Checks one path of a route with `kind`: no spaces or control characters (the request line could not
/// carry them); `/…` for prefix and exact; a regex that compiles.
pub fn check_path(path: &str, kind: PathMatch) -> Result<(), String> {
    if path.is_empty() {
        return Err("an empty path".into());
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!("longer than {MAX_PATH_LEN} bytes"));
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("{path:?} contains a space or a control character"));
    }
    match kind {
        PathMatch::Prefix | PathMatch::Exact if !path.starts_with('/') => {
            Err(format!("{path:?} does not start with '/'"))
        }
        PathMatch::Prefix | PathMatch::Exact => Ok(()),
        PathMatch::Regex => regex::RegexBuilder::new(path)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "{path:?} is not a valid regex: {}",
                    one_line(&e.to_string())
                )
            }),
    }
}

/// The `regex` crate's messages span several lines (a caret under the error); logs want one.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Checks and normalises `hosts` and `paths` into a [`RouteMatch`]; the error names the first bad value.
pub fn route_match(
    hosts: &[String],
    paths: &[String],
    path_match: PathMatch,
) -> Result<RouteMatch, String> {
    let hosts = hosts
        .iter()
        .map(|h| check_host(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("hosts: {e}"))?;
    for path in paths {
        check_path(path, path_match).map_err(|e| format!("paths: {e}"))?;
    }
    Ok(RouteMatch::new(hosts, paths.iter().cloned(), path_match))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hosts_are_lowered_and_checked() {
        assert_eq!(check_host("Shop.Example.COM.").unwrap(), "shop.example.com");
        assert_eq!(
            check_host("*.shop.example.com").unwrap(),
            "*.shop.example.com"
        );
        assert_eq!(check_host("localhost").unwrap(), "localhost");
        for bad in [
            "",
            "shop.example.com:80",
            "a..b",
            "-a.b",
            "a*.b",
            "*",
            "*.",
            "a b",
            "*.*.b",
        ] {
            assert!(check_host(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(check_host(&"a".repeat(64)).is_err(), "a label above 63");
    }

    #[test]
    fn paths_follow_their_match_kind() {
        check_path("/api", PathMatch::Prefix).unwrap();
        check_path("/", PathMatch::Exact).unwrap();
        assert!(check_path("api", PathMatch::Prefix).is_err());
        assert!(check_path("/a b", PathMatch::Exact).is_err());
        check_path("^/v[0-9]+/", PathMatch::Regex).unwrap();
        assert!(
            check_path("^/a b", PathMatch::Regex).is_err(),
            "the snapshot refuses spaces"
        );
        assert!(check_path("", PathMatch::Regex).is_err());
        let err = check_path("/(unclosed", PathMatch::Regex).unwrap_err();
        assert!(err.contains("not a valid regex"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    impl RouteMatch {
        /// The first claim this match shares with `other`, if any.
        fn overlap<'a>(&'a self, other: &RouteMatch) -> Option<Claim<'a>> {
            let theirs: BTreeSet<Claim<'_>> = other.claims().collect();
            self.claims().find(|c| theirs.contains(c))
        }
    }

    #[test]
    fn claims_are_the_host_path_product_and_overlaps_are_found() {
        let a = route_match(
            &strings(&["b.example", "a.example"]),
            &strings(&["/x", "/y"]),
            PathMatch::Prefix,
        )
        .unwrap();
        assert_eq!(a.hosts, strings(&["a.example", "b.example"]), "sorted");
        assert_eq!(a.claims().count(), 4);
        let b = route_match(
            &strings(&["B.example"]),
            &strings(&["/y"]),
            PathMatch::Prefix,
        )
        .unwrap();
        let overlap = a.overlap(&b).unwrap();
        assert_eq!(overlap.to_string(), "b.example, prefix path \"/y\"");
        let exact = route_match(
            &strings(&["b.example"]),
            &strings(&["/y"]),
            PathMatch::Exact,
        )
        .unwrap();
        assert_eq!(
            a.overlap(&exact),
            None,
            "another match kind is another claim"
        );
        let any = RouteMatch::default();
        assert_eq!(
            any.overlap(&RouteMatch::default()).unwrap().to_string(),
            "any host, every path"
        );
        assert_eq!(any.overlap(&a), None);
    }

    #[test]
    fn listener_settings_combine_unless_they_disagree() {
        let a = HttpListenerSettings {
            max_headers: Some(50),
            ..Default::default()
        };
        let b = HttpListenerSettings {
            keepalive_ms: Some(5),
            ..Default::default()
        };
        let both = a.combine(b).unwrap();
        assert_eq!((both.max_headers, both.keepalive_ms), (Some(50), Some(5)));
        let c = HttpListenerSettings {
            max_headers: Some(60),
            ..Default::default()
        };
        assert_eq!(a.combine(c), Err("http_max_headers"));
    }
}
