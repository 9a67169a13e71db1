//! A worker: one pinned thread with its own io_uring, its own listening sockets and its own connections.
//!
//! Nothing here is shared with other workers except the routing table (read-only, swapped atomically),
//! the per-backend connection counters, and statistics. The loop is: submit and wait for completions (or
//! the next timer), handle every completion, run connections that yielded, expire timers, serve the queue.
//!
//! - [`ring`]: the io_uring wrapper and op encoding (with `sys`, the only `unsafe` in the dataplane).
//! - [`conn`]: connection state and slab; [`lifecycle`]: dispatch, connect, forward, close.
//! - [`forward`]: the three forwarding modes; [`balance`]: backend selection; [`timers`]: deadlines.

pub mod balance;
pub mod conn;
pub mod forward;
mod lifecycle;
#[allow(unsafe_code)]
pub mod ring;
pub mod stats;
pub mod timers;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pipes::{BufferPool, PipePool};
use crate::routing::{ClusterRoute, ListenerSockets, Published, RoutingTable};

use balance::Balancer;
use conn::{ConnSlab, Direction};
use forward::{ForwardMode, Pools};
use ring::{Completion, OpKind, Ring, RingConfig, UserData, next_generation};
use stats::WorkerStats;
use timers::Timers;

/// Bytes one direction may move in one turn before other connections get theirs.
pub const TURN_BUDGET: usize = 512 * 1024;
/// Delay before re-arming an accept that failed for lack of descriptors or memory.
const ACCEPT_RETRY_MS: u64 = 100;
/// After the drain deadline, how long reset connections get to return their ops before the worker exits.
const ABORT_GRACE_MS: u64 = 1_000;
/// Longest sleep without a timer, so a missed wake-up can never stall a worker for long.
const MAX_WAIT_MS: u64 = 1_000;

/// How one worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub index: usize,
    /// Core to pin to; `None` leaves the thread unpinned.
    pub core: Option<usize>,
    pub ring: RingConfig,
    pub forward: ForwardMode,
    pub pipe_size: usize,
    pub buffer_size: usize,
    /// Connections that may wait for a backend slot on this worker.
    pub queue_limit: usize,
    pub drain_timeout: Duration,
    /// Log one line per connection when it ends.
    pub access_log: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListenerState {
    Accepting,
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
    /// Where this listener's connections go, as of table `epoch` (index `cluster` in it). Kept as an `Arc`
    /// so a connection accepted while the slot is being removed is still routed, not dropped.
    route: Arc<ClusterRoute>,
    cluster: usize,
    epoch: u64,
    state: ListenerState,
}

/// One worker's state; single-threaded, owned by its thread.
pub struct Worker {
    config: WorkerConfig,
    ring: Ring,
    published: Arc<Published>,
    table: Arc<RoutingTable>,
    balancers: Vec<Balancer>,
    /// Bumped on every table switch; connections remember it to know whether `balancers` is theirs.
    table_epoch: u64,
    listeners: Vec<(u32, Option<ListenerSlot>)>,
    conns: ConnSlab,
    timers: Timers,
    queue: VecDeque<(u32, u32)>,
    ready: Vec<(u32, u32, Direction)>,
    pools: Pools,
    stats: Arc<WorkerStats>,
    epoch: Instant,
    now_ms: u64,
    /// Set once shutdown began: the time after which connections are reset.
    drain_deadline_ms: Option<u64>,
    /// A slot may have freed up: give the queue a try.
    queue_dirty: bool,
}

impl Worker {
    pub fn new(
        config: WorkerConfig,
        published: Arc<Published>,
        stats: Arc<WorkerStats>,
    ) -> std::io::Result<Self> {
        let ring = Ring::new(config.ring, config.core)?;
        let pools = Pools {
            pipes: PipePool::new(config.pipe_size),
            buffers: BufferPool::new(config.buffer_size),
        };
        Ok(Self {
            ring,
            table: Arc::new(RoutingTable::empty()),
            balancers: Vec::new(),
            table_epoch: 0,
            listeners: Vec::new(),
            conns: ConnSlab::default(),
            timers: Timers::default(),
            queue: VecDeque::new(),
            ready: Vec::new(),
            pools,
            stats,
            epoch: Instant::now(),
            now_ms: 0,
            drain_deadline_ms: None,
            queue_dirty: false,
            published,
            config,
        })
    }

    /// Runs until shutdown has drained every connection (or the drain deadline passed).
    pub fn run(mut self) -> std::io::Result<()> {
        let wake_fd = self.published.wakers.fd(self.config.index);
        self.ring
            .poll_multi(wake_fd, libc::POLLIN, UserData::new(OpKind::Wake, 0, 0));
        self.on_wake();
        let mut completions: Vec<Completion> = Vec::with_capacity(256);
        loop {
            let wait = if self.ready.is_empty() {
                Some(self.wait_time())
            } else {
                Some(Duration::ZERO)
            };
            self.ring.submit_and_wait(wait)?;
            self.now_ms = self.epoch.elapsed().as_millis() as u64;
            completions.clear();
            self.ring.drain_completions(&mut completions);
            for completion in &completions {
                self.on_completion(*completion);
            }
            self.run_ready();
            self.expire_timers();
            self.retry_listeners();
            if self.queue_dirty {
                self.queue_dirty = false;
                self.serve_queue();
            }
            if let Some(deadline) = self.drain_deadline_ms {
                // Wait for the accept cancellations too: an accept that completed meanwhile is a client
                // to serve, and exiting first would reset it.
                if self.conns.is_empty() && self.listeners.iter().all(|(_, slot)| slot.is_none()) {
                    return Ok(());
                }
                if self.now_ms >= deadline {
                    self.abort_all();
                    if self.now_ms >= deadline + ABORT_GRACE_MS {
                        tracing::warn!(
                            worker = self.config.index,
                            left = self.conns.len(),
                            "exiting with connections still closing"
                        );
                        return Ok(());
                    }
                }
            }
        }
    }

    fn wait_time(&self) -> Duration {
        let mut until = self.now_ms + MAX_WAIT_MS;
        if let Some(due) = self.timers.next_due() {
            until = until.min(due);
        }
        if let Some(deadline) = self.drain_deadline_ms {
            until = until.min(deadline.max(self.now_ms + 1));
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
            _ => self.on_conn_completion(completion),
        }
    }

    /// Someone wants our attention: a new table, a freed slot, or shutdown.
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
        self.queue_dirty = true;
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
            for route in &table.listeners {
                for fd in route.sockets.fds_for(self.config.index, workers) {
                    let existing = self.listeners.iter_mut().find_map(|(_, slot)| {
                        slot.as_mut().filter(|s| {
                            s.state != ListenerState::Removing
                                && s.fd == fd
                                && Arc::ptr_eq(&s.sockets, &route.sockets)
                        })
                    });
                    let cluster = Arc::clone(&table.clusters[route.cluster]);
                    match existing {
                        Some(slot) => {
                            slot.route = cluster;
                            slot.cluster = route.cluster;
                            slot.epoch = epoch;
                        }
                        None => self.start_listener(
                            route.address,
                            Arc::clone(&route.sockets),
                            fd,
                            (cluster, route.cluster, epoch),
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
        self.table = table;
        self.published.mark_applied(self.config.index, version);
        tracing::debug!(worker = self.config.index, version, "table applied");
    }

    fn start_listener(
        &mut self,
        address: SocketAddr,
        sockets: Arc<ListenerSockets>,
        fd: RawFd,
        (route, cluster, epoch): (Arc<ClusterRoute>, usize, u64),
    ) {
        let slot = ListenerSlot {
            address,
            sockets,
            fd,
            route,
            cluster,
            epoch,
            state: ListenerState::Accepting,
        };
        let index = match self.listeners.iter().position(|(_, s)| s.is_none()) {
            Some(free) => {
                self.listeners[free].1 = Some(slot);
                free
            }
            None => {
                self.listeners.push((0, Some(slot)));
                self.listeners.len() - 1
            }
        };
        self.arm_accept(index);
    }

    fn arm_accept(&mut self, index: usize) {
        let (generation, slot) = &self.listeners[index];
        let slot = slot.as_ref().expect("arming a live listener slot");
        let fd = slot.fd;
        self.ring
            .accept_multi(fd, UserData::new(OpKind::Accept, index as u32, *generation));
    }

    fn stop_listener(&mut self, index: usize) {
        let generation = self.listeners[index].0;
        let Some(slot) = self.listeners[index].1.as_mut() else {
            return;
        };
        match slot.state {
            ListenerState::Accepting => {
                slot.state = ListenerState::Removing;
                self.ring
                    .cancel(UserData::new(OpKind::Accept, index as u32, generation));
            }
            ListenerState::RetryAt(_) => self.free_listener(index),
            ListenerState::Removing => {}
        }
    }

    fn free_listener(&mut self, index: usize) {
        let (generation, slot) = &mut self.listeners[index];
        *slot = None;
        *generation = next_generation(*generation);
    }

    fn on_accept(&mut self, completion: Completion) {
        let index = completion.op.index as usize;
        let Some((generation, Some(slot))) = self.listeners.get(index) else {
            return;
        };
        if *generation != completion.op.generation {
            return;
        }
        let state = slot.state;
        if completion.result >= 0 {
            // Served even if the listener is being removed: the kernel already completed the handshake,
            // so dropping it now would reset a client we accepted.
            let client = self
                .ring
                .take_accepted(completion.result)
                .expect("the ring holds every accepted socket until the worker takes it");
            let route = (Arc::clone(&slot.route), slot.epoch, slot.cluster);
            self.stats.accepted.inc();
            self.start_connection(client, route);
        } else if completion.result != -libc::ECANCELED {
            self.stats.accept_errors.inc();
            tracing::warn!(
                worker = self.config.index,
                listener = %slot.address,
                error = %std::io::Error::from_raw_os_error(-completion.result),
                "accept failed; retrying shortly"
            );
        }
        if completion.more {
            return;
        }
        match state {
            ListenerState::Removing => self.free_listener(index),
            ListenerState::Accepting
                if completion.result >= 0 || completion.result == -libc::ECANCELED =>
            {
                self.arm_accept(index)
            }
            ListenerState::Accepting => {
                if let Some(slot) = self.listeners[index].1.as_mut() {
                    slot.state = ListenerState::RetryAt(self.now_ms + ACCEPT_RETRY_MS);
                }
            }
            ListenerState::RetryAt(_) => {}
        }
    }

    fn retry_listeners(&mut self) {
        for index in 0..self.listeners.len() {
            if let Some(slot) = self.listeners[index].1.as_mut()
                && matches!(slot.state, ListenerState::RetryAt(at) if at <= self.now_ms)
            {
                slot.state = ListenerState::Accepting;
                self.arm_accept(index);
            }
        }
    }

    /// Shutdown: stop accepting now, let connections finish until the drain deadline.
    fn begin_drain(&mut self) {
        self.drain_deadline_ms = Some(self.now_ms + self.config.drain_timeout.as_millis() as u64);
        for index in 0..self.listeners.len() {
            if let Some(slot) = &self.listeners[index].1
                && !self.published.is_handed_over()
            {
                // Closing our accept queue now makes the kernel send new clients elsewhere (or refuse
                // them) instead of leaving them in a queue nobody will read.
                crate::sys::shutdown_listener(slot.fd);
            }
            self.stop_listener(index);
        }
        tracing::info!(
            worker = self.config.index,
            connections = self.conns.len(),
            "draining"
        );
    }
}

/// Starts worker threads, each pinned to its core, and returns their handles.
pub fn spawn_workers(
    configs: Vec<WorkerConfig>,
    published: &Arc<Published>,
    stats: &[Arc<WorkerStats>],
) -> std::io::Result<Vec<std::thread::JoinHandle<std::io::Result<()>>>> {
    let mut handles = Vec::with_capacity(configs.len());
    for config in configs {
        let published = Arc::clone(published);
        let stats = Arc::clone(&stats[config.index]);
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
                let worker = match Worker::new(config, published, stats) {
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
