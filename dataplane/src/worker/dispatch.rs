//! Before bytes flow: choose a backend (or wait in the queue for one), connect (retrying elsewhere on
//! failure), and watch the client meanwhile so one that gives up leaves at once instead of later taking a
//! backend slot for nobody (HAProxy's `abortonclose`).
//!
//! A connection is counted as a waiter of its cluster exactly while its phase is [`Phase::Queued`]; every
//! way out of the queue goes through [`Worker::leave_queue`], so the count can neither leak nor be
//! decremented twice.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::close::CloseReason;
use crate::limits;
use crate::routing::ClusterRoute;
use crate::sys;

use super::balance::{self, MAX_CONNECT_ATTEMPTS, Pick};
use super::conn::{Conn, Direction, Phase, op_for};
use super::forward::ForwardMode;
use super::ring::OpKind;
use super::{FD_RETRY_MS, Worker};

/// Whether `--queue-size` applies to a connection entering the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueBound {
    /// Waiting for a backend slot: refused (`queue_full`) when the queue is full.
    Limit,
    /// Waiting for a descriptor for its backend socket: it already holds its own, refusing it would only
    /// reset a client the kernel connected, and descriptors bound how many there can be.
    None,
}

/// What a client watch waits for: the client's FIN (`POLLRDHUP`); errors and hang-ups always report.
const WATCH_EVENTS: i16 = libc::POLLRDHUP;
/// A connect still in flight after this long gets its client watched (queued clients are watched at once).
const WATCH_CONNECTING_AFTER_MS: u64 = 100;

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
        let (pick, tried) = {
            let Some(conn) = self.conns.get(index, generation) else {
                return;
            };
            let pick = if conn.table_epoch == self.table_epoch {
                self.balancers[conn.cluster].pick(&conn.route, &conn.tried)
            } else {
                balance::pick_stateless(&conn.route, &conn.tried)
            };
            (pick, !conn.tried.is_empty())
        };
        match pick {
            Pick::Backend {
                index: backend,
                lease,
            } => self.connect(index, generation, backend, lease),
            Pick::Full => self.enqueue(index, generation),
            // After failed attempts, the backends left are not accepting: the attempts are what failed.
            Pick::Exhausted if tried => self.close(index, generation, CloseReason::ConnectFailed),
            Pick::Exhausted => self.close(index, generation, CloseReason::NoBackend),
        }
    }

    fn enqueue(&mut self, index: u32, generation: u32) {
        self.enqueue_with(index, generation, QueueBound::Limit);
    }

    /// Queues a connection (or keeps its place if it is queued already).
    fn enqueue_with(&mut self, index: u32, generation: u32, bound: QueueBound) {
        let worker = self.config.index;
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if conn.phase == Phase::Queued {
            // Already waiting (a retry found everything full again): keep its place and deadline.
            self.queue.push_back((index, generation));
            return;
        }
        if bound == QueueBound::Limit && self.queued >= self.config.queue_limit {
            self.close(index, generation, CloseReason::QueueFull);
            return;
        }
        conn.phase = Phase::Queued;
        conn.queued_until_ms = self.now_ms + conn.route.timeouts.queue_ms as u64;
        conn.route.slot.add_waiter(worker);
        self.queued += 1;
        let due = conn.queued_until_ms;
        if !conn.timer_armed {
            conn.timer_armed = true;
            self.timers.schedule(due, index, generation);
        }
        self.queue.push_back((index, generation));
        self.watch_client(index, generation);
        // A slot freed between the failed pick and add_waiter would not have woken us: look once more.
        self.queue_dirty = true;
    }

    /// Takes a connection out of the queue census (its entry in `queue` is skipped when reached). Does
    /// nothing unless it is queued, so every exit path may call it.
    pub(super) fn leave_queue(&mut self, index: u32, generation: u32) {
        let worker = self.config.index;
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if conn.phase != Phase::Queued {
            return;
        }
        conn.phase = Phase::New;
        conn.queued_until_ms = 0;
        conn.route.slot.remove_waiter(worker);
        self.queued -= 1;
        self.stats.queued.set(self.queued as u64);
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
        self.stats.queued.set(self.queued as u64);
    }

    fn connect(
        &mut self,
        index: u32,
        generation: u32,
        backend: usize,
        lease: crate::routing::Lease,
    ) {
        let Some(conn) = self.conns.get(index, generation) else {
            return;
        };
        let address = conn.route.backends[backend].slot.address;
        let socket = match sys::tcp_socket_for(&address) {
            Ok(socket) => socket,
            Err(e) => {
                // Not the backend's fault, and the lease goes back at once (waking others, not us).
                tracing::debug!(backend = %address, error = %e, "cannot create a backend socket");
                drop(lease);
                if e.raw_os_error().is_some_and(limits::is_starvation) {
                    // No descriptor right now: wait in the queue (keeping place and deadline) for one to
                    // free up, rather than reset a client the kernel already connected.
                    self.gate.fd_starved(&e);
                    self.fd_retry_at.get_or_insert(self.now_ms + FD_RETRY_MS);
                    if let Some(conn) = self.conns.get_mut(index, generation) {
                        conn.waiting_for_fd = true;
                    }
                    self.enqueue_with(index, generation, QueueBound::None);
                } else {
                    self.close(index, generation, CloseReason::ConnectFailed);
                }
                return;
            }
        };
        self.gate.fd_available();
        self.leave_queue(index, generation);
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        conn.waiting_for_fd = false;
        let slot = Arc::clone(&conn.route.backends[backend].slot);
        let conn_timer_armed = conn.timer_armed;
        let timeout = Duration::from_millis(conn.route.timeouts.connect_ms as u64);
        conn.phase = Phase::Connecting;
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
        // Most connects finish long before a client gives up: watch only one that takes a while (the
        // timer arms the watch), so the common case costs no extra ring op.
        if !conn_timer_armed {
            self.schedule_watch(index, generation);
        }
    }

    /// Acts on a connect once both it and its linked timeout have completed, so the ring holds nothing of
    /// this attempt when the next one starts.
    pub(super) fn connect_settled(&mut self, index: u32, generation: u32) {
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
            self.start_forwarding(index, generation);
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
            self.close(index, generation, CloseReason::ConnectFailed);
        }
    }

    /// The backend socket is connected (or an upgraded HTTP connection was handed over): forward both
    /// directions.
    pub(super) fn start_forwarding(&mut self, index: u32, generation: u32) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        conn.phase = Phase::Established;
        conn.last_active_ms = self.now_ms;
        if conn.is_pending(OpKind::ClientWatch) {
            // Forwarding reads the client from now on and sees its FIN or reset itself.
            self.ring
                .cancel(op_for(OpKind::ClientWatch, index, generation));
        }
        if !conn.timer_armed {
            conn.timer_armed = true;
            let due = self.now_ms + conn.idle_ms;
            self.timers.schedule(due, index, generation);
        }
        match self.config.forward {
            // The client usually spoke first (a request is waiting): forward it now rather than
            // after a poll round trip.
            ForwardMode::UringSplice => self.await_readable(index, generation, Direction::Up),
            _ => self.drive(index, generation, Direction::Up),
        }
        self.await_readable(index, generation, Direction::Down);
    }

    /// Arms the connection's timer to watch the client if the connect is still going in
    /// [`WATCH_CONNECTING_AFTER_MS`]; once established, the same entry serves as its idle timer.
    fn schedule_watch(&mut self, index: u32, generation: u32) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        conn.timer_armed = true;
        self.timers
            .schedule(self.now_ms + WATCH_CONNECTING_AFTER_MS, index, generation);
    }

    /// Watches a queued or connecting client for leaving, unless a watch is already armed.
    pub(super) fn watch_client(&mut self, index: u32, generation: u32) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if conn.is_pending(OpKind::ClientWatch) {
            return;
        }
        conn.mark_pending(OpKind::ClientWatch);
        let fd = conn.client.as_raw_fd();
        self.ring.poll(
            fd,
            WATCH_EVENTS,
            op_for(OpKind::ClientWatch, index, generation),
        );
    }

    /// The client hung up, reset, or half-closed while queued or connecting. A reset or a FIN with nothing
    /// sent is a client that gave up: it leaves now. A FIN after a request is a client that half-closes
    /// (`shutdown(SHUT_WR)` after its request, as `nc -N` does): it keeps its place, and forwarding passes
    /// the FIN on later.
    pub(super) fn on_client_watch(&mut self, index: u32, generation: u32, result: i32) {
        let Some(conn) = self.conns.get(index, generation) else {
            return;
        };
        if result < 0 || !matches!(conn.phase, Phase::Queued | Phase::Connecting) {
            // Cancelled (the connection got established), or nothing to decide any more.
            return;
        }
        let events = result as i16;
        let gone = events & (libc::POLLERR | libc::POLLHUP) != 0
            || (events & WATCH_EVENTS != 0 && sys::unread_bytes(conn.client.as_fd()) == 0);
        if gone {
            self.close(index, generation, CloseReason::ClientAborted);
        }
    }
}
