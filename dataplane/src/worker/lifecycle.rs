//! A connection's life on its worker: choose a backend (or wait for one), connect (retrying elsewhere on
//! failure), forward both directions, and close, cancelling whatever is still in the ring.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::routing::ClusterRoute;
use crate::sys;

use super::TURN_BUDGET;
use super::Worker;
use super::balance::{self, MAX_CONNECT_ATTEMPTS, Pick};
use super::conn::{Conn, Direction, Phase, op_for};
use super::forward::{self, ForwardMode, Step, UringStep};
use super::ring::{Completion, OpKind};
use super::stats::WorkerStats;

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// FIN to both sides: everything was delivered.
    Graceful,
    /// RST to both sides: something could not be delivered, the peers must not mistake it for an end.
    Reset,
}

impl Worker {
    /// Starts routing a new client by `route` (cluster `cluster` of table `epoch`).
    pub(super) fn start_connection(
        &mut self,
        client: OwnedFd,
        (route, epoch, cluster): (Arc<ClusterRoute>, u64, usize),
    ) {
        let conn = Conn::new(client, route, epoch, cluster, self.now_ms);
        let (index, generation) = self.conns.insert(conn);
        self.stats.connections.set(self.conns.len() as u64);
        self.dispatch(index, generation);
    }

    /// Chooses a backend and connects, or queues, or gives up.
    fn dispatch(&mut self, index: u32, generation: u32) {
        let pick = {
            let Some(conn) = self.conns.get(index, generation) else {
                return;
            };
            if conn.table_epoch == self.table_epoch {
                self.balancers[conn.cluster].pick(&conn.route, &conn.tried)
            } else {
                balance::pick_stateless(&conn.route, &conn.tried)
            }
        };
        match pick {
            Pick::Backend {
                index: backend,
                lease,
            } => self.connect(index, generation, backend, lease),
            Pick::Full => self.enqueue(index, generation),
            Pick::Exhausted => {
                self.stats.no_backend.inc();
                self.close(index, generation, Close::Graceful);
            }
        }
    }

    fn enqueue(&mut self, index: u32, generation: u32) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if conn.phase == Phase::Queued {
            // Already waiting (a retry found everything full again): keep its place and deadline.
            self.queue.push_back((index, generation));
            return;
        }
        if self.queue.len() >= self.config.queue_limit {
            self.stats.queue_full.inc();
            self.close(index, generation, Close::Graceful);
            return;
        }
        conn.phase = Phase::Queued;
        conn.queued_until_ms = self.now_ms + conn.route.timeouts.queue_ms as u64;
        conn.route.slot.add_waiter();
        let due = conn.queued_until_ms;
        if !conn.timer_armed {
            conn.timer_armed = true;
            self.timers.schedule(due, index, generation);
        }
        self.queue.push_back((index, generation));
        // A slot freed between the failed pick and add_waiter would not have woken us: look once more.
        self.queue_dirty = true;
    }

    /// Gives every queued connection a chance, in arrival order.
    pub(super) fn serve_queue(&mut self) {
        for _ in 0..self.queue.len() {
            let Some((index, generation)) = self.queue.pop_front() else {
                break;
            };
            match self.conns.get(index, generation) {
                Some(conn) if conn.phase == Phase::Queued => self.dispatch(index, generation),
                _ => {}
            }
        }
        self.stats.queued.set(self.queue.len() as u64);
    }

    fn connect(
        &mut self,
        index: u32,
        generation: u32,
        backend: usize,
        lease: crate::routing::Lease,
    ) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if conn.phase == Phase::Queued {
            conn.route.slot.remove_waiter();
        }
        let slot = Arc::clone(&conn.route.backends[backend].slot);
        let socket = match sys::tcp_socket_for(&slot.address) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!(backend = %slot.address, error = %e, "cannot create a backend socket");
                self.close(index, generation, Close::Reset);
                return;
            }
        };
        let timeout = Duration::from_millis(conn.route.timeouts.connect_ms as u64);
        conn.phase = Phase::Connecting;
        conn.queued_until_ms = 0;
        conn.backend = backend;
        conn.tried.push(backend);
        conn.lease = Some(lease);
        conn.connect_result = None;
        let fd = socket.as_raw_fd();
        conn.server = Some(socket);
        conn.mark_pending(OpKind::Connect);
        conn.mark_pending(OpKind::ConnectTimeout);
        self.ring.connect(
            fd,
            &socket2::SockAddr::from(slot.address),
            timeout,
            op_for(OpKind::Connect, index, generation),
        );
    }

    pub(super) fn on_conn_completion(&mut self, completion: Completion) {
        let (index, generation, kind) = (
            completion.op.index,
            completion.op.generation,
            completion.op.kind,
        );
        let Some(conn) = self.conns.get_mut(index, generation) else {
            debug_assert!(false, "completion {kind:?} for a freed connection slot");
            return;
        };
        if !completion.more {
            conn.clear_pending(kind);
        }
        if conn.phase == Phase::Closing {
            if conn.pending == 0 {
                self.release(index, generation);
            }
            return;
        }
        let result = completion.result;
        match kind {
            OpKind::Connect => {
                conn.connect_result = Some(result);
                self.connect_settled(index, generation);
            }
            OpKind::ConnectTimeout => self.connect_settled(index, generation),
            OpKind::PollUp => self.on_ready(index, generation, Direction::Up, result),
            OpKind::PollDown => self.on_ready(index, generation, Direction::Down, result),
            OpKind::SpliceInUp => self.on_splice_in(index, generation, Direction::Up, result),
            OpKind::SpliceInDown => self.on_splice_in(index, generation, Direction::Down, result),
            OpKind::SpliceOutUp => self.on_splice_out(index, generation, Direction::Up, result),
            OpKind::SpliceOutDown => self.on_splice_out(index, generation, Direction::Down, result),
            OpKind::Accept | OpKind::Wake | OpKind::Cancel => unreachable!("not a connection op"),
        }
    }

    /// Acts on a connect once both it and its linked timeout have completed, so the ring holds nothing of
    /// this attempt when the next one starts.
    fn connect_settled(&mut self, index: u32, generation: u32) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if conn.is_pending(OpKind::Connect) || conn.is_pending(OpKind::ConnectTimeout) {
            return;
        }
        let Some(result) = conn.connect_result.take() else {
            return;
        };
        if result == 0 {
            conn.phase = Phase::Established;
            conn.last_active_ms = self.now_ms;
            if !conn.timer_armed {
                conn.timer_armed = true;
                let due = self.now_ms + conn.route.timeouts.idle_ms as u64;
                self.timers.schedule(due, index, generation);
            }
            match self.config.forward {
                // The client usually spoke first (a request is waiting): forward it now rather than
                // after a poll round trip.
                ForwardMode::UringSplice => self.await_readable(index, generation, Direction::Up),
                _ => self.drive(index, generation, Direction::Up),
            }
            self.await_readable(index, generation, Direction::Down);
            return;
        }
        let slot = &conn.route.backends[conn.backend].slot;
        slot.record_connect_failure();
        if result == -libc::ECANCELED {
            self.stats.connect_timeouts.inc();
        } else {
            self.stats.connect_failures.inc();
        }
        tracing::debug!(
            backend = %slot.address,
            error = %std::io::Error::from_raw_os_error(-result),
            "backend connect failed"
        );
        conn.lease = None;
        conn.server = None;
        self.queue_dirty = true;
        let attempts = MAX_CONNECT_ATTEMPTS.min(conn.route.backends.len());
        if conn.tried.len() < attempts {
            self.dispatch(index, generation);
        } else {
            self.stats.no_backend.inc();
            self.close(index, generation, Close::Graceful);
        }
    }

    fn await_readable(&mut self, index: u32, generation: u32, direction: Direction) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        let (_, source, _) = conn.flow_and_ends(direction);
        let fd = source.as_raw_fd();
        conn.mark_pending(direction.poll_op());
        self.ring.poll(
            fd,
            libc::POLLIN,
            op_for(direction.poll_op(), index, generation),
        );
    }

    fn await_writable(&mut self, index: u32, generation: u32, direction: Direction) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        let (_, _, destination) = conn.flow_and_ends(direction);
        let fd = destination.as_raw_fd();
        conn.mark_pending(direction.poll_op());
        self.ring.poll(
            fd,
            libc::POLLOUT,
            op_for(direction.poll_op(), index, generation),
        );
    }

    fn on_ready(&mut self, index: u32, generation: u32, direction: Direction, result: i32) {
        if result == -libc::ECANCELED {
            return;
        }
        // Errors and hang-ups are reported by the next read or write, with the precise error.
        match self.config.forward {
            ForwardMode::UringSplice => self.drive_uring(index, generation, direction, false),
            _ => self.drive(index, generation, direction),
        }
    }

    /// Runs one direction in the inline modes (`poll-splice`, `copy`).
    fn drive(&mut self, index: u32, generation: u32, direction: Direction) {
        let mode = self.config.forward;
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if conn.phase != Phase::Established {
            return;
        }
        let (flow, source, destination) = conn.flow_and_ends(direction);
        let (step, delivered) = match mode {
            ForwardMode::Copy => {
                forward::pump_copy(flow, source, destination, &mut self.pools, TURN_BUDGET)
            }
            _ => forward::pump_splice(flow, source, destination, &mut self.pools, TURN_BUDGET),
        };
        if delivered > 0 {
            account(conn, &self.stats, direction, delivered, self.now_ms);
        }
        self.after_step(index, generation, direction, step);
    }

    fn after_step(&mut self, index: u32, generation: u32, direction: Direction, step: Step) {
        match step {
            Step::AwaitReadable => self.await_readable(index, generation, direction),
            Step::AwaitWritable => self.await_writable(index, generation, direction),
            Step::Yield => self.ready.push((index, generation, direction)),
            Step::SourceDone => self.source_done(index, generation, direction),
            Step::Failed(e) => {
                tracing::debug!(?direction, error = %e, "forwarding failed; resetting both sides");
                self.stats.resets.inc();
                self.close(index, generation, Close::Reset);
            }
        }
    }

    /// The source sent FIN and all its bytes were delivered: half-close the destination.
    fn source_done(&mut self, index: u32, generation: u32, direction: Direction) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        let (flow, _, destination) = conn.flow_and_ends(direction);
        sys::shutdown_write(destination);
        flow.finished = true;
        if conn.up.finished && conn.down.finished {
            self.close(index, generation, Close::Graceful);
        }
    }

    /// Continues directions that used up their turn's budget.
    pub(super) fn run_ready(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        for (index, generation, direction) in std::mem::take(&mut self.ready) {
            match self.config.forward {
                ForwardMode::UringSplice => self.drive_uring(index, generation, direction, false),
                _ => self.drive(index, generation, direction),
            }
        }
    }

    /// `uring-splice`: submits the next op of a direction that has none in flight.
    fn drive_uring(
        &mut self,
        index: u32,
        generation: u32,
        direction: Direction,
        after_write: bool,
    ) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if conn.phase != Phase::Established {
            return;
        }
        let (flow, source, destination) = conn.flow_and_ends(direction);
        let (source, destination) = (source.as_raw_fd(), destination.as_raw_fd());
        match forward::next_uring_step(flow, &mut self.pools, after_write) {
            UringStep::SpliceIn { len } => {
                let pipe = flow
                    .pipe
                    .as_ref()
                    .expect("splice-in has a pipe")
                    .write_end()
                    .as_raw_fd();
                conn.mark_pending(direction.splice_in_op());
                self.ring.splice(
                    source,
                    pipe,
                    len,
                    op_for(direction.splice_in_op(), index, generation),
                );
            }
            UringStep::SpliceOut { len } => {
                let pipe = flow
                    .pipe
                    .as_ref()
                    .expect("splice-out has a pipe")
                    .read_end()
                    .as_raw_fd();
                conn.mark_pending(direction.splice_out_op());
                self.ring.splice(
                    pipe,
                    destination,
                    len,
                    op_for(direction.splice_out_op(), index, generation),
                );
            }
            UringStep::AwaitReadable => self.await_readable(index, generation, direction),
            UringStep::SourceDone => self.source_done(index, generation, direction),
            UringStep::Failed(e) => self.after_step(index, generation, direction, Step::Failed(e)),
        }
    }

    fn on_splice_in(&mut self, index: u32, generation: u32, direction: Direction, result: i32) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        let flow = conn.flow_mut(direction);
        match result {
            n if n > 0 => {
                flow.in_transit += n as usize;
                flow.last_read_full = flow
                    .pipe
                    .as_ref()
                    .is_some_and(|p| n as usize >= p.capacity());
            }
            0 => flow.source_closed = true,
            e if e == -libc::EAGAIN => {
                forward::release_pipe(flow, &mut self.pools);
                self.await_readable(index, generation, direction);
                return;
            }
            e => {
                let error = std::io::Error::from_raw_os_error(-e);
                self.after_step(index, generation, direction, Step::Failed(error));
                return;
            }
        }
        self.drive_uring(index, generation, direction, false);
    }

    fn on_splice_out(&mut self, index: u32, generation: u32, direction: Direction, result: i32) {
        let now = self.now_ms;
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        let flow = conn.flow_mut(direction);
        match result {
            n if n >= 0 => {
                flow.in_transit -= n as usize;
                account(conn, &self.stats, direction, n as usize, now);
                let drained = conn.flow_mut(direction).in_transit == 0;
                self.drive_uring(index, generation, direction, drained);
            }
            e if e == -libc::EAGAIN => self.await_writable(index, generation, direction),
            e => {
                let error = std::io::Error::from_raw_os_error(-e);
                self.after_step(index, generation, direction, Step::Failed(error));
            }
        }
    }

    /// Ends a connection: releases its backend slot now, cancels its ops, and frees it once they are back.
    pub(super) fn close(&mut self, index: u32, generation: u32, how: Close) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        if conn.phase == Phase::Queued {
            conn.route.slot.remove_waiter();
        }
        if self.config.access_log {
            log_access(conn, how, self.now_ms);
        }
        conn.phase = Phase::Closing;
        if how == Close::Reset {
            sys::set_linger_zero(std::os::fd::AsFd::as_fd(&conn.client));
            if let Some(server) = &conn.server {
                sys::set_linger_zero(std::os::fd::AsFd::as_fd(server));
            }
        }
        if conn.lease.take().is_some() {
            self.queue_dirty = true;
        }
        for op in conn.pending_ops() {
            self.ring.cancel(op_for(op, index, generation));
        }
        if conn.pending == 0 {
            self.release(index, generation);
        }
    }

    /// Frees the slot; sockets close here, after the ring has returned every op that named them.
    fn release(&mut self, index: u32, generation: u32) {
        let Some(mut conn) = self.conns.remove(index, generation) else {
            return;
        };
        for flow in [&mut conn.up, &mut conn.down] {
            // A pipe that may hold bytes (or that an aborted splice may have written to) is closed, not pooled.
            if flow.in_transit == 0 && self.config.forward != ForwardMode::UringSplice {
                forward::release_pipe(flow, &mut self.pools);
            }
        }
        self.stats.connections.set(self.conns.len() as u64);
    }

    /// Handles every timer that is due.
    pub(super) fn expire_timers(&mut self) {
        while let Some(entry) = self.timers.pop_due(self.now_ms) {
            let (index, generation) = (entry.index, entry.generation);
            let now = self.now_ms;
            let Some(conn) = self.conns.get_mut(index, generation) else {
                continue;
            };
            conn.timer_armed = false;
            let due = match conn.phase {
                Phase::Queued => conn.queued_until_ms,
                Phase::Established => conn.last_active_ms + conn.route.timeouts.idle_ms as u64,
                // Connect has its own linked timeout; the idle timer is re-armed once established.
                Phase::New | Phase::Connecting | Phase::Closing => continue,
            };
            if now < due {
                conn.timer_armed = true;
                self.timers.schedule(due, index, generation);
                continue;
            }
            if conn.phase == Phase::Queued {
                self.stats.queue_timeouts.inc();
            } else {
                self.stats.idle_timeouts.inc();
            }
            self.close(index, generation, Close::Graceful);
        }
    }

    /// Drain deadline passed: reset whatever is left.
    pub(super) fn abort_all(&mut self) {
        for (index, generation) in self.conns.handles() {
            self.close(index, generation, Close::Reset);
        }
    }
}

/// Counts `n` bytes delivered in `direction`: the connection's activity clock, its backend's live traffic
/// figures and the worker's totals.
fn account(conn: &mut Conn, stats: &WorkerStats, direction: Direction, n: usize, now_ms: u64) {
    let n = n as u64;
    conn.last_active_ms = now_ms;
    conn.flow_mut(direction).delivered += n;
    let backend = conn.lease.as_ref().map(|lease| &lease.backend);
    match direction {
        Direction::Up => {
            stats.bytes_up.add(n);
            if let Some(b) = backend {
                b.add_traffic(n, 0);
            }
        }
        Direction::Down => {
            stats.bytes_down.add(n);
            if let Some(b) = backend {
                b.add_traffic(0, n);
            }
        }
    }
}

/// One access-log line (`--access-log`), written as the connection ends.
fn log_access(conn: &Conn, how: Close, now_ms: u64) {
    let client = socket2::SockRef::from(&conn.client)
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    let backend = conn
        .lease
        .as_ref()
        .map_or_else(|| "-".to_string(), |l| l.backend.address.to_string());
    let outcome = match (conn.phase, how) {
        (Phase::New | Phase::Queued, _) => "not-routed",
        (Phase::Connecting, _) => "connect-failed",
        (_, Close::Reset) => "reset",
        (_, Close::Graceful) => "closed",
    };
    tracing::info!(
        target: "ringway::access",
        client,
        service = %conn.route.name,
        backend,
        bytes_in = conn.up.delivered,
        bytes_out = conn.down.delivered,
        duration_ms = now_ms.saturating_sub(conn.opened_ms),
        outcome,
        "connection"
    );
}
