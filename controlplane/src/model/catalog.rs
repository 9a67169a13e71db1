//! The source-independent view of what should be load balanced.
//!
//! Every discovery source (the static services file, Marathon, registrator's etcd tree, an etcd v3 prefix,
//! Consul) turns what it knows into a [`Catalog`] and hands the *whole* catalog over, through its
//! [`SourceHandle`](crate::sources::SourceHandle), into the [intake](crate::pipeline::intake). Keeping this
//! seam free of routing details means a source only knows its own format, and the
//! [`compiler`](crate::pipeline::compiler) is the one place that knows the snapshot model, the group size
//! and the defaults.
//!
//! A catalog is what a source said, already validated by that source: values are in range and addresses
//! parse. Defaults that are operator policy (the service-wide connection limit, timeouts) stay `None` here so
//! that the compiler applies them in one place.

use std::net::SocketAddr;

use ringway_shared::{BackendState, Balance};
use serde::{Deserialize, Serialize};

use super::http::{HttpListenerSettings, RouteMatch};

/// Everything one source currently knows: its full view, never a delta.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub services: Vec<Service>,
}

impl Catalog {
    /// Number of instances over all services, for logs.
    pub fn instance_count(&self) -> usize {
        self.services.iter().map(|s| s.instances.len()).sum()
    }
}

/// One load-balanced service: where it is reached and which instances serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Unique among all services; names the listener and cluster in the snapshot.
    pub name: String,
    /// Address the dataplane accepts this service's connections on.
    pub listen: SocketAddr,
    pub balance: Balance,
    /// Concurrent connections each instance accepts from the whole Ringway group, *before* division by the
    /// group size. `None`: no per-instance limit. Never `Some(0)`.
    pub maxconn: Option<u32>,
    /// Total concurrent connections for the service on one dataplane; `None` takes `--max-connections`.
    pub max_connections: Option<u32>,
    pub timeouts: ServiceTimeouts,
    /// What the service speaks on `listen`: `tcp` (a listener of its own) or `http` (a route on an HTTP
    /// listener that HTTP services with the same `listen` share).
    pub mode: ServiceMode,
    /// `http` only: which requests on `listen` reach this service (default: all of them).
    pub route: RouteMatch,
    /// Also served, as HTTP, on the shared virtual-host port (`--vhost-port`) with this match, whatever
    /// `mode` is: marathon-lb's `HAPROXY_<N>_VHOST`, proxymatic's `VHOST_DOMAIN`.
    pub vhost: Option<RouteMatch>,
    /// The Marathon app id, for `--app-id-listen` (requests with `X-Marathon-App-Id: <id>`).
    pub app_id: Option<String>,
    /// `http` only: the limits the service asks of the HTTP listener on `listen` (services file).
    pub http_listener: HttpListenerSettings,
    pub instances: Vec<Instance>,
}

/// The `mode` label's values (proxymatic's `tcp`/`http`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    #[default]
    Tcp,
    Http,
}

/// Per-service time limits in milliseconds; `None` takes the model's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceTimeouts {
    pub connect_ms: Option<u32>,
    pub idle_ms: Option<u32>,
    pub queue_ms: Option<u32>,
    /// HTTP: time to the first response byte (`timeout_server_ms`, proxymatic's `timeout.server`).
    pub server_ms: Option<u32>,
    /// HTTP: inactivity of an upgraded (WebSocket) connection.
    pub tunnel_ms: Option<u32>,
}

#[cfg(test)]
impl Service {
    /// A TCP round-robin service with default timeouts and active instances of the default weight: the
    /// fixture the unit tests vary.
    pub(crate) fn for_test(
        name: &str,
        listen: SocketAddr,
        maxconn: Option<u32>,
        instances: impl IntoIterator<Item = SocketAddr>,
    ) -> Self {
        Self {
            name: name.into(),
            listen,
            balance: Balance::RoundRobin,
            maxconn,
            max_connections: None,
            timeouts: ServiceTimeouts::default(),
            mode: ServiceMode::Tcp,
            route: RouteMatch::default(),
            vhost: None,
            app_id: None,
            http_listener: HttpListenerSettings::default(),
            instances: instances
                .into_iter()
                .map(|address| Instance {
                    address,
                    weight: ringway_shared::model::DEFAULT_WEIGHT,
                    maxconn: None,
                    state: BackendState::Active,
                })
                .collect(),
        }
    }
}

/// One backend instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub address: SocketAddr,
    /// 1..=1000 (the model's `WEIGHT_MIN..=WEIGHT_MAX`).
    pub weight: u16,
    /// This instance's own limit before division by the group size, overriding the service's `maxconn`:
    /// a canary app merged into a service keeps the limit its labels give it. Never `Some(0)`.
    pub maxconn: Option<u32>,
    pub state: BackendState,
}
