//! How a new table reaches every worker: an atomic pointer swap, a wake-up through each worker's eventfd,
//! and a wait until every worker reports the version applied (only then is the snapshot ACKed).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
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
    /// The listening sockets now belong to a new dataplane too: stop accepting, but never shut them down.
    handed_over: AtomicBool,
    serving: AtomicU8,
    /// When the current table was applied everywhere, in milliseconds since the Unix epoch.
    applied_at_unix_ms: AtomicU64,
}

/// What `/status` reports to an upstream balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// No snapshot applied yet: nothing is routed.
    Initializing = 0,
    Serving = 1,
    /// Shutting down: the upstream balancer should move away (we keep accepting for the grace period).
    Draining = 2,
}

impl Serving {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Serving::Initializing,
            1 => Serving::Serving,
            _ => Serving::Draining,
        }
    }
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
            handed_over: AtomicBool::new(false),
            serving: AtomicU8::new(Serving::Initializing as u8),
            applied_at_unix_ms: AtomicU64::new(0),
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
        let result = self.wait_applied(version, wait);
        self.applied_at_unix_ms.store(unix_ms(), Ordering::Relaxed);
        // Serving from the first table on (even one a slow worker is still switching to), unless draining.
        let _ = self.serving.compare_exchange(
            Serving::Initializing as u8,
            Serving::Serving as u8,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        result
    }

    fn wait_applied(&self, version: u64, wait: Duration) -> Result<(), ApplyTimeout> {
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

    pub fn serving(&self) -> Serving {
        Serving::from_u8(self.serving.load(Ordering::Acquire))
    }

    /// From now on `/status` says DRAINING; listeners keep accepting until [`Published::stop`].
    pub fn set_draining(&self) {
        self.serving
            .store(Serving::Draining as u8, Ordering::Release);
    }

    /// When the current table was applied, in milliseconds since the Unix epoch (0: never).
    pub fn applied_at_unix_ms(&self) -> u64 {
        self.applied_at_unix_ms.load(Ordering::Relaxed)
    }

    /// The sockets were handed to a new dataplane: stop accepting (without shutting the shared sockets
    /// down) and drain.
    pub fn hand_over(&self) {
        self.handed_over.store(true, Ordering::Release);
        self.stop();
    }

    pub fn is_handed_over(&self) -> bool {
        self.handed_over.load(Ordering::Acquire)
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

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
