//! The services file's HTTP keys (`mode`, `hosts`, `paths`, `path_match`, the HTTP timeouts and the
//! listener limits), and what services sharing a listen address must agree on.

use std::net::SocketAddr;

use ringway_shared::model::http::{MAX_HEADER_BYTES_LIMIT, MAX_HEADERS_LIMIT};
use serde_spanned::Spanned;

use super::{Checker, Identity, RawService};
use crate::model::ServiceMode;
use crate::model::http::{
    Claim, HttpListenerSettings, PathMatch, RouteMatch, check_host, check_path,
};

/// What a service's HTTP keys say, checked; problems are reported on the checker.
pub(super) struct HttpParts {
    pub mode: ServiceMode,
    /// `Some` for an HTTP service whose hosts and paths are all valid.
    pub route: Option<RouteMatch>,
    pub listener: HttpListenerSettings,
    pub server_ms: Option<u32>,
    pub tunnel_ms: Option<u32>,
}

impl Checker<'_> {
    pub(super) fn http(&mut self, label: &str, raw: &RawService) -> HttpParts {
        let mode = match &raw.mode {
            None => ServiceMode::Tcp,
            Some(m) => match m.get_ref().as_str() {
                "tcp" => ServiceMode::Tcp,
                "http" => ServiceMode::Http,
                other => {
                    self.report(
                        m.span(),
                        format!("{label} mode"),
                        format!("expected \"tcp\" or \"http\", got {other:?}"),
                    );
                    ServiceMode::Tcp
                }
            },
        };
        let mut number = |value: &Option<Spanned<i64>>, name: &str, max: u32| {
            let v = value.as_ref()?;
            let n = self.at_least_one(v, &format!("{label} {name}"), "")?;
            if n > max {
                self.report(
                    v.span(),
                    format!("{label} {name}"),
                    format!("{n} is larger than {max}"),
                );
                return None;
            }
            Some(n)
        };
        let server_ms = number(&raw.timeout_server_ms, "timeout_server_ms", u32::MAX);
        let tunnel_ms = number(&raw.timeout_tunnel_ms, "timeout_tunnel_ms", u32::MAX);
        let listener = HttpListenerSettings {
            max_header_bytes: number(
                &raw.http_max_header_bytes,
                "http_max_header_bytes",
                MAX_HEADER_BYTES_LIMIT,
            ),
            max_headers: number(
                &raw.http_max_headers,
                "http_max_headers",
                u32::from(MAX_HEADERS_LIMIT),
            )
            .map(|n| n as u16),
            request_head_ms: number(
                &raw.timeout_request_head_ms,
                "timeout_request_head_ms",
                u32::MAX,
            ),
            keepalive_ms: number(&raw.timeout_keepalive_ms, "timeout_keepalive_ms", u32::MAX),
        };
        let path_match = match &raw.path_match {
            None => PathMatch::Prefix,
            Some(p) => PathMatch::parse(p.get_ref()).unwrap_or_else(|| {
                self.report(
                    p.span(),
                    format!("{label} path_match"),
                    format!(
                        "expected \"prefix\", \"exact\" or \"regex\", got {:?}",
                        p.get_ref()
                    ),
                );
                PathMatch::Prefix
            }),
        };
        if mode == ServiceMode::Tcp {
            self.http_only_keys(label, raw);
            return HttpParts {
                mode,
                route: None,
                listener: HttpListenerSettings::default(),
                server_ms: None,
                tunnel_ms: None,
            };
        }
        let before = self.problems.len();
        let mut hosts = Vec::new();
        for (i, host) in raw.hosts.iter().flat_map(|h| h.get_ref()).enumerate() {
            match check_host(host.get_ref()) {
                Ok(h) => hosts.push(h),
                Err(e) => self.report(host.span(), format!("{label} hosts[{i}]"), e),
            }
        }
        let mut paths = Vec::new();
        for (i, path) in raw.paths.iter().flat_map(|p| p.get_ref()).enumerate() {
            match check_path(path.get_ref(), path_match) {
                Ok(()) => paths.push(path.get_ref().clone()),
                Err(e) => self.report(path.span(), format!("{label} paths[{i}]"), e),
            }
        }
        for (key, list) in [("hosts", &raw.hosts), ("paths", &raw.paths)] {
            if let Some(list) = list.as_ref().filter(|l| l.get_ref().is_empty()) {
                self.report(
                    list.span(),
                    format!("{label} {key}"),
                    format!(
                        "an empty list matches nothing: leave `{key}` out to match every {}",
                        if key == "hosts" { "host" } else { "path" }
                    ),
                );
            }
        }
        let route =
            (self.problems.len() == before).then(|| RouteMatch::new(hosts, paths, path_match));
        HttpParts {
            mode,
            route,
            listener,
            server_ms,
            tunnel_ms,
        }
    }

    /// The HTTP keys on a TCP service: an operator who wrote them expects HTTP routing, and silence would
    /// hide that the service is plain TCP.
    fn http_only_keys(&mut self, label: &str, raw: &RawService) {
        let spans = [
            ("hosts", raw.hosts.as_ref().map(|v| v.span())),
            ("paths", raw.paths.as_ref().map(|v| v.span())),
            ("path_match", raw.path_match.as_ref().map(|v| v.span())),
            (
                "timeout_server_ms",
                raw.timeout_server_ms.as_ref().map(|v| v.span()),
            ),
            (
                "timeout_tunnel_ms",
                raw.timeout_tunnel_ms.as_ref().map(|v| v.span()),
            ),
            (
                "http_max_header_bytes",
                raw.http_max_header_bytes.as_ref().map(|v| v.span()),
            ),
            (
                "http_max_headers",
                raw.http_max_headers.as_ref().map(|v| v.span()),
            ),
            (
                "timeout_request_head_ms",
                raw.timeout_request_head_ms.as_ref().map(|v| v.span()),
            ),
            (
                "timeout_keepalive_ms",
                raw.timeout_keepalive_ms.as_ref().map(|v| v.span()),
            ),
        ];
        for (key, span) in spans {
            if let Some(span) = span {
                self.report(
                    span,
                    format!("{label} {key}"),
                    "applies to HTTP services only: add mode = \"http\"",
                );
            }
        }
    }
}

/// Why a service cannot share its listen address with a service defined before it.
pub(super) enum Clash<'a> {
    /// Two TCP services on one address.
    Taken,
    /// A TCP and an HTTP service; the mode is the first one's.
    Mixed(ServiceMode),
    /// The first already routes this host and path.
    Claimed(Claim<'a>),
    /// The two ask for different listener limits; the key of the first difference.
    Limits(&'static str),
}

impl Clash<'_> {
    /// The error, naming the first service (`other`, with its line: computed only for an error, because
    /// finding a line scans the file).
    pub(super) fn message(&self, listen: SocketAddr, other: &str) -> String {
        match self {
            Clash::Taken => format!("{listen} is already the listen address of {other}"),
            Clash::Mixed(mode) => format!(
                "{listen} is the listen address of {other} in mode {}: TCP and HTTP services cannot \
                 share an address",
                mode_name(*mode)
            ),
            Clash::Claimed(claim) => format!(
                "{other} already routes {claim} on {listen}: two services cannot claim the same host \
                 and path"
            ),
            Clash::Limits(key) => format!(
                "{key} differs from {other}'s on {listen}: services sharing an HTTP listener must \
                 agree on its limits"
            ),
        }
    }
}

/// Whether `second` may share its address with `first` by mode and listener limits. Host and path
/// claims are checked by the caller against every claim of the address at once (a map, not pairs).
pub(super) fn listen_clash<'a>(first: &Identity, second: &Identity) -> Option<Clash<'a>> {
    match (first.mode, second.mode) {
        (ServiceMode::Tcp, ServiceMode::Tcp) => Some(Clash::Taken),
        (ServiceMode::Tcp, ServiceMode::Http) | (ServiceMode::Http, ServiceMode::Tcp) => {
            Some(Clash::Mixed(first.mode))
        }
        (ServiceMode::Http, ServiceMode::Http) => first
            .listener
            .combine(second.listener)
            .err()
            .map(Clash::Limits),
    }
}

fn mode_name(mode: ServiceMode) -> &'static str {
    match mode {
        ServiceMode::Tcp => "tcp",
        ServiceMode::Http => "http",
    }
}
