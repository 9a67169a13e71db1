//! Connection counters shared by every core: the only cross-core state on the data path.
//!
//! A [`BackendSlot`] or [`ClusterSlot`] outlives snapshots: the same backend (cluster name + address) keeps
//! the same slot across versions, so its count of live connections stays right while routes change, and a
//! removed backend keeps its slot alive through the connections that still hold a [`Lease`] on it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_utils::CachePadded;

use super::http_counts::HttpCounts;
use super::wake::{self, Wakers};
use crate::close::CloseCounts;

/// Stored as the limit when a backend has none.
pub const UNLIMITED: u32 = u32::MAX;

/// Counts against a limit, without locks: `take` succeeds only while `current < limit`.
#[derive(Debug)]
struct Gauge {
    current: AtomicU32,
    limit: AtomicU32,
}

impl Gauge {
    fn new(limit: u32) -> Self {
        Self {
            current: AtomicU32::new(0),
            limit: AtomicU32::new(limit),
        }
    }

    fn take(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self) -> u32 {
        let before = self.current.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "gauge released more often than taken");
        before
    }

    fn current(&self) -> u32 {
        self.current.load(Ordering::Relaxed)
    }

    /// Stores a new limit; skips the store (and the cache-line invalidation on every core) when unchanged,
    /// which is the usual case when a large snapshot is applied.
    fn set_limit(&self, limit: u32) {
        if self.limit.load(Ordering::Relaxed) != limit {
            self.limit.store(limit, Ordering::Relaxed);
        }
    }
}

/// What the data path writes for one backend, on one cache line.
#[derive(Debug)]
struct BackendCounters {
    gauge: Gauge,
    total: AtomicU64,
    connect_failures: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// Per-backend state shared by all cores. Kept small (one cache line of counters plus the address): a
/// design-scale snapshot has 100,000 of them.
#[derive(Debug)]
pub struct BackendSlot {
    pub address: SocketAddr,
    /// The backend is draining (by its snapshot state, or because it left the snapshot): when its last
    /// connection ends, that is worth a log line.
    draining: AtomicBool,
    hot: CachePadded<BackendCounters>,
    /// HTTP requests served by this backend; allocated on the first one (most backends of a large
    /// TCP snapshot never serve HTTP).
    http: OnceLock<Box<HttpCounts>>,
}

impl BackendSlot {
    pub fn new(address: SocketAddr, limit: Option<u32>) -> Self {
        Self {
            address,
            draining: AtomicBool::new(false),
            hot: CachePadded::new(BackendCounters {
                gauge: Gauge::new(limit.unwrap_or(UNLIMITED)),
                total: AtomicU64::new(0),
                connect_failures: AtomicU64::new(0),
                bytes_up: AtomicU64::new(0),
                bytes_down: AtomicU64::new(0),
            }),
            http: OnceLock::new(),
        }
    }

    /// HTTP request counters (allocated on first use).
    pub fn http(&self) -> &HttpCounts {
        self.http.get_or_init(Box::default)
    }

    /// HTTP request counters, if this backend served any request.
    pub fn http_if_any(&self) -> Option<&HttpCounts> {
        self.http.get().map(|b| &**b)
    }

    /// Connections currently open (or being opened) to this backend from this dataplane.
    pub fn active(&self) -> u32 {
        self.hot.gauge.current()
    }

    pub fn limit(&self) -> u32 {
        self.hot.gauge.limit.load(Ordering::Relaxed)
    }

    pub fn has_room(&self) -> bool {
        self.active() < self.limit()
    }

    /// Connections ever opened to this backend (counted when the slot is taken).
    pub fn total(&self) -> u64 {
        self.hot.total.load(Ordering::Relaxed)
    }

    pub fn connect_failures(&self) -> u64 {
        self.hot.connect_failures.load(Ordering::Relaxed)
    }

    pub fn record_connect_failure(&self) {
        self.hot.connect_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes delivered to the backend (`up`) and from it to clients (`down`).
    pub fn traffic(&self) -> (u64, u64) {
        (
            self.hot.bytes_up.load(Ordering::Relaxed),
            self.hot.bytes_down.load(Ordering::Relaxed),
        )
    }

    pub fn set_draining(&self, draining: bool) {
        if self.draining.load(Ordering::Relaxed) != draining {
            self.draining.store(draining, Ordering::Relaxed);
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Counts bytes as they are delivered, so statistics are live for long connections too.
    pub fn add_traffic(&self, up: u64, down: u64) {
        if up > 0 {
            self.hot.bytes_up.fetch_add(up, Ordering::Relaxed);
        }
        if down > 0 {
            self.hot.bytes_down.fetch_add(down, Ordering::Relaxed);
        }
    }

    /// A new snapshot may change the limit; connections above a lowered limit are not cut, they just
    /// keep new ones out until enough have ended.
    pub fn set_limit(&self, limit: Option<u32>) {
        self.hot.gauge.set_limit(limit.unwrap_or(UNLIMITED));
    }
}

/// Per-cluster state shared by all cores: the service-wide connection bound, the queue census and why
/// sessions ended.
#[derive(Debug)]
pub struct ClusterSlot {
    pub name: String,
    gauge: CachePadded<Gauge>,
    /// Connections waiting in some worker's queue for this cluster. Releasing a slot wakes workers only
    /// when this is non-zero, so the common case costs no cross-core signal.
    waiters: AtomicU32,
    /// The same per worker, each written by its own worker: a released slot wakes only the workers that
    /// have someone waiting, not every worker (a thundering herd under saturation).
    waiting: Box<[AtomicU32]>,
    wakers: Arc<Wakers>,
    /// Sessions of this service ended, per reason; kept across snapshots like the slot itself. On its own
    /// cache lines: counted on every close, it must not disturb `waiters`, read on every release.
    pub closes: CachePadded<CloseCounts>,
    /// HTTP requests routed to this service (allocated on the first one).
    http: OnceLock<Box<HttpCounts>>,
}

impl ClusterSlot {
    pub fn new(name: String, limit: u32, wakers: Arc<Wakers>) -> Self {
        Self {
            name,
            gauge: CachePadded::new(Gauge::new(limit)),
            waiters: AtomicU32::new(0),
            waiting: (0..wakers.len()).map(|_| AtomicU32::new(0)).collect(),
            wakers,
            closes: CachePadded::new(CloseCounts::default()),
            http: OnceLock::new(),
        }
    }

    /// HTTP request counters (allocated on first use).
    pub fn http(&self) -> &HttpCounts {
        self.http.get_or_init(Box::default)
    }

    /// HTTP request counters, if this service routed any request.
    pub fn http_if_any(&self) -> Option<&HttpCounts> {
        self.http.get().map(|b| &**b)
    }

    pub fn active(&self) -> u32 {
        self.gauge.current()
    }

    pub fn set_limit(&self, limit: u32) {
        self.gauge.set_limit(limit);
    }

    pub fn limit(&self) -> u32 {
        self.gauge.limit.load(Ordering::Relaxed)
    }

    /// The service-wide bound is reached: no backend of the cluster can take a connection.
    pub fn is_full(&self) -> bool {
        self.active() >= self.limit()
    }

    /// A connection of worker `worker` starts waiting for a slot.
    pub fn add_waiter(&self, worker: usize) {
        if let Some(mine) = self.waiting.get(worker) {
            mine.fetch_add(1, Ordering::AcqRel);
        }
        self.waiters.fetch_add(1, Ordering::AcqRel);
    }

    /// A connection of worker `worker` stops waiting (it got a slot, timed out, or left).
    pub fn remove_waiter(&self, worker: usize) {
        if let Some(mine) = self.waiting.get(worker) {
            let before = mine.fetch_sub(1, Ordering::AcqRel);
            debug_assert!(before > 0, "waiter of worker {worker} removed twice");
        }
        let before = self.waiters.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "waiter removed twice");
    }

    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Acquire)
    }

    /// A slot came free: wake the workers with waiters. The releasing worker itself is skipped: it serves
    /// its own queue after every release without a signal.
    fn released(&self) {
        if self.waiters.load(Ordering::Acquire) == 0 {
            return;
        }
        let me = wake::current_worker();
        for (worker, waiting) in self.waiting.iter().enumerate() {
            if Some(worker) != me && waiting.load(Ordering::Acquire) > 0 {
                self.wakers.wake(worker);
            }
        }
    }
}

/// The right to one connection to a backend, counted in its cluster too; released on drop.
#[derive(Debug)]
pub struct Lease {
    pub backend: Arc<BackendSlot>,
    pub cluster: Arc<ClusterSlot>,
}

impl Lease {
    /// Takes a place in the cluster and on the backend, or nothing.
    pub fn acquire(cluster: &Arc<ClusterSlot>, backend: &Arc<BackendSlot>) -> Option<Self> {
        if !cluster.gauge.take() {
            return None;
        }
        if !backend.hot.gauge.take() {
            cluster.gauge.give_back();
            return None;
        }
        backend.hot.total.fetch_add(1, Ordering::Relaxed);
        Some(Self {
            backend: Arc::clone(backend),
            cluster: Arc::clone(cluster),
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let before = self.backend.hot.gauge.give_back();
        if before == 1 && self.backend.is_draining() {
            tracing::info!(cluster = %self.cluster.name, backend = %self.backend.address, "backend drained");
        }
        self.cluster.gauge.give_back();
        self.cluster.released();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn cluster(limit: u32) -> Arc<ClusterSlot> {
        Arc::new(ClusterSlot::new(
            "c".into(),
            limit,
            Arc::new(Wakers::new(0).unwrap()),
        ))
    }

    #[test]
    fn backend_limit_is_never_exceeded_under_contention() {
        let cluster = cluster(1000);
        let backend = Arc::new(BackendSlot::new("127.0.0.1:1".parse().unwrap(), Some(3)));
        let peak = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (cluster, backend, peak) = (cluster.clone(), backend.clone(), peak.clone());
                thread::spawn(move || {
                    for _ in 0..20_000 {
                        if let Some(lease) = Lease::acquire(&cluster, &backend) {
                            peak.fetch_max(backend.active(), Ordering::Relaxed);
                            drop(lease);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(backend.active(), 0);
        assert_eq!(cluster.active(), 0);
    }

    #[test]
    fn cluster_limit_bounds_all_backends_together() {
        let cluster = cluster(2);
        let a = Arc::new(BackendSlot::new("127.0.0.1:1".parse().unwrap(), None));
        let b = Arc::new(BackendSlot::new("127.0.0.1:2".parse().unwrap(), None));
        let first = Lease::acquire(&cluster, &a).unwrap();
        let _second = Lease::acquire(&cluster, &b).unwrap();
        assert!(Lease::acquire(&cluster, &a).is_none());
        assert_eq!(
            a.active(),
            1,
            "a refused cluster place takes nothing from the backend"
        );
        drop(first);
        assert!(Lease::acquire(&cluster, &a).is_some());
    }

    #[test]
    fn a_released_slot_wakes_only_the_workers_that_have_waiters() {
        let wakers = Arc::new(Wakers::new(2).unwrap());
        let cluster = Arc::new(ClusterSlot::new("c".into(), 1, Arc::clone(&wakers)));
        let backend = Arc::new(BackendSlot::new("127.0.0.1:1".parse().unwrap(), None));
        let lease = Lease::acquire(&cluster, &backend).unwrap();
        cluster.add_waiter(0);
        drop(lease);
        assert!(wakers.is_signaled(0), "worker 0 waits for this cluster");
        assert!(
            !wakers.is_signaled(1),
            "worker 1 has nobody waiting: waking it is a thundering herd"
        );
    }

    #[test]
    fn lowering_a_limit_keeps_existing_leases() {
        let cluster = cluster(10);
        let backend = Arc::new(BackendSlot::new("127.0.0.1:1".parse().unwrap(), Some(3)));
        let leases: Vec<_> = (0..3)
            .map(|_| Lease::acquire(&cluster, &backend).unwrap())
            .collect();
        backend.set_limit(Some(1));
        assert!(Lease::acquire(&cluster, &backend).is_none());
        drop(leases);
        assert!(Lease::acquire(&cluster, &backend).is_some());
    }
}
