//! A worker: one pinned thread with its own io_uring, its own listening sockets and its own connections.
//!
//! Nothing here is shared with other workers except the routing table (read-only, swapped atomically),
//! the per-backend connection counters, the process-wide connection and pipe budgets (atomics), and
//! statistics. The loop is: submit and wait for completions (or the next timer), handle every completion,
//! run connections that yielded, expire timers, serve the queue.
//!
//! - [`ring`]: the io_uring wrapper and op encoding (with `sys`, the only `unsafe` in the dataplane).
//! - [`conn`]: connection state and slab; `listen`: accepting, and pausing at the connection cap;
//!   `dispatch`: backend choice, the queue, connects; `lifecycle`: forwarding and closing.
//! - [`forward`]: the three forwarding modes; [`balance`]: backend selection; [`timers`]: deadlines.
//! - `access`: the access log's `connection` and `request` lines (`--access-log`).
//! - `http`: HTTP listeners' client sessions (driving [`crate::http::session::HttpSession`]), their
//!   backend connections and per-worker pool; an upgraded connection becomes a TCP connection here.

mod access;
pub mod balance;
pub mod conn;
mod dispatch;
pub mod forward;
mod http;
mod lifecycle;
mod listen;
#[allow(unsafe_code)]
pub mod ring;
pub mod slab;
pub mod stats;
#[cfg(test)]
mod tests;
pub mod timers;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::limits::ConnectionGate;
use crate::pipes::{BufferPool, PipeBudget, PipePool};
use crate::routing::{ClusterRoute, ListenerSockets, Published, RoutingTable};

use balance::Balancer;
use conn::{ConnSlab, Direction};
use forward::{ForwardMode, Pools};
use ring::{Completion, OpKind, Ring, RingConfig, UserData};
use stats::WorkerStats;
use timers::Timers;

/// Bytes one direction may move in one turn before other connections get theirs.
pub const TURN_BUDGET: usize = 512 * 1024;
/// Delay before re-arming an accept that failed for lack of descriptors or memory.
const ACCEPT_RETRY_MS: u64 = 100;
/// Delay before queued connections short of a descriptor try again (a close on this worker retries at once).
const FD_RETRY_MS: u64 = 10;
/// After the drain deadline, how long reset connections get to return their ops before the worker exits.
const ABORT_GRACE_MS: u64 = 1_000;
/// Longest sleep without a timer, so a missed wake-up can never stall a worker for long (short in unit
/// tests, which turn the loop by hand).
const MAX_WAIT_MS: u64 = if cfg!(test) { 20 } else { 1_000 };

/// How one worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub index: usize,
    /// Core to pin to; `None` leaves the thread unpinned.
    pub core: Option<usize>,
    pub ring: RingConfig,
    pub forward: ForwardMode,
    pub buffer_size: usize,
    /// Connections that may wait for a backend slot on this worker.
    pub queue_limit: usize,
    pub drain_timeout: Duration,
    /// Log one line per connection when it ends.
    pub access_log: bool,
}

/// What every worker shares: the published tables, its own statistics (read by the admin endpoint) and
/// the process-wide budgets.
#[derive(Debug, Clone)]
pub struct Shared {
    pub published: Arc<Published>,
    pub stats: Arc<WorkerStats>,
    /// The connection cap (`--max-connections-total`).
    pub gate: Arc<ConnectionGate>,
    /// Splice pipes, all workers together.
    pub pipes: Arc<PipeBudget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListenerState {
    Accepting,
    /// The worker is at the connection cap and cancelled this accept; `Idle` once the cancel is back.
    Cancelling,
    /// Not accepting (connection cap): clients wait in the kernel's accept queue.
    Idle,
    /// Accept failed (descriptors exhausted, for example); re-arm at this time.
    RetryAt(u64),
    /// Accept cancelled; the slot is freed when its last completion arrives.
    Removing,
}

#[derive(Debug)]
struct ListenerSlot {
    address: SocketAddr,
    /// Keeps the socket open while this worker may accept on it.
    sockets: Arc<ListenerSockets>,
    /// The one socket of `sockets` this slot accepts on.
    fd: RawFd,
    /// Where this listener's connections go, as of table `epoch`. Kept as an `Arc` so a connection
    /// accepted while the slot is being removed is still routed, not dropped.
    target: SlotTarget,
    epoch: u64,
    state: ListenerState,
    /// The armed accept is multishot (far from the connection cap) rather than a single accept.
    multishot: bool,
}

/// Where a listener slot's connections go.
#[derive(Debug, Clone)]
enum SlotTarget {
    /// TCP: cluster `cluster` of the table.
    Tcp {
        route: Arc<ClusterRoute>,
        cluster: usize,
    },
    /// HTTP: listener `listener` of `table` (each request is routed by the worker's table of the moment).
    Http {
        table: Arc<RoutingTable>,
        listener: usize,
    },
}

/// One worker's state; single-threaded, owned by its thread.
pub struct Worker {
    config: WorkerConfig,
    ring: Ring,
    published: Arc<Published>,
    gate: Arc<ConnectionGate>,
    table: Arc<RoutingTable>,
    balancers: Vec<Balancer>,
    /// Bumped on every table switch; connections remember it to know whether `balancers` is theirs.
    table_epoch: u64,
    listeners: Vec<(u32, Option<ListenerSlot>)>,
    /// Accepting stopped at the connection cap; resumed when a place frees up.
    accept_paused: bool,
    conns: ConnSlab,
    timers: Timers,
    /// Connections waiting for a backend slot, in arrival order; may hold entries of connections that
    /// left meanwhile (skipped when served). `queued` counts the live ones.
    queue: VecDeque<(u32, u32)>,
    queued: usize,
    ready: Vec<(u32, u32, Direction)>,
    pools: Pools,
    stats: Arc<WorkerStats>,
    epoch: Instant,
    now_ms: u64,
    /// Set once shutdown began: the time after which connections are reset.
    drain_deadline_ms: Option<u64>,
    /// A slot may have freed up: give the queue a try.
    queue_dirty: bool,
    /// A queued connection waits for a descriptor for its backend socket: retry the queue at this time.
    fd_retry_at: Option<u64>,
    /// HTTP client sessions, backend connections and their pool.
    http: http::HttpPath,
}

impl Worker {
    pub fn new(config: WorkerConfig, shared: Shared) -> std::io::Result<Self> {
        let ring = Ring::new(config.ring, config.core)?;
        let pools = Pools {
            pipes: PipePool::new(shared.pipes),
            buffers: BufferPool::new(config.buffer_size),
            copied_turns: 0,
        };
        Ok(Self {
            ring,
            table: Arc::new(RoutingTable::empty()),
            balancers: Vec::new(),
            table_epoch: 0,
            listeners: Vec::new(),
            accept_paused: false,
            conns: ConnSlab::default(),
            timers: Timers::default(),
            queue: VecDeque::new(),
            queued: 0,
            ready: Vec::new(),
            pools,
            stats: shared.stats,
            epoch: Instant::now(),
            now_ms: 0,
            drain_deadline_ms: None,
            queue_dirty: false,
            fd_retry_at: None,
            http: http::HttpPath::default(),
            published: shared.published,
            gate: shared.gate,
            config,
        })
    }

    /// Runs until shutdown has drained every connection (or the drain deadline passed).
    pub fn run(mut self) -> std::io::Result<()> {
        crate::routing::wake::set_current_worker(self.config.index);
        let wake_fd = self.published.wakers.fd(self.config.index);
        self.ring
            .poll_multi(wake_fd, libc::POLLIN, UserData::new(OpKind::Wake, 0, 0));
        self.on_wake();
        let mut completions: Vec<Completion> = Vec::with_capacity(256);
        while !self.turn(&mut completions)? {}
        Ok(())
    }

    /// One turn of the loop: submit and wait, handle completions, run what yielded, expire timers, serve
    /// the queue. Returns true once the worker has drained and may exit.
    fn turn(&mut self, completions: &mut Vec<Completion>) -> std::io::Result<bool> {
        let wait = if self.ready.is_empty() && self.http.ready.is_empty() {
            Some(self.wait_time())
        } else {
            Some(Duration::ZERO)
        };
        self.ring.submit_and_wait(wait)?;
        self.now_ms = self.epoch.elapsed().as_millis() as u64;
        completions.clear();
        self.ring.drain_completions(completions);
        for completion in completions.iter() {
            self.on_completion(*completion);
        }
        self.run_ready();
        self.run_http_ready();
        self.expire_timers();
        self.expire_http_timers();
        self.compact_timers();
        self.retry_listeners();
        self.check_pause();
        if self.fd_retry_at.is_some_and(|at| at <= self.now_ms) {
            self.fd_retry_at = None;
            self.queue_dirty = true;
        }
        if self.queue_dirty {
            self.queue_dirty = false;
            self.serve_queue();
            self.serve_http_queue();
        }
        self.publish_pool_stats();
        if let Some(deadline) = self.drain_deadline_ms {
            // Wait for the accept cancellations too: an accept that completed meanwhile is a client
            // to serve, and exiting first would reset it.
            if self.conns.is_empty()
                && self.http.is_empty()
                && self.listeners.iter().all(|(_, slot)| slot.is_none())
            {
                return Ok(true);
            }
            if self.now_ms >= deadline {
                self.abort_all();
                if self.now_ms >= deadline + ABORT_GRACE_MS {
                    tracing::warn!(
                        worker = self.config.index,
                        left = self.conns.len(),
                        "exiting with connections still closing"
                    );
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn wait_time(&self) -> Duration {
        let mut until = self.now_ms + MAX_WAIT_MS;
        for due in [
            self.timers.next_due(),
            self.http.session_timers.next_due(),
            self.http.backend_timers.next_due(),
        ]
        .into_iter()
        .flatten()
        {
            until = until.min(due);
        }
        if let Some(deadline) = self.drain_deadline_ms {
            until = until.min(deadline.max(self.now_ms + 1));
        }
        if let Some(at) = self.fd_retry_at {
            until = until.min(at);
        }
        for (_, slot) in &self.listeners {
            if let Some(ListenerSlot {
                state: ListenerState::RetryAt(at),
                ..
            }) = slot
            {
                until = until.min(*at);
            }
        }
        Duration::from_millis(until.saturating_sub(self.now_ms).max(1))
    }

    fn on_completion(&mut self, completion: Completion) {
        match completion.op.kind {
            OpKind::Wake => {
                if !completion.more {
                    let fd = self.published.wakers.fd(self.config.index);
                    self.ring
                        .poll_multi(fd, libc::POLLIN, UserData::new(OpKind::Wake, 0, 0));
                }
                self.on_wake();
            }
            OpKind::Accept => self.on_accept(completion),
            OpKind::Cancel => {}
            OpKind::ClientRecv | OpKind::ClientSend => self.on_session_completion(completion),
            OpKind::HttpSpliceUp | OpKind::HttpSpliceDown => self.on_splice_poll(completion),
            OpKind::BackendConnect
            | OpKind::BackendConnectTimeout
            | OpKind::BackendRecv
            | OpKind::BackendSend => self.on_backend_completion(completion),
            _ => self.on_conn_completion(completion),
        }
    }

    /// Someone wants our attention: a new table, a freed slot, room under the connection cap, or shutdown.
    fn on_wake(&mut self) {
        // Reset first, then look: a signal sent after the reset is never lost.
        self.published.wakers.reset(self.config.index);
        let table = self.published.load();
        if !Arc::ptr_eq(&table, &self.table) {
            self.apply_table(table);
        }
        if self.published.is_stopping() && self.drain_deadline_ms.is_none() {
            self.begin_drain();
        }
        self.check_pause();
        self.queue_dirty = true;
    }

    /// While paused at the connection cap: resume if there is room, else make sure the next release
    /// wakes us (a wake-up consumes the pause registration, and another worker may have taken the place
    /// it announced).
    fn check_pause(&mut self) {
        if self.accept_paused && self.gate.pause(self.config.index) {
            self.resume_accepting();
        }
    }

    /// Figures only this worker knows, published once per turn for the admin endpoint.
    fn publish_pool_stats(&self) {
        self.stats.pipes_idle.set(self.pools.pipes.idle() as u64);
        self.stats.copied_turns.set(self.pools.copied_turns);
        self.stats.accept_paused.set(u64::from(self.accept_paused));
        self.stats.http_pooled.set(self.http.pooled as u64);
    }

    /// Switches to a new table: new listeners start accepting, removed ones stop; connections keep the
    /// routes they were accepted with.
    fn apply_table(&mut self, table: Arc<RoutingTable>) {
        let epoch = self.table_epoch + 1;
        for index in 0..self.listeners.len() {
            let keep = match &self.listeners[index].1 {
                Some(slot) if slot.state != ListenerState::Removing => table
                    .listeners
                    .iter()
                    .any(|l| Arc::ptr_eq(&l.sockets, &slot.sockets)),
                _ => true,
            };
            if !keep {
                self.stop_listener(index);
            }
        }
        if self.drain_deadline_ms.is_none() {
            let workers = self.published.workers();
            for (listener, route) in table.listeners.iter().enumerate() {
                let target = match route.tcp_cluster() {
                    Some(cluster) => SlotTarget::Tcp {
                        route: Arc::clone(&table.clusters[cluster]),
                        cluster,
                    },
                    None => SlotTarget::Http {
                        table: Arc::clone(&table),
                        listener,
                    },
                };
                for fd in route.sockets.fds_for(self.config.index, workers) {
                    let existing = self.listeners.iter_mut().find_map(|(_, slot)| {
                        slot.as_mut().filter(|s| {
                            s.state != ListenerState::Removing
                                && s.fd == fd
                                && Arc::ptr_eq(&s.sockets, &route.sockets)
                        })
                    });
                    match existing {
                        Some(slot) => {
                            slot.target = target.clone();
                            slot.epoch = epoch;
                        }
                        None => self.start_listener(
                            route.address,
                            Arc::clone(&route.sockets),
                            fd,
                            (target.clone(), epoch),
                        ),
                    }
                }
            }
        }
        // A cluster the snapshot left alone keeps its route (same Arc) and so its selection state: the
        // round-robin sequence goes on instead of restarting, and a large table is not reallocated.
        let mut previous = std::mem::take(&mut self.balancers);
        self.balancers = table
            .clusters
            .iter()
            .enumerate()
            .map(
                |(i, cluster)| match (self.table.clusters.get(i), previous.get_mut(i)) {
                    (Some(old), Some(balancer)) if Arc::ptr_eq(old, cluster) => {
                        std::mem::replace(balancer, Balancer::new(0))
                    }
                    _ => Balancer::new(cluster.backends.len()),
                },
            )
            .collect();
        self.table_epoch = epoch;
        let version = table.version;
        let old = Arc::clone(&self.table);
        self.prune_pool(&old, &table);
        self.table = table;
        self.published.mark_applied(self.config.index, version);
        tracing::debug!(worker = self.config.index, version, "table applied");
    }
}

/// Starts worker threads, each pinned to its core, and returns their handles. `shared(index)` is what
/// worker `index` shares with the rest.
pub fn spawn_workers(
    configs: Vec<WorkerConfig>,
    shared: impl Fn(usize) -> Shared,
) -> std::io::Result<Vec<std::thread::JoinHandle<std::io::Result<()>>>> {
    let mut handles = Vec::with_capacity(configs.len());
    for config in configs {
        let shared = shared(config.index);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let handle = std::thread::Builder::new()
            .name(format!("ringway-w{}", config.index))
            .spawn(move || {
                if let Some(core) = config.core
                    && !core_affinity::set_for_current(core_affinity::CoreId { id: core })
                {
                    tracing::warn!(
                        worker = config.index,
                        core,
                        "could not pin worker to its core"
                    );
                }
                let worker = match Worker::new(config, shared) {
                    Ok(worker) => {
                        let _ = ready_tx.send(Ok(()));
                        worker
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(std::io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                worker.run()
            })?;
        // Each ring is created on its own thread (single issuer); wait for it so start-up errors surface here.
        ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("worker thread died during start-up"))??;
        handles.push(handle);
    }
    Ok(handles)
}
