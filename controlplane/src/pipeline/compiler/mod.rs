//! Turns a [`Catalog`] into a route [`Snapshot`]: one cluster per service; a listener per TCP service; HTTP
//! listeners shared by the HTTP services of one address, the vhost port and the app-id port, with a route
//! per service on each ([`plan`] has the rules).
//!
//! This is where operator policy meets discovered state: the group size divides per-instance limits (so the
//! limit holds across all Ringway instances in front of a backend), `--max-connections` fills in the
//! service-wide limit, and the model's defaults fill in timeouts.
//!
//! The output is deterministic (services sorted by name, backends by address): the content hash is what
//! decides whether anything changed, so the same catalog in a different order must give the same hash.
//!
//! One bad service never blocks the others: sources check what they report, but should a service still
//! break a snapshot invariant (a backend on port 0, a weight out of range), the compiler leaves that one
//! service out, says which and why ([`Compiled::dropped`], which the publisher logs once per change), and
//! compiles the rest. Only what no single service is to blame for fails the whole compile.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;

use ringway_shared::{Backend, Cluster, ClusterHttp, ModelError, Snapshot, Timeouts};

use crate::model::http::DEFAULT_VHOST_PORT;
use crate::model::{Catalog, Service};

/// Version given to a freshly compiled snapshot; the [`Publisher`](crate::pipeline::publisher::Publisher) assigns the
/// real one only if the content changed (the hash does not cover the version).
pub const UNVERSIONED: u64 = 0;

/// Operator policy applied to every catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileSettings {
    /// Number of Ringway instances sharing the backends (`--group-size`).
    pub group_size: NonZeroU32,
    /// Service-wide connection limit when the source sets none (`--max-connections`).
    pub default_max_connections: NonZeroU32,
    /// The shared HTTP port of virtual hosts (`--listen-address` + `--vhost-port`).
    pub vhost_listen: SocketAddr,
    /// marathon-lb's app-id routing listener (`--app-id-listen`).
    pub app_id_listen: Option<SocketAddr>,
}

impl CompileSettings {
    /// `group_size` and `default_max_connections`, the vhost port on 0.0.0.0:80, no app-id listener.
    pub fn new(group_size: NonZeroU32, default_max_connections: NonZeroU32) -> Self {
        Self {
            group_size,
            default_max_connections,
            vhost_listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_VHOST_PORT)),
            app_id_listen: None,
        }
    }
}

/// Why a catalog could not become a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The catalog breaks a snapshot invariant that no single service is to blame for; publishing it would
    /// only make every dataplane NACK.
    #[error("compiled snapshot is invalid: {0}")]
    Invalid(#[source] ModelError),
    /// A service that breaks an invariant on its own, where the caller wants all or nothing (the services
    /// file at start-up, an API call).
    #[error("service {service:?} does not compile: {reason}")]
    ServiceLeftOut { service: String, reason: String },
}

/// A compiled snapshot, and the services that had to be left out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    pub snapshot: Snapshot,
    /// Services that broke an invariant on their own, or lost every listener and route to others, by
    /// name, with the reason; the rest is in `snapshot`.
    pub dropped: Vec<DroppedService>,
    /// What served services lost to others: a listener, a route, an HTTP listener limit.
    pub left_out: Vec<DroppedService>,
}

impl Compiled {
    /// The snapshot, or an error naming the first service left out: for callers that must refuse a catalog
    /// rather than route part of it.
    pub fn whole(self) -> Result<Snapshot, CompileError> {
        match self.dropped.into_iter().next() {
            Some(d) => Err(CompileError::ServiceLeftOut {
                service: d.service,
                reason: d.reason,
            }),
            None => Ok(self.snapshot),
        }
    }
}

/// A service the compiler left out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DroppedService {
    pub service: String,
    pub listen: std::net::SocketAddr,
    pub reason: String,
}

/// A backend's share of `maxconn` on this Ringway instance: `floor(maxconn / group_size)`, but never below 1,
/// because a limit of 0 would either refuse everything or, as in proxymatic, silently mean "unlimited".
pub fn per_backend_limit(maxconn: Option<u32>, group_size: NonZeroU32) -> Option<u32> {
    maxconn.map(|m| (m / group_size.get()).max(1))
}

/// Compiles `catalog` into a validated snapshot at version [`UNVERSIONED`], leaving out the services that
/// break an invariant on their own, and the listeners and routes a service loses to another ([`plan`]).
pub fn compile(catalog: &Catalog, settings: &CompileSettings) -> Result<Compiled, CompileError> {
    let mut services: Vec<&Service> = catalog.services.iter().collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));

    // The whole snapshot first: the common case compiles and validates once, without copies.
    let whole = match build(&services, plan::plan(&services, settings), settings) {
        Ok(compiled) => return Ok(compiled),
        Err(e) => e,
    };
    // Something is wrong: find the services that are wrong on their own, and compile without them.
    let mut dropped = Vec::new();
    let mut good = Vec::with_capacity(services.len());
    for service in services {
        let alone = [service];
        match build(&alone, plan::plan(&alone, settings), settings) {
            Ok(_) => good.push(service),
            Err(e) => dropped.push(DroppedService {
                service: service.name.clone(),
                listen: service.listen,
                reason: e.to_string(),
            }),
        }
    }
    if dropped.is_empty() {
        // No service is wrong on its own: the catalog as a whole is.
        return Err(CompileError::Invalid(whole));
    }
    let mut compiled =
        build(&good, plan::plan(&good, settings), settings).map_err(CompileError::Invalid)?;
    compiled.dropped.extend(dropped);
    compiled.dropped.sort();
    Ok(compiled)
}

/// The snapshot of `services` as `plan` lays them out, validated.
fn build(
    services: &[&Service],
    plan: plan::Plan,
    settings: &CompileSettings,
) -> Result<Compiled, ModelError> {
    // A set, not a scan per service: a catalog can have many services left out at once.
    let dropped: HashSet<&str> = plan.dropped.iter().map(|d| d.service.as_str()).collect();
    let clusters: Vec<Cluster> = services
        .iter()
        .filter(|s| !dropped.contains(s.name.as_str()))
        .map(|s| compile_cluster(s, settings, plan.http_services.contains(&s.name)))
        .collect();
    let snapshot = Snapshot::with_routes(UNVERSIONED, plan.listeners, plan.routes, clusters)?;
    snapshot.validate()?;
    Ok(Compiled {
        snapshot,
        dropped: plan.dropped,
        left_out: plan.left_out,
    })
}

fn compile_cluster(service: &Service, settings: &CompileSettings, http: bool) -> Cluster {
    let mut backends: Vec<Backend> = service
        .instances
        .iter()
        .map(|instance| Backend {
            address: instance.address,
            weight: instance.weight,
            max_connections: per_backend_limit(
                instance.maxconn.or(service.maxconn),
                settings.group_size,
            ),
            state: instance.state,
        })
        .collect();
    backends.sort_by_key(|b| b.address);

    let defaults = Timeouts::default();
    Cluster {
        name: service.name.clone(),
        balance: service.balance,
        timeouts: Timeouts {
            connect_ms: service.timeouts.connect_ms.unwrap_or(defaults.connect_ms),
            idle_ms: service.timeouts.idle_ms.unwrap_or(defaults.idle_ms),
            queue_ms: service.timeouts.queue_ms.unwrap_or(defaults.queue_ms),
            server_ms: service.timeouts.server_ms.unwrap_or(defaults.server_ms),
            tunnel_ms: service.timeouts.tunnel_ms.unwrap_or(defaults.tunnel_ms),
        },
        max_connections: service
            .max_connections
            .unwrap_or(settings.default_max_connections.get()),
        backends,
        http: http.then(ClusterHttp::default),
    }
}

mod plan;

pub use plan::APP_ID_HEADER;

#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod tests;
