//! Per-worker counters, written only by their worker and read by whoever reports them.
//!
//! Each counter is a relaxed atomic on its own cache line group per worker: a worker never contends with
//! another worker, and a reader sees values that are at most a few events old.

use crate::routing::http_counts::{HttpCloseCounts, HttpCounts};
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing event count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        // Single writer: a load and a store are cheaper than a locked add and lose nothing.
        self.0
            .store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (current connections), single writer.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct WorkerStats {
    pub accepted: Counter,
    pub accept_errors: Counter,
    /// Connections in any phase right now.
    pub connections: Gauge,
    /// Connections waiting for a backend slot right now.
    pub queued: Gauge,
    pub connect_failures: Counter,
    pub connect_timeouts: Counter,
    /// Connections closed because no backend could be reached (all tried, or none accepting).
    pub no_backend: Counter,
    pub queue_timeouts: Counter,
    /// Connections refused because this worker's queue was full.
    pub queue_full: Counter,
    pub idle_timeouts: Counter,
    /// Connections ended with RST: a byte could not be delivered, a peer failed, or shutdown cut them.
    pub resets: Counter,
    pub bytes_up: Counter,
    pub bytes_down: Counter,
    /// Empty splice pipes this worker keeps for reuse.
    pub pipes_idle: Gauge,
    /// Splice turns that copied through a buffer because no pipe could be had (a counter, published by
    /// its worker as a whole value).
    pub copied_turns: Gauge,
    /// 1 while this worker stopped accepting at the connection cap.
    pub accept_paused: Gauge,
    /// HTTP client sessions open right now (upgraded ones count as connections).
    pub http_sessions: Gauge,
    /// HTTP requests finished (any outcome).
    pub http_requests: Counter,
    /// Idle backend connections in this worker's HTTP pool (published once per turn).
    pub http_pooled: Gauge,
    /// Requests sent on a pooled backend connection.
    pub http_reused: Counter,
    pub http_closes: HttpCloseCounts,
    /// Requests answered without a route (404) or refused before routing (400, 431, 408, ...).
    pub http_unrouted: HttpCounts,
}
