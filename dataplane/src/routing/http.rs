//! The HTTP side of a routing table: each HTTP listener's [`Router`] (built from the snapshot's routes,
//! regexes compiled once here) and limits, and each cluster's backend-pool limits.

use std::collections::HashMap;
use std::net::SocketAddr;

use ringway_shared::{self as model, Snapshot};

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

/// The snapshot's routes as router specs, grouped by listener address, each pointing at its cluster's
/// index in the table.
pub fn route_specs(
    snapshot: &Snapshot,
    clusters: &HashMap<&str, usize>,
) -> Result<HashMap<SocketAddr, Vec<RouteSpec>>, HttpRoutesError> {
    let mut by_listener: HashMap<SocketAddr, Vec<RouteSpec>> = HashMap::new();
    for route in &snapshot.routes {
        let target = *clusters.get(route.cluster.as_str()).ok_or_else(|| {
            HttpRoutesError::MissingCluster {
                route: route.name.clone(),
                cluster: route.cluster.clone(),
            }
        })?;
        by_listener
            .entry(route.listener)
            .or_default()
            .push(RouteSpec {
                name: route.name.clone(),
                hosts: route.hosts.clone(),
                paths: route.paths.clone(),
                path_match: match route.path_match {
                    model::PathMatch::Prefix => router::PathMatch::Prefix,
                    model::PathMatch::Exact => router::PathMatch::Exact,
                    model::PathMatch::Regex => router::PathMatch::Regex,
                },
                header: route.header.as_ref().map(|h| router::HeaderMatch {
                    name: h.name.clone(),
                    value: h.value.clone(),
                }),
                target,
            });
    }
    Ok(by_listener)
}

impl From<&model::HttpListener> for HttpLimits {
    fn from(http: &model::HttpListener) -> Self {
        Self {
            max_header_bytes: http.max_header_bytes,
            max_headers: http.max_headers,
            request_head_ms: http.request_head_ms,
            keepalive_ms: http.keepalive_ms,
        }
    }
}

impl From<&model::ClusterHttp> for PoolLimits {
    fn from(http: &model::ClusterHttp) -> Self {
        Self {
            idle_ms: http.pool_idle_ms,
            max_idle: http.pool_max_idle,
        }
    }
}
