//! The routing table the workers read: a snapshot resolved into indices, sockets and shared slots.
//!
//! A [`RoutingTable`] is immutable and published whole; a worker routes every connection with the table
//! it loaded at accept time, so a connection sees exactly one version. [`TableBuilder`] owns what must
//! persist across versions (listener sockets, connection slots) and builds each new table from it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ringway_shared::{BackendState, Balance, ListenerFailure, Snapshot, Timeouts};

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
    /// Listeners of the snapshot that could not be opened (address in use, permission denied): not in
    /// `listeners`, so no worker serves them; the rest of the snapshot is. Sorted by address.
    pub failed: Vec<ListenerFailure>,
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
            failed: Vec::new(),
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

/// Why a snapshot could not be turned into a table. The snapshot is NACKed and nothing changes. (A
/// listener that cannot be opened is not one: see [`RoutingTable::failed`].)
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("snapshot refers to cluster {0:?}, which it does not define")]
    MissingCluster(String),
    #[error("listener {0:?} is an HTTP listener; this dataplane does not serve HTTP yet")]
    HttpNotServed(String),
}

/// What persists of one cluster across versions: its slot and its backends' slots, in snapshot order.
#[derive(Debug)]
struct ClusterEntry {
    slot: Arc<ClusterSlot>,
    backends: Vec<Arc<BackendSlot>>,
    /// The route built last time, and the index of its cluster in that snapshot: reused as it is when the
    /// cluster did not change.
    route: Arc<ClusterRoute>,
    spec: usize,
}

/// Owns what lives across versions and builds tables from snapshots.
///
/// Applying must stay fast at 100,000 backends: a cluster whose backend addresses are unchanged (the usual
/// case: controlplanes emit them sorted) reuses its slots position by position, without hashing; only a
/// cluster whose set changed pays for a map of its previous backends.
#[derive(Debug)]
pub struct TableBuilder {
    workers: usize,
    wakers: Arc<Wakers>,
    listeners: HashMap<SocketAddr, Arc<ListenerSockets>>,
    clusters: HashMap<String, ClusterEntry>,
    retired: Vec<RetiredBackend>,
    /// The snapshot of the last table built, to recognise unchanged clusters.
    previous: Option<Arc<Snapshot>>,
}

impl TableBuilder {
    pub fn new(workers: usize, wakers: Arc<Wakers>) -> Self {
        Self {
            workers,
            wakers,
            listeners: HashMap::new(),
            clusters: HashMap::new(),
            retired: Vec::new(),
            previous: None,
        }
    }

    /// Adopts listening sockets handed over by another process, used instead of binding anew.
    pub fn adopt_listener(&mut self, sockets: ListenerSockets) {
        self.listeners.insert(sockets.address, Arc::new(sockets));
    }

    /// Builds the table for `snapshot` (already validated). On error nothing is changed: new listeners
    /// opened so far are closed again and the previous table's state stays as it was.
    ///
    /// A listener that cannot be opened does not fail the build: one port another program holds must
    /// not freeze every later change. It is left out of the table and listed in
    /// [`RoutingTable::failed`]; building the same snapshot again retries it.
    pub fn build(&mut self, snapshot: Arc<Snapshot>) -> Result<RoutingTable, BuildError> {
        if let Some(http) = snapshot.listeners.iter().find(|l| l.cluster.is_none()) {
            return Err(BuildError::HttpNotServed(http.name.clone()));
        }
        let mut opened: HashMap<SocketAddr, Arc<ListenerSockets>> = HashMap::new();
        let mut failed = Vec::new();
        for listener in &snapshot.listeners {
            match self.listeners.get(&listener.address) {
                Some(existing) => {
                    opened.insert(listener.address, Arc::clone(existing));
                }
                None => match ListenerSockets::bind(listener.address, self.workers) {
                    Ok(sockets) => {
                        opened.insert(listener.address, Arc::new(sockets));
                    }
                    Err(e) => failed.push(failure(&listener.name, listener.address, &e)),
                },
            }
        }
        failed.sort();

        // Resolve listeners first: after this point nothing can fail, so the registry may be consumed.
        let cluster_index: HashMap<&str, usize> = snapshot
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let mut listeners = Vec::with_capacity(snapshot.listeners.len());
        for listener in &snapshot.listeners {
            let name = listener.cluster.as_deref().unwrap_or_default();
            let cluster = *cluster_index
                .get(name)
                .ok_or_else(|| BuildError::MissingCluster(name.to_string()))?;
            let Some(sockets) = opened.get(&listener.address) else {
                continue;
            };
            listeners.push(ListenerRoute {
                name: listener.name.clone(),
                address: listener.address,
                cluster,
                sockets: Arc::clone(sockets),
            });
        }

        let mut old = std::mem::take(&mut self.clusters);
        let mut entries: HashMap<String, ClusterEntry> =
            HashMap::with_capacity(snapshot.clusters.len());
        let mut routes = Vec::with_capacity(snapshot.clusters.len());
        let mut removed: Vec<RetiredBackend> = Vec::new();
        let mut changed = vec![true; snapshot.clusters.len()];
        for (index, cluster) in snapshot.clusters.iter().enumerate() {
            let previous = old.remove(&cluster.name);
            // The common case at scale: nothing about this cluster changed. Its entry moves over and its
            // route is reused whole, without touching any of its backends' slots (they are scattered in
            // memory; touching 100,000 of them is what makes an apply slow).
            let reusable = match (&previous, &self.previous) {
                (Some(entry), Some(last)) => last.clusters.get(entry.spec) == Some(cluster),
                _ => false,
            };
            if reusable {
                let mut entry = previous.expect("checked above");
                entry.spec = index;
                routes.push(Arc::clone(&entry.route));
                changed[index] = false;
                entries.insert(cluster.name.clone(), entry);
                continue;
            }
            let slot = previous
                .as_ref()
                .map(|p| Arc::clone(&p.slot))
                .unwrap_or_else(|| {
                    Arc::new(ClusterSlot::new(
                        cluster.name.clone(),
                        cluster.max_connections,
                        Arc::clone(&self.wakers),
                    ))
                });
            let slots = self.backend_slots(cluster, previous.as_ref(), &mut removed);
            let route_backends = cluster
                .backends
                .iter()
                .zip(&slots)
                .map(|(backend, slot)| RouteBackend {
                    slot: Arc::clone(slot),
                    weight: backend.weight,
                    accepting: backend.state == BackendState::Active,
                })
                .collect();
            let route = Arc::new(ClusterRoute {
                name: cluster.name.clone(),
                balance: cluster.balance,
                timeouts: cluster.timeouts,
                slot: Arc::clone(&slot),
                backends: route_backends,
            });
            routes.push(Arc::clone(&route));
            entries.insert(
                cluster.name.clone(),
                ClusterEntry {
                    slot,
                    backends: slots,
                    route,
                    spec: index,
                },
            );
        }
        for (name, entry) in old {
            removed.extend(entry.backends.into_iter().map(|slot| RetiredBackend {
                cluster: name.clone(),
                slot,
            }));
        }

        // Everything succeeded: commit limits, draining marks and the registries.
        for ((cluster, route), _) in snapshot
            .clusters
            .iter()
            .zip(&routes)
            .zip(&changed)
            .filter(|(_, c)| **c)
        {
            route.slot.set_limit(cluster.max_connections);
            for (backend, route_backend) in cluster.backends.iter().zip(&route.backends) {
                route_backend.slot.set_limit(backend.max_connections);
                route_backend
                    .slot
                    .set_draining(backend.state == BackendState::Draining);
            }
        }
        for gone in &removed {
            gone.slot.set_draining(true);
        }
        let mut retired: Vec<RetiredBackend> = std::mem::take(&mut self.retired)
            .into_iter()
            .filter(|r| {
                entries
                    .get(&r.cluster)
                    .is_none_or(|e| !e.backends.iter().any(|b| Arc::ptr_eq(b, &r.slot)))
            })
            .chain(removed)
            .filter(|r| r.slot.active() > 0)
            .collect();
        retired.sort_by(|a, b| (&a.cluster, a.slot.address).cmp(&(&b.cluster, b.slot.address)));
        self.retired = retired.clone();
        self.listeners = opened;
        self.clusters = entries;
        self.previous = Some(Arc::clone(&snapshot));
        Ok(RoutingTable {
            version: snapshot.version,
            hash: snapshot.hash,
            snapshot,
            listeners,
            clusters: routes,
            retired,
            failed,
        })
    }

    /// Tries again to open the listeners that `failed` (the last table's list) names, without building
    /// a table: the sockets it opens wait here for the next [`build`](Self::build), which takes them
    /// as it takes those of earlier versions. Returns the failures that remain, in `failed`'s order; a
    /// list equal to `failed` means a rebuild would change nothing.
    pub fn retry_failed(&mut self, failed: &[ListenerFailure]) -> Vec<ListenerFailure> {
        let mut remaining = Vec::new();
        for f in failed {
            match ListenerSockets::bind(f.address, self.workers) {
                Ok(sockets) => {
                    self.listeners.insert(f.address, Arc::new(sockets));
                }
                Err(e) => remaining.push(failure(&f.name, f.address, &e)),
            }
        }
        remaining
    }

    /// The slots of `cluster`'s backends, in snapshot order: reused from the previous version (position by
    /// position when the addresses are unchanged, else by address), from the retired list for a backend that
    /// comes back while its old connections still drain, or new. Backends the cluster lost go to `removed`.
    fn backend_slots(
        &self,
        cluster: &ringway_shared::Cluster,
        previous: Option<&ClusterEntry>,
        removed: &mut Vec<RetiredBackend>,
    ) -> Vec<Arc<BackendSlot>> {
        let fresh = |backend: &ringway_shared::Backend| {
            Arc::new(BackendSlot::new(backend.address, backend.max_connections))
        };
        let Some(previous) = previous else {
            return cluster.backends.iter().map(fresh).collect();
        };
        let unchanged = previous.backends.len() == cluster.backends.len()
            && previous
                .backends
                .iter()
                .zip(&cluster.backends)
                .all(|(slot, b)| slot.address == b.address);
        if unchanged {
            return previous.backends.clone();
        }
        let mut known: HashMap<SocketAddr, &Arc<BackendSlot>> =
            previous.backends.iter().map(|s| (s.address, s)).collect();
        let slots: Vec<Arc<BackendSlot>> = cluster
            .backends
            .iter()
            .map(|backend| match known.remove(&backend.address) {
                Some(slot) => Arc::clone(slot),
                None => self
                    .retired
                    .iter()
                    .find(|r| r.cluster == cluster.name && r.slot.address == backend.address)
                    .map(|r| Arc::clone(&r.slot))
                    .unwrap_or_else(|| fresh(backend)),
            })
            .collect();
        removed.extend(known.into_values().map(|slot| RetiredBackend {
            cluster: cluster.name.clone(),
            slot: Arc::clone(slot),
        }));
        slots
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

/// How a listener that could not be opened is reported (in the ACK, the statistics and the log).
fn failure(name: &str, address: SocketAddr, error: &ListenerError) -> ListenerFailure {
    ListenerFailure {
        name: name.to_string(),
        address,
        error: format!("cannot {}: {}", error.action, error.source),
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
                    cluster: Some("web".into()),
                    http: None,
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
                    http: None,
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
    fn an_unchanged_cluster_keeps_its_route_and_a_changed_one_is_rebuilt() {
        let port = free_port();
        let mut builder = builder();
        let first = builder.build(snapshot(1, port, &[(1, Some(4))])).unwrap();
        let same = builder.build(snapshot(2, port, &[(1, Some(4))])).unwrap();
        assert!(
            Arc::ptr_eq(&first.clusters[0], &same.clusters[0]),
            "nothing to rebuild"
        );
        let changed = builder.build(snapshot(3, port, &[(1, Some(2))])).unwrap();
        assert!(!Arc::ptr_eq(&same.clusters[0], &changed.clusters[0]));
        assert_eq!(changed.clusters[0].backends[0].slot.limit(), 2);
        assert!(Arc::ptr_eq(
            &same.clusters[0].backends[0].slot,
            &changed.clusters[0].backends[0].slot
        ));
    }

    #[test]
    fn a_removed_backend_drains_as_retired_and_comes_back_with_its_count() {
        let port = free_port();
        let mut builder = builder();
        let first = builder
            .build(snapshot(1, port, &[(1, Some(4)), (2, None)]))
            .unwrap();
        let route = &first.clusters[0];
        let lease = crate::routing::Lease::acquire(&route.slot, &route.backends[1].slot).unwrap();
        let removed = builder.build(snapshot(2, port, &[(1, Some(4))])).unwrap();
        assert_eq!(
            removed.retired.len(),
            1,
            "the backend with a connection is listed while it drains"
        );
        assert!(removed.retired[0].slot.is_draining());
        let back = builder
            .build(snapshot(3, port, &[(1, Some(4)), (2, None)]))
            .unwrap();
        assert!(back.retired.is_empty());
        assert!(
            Arc::ptr_eq(
                &back.clusters[0].backends[1].slot,
                &first.clusters[0].backends[1].slot
            ),
            "the returning backend keeps the slot that counts its open connection"
        );
        assert_eq!(back.clusters[0].backends[1].slot.active(), 1);
        assert!(!back.clusters[0].backends[1].slot.is_draining());
        drop(lease);
        let gone = builder.build(snapshot(4, port, &[(1, Some(4))])).unwrap();
        assert!(
            gone.retired.is_empty(),
            "a removed backend without connections is simply gone"
        );
    }

    #[test]
    fn a_listener_that_cannot_bind_is_left_out_and_retried_by_building_again() {
        let port = free_port();
        let mut builder = builder();
        builder.build(snapshot(1, port, &[(1, Some(4))])).unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let held = taken.local_addr().unwrap();
        let table = builder
            .build(snapshot(2, held.port(), &[(1, Some(1))]))
            .unwrap();
        assert!(table.listeners.is_empty(), "{:?}", table.listeners);
        assert_eq!(table.failed.len(), 1);
        assert_eq!(table.failed[0].address, held);
        assert!(
            table.failed[0].error.starts_with("cannot bind: "),
            "{}",
            table.failed[0].error
        );
        assert_eq!(
            table.clusters[0].backends[0].slot.limit(),
            1,
            "the rest of the snapshot applies"
        );
        drop(taken);
        let again = builder.build(Arc::clone(&table.snapshot)).unwrap();
        assert!(again.failed.is_empty());
        assert_eq!(again.listeners[0].address, held);
        assert!(Arc::ptr_eq(&table.clusters[0], &again.clusters[0]));
        let back = builder.build(snapshot(3, port, &[(1, Some(4))])).unwrap();
        assert!(back.failed.is_empty());
    }

    #[test]
    fn retrying_the_failed_listeners_opens_them_for_the_next_build() {
        let mut builder = builder();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let held = taken.local_addr().unwrap();
        let table = builder
            .build(snapshot(1, held.port(), &[(1, Some(1))]))
            .unwrap();
        assert_eq!(table.failed.len(), 1);
        assert_eq!(
            builder.retry_failed(&table.failed),
            table.failed,
            "still held: the same failure, so no rebuild is needed"
        );
        drop(taken);
        assert!(builder.retry_failed(&table.failed).is_empty());
        let again = builder.build(Arc::clone(&table.snapshot)).unwrap();
        assert!(again.failed.is_empty(), "{:?}", again.failed);
        assert_eq!(again.listeners[0].address, held);
    }
}
