//! Turns a [`Catalog`] into a route [`Snapshot`]: one listener and one cluster per service.
//!
//! This is where operator policy meets discovered state: the group size divides per-instance limits (so the
//! limit holds across all Ringway instances in front of a backend), `--max-connections` fills in the
//! service-wide limit, and the model's defaults fill in timeouts.
//!
//! The output is deterministic (services sorted by name, backends by address): the content hash is what
//! decides whether anything changed, so the same catalog in a different order must give the same hash.

use std::num::NonZeroU32;

use ringway_shared::{Backend, Cluster, Listener, ModelError, Protocol, Snapshot, Timeouts};

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
}

/// Why a catalog could not become a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The catalog breaks a snapshot invariant (for example two services listening on one address from two
    /// sources); publishing it would only make every dataplane NACK.
    #[error("compiled snapshot is invalid: {0}")]
    Invalid(#[source] ModelError),
}

/// A backend's share of `maxconn` on this Ringway instance: `floor(maxconn / group_size)`, but never below 1,
/// because a limit of 0 would either refuse everything or, as in proxymatic, silently mean "unlimited".
pub fn per_backend_limit(maxconn: Option<u32>, group_size: NonZeroU32) -> Option<u32> {
    maxconn.map(|m| (m / group_size.get()).max(1))
}

/// Compiles `catalog` into a validated snapshot at version [`UNVERSIONED`].
pub fn compile(catalog: &Catalog, settings: &CompileSettings) -> Result<Snapshot, CompileError> {
    let mut services: Vec<&Service> = catalog.services.iter().collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));

    let mut listeners = Vec::with_capacity(services.len());
    let mut clusters = Vec::with_capacity(services.len());
    for service in services {
        listeners.push(Listener {
            name: service.name.clone(),
            address: service.listen,
            protocol: Protocol::Tcp,
            cluster: service.name.clone(),
        });
        clusters.push(compile_cluster(service, settings));
    }

    let snapshot =
        Snapshot::new(UNVERSIONED, listeners, clusters).map_err(CompileError::Invalid)?;
    snapshot.validate().map_err(CompileError::Invalid)?;
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
        },
        max_connections: service
            .max_connections
            .unwrap_or(settings.default_max_connections.get()),
        backends,
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
        CompileSettings {
            group_size: nz(group),
            default_max_connections: nz(8192),
        }
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
        let snapshot = compile(&catalog, &settings(2)).unwrap();
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
        .unwrap();
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
        .unwrap();
        let cluster = snapshot.cluster("a").unwrap();
        assert_eq!(cluster.max_connections, 8192);
        assert_eq!(cluster.timeouts.connect_ms, 7);
        assert_eq!(cluster.timeouts.idle_ms, DEFAULT_IDLE_TIMEOUT_MS);
        assert_eq!(snapshot.listeners[0].cluster, "a");

        svc.max_connections = Some(3);
        let snapshot = compile(
            &Catalog {
                services: vec![svc],
            },
            &settings(1),
        )
        .unwrap();
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
        let x = compile(&forward, &settings(1)).unwrap();
        let y = compile(&backward, &settings(1)).unwrap();
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
        assert_ne!(compile(&changed, &settings(1)).unwrap().hash, x.hash);
    }

    #[test]
    fn invariant_violations_are_refused() {
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
