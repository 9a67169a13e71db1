//! A connection's life once a backend is chosen: forward both directions, and close with a reason,
//! cancelling whatever is still in the ring. Backend choice, the queue and connects are in `dispatch`.

use std::os::fd::{AsFd, AsRawFd};

use crate::close::CloseReason;
use crate::sys;

use super::TURN_BUDGET;
use super::Worker;
use super::conn::{Conn, Direction, Phase, op_for};
use super::forward::{self, ForwardMode, Side, Step, UringStep};
use super::ring::{Completion, OpKind};
use super::stats::WorkerStats;

impl Worker {
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
            OpKind::ClientWatch => self.on_client_watch(index, generation, result),
            OpKind::PollUp => self.on_ready(index, generation, Direction::Up, result),
            OpKind::PollDown => self.on_ready(index, generation, Direction::Down, result),
            OpKind::SpliceInUp => self.on_splice_in(index, generation, Direction::Up, result),
            OpKind::SpliceInDown => self.on_splice_in(index, generation, Direction::Down, result),
            OpKind::SpliceOutUp => self.on_splice_out(index, generation, Direction::Up, result),
            OpKind::SpliceOutDown => self.on_splice_out(index, generation, Direction::Down, result),
            other => unreachable!("{other:?} is not an op of a TCP connection"),
        }
    }

    pub(super) fn await_readable(&mut self, index: u32, generation: u32, direction: Direction) {
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
    pub(super) fn drive(&mut self, index: u32, generation: u32, direction: Direction) {
        let copy = self.config.forward == ForwardMode::Copy;
        self.pump_inline(index, generation, direction, copy);
    }

    /// One inline turn of a direction; `copy` forces the buffered path (also `uring-splice`'s path when it
    /// has no pipe).
    fn pump_inline(&mut self, index: u32, generation: u32, direction: Direction, copy: bool) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if conn.phase != Phase::Established {
            return;
        }
        let (flow, source, destination) = conn.flow_and_ends(direction);
        let (step, delivered) = if copy {
            forward::pump_copy(flow, source, destination, &mut self.pools, TURN_BUDGET)
        } else {
            forward::pump_splice(flow, source, destination, &mut self.pools, TURN_BUDGET)
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
            Step::Failed(side, e) => {
                let client = matches!(
                    (direction, side),
                    (Direction::Up, Side::Source) | (Direction::Down, Side::Destination)
                );
                let reason = if client {
                    CloseReason::ClientReset
                } else {
                    CloseReason::BackendReset
                };
                tracing::debug!(?direction, error = %e, ?reason, "forwarding failed; resetting both sides");
                self.close(index, generation, reason);
            }
        }
    }

    /// The source sent FIN and all its bytes were delivered: half-close the destination.
    fn source_done(&mut self, index: u32, generation: u32, direction: Direction) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        conn.first_eof.get_or_insert(direction);
        let (flow, _, destination) = conn.flow_and_ends(direction);
        sys::shutdown_write(destination);
        flow.finished = true;
        if conn.up.finished && conn.down.finished {
            let reason = match conn.first_eof {
                Some(Direction::Down) => CloseReason::BackendEof,
                _ => CloseReason::ClientEof,
            };
            self.close(index, generation, reason);
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
            UringStep::Copy => self.pump_inline(index, generation, direction, true),
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
                let step = Step::Failed(Side::Source, error);
                self.after_step(index, generation, direction, step);
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
                let step = Step::Failed(Side::Destination, error);
                self.after_step(index, generation, direction, step);
            }
        }
    }

    /// Ends a connection for `reason`: counts it, leaves the queue, releases the backend slot now (FIN or,
    /// if bytes may have been lost, RST), cancels its ops, and frees it once they are back.
    pub(super) fn close(&mut self, index: u32, generation: u32, reason: CloseReason) {
        self.leave_queue(index, generation);
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        count_close(&self.stats, conn, reason);
        if self.config.access_log {
            super::access::log_connection(conn, reason, self.now_ms);
        }
        conn.phase = Phase::Closing;
        if conn.timer_armed {
            conn.timer_armed = false;
            self.timers.forget();
        }
        if reason.resets() {
            sys::set_linger_zero(conn.client.as_fd());
            if let Some(server) = &conn.server {
                sys::set_linger_zero(server.as_fd());
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

    /// Frees the slot; sockets close here, after the ring has returned every op that named them, and only
    /// then does the connection give back its place under the connection cap.
    fn release(&mut self, index: u32, generation: u32) {
        let Some(mut conn) = self.conns.remove(index, generation) else {
            return;
        };
        for flow in [&mut conn.up, &mut conn.down] {
            // A pipe that may hold bytes (or that an aborted splice may have written to) is closed, not pooled.
            if flow.in_transit == 0 && self.config.forward != ForwardMode::UringSplice {
                forward::release_pipe(flow, &mut self.pools);
            }
            if flow.in_transit == 0
                && let Some(buffer) = flow.buffer.take()
            {
                self.pools.buffers.give_back(buffer);
            }
        }
        drop(conn);
        self.gate.release();
        if self.fd_retry_at.is_some() {
            // Descriptors just came free: a connection waiting for one may proceed.
            self.queue_dirty = true;
        }
        self.stats.connections.set(self.conns.len() as u64);
    }

    /// Handles every timer that is due.
    pub(super) fn expire_timers(&mut self) {
        while let Some(entry) = self.timers.pop_due(self.now_ms) {
            let (index, generation) = (entry.index, entry.generation);
            let now = self.now_ms;
            let Some(conn) = self
                .conns
                .get_mut(index, generation)
                .filter(|c| c.timer_armed)
            else {
                // The connection closed after scheduling this entry.
                self.timers.discard_stale();
                continue;
            };
            conn.timer_armed = false;
            let due = match conn.phase {
                Phase::Queued => conn.queued_until_ms,
                Phase::Established => conn.last_active_ms + conn.idle_ms,
                // A slow connect (it has its own linked timeout): watch the client meanwhile. The idle
                // timer is armed once established.
                Phase::Connecting => {
                    self.watch_client(index, generation);
                    continue;
                }
                Phase::New | Phase::Closing => continue,
            };
            if now < due {
                conn.timer_armed = true;
                self.timers.schedule(due, index, generation);
                continue;
            }
            let reason = match conn.phase {
                Phase::Queued if conn.waiting_for_fd => CloseReason::FdLimit,
                Phase::Queued => CloseReason::QueueTimeout,
                _ if stranded(conn) => CloseReason::IdleTimeoutStranded,
                _ => CloseReason::IdleTimeout,
            };
            self.close(index, generation, reason);
        }
    }

    /// Drops the timer entries of closed connections once they are many (see [`super::timers`]).
    pub(super) fn compact_timers(&mut self) {
        let conns = &self.conns;
        self.timers.compact_if_worthwhile(|entry| {
            conns
                .get(entry.index, entry.generation)
                .is_some_and(|c| c.timer_armed)
        });
    }

    /// Drain deadline passed: reset whatever is left.
    pub(super) fn abort_all(&mut self) {
        for (index, generation) in self.conns.handles() {
            self.close(index, generation, CloseReason::Shutdown);
        }
        self.abort_http();
    }
}

/// Whether closing now would lose bytes: some are in a pipe or buffer, or received and not yet read from a
/// socket whose direction is still open. A FIN then would end a stream that looks complete and is not.
fn stranded(conn: &Conn) -> bool {
    let unread = |fd: Option<std::os::fd::BorrowedFd<'_>>, closed: bool| {
        !closed && fd.is_some_and(|fd| sys::unread_bytes(fd) > 0)
    };
    conn.up.in_transit > 0
        || conn.down.in_transit > 0
        || unread(Some(conn.client.as_fd()), conn.up.source_closed)
        || unread(
            conn.server.as_ref().map(|s| s.as_fd()),
            conn.down.source_closed,
        )
}

/// Counts a close in the service's reasons and in the worker's figures.
fn count_close(stats: &WorkerStats, conn: &Conn, reason: CloseReason) {
    conn.route.slot.closes.count(reason);
    match reason {
        CloseReason::QueueTimeout | CloseReason::FdLimit => stats.queue_timeouts.inc(),
        CloseReason::QueueFull => stats.queue_full.inc(),
        CloseReason::NoBackend | CloseReason::ConnectFailed => stats.no_backend.inc(),
        CloseReason::IdleTimeout | CloseReason::IdleTimeoutStranded => stats.idle_timeouts.inc(),
        _ => {}
    }
    if reason.resets() {
        stats.resets.inc();
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
