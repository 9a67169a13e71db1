//! The HTTP side of a routing table: each HTTP listener's [`Router`] (built from the snapshot's routes,
//! regexes compiled once here) and limits, and each cluster's backend-pool limits.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::http::router::{self, RouteSpec, Router};

/// Limits and timeouts of one HTTP listener (those that apply before a route is known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_header_bytes: u32,
    pub max_headers: u16,
    /// Connection start or a request's first byte to its complete head: 408.
    pub request_head_ms: u32,
    /// Idle time between requests on a client connection.
    pub keepalive_ms: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: crate::http::head::DEFAULT_MAX_HEADER_BYTES as u32,
            max_headers: crate::http::head::DEFAULT_MAX_HEADERS as u16,
            request_head_ms: 10_000,
            keepalive_ms: 60_000,
        }
    }
}

/// One HTTP listener's routes: per request, the router picks a route and so a cluster of the table.
#[derive(Debug)]
pub struct HttpRoutes {
    pub router: Router,
    pub limits: HttpLimits,
    /// The routes' names, indexed like the router's [`RouteMatch::route`](router::RouteMatch).
    pub route_names: Vec<String>,
}

/// Per-worker pool of idle connections to each backend of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// How long an idle pooled connection is kept.
    pub idle_ms: u32,
    /// Idle connections kept per backend per worker.
    pub max_idle: u32,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            idle_ms: 15_000,
            max_idle: 64,
        }
    }
}

/// Why an HTTP listener's routes cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpRoutesError {
    #[error("HTTP listener {listener}: {source}")]
    Router {
        listener: SocketAddr,
        source: router::RouterError,
    },
    #[error("route {route:?} refers to cluster {cluster:?}, which the snapshot does not define")]
    MissingCluster { route: String, cluster: String },
}

/// Builds the routes of the HTTP listener at `address` from `specs` (already pointing at cluster
/// indices). Conflicts are resolved by the router (lower route name wins) and logged here.
pub fn build(
    address: SocketAddr,
    limits: HttpLimits,
    specs: Vec<RouteSpec>,
) -> Result<HttpRoutes, HttpRoutesError> {
    let router = Router::build(&specs).map_err(|source| HttpRoutesError::Router {
        listener: address,
        source,
    })?;
    for c in router.conflicts() {
        tracing::warn!(
            listener = %address,
            kept = %c.kept,
            dropped = %c.dropped,
            host = %c.host,
            path = %c.path,
            "two routes claim the same host and path; the first by name wins"
        );
    }
    Ok(HttpRoutes {
        router,
        limits,
        route_names: specs.into_iter().map(|s| s.name).collect(),
    })
}

/// The route specs of every HTTP listener, by address, from `(listener, spec)` pairs.
pub fn group_by_listener(
    specs: impl IntoIterator<Item = (SocketAddr, RouteSpec)>,
) -> HashMap<SocketAddr, Vec<RouteSpec>> {
    let mut by_listener: HashMap<SocketAddr, Vec<RouteSpec>> = HashMap::new();
    for (listener, spec) in specs {
        by_listener.entry(listener).or_default().push(spec);
    }
    by_listener
}
