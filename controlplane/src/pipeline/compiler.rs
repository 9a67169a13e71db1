//! Turns a [`Catalog`] into a route [`Snapshot`]: one listener and one cluster per service.
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

use std::net::SocketAddr;
use std::num::NonZeroU32;

use ringway_shared::{Backend, Cluster, Listener, ModelError, Snapshot, Timeouts};

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
    /// Services that broke an invariant on their own, by name, with the reason; the rest is in `snapshot`.
    pub dropped: Vec<DroppedService>,
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
/// break an invariant on their own.
pub fn compile(catalog: &Catalog, settings: &CompileSettings) -> Result<Compiled, CompileError> {
    let mut services: Vec<&Service> = catalog.services.iter().collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    let compile_service = |service: &Service| {
        let listener = Listener::tcp(service.name.clone(), service.listen, service.name.clone());
        (listener, compile_cluster(service, settings))
    };

    // The whole snapshot first: the common case compiles and validates once, without copies.
    let (listeners, clusters) = services.iter().map(|s| compile_service(s)).unzip();
    if let Ok(snapshot) = build(listeners, clusters) {
        return Ok(Compiled {
            snapshot,
            dropped: Vec::new(),
        });
    }
    // Something is wrong: find the services that are wrong on their own, and compile without them.
    let mut dropped = Vec::new();
    let mut listeners = Vec::with_capacity(services.len());
    let mut clusters = Vec::with_capacity(services.len());
    for service in services {
        let (listener, cluster) = compile_service(service);
        match build(vec![listener.clone()], vec![cluster.clone()]) {
            Ok(_) => {
                listeners.push(listener);
                clusters.push(cluster);
            }
            Err(e) => dropped.push(DroppedService {
                service: service.name.clone(),
                listen: service.listen,
                reason: e.to_string(),
            }),
        }
    }
    let snapshot = build(listeners, clusters).map_err(CompileError::Invalid)?;
    Ok(Compiled { snapshot, dropped })
}

fn build(listeners: Vec<Listener>, clusters: Vec<Cluster>) -> Result<Snapshot, ModelError> {
    let snapshot = Snapshot::new(UNVERSIONED, listeners, clusters)?;
    snapshot.validate()?;
    Ok(snapshot)
}

fn compile_cluster(service: &Service, settings: &CompileSettings) -> Cluster {
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
            ..defaults
        },
        max_connections: service
            .max_connections
            .unwrap_or(settings.default_max_connections.get()),
        backends,
        http: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringway_shared::model::DEFAULT_IDLE_TIMEOUT_MS;
    use std::net::SocketAddr;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn settings(group: u32) -> CompileSettings {
        CompileSettings::new(nz(group), nz(8192))
    }

    fn service(name: &str, port: u16, maxconn: Option<u32>, backends: &[u16]) -> Service {
        Service::for_test(
            name,
            SocketAddr::from(([127, 0, 0, 1], port)),
            maxconn,
            backends
                .iter()
                .map(|p| SocketAddr::from(([10, 0, 0, 1], *p))),
        )
    }

    #[test]
    fn per_backend_limit_divides_and_never_reaches_zero() {
        assert_eq!(per_backend_limit(Some(4), nz(2)), Some(2));
        assert_eq!(per_backend_limit(Some(5), nz(2)), Some(2));
        assert_eq!(per_backend_limit(Some(1), nz(3)), Some(1));
        assert_eq!(per_backend_limit(Some(100), nz(1)), Some(100));
        assert_eq!(per_backend_limit(None, nz(3)), None);
    }

    #[test]
    fn compiled_backends_carry_the_divided_limit() {
        let catalog = Catalog {
            services: vec![
                service("a", 18080, Some(4), &[1, 2]),
                service("b", 18081, Some(1), &[1]),
                service("c", 18082, None, &[1]),
            ],
        };
        let snapshot = compile(&catalog, &settings(2)).unwrap().snapshot;
        let limits = |name: &str| -> Vec<Option<u32>> {
            snapshot
                .cluster(name)
                .unwrap()
                .backends
                .iter()
                .map(|b| b.max_connections)
                .collect()
        };
        assert_eq!(limits("a"), vec![Some(2), Some(2)]);
        assert_eq!(limits("b"), vec![Some(1)]);
        assert_eq!(limits("c"), vec![None]);
    }

    #[test]
    fn an_instance_limit_overrides_the_service_limit() {
        let mut svc = service("a", 18080, Some(10), &[1, 2]);
        svc.instances[1].maxconn = Some(4);
        let snapshot = compile(
            &Catalog {
                services: vec![svc],
            },
            &settings(2),
        )
        .unwrap()
        .snapshot;
        let limits: Vec<Option<u32>> = snapshot.clusters[0]
            .backends
            .iter()
            .map(|b| b.max_connections)
            .collect();
        assert_eq!(limits, vec![Some(5), Some(2)]);
    }

    #[test]
    fn defaults_fill_what_the_catalog_leaves_open() {
        let mut svc = service("a", 18080, None, &[1]);
        svc.timeouts.connect_ms = Some(7);
        let snapshot = compile(
            &Catalog {
                services: vec![svc.clone()],
            },
            &settings(1),
        )
        .unwrap()
        .snapshot;
        let cluster = snapshot.cluster("a").unwrap();
        assert_eq!(cluster.max_connections, 8192);
        assert_eq!(cluster.timeouts.connect_ms, 7);
        assert_eq!(cluster.timeouts.idle_ms, DEFAULT_IDLE_TIMEOUT_MS);
        assert_eq!(snapshot.listeners[0].cluster.as_deref(), Some("a"));

        svc.max_connections = Some(3);
        let snapshot = compile(
            &Catalog {
                services: vec![svc],
            },
            &settings(1),
        )
        .unwrap()
        .snapshot;
        assert_eq!(snapshot.cluster("a").unwrap().max_connections, 3);
    }

    #[test]
    fn order_of_the_catalog_does_not_change_the_snapshot() {
        let forward = Catalog {
            services: vec![
                service("a", 18080, Some(10), &[3, 1, 2]),
                service("b", 18081, None, &[9, 8]),
            ],
        };
        let mut backward = forward.clone();
        backward.services.reverse();
        for s in &mut backward.services {
            s.instances.reverse();
        }
        let x = compile(&forward, &settings(1)).unwrap().snapshot;
        let y = compile(&backward, &settings(1)).unwrap().snapshot;
        assert_eq!(x, y);
        assert_eq!(x.hash, y.hash);
        assert_eq!(x.clusters[0].name, "a");
        let ports: Vec<u16> = x.clusters[0]
            .backends
            .iter()
            .map(|b| b.address.port())
            .collect();
        assert_eq!(ports, vec![1, 2, 3]);

        let mut changed = forward.clone();
        changed.services[0].instances[0].weight = 1;
        assert_ne!(
            compile(&changed, &settings(1)).unwrap().snapshot.hash,
            x.hash
        );
    }

    #[test]
    fn a_service_that_breaks_an_invariant_on_its_own_is_left_out_and_the_rest_compiles() {
        let mut port_zero = service("zero", 18081, None, &[0, 1]);
        port_zero.instances[1].weight = 500;
        let mut heavy = service("heavy", 18082, None, &[1]);
        heavy.instances[0].weight = 5000;
        let catalog = Catalog {
            services: vec![service("a", 18080, None, &[1]), port_zero, heavy],
        };
        let compiled = compile(&catalog, &settings(1)).unwrap();
        let names: Vec<&str> = compiled
            .snapshot
            .clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, vec!["a"]);
        let dropped: Vec<(&str, bool)> = compiled
            .dropped
            .iter()
            .map(|d| {
                (
                    d.service.as_str(),
                    d.reason.contains(".address") || d.reason.contains(".weight"),
                )
            })
            .collect();
        assert_eq!(dropped, vec![("heavy", true), ("zero", true)]);
        assert!(compiled.dropped[1].reason.contains("port must not be 0"));
    }

    #[test]
    fn an_invariant_no_single_service_breaks_refuses_the_catalog() {
        let catalog = Catalog {
            services: vec![
                service("a", 18080, None, &[1]),
                service("b", 18080, None, &[1]),
            ],
        };
        let err = compile(&catalog, &settings(1)).unwrap_err();
        assert!(err.to_string().contains("listeners[b].address"), "{err}");
    }
}
