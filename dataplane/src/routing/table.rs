//! The routing table the workers read: a snapshot resolved into indices, sockets and shared slots.
//!
//! A [`RoutingTable`] is immutable and published whole; a worker routes every connection with the table
//! it loaded at accept time, so a connection sees exactly one version. [`TableBuilder`] owns what must
//! persist across versions (listener sockets, connection slots) and builds each new table from it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ringway_shared::{BackendState, Balance, Snapshot, Timeouts};

use super::listeners::{ListenerError, ListenerSockets};
use super::slots::{BackendSlot, ClusterSlot};
use super::wake::Wakers;

/// One version of the routes, as the workers use it.
#[derive(Debug)]
pub struct RoutingTable {
    pub version: u64,
    pub hash: u64,
    /// The snapshot this table was built from, kept for inspection and the state file.
    pub snapshot: Arc<Snapshot>,
    pub listeners: Vec<ListenerRoute>,
    pub clusters: Vec<Arc<ClusterRoute>>,
    /// Backends that left the snapshot but still had connections when this table was built: shown in
    /// statistics as draining until their last connection ends.
    pub retired: Vec<RetiredBackend>,
}

/// A backend no longer in the snapshot, kept for statistics while it drains.
#[derive(Debug, Clone)]
pub struct RetiredBackend {
    pub cluster: String,
    pub slot: Arc<BackendSlot>,
}

impl RoutingTable {
    /// The table before any snapshot: no listeners, nothing routed.
    pub fn empty() -> Self {
        let snapshot = Snapshot::empty();
        Self {
            version: snapshot.version,
            hash: snapshot.hash,
            snapshot: Arc::new(snapshot),
            listeners: Vec::new(),
            clusters: Vec::new(),
            retired: Vec::new(),
        }
    }
}

/// A listening address and the cluster its connections go to.
#[derive(Debug)]
pub struct ListenerRoute {
    pub name: String,
    pub address: SocketAddr,
    /// Index into [`RoutingTable::clusters`].
    pub cluster: usize,
    pub sockets: Arc<ListenerSockets>,
}

/// A cluster at one version.
#[derive(Debug)]
pub struct ClusterRoute {
    pub name: String,
    pub balance: Balance,
    pub timeouts: Timeouts,
    pub slot: Arc<ClusterSlot>,
    pub backends: Vec<RouteBackend>,
}

impl ClusterRoute {
    /// True if some backend could take a connection once a slot frees up; false means waiting is pointless.
    pub fn has_accepting_backend(&self) -> bool {
        self.backends.iter().any(|b| b.accepting)
    }
}

/// A backend at one version.
#[derive(Debug)]
pub struct RouteBackend {
    pub slot: Arc<BackendSlot>,
    pub weight: u16,
    /// False for draining backends: they keep their connections and get no new ones.
    pub accepting: bool,
}

/// Why a snapshot could not be turned into a table. The snapshot is NACKed and nothing changes.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Listener(#[from] ListenerError),
    #[error("snapshot refers to cluster {0:?}, which it does not define")]
    MissingCluster(String),
}

/// Owns what lives across versions and builds tables from snapshots.
#[derive(Debug)]
pub struct TableBuilder {
    workers: usize,
    wakers: Arc<Wakers>,
    listeners: HashMap<SocketAddr, Arc<ListenerSockets>>,
    clusters: HashMap<String, Arc<ClusterSlot>>,
    backends: HashMap<(String, SocketAddr), Arc<BackendSlot>>,
    retired: Vec<RetiredBackend>,
}

impl TableBuilder {
    pub fn new(workers: usize, wakers: Arc<Wakers>) -> Self {
        Self {
            workers,
            wakers,
            listeners: HashMap::new(),
            clusters: HashMap::new(),
            backends: HashMap::new(),
            retired: Vec::new(),
        }
    }

    /// Adopts listening sockets handed over by another process, used instead of binding anew.
    pub fn adopt_listener(&mut self, sockets: ListenerSockets) {
        self.listeners.insert(sockets.address, Arc::new(sockets));
    }

    /// Builds the table for `snapshot` (already validated). On error nothing is changed: new listeners
    /// opened so far are closed again and the previous table's state stays as it was.
    pub fn build(&mut self, snapshot: Arc<Snapshot>) -> Result<RoutingTable, BuildError> {
        let mut opened: HashMap<SocketAddr, Arc<ListenerSockets>> = HashMap::new();
        for listener in &snapshot.listeners {
            let sockets = match self.listeners.get(&listener.address) {
                Some(existing) => Arc::clone(existing),
                None => Arc::new(ListenerSockets::bind(listener.address, self.workers)?),
            };
            opened.insert(listener.address, sockets);
        }

        let mut clusters = HashMap::with_capacity(snapshot.clusters.len());
        let mut backends = HashMap::with_capacity(snapshot.backend_count());
        let mut routes = Vec::with_capacity(snapshot.clusters.len());
        let mut cluster_index = HashMap::with_capacity(snapshot.clusters.len());
        for cluster in &snapshot.clusters {
            let slot = self
                .clusters
                .get(&cluster.name)
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(ClusterSlot::new(
                        cluster.name.clone(),
                        cluster.max_connections,
                        Arc::clone(&self.wakers),
                    ))
                });
            let mut route_backends = Vec::with_capacity(cluster.backends.len());
            for backend in &cluster.backends {
                let key = (cluster.name.clone(), backend.address);
                // A backend that comes back while its old connections still drain keeps their count.
                let backend_slot = self
                    .backends
                    .get(&key)
                    .or_else(|| {
                        self.retired
                            .iter()
                            .find(|r| {
                                r.cluster == cluster.name && r.slot.address == backend.address
                            })
                            .map(|r| &r.slot)
                    })
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(BackendSlot::new(backend.address, backend.max_connections))
                    });
                route_backends.push(RouteBackend {
                    slot: Arc::clone(&backend_slot),
                    weight: backend.weight,
                    accepting: backend.state == BackendState::Active,
                });
                backends.insert(key, backend_slot);
            }
            cluster_index.insert(cluster.name.as_str(), routes.len());
            routes.push(Arc::new(ClusterRoute {
                name: cluster.name.clone(),
                balance: cluster.balance,
                timeouts: cluster.timeouts,
                slot: Arc::clone(&slot),
                backends: route_backends,
            }));
            clusters.insert(cluster.name.clone(), slot);
        }

        let mut listeners = Vec::with_capacity(snapshot.listeners.len());
        for listener in &snapshot.listeners {
            let cluster = *cluster_index
                .get(listener.cluster.as_str())
                .ok_or_else(|| BuildError::MissingCluster(listener.cluster.clone()))?;
            listeners.push(ListenerRoute {
                name: listener.name.clone(),
                address: listener.address,
                cluster,
                sockets: Arc::clone(&opened[&listener.address]),
            });
        }

        // Everything succeeded: commit limits, draining marks and the registries.
        for cluster in &snapshot.clusters {
            clusters[&cluster.name].set_limit(cluster.max_connections);
            for backend in &cluster.backends {
                let slot = &backends[&(cluster.name.clone(), backend.address)];
                slot.set_limit(backend.max_connections);
                slot.set_draining(backend.state == BackendState::Draining);
            }
        }
        let mut retired: Vec<RetiredBackend> = std::mem::take(&mut self.retired)
            .into_iter()
            .filter(|r| !backends.contains_key(&(r.cluster.clone(), r.slot.address)))
            .collect();
        for ((cluster, address), slot) in &self.backends {
            if !backends.contains_key(&(cluster.clone(), *address)) {
                slot.set_draining(true);
                retired.push(RetiredBackend {
                    cluster: cluster.clone(),
                    slot: Arc::clone(slot),
                });
            }
        }
        retired.retain(|r| r.slot.active() > 0);
        retired.sort_by(|a, b| (&a.cluster, a.slot.address).cmp(&(&b.cluster, b.slot.address)));
        self.retired = retired.clone();
        self.listeners = opened;
        self.clusters = clusters;
        self.backends = backends;
        Ok(RoutingTable {
            version: snapshot.version,
            hash: snapshot.hash,
            snapshot,
            listeners,
            clusters: routes,
            retired,
        })
    }

    /// Forgets every listening socket (shutdown): once workers drop theirs, the sockets close.
    pub fn close_listeners(&mut self) {
        self.listeners.clear();
    }

    /// Every listener's sockets, for handing them to another process.
    pub fn listener_sockets(&self) -> impl Iterator<Item = &Arc<ListenerSockets>> {
        self.listeners.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringway_shared::{Backend, Cluster, Listener, Protocol};

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn snapshot(version: u64, port: u16, backends: &[(u16, Option<u32>)]) -> Arc<Snapshot> {
        Arc::new(
            Snapshot::new(
                version,
                vec![Listener {
                    name: "web".into(),
                    address: SocketAddr::from(([127, 0, 0, 1], port)),
                    protocol: Protocol::Tcp,
                    cluster: "web".into(),
                }],
                vec![Cluster {
                    name: "web".into(),
                    balance: Balance::RoundRobin,
                    timeouts: Timeouts::default(),
                    max_connections: 100,
                    backends: backends
                        .iter()
                        .map(|&(port, limit)| Backend {
                            address: SocketAddr::from(([127, 0, 0, 1], port)),
                            weight: 500,
                            max_connections: limit,
                            state: BackendState::Active,
                        })
                        .collect(),
                }],
            )
            .unwrap(),
        )
    }

    fn builder() -> TableBuilder {
        TableBuilder::new(2, Arc::new(Wakers::new(2).unwrap()))
    }

    #[test]
    fn slots_and_sockets_persist_across_versions() {
        let port = free_port();
        let mut builder = builder();
        let first = builder
            .build(snapshot(1, port, &[(1, Some(4)), (2, None)]))
            .unwrap();
        let second = builder
            .build(snapshot(2, port, &[(1, Some(2)), (3, None)]))
            .unwrap();
        let b1_v1 = &first.clusters[0].backends[0].slot;
        let b1_v2 = &second.clusters[0].backends[0].slot;
        assert!(Arc::ptr_eq(b1_v1, b1_v2), "the same backend keeps its slot");
        assert_eq!(b1_v2.limit(), 2, "the new limit applies");
        assert!(Arc::ptr_eq(
            &first.listeners[0].sockets,
            &second.listeners[0].sockets
        ));
        assert!(Arc::ptr_eq(
            &first.clusters[0].slot,
            &second.clusters[0].slot
        ));
    }

    #[test]
    fn a_listener_that_cannot_bind_changes_nothing() {
        let port = free_port();
        let mut builder = builder();
        let good = builder.build(snapshot(1, port, &[(1, Some(4))])).unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let bad = snapshot(2, taken.local_addr().unwrap().port(), &[(1, Some(1))]);
        assert!(matches!(builder.build(bad), Err(BuildError::Listener(_))));
        assert_eq!(
            good.clusters[0].backends[0].slot.limit(),
            4,
            "limits untouched by a failed build"
        );
        let again = builder.build(snapshot(3, port, &[(1, Some(4))])).unwrap();
        assert!(Arc::ptr_eq(
            &good.listeners[0].sockets,
            &again.listeners[0].sockets
        ));
    }
}
