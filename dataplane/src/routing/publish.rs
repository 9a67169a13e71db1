//! How a new table reaches every worker: an atomic pointer swap, a wake-up through each worker's eventfd,
//! and a wait until every worker reports the version applied (only then is the snapshot ACKed).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_utils::CachePadded;

use super::table::RoutingTable;
use super::wake::Wakers;

/// Shared between the subscriber (writer), the workers (readers) and the main thread (shutdown).
#[derive(Debug)]
pub struct Published {
    table: ArcSwap<RoutingTable>,
    pub wakers: Arc<Wakers>,
    applied: Vec<CachePadded<AtomicU64>>,
    applied_lock: Mutex<()>,
    applied_changed: Condvar,
    stopping: AtomicBool,
}

/// Some worker did not apply a table in time (it is still busy, and will apply it when it gets to it).
#[derive(Debug, thiserror::Error)]
#[error("workers {lagging:?} had not applied version {version} after {waited:?}")]
pub struct ApplyTimeout {
    pub version: u64,
    pub lagging: Vec<usize>,
    pub waited: Duration,
}

impl Published {
    pub fn new(wakers: Arc<Wakers>) -> Self {
        let workers = wakers.len();
        Self {
            table: ArcSwap::from_pointee(RoutingTable::empty()),
            wakers,
            applied: (0..workers)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            applied_lock: Mutex::new(()),
            applied_changed: Condvar::new(),
            stopping: AtomicBool::new(false),
        }
    }

    pub fn workers(&self) -> usize {
        self.applied.len()
    }

    /// The current table; workers call this when woken, never per byte.
    pub fn load(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Swaps in `table`, wakes every worker and waits until all have applied it.
    pub fn publish(&self, table: RoutingTable, wait: Duration) -> Result<(), ApplyTimeout> {
        let version = table.version;
        self.table.store(Arc::new(table));
        self.wakers.wake_all();
        let started = Instant::now();
        let mut guard = self.applied_lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let lagging: Vec<usize> = (0..self.applied.len())
                .filter(|&w| self.applied[w].load(Ordering::Acquire) < version)
                .collect();
            if lagging.is_empty() {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= wait || self.is_stopping() {
                return Err(ApplyTimeout {
                    version,
                    lagging,
                    waited,
                });
            }
            guard = self
                .applied_changed
                .wait_timeout(guard, wait - waited)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A worker reports the version it now routes with.
    pub fn mark_applied(&self, worker: usize, version: u64) {
        self.applied[worker].store(version, Ordering::Release);
        let _guard = self.applied_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.applied_changed.notify_all();
    }

    pub fn applied(&self, worker: usize) -> u64 {
        self.applied[worker].load(Ordering::Acquire)
    }

    /// Asks every worker to stop accepting and drain.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wakers.wake_all();
        let _guard = self.applied_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.applied_changed.notify_all();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}
