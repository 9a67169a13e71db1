//! A request's backend: pick one with the cluster's balancer and take a lease (so `maxconn` counts
//! requests in flight), reuse a pooled connection to it or connect, or wait in the queue; and the
//! backend connections' own completions.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::http::router::RouteMatch;
use crate::http::session::{Event, Unavailable};
use crate::routing::RoutingTable;
use crate::sys;
use crate::worker::Worker;
use crate::worker::balance::{self, MAX_CONNECT_ATTEMPTS, Pick, Tried};
use crate::worker::ring::{Completion, OpKind, UserData};

use super::drive::{feed, flush, steer};
use super::{BackendConn, End, Outbox, Recv, Wait, Want};

impl Worker {
    /// The session asked for a backend of cluster `route.target` (of its current table).
    pub(super) fn acquire_backend(
        &mut self,
        handle: (u32, u32),
        route: RouteMatch,
        fresh: bool,
    ) -> Option<Event<'static>> {
        let s = self.http.sessions.get_mut(handle.0, handle.1)?;
        s.want = Some(Want {
            table: Arc::clone(&s.table),
            cluster: route.target,
            fresh,
        });
        s.tried = Tried::default();
        self.pick_backend(handle)
    }

    /// Picks a backend for the session's request: a pooled connection answers at once
    /// (`BackendReady`), a connect answers later, a full cluster queues the request.
    fn pick_backend(&mut self, handle: (u32, u32)) -> Option<Event<'static>> {
        let s = self.http.sessions.get_mut(handle.0, handle.1)?;
        let want = s.want.as_ref()?;
        let route = Arc::clone(want.route());
        let fresh = want.fresh;
        // The worker's balancers belong to its current table only.
        let pick = if Arc::ptr_eq(&want.table, &self.table) {
            self.balancers[want.cluster].pick(&route, &s.tried)
        } else {
            balance::pick_stateless(&route, &s.tried)
        };
        match pick {
            Pick::Backend { index, lease } => {
                self.leave_http_queue(handle);
                let s = self.http.sessions.get_mut(handle.0, handle.1)?;
                let slot = Arc::clone(&route.backends[index].slot);
                s.tried.push(index);
                s.lease = Some(lease);
                s.backend_slot = Some(Arc::clone(&slot));
                if !fresh && let Some(pooled) = self.take_pooled(&slot.address) {
                    let b = self.http.backends.get_mut(pooled.0, pooled.1)?;
                    b.owner = Some(handle);
                    if b.pooled_since_ms.take().is_some() {
                        self.http.pooled -= 1;
                    }
                    let s = self.http.sessions.get_mut(handle.0, handle.1)?;
                    s.backend = Some(pooled);
                    s.wait = Wait::None;
                    self.stats.http_reused.inc();
                    return Some(Event::BackendReady { reused: true });
                }
                self.connect_backend(handle, slot, &route)
            }
            Pick::Full => self.enqueue_request(handle),
            Pick::Exhausted => {
                self.leave_http_queue(handle);
                let s = self.http.sessions.get_mut(handle.0, handle.1)?;
                s.wait = Wait::None;
                Some(Event::BackendUnavailable(if s.tried.is_empty() {
                    Unavailable::NoBackend
                } else {
                    Unavailable::ConnectFailed
                }))
            }
        }
    }

    fn connect_backend(
        &mut self,
        handle: (u32, u32),
        slot: Arc<crate::routing::BackendSlot>,
        route: &crate::routing::ClusterRoute,
    ) -> Option<Event<'static>> {
        let socket = match sys::tcp_socket_for(&slot.address) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::debug!(backend = %slot.address, error = %e, "cannot create a backend socket");
                let s = self.http.sessions.get_mut(handle.0, handle.1)?;
                s.lease = None;
                s.wait = Wait::None;
                self.queue_dirty = true;
                return Some(Event::BackendUnavailable(Unavailable::ConnectFailed));
            }
        };
        let fd = socket.as_raw_fd();
        let address = socket2::SockAddr::from(slot.address);
        let conn = BackendConn {
            fd: socket,
            slot,
            owner: Some(handle),
            connect_ops: 2,
            connect_result: None,
            connected: false,
            recv: Recv::Off,
            eof: false,
            out: Outbox::default(),
            pooled_since_ms: None,
            pool_idle_ms: u64::from(route.pool.idle_ms),
            closing: false,
        };
        let (bi, bg) = self.http.backends.insert(conn);
        let timeout = Duration::from_millis(u64::from(route.timeouts.connect_ms));
        self.ring.connect(
            fd,
            &address,
            timeout,
            UserData::new(OpKind::BackendConnect, bi, bg),
        );
        let s = self.http.sessions.get_mut(handle.0, handle.1)?;
        s.backend = Some((bi, bg));
        s.wait = Wait::Connecting;
        None
    }

    /// Every backend of the cluster is full: wait in the queue (keeping the place and deadline of an
    /// earlier wait), or give up at once without a queue.
    fn enqueue_request(&mut self, handle: (u32, u32)) -> Option<Event<'static>> {
        let worker = self.config.index;
        let now = self.now_ms;
        let waiting = self.queued + self.http.queued;
        let s = self.http.sessions.get_mut(handle.0, handle.1)?;
        if matches!(s.wait, Wait::Queued { .. }) {
            self.http.queue.push_back(handle);
            return None;
        }
        let route = Arc::clone(s.want.as_ref()?.route());
        if route.timeouts.queue_ms == 0 || waiting >= self.config.queue_limit {
            return Some(Event::BackendUnavailable(Unavailable::NoBackend));
        }
        s.wait = Wait::Queued {
            until_ms: now + u64::from(route.timeouts.queue_ms),
        };
        route.slot.add_waiter(worker);
        self.http.queued += 1;
        self.http.queue.push_back(handle);
        // A slot freed between the failed pick and add_waiter would not have woken us.
        self.queue_dirty = true;
        None
    }

    /// Takes a session out of the queue census (a no-op unless it is queued).
    pub(super) fn leave_http_queue(&mut self, handle: (u32, u32)) {
        let worker = self.config.index;
        let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) else {
            return;
        };
        if !matches!(s.wait, Wait::Queued { .. }) {
            return;
        }
        s.wait = Wait::None;
        if let Some(want) = &s.want {
            want.route().slot.remove_waiter(worker);
        }
        self.http.queued -= 1;
    }

    /// Gives every queued request a chance, in arrival order.
    pub(in crate::worker) fn serve_http_queue(&mut self) {
        for _ in 0..self.http.queue.len() {
            let Some(handle) = self.http.queue.pop_front() else {
                break;
            };
            let queued = self
                .http
                .sessions
                .get(handle.0, handle.1)
                .is_some_and(|s| matches!(s.wait, Wait::Queued { .. }));
            if queued {
                let event = self.pick_backend(handle);
                self.follow_up(handle, event);
            }
        }
    }

    /// Hands a session the answer to its backend request, if there is one yet.
    fn follow_up(&mut self, handle: (u32, u32), event: Option<Event<'static>>) {
        match event {
            Some(event) => self.session_event(handle, event),
            None => self.reconcile_session(handle),
        }
    }

    /// `ReleaseBackend` (`clean`: pool the connection) or `CloseBackend`: the lease goes back, and
    /// a pending wait or connect is abandoned.
    pub(super) fn give_up_backend(&mut self, handle: (u32, u32), clean: bool) {
        self.leave_http_queue(handle);
        let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) else {
            return;
        };
        if s.lease.take().is_some() {
            self.queue_dirty = true;
        }
        s.wait = Wait::None;
        let Some((bi, bg)) = s.backend.take() else {
            return;
        };
        let max_idle = s
            .want
            .as_ref()
            .map_or(0, |w| w.route().pool.max_idle as usize);
        let Some(b) = self.http.backends.get_mut(bi, bg) else {
            return;
        };
        b.owner = None;
        let poolable =
            clean && b.connected && !b.eof && !b.closing && self.drain_deadline_ms.is_none();
        let address = b.slot.address;
        // Each connection under the cap is budgeted two descriptors; idle pooled connections take
        // theirs from the connections not open now, never more than half of them.
        let pooled = poolable && self.http.pooled < self.gate.headroom() as usize && {
            let backends = &self.http.backends;
            let idle = self.http.pool.entry(address).or_default();
            idle.retain(|&(i, g)| {
                backends
                    .get(i, g)
                    .is_some_and(|c| c.pooled_since_ms.is_some())
            });
            let room = idle.len() < max_idle;
            if room {
                idle.push((bi, bg));
            }
            room
        };
        if pooled {
            let now = self.now_ms;
            let b = self.http.backends.get_mut(bi, bg).expect("checked above");
            b.pooled_since_ms = Some(now);
            self.http.pooled += 1;
            let due = now + b.pool_idle_ms;
            self.http.backend_timers.schedule(due, bi, bg);
        } else {
            self.close_backend((bi, bg));
        }
        self.reconcile_backend((bi, bg));
    }

    /// A new table replaces `old`: idle pooled connections to a backend that `new` no longer routes
    /// to (in no cluster, or only as draining) close now rather than at the end of `pool_idle_ms`,
    /// and its entry leaves the pool map. Only the clusters that changed are searched for such
    /// backends, and their new versions first, so a table that left the pooled backends alone costs
    /// a pointer comparison per cluster; the whole table is scanned only for a backend that really
    /// left its cluster.
    pub(in crate::worker) fn prune_pool(&mut self, old: &RoutingTable, new: &RoutingTable) {
        if self.http.pool.is_empty() {
            return;
        }
        let changed = |i: usize| {
            !new.clusters
                .get(i)
                .is_some_and(|c| Arc::ptr_eq(c, &old.clusters[i]))
        };
        let mut gone: Vec<SocketAddr> = Vec::new();
        for i in (0..old.clusters.len()).filter(|&i| changed(i)) {
            for backend in &old.clusters[i].backends {
                let address = backend.slot.address;
                if self.http.pool.contains_key(&address) && !gone.contains(&address) {
                    gone.push(address);
                }
            }
        }
        // A backend may stay in its own cluster or serve another one, changed or not: it keeps its
        // pool.
        let changed_first = (0..old.clusters.len())
            .filter(|&i| changed(i))
            .filter_map(|i| new.clusters.get(i));
        for cluster in changed_first.chain(&new.clusters) {
            if gone.is_empty() {
                return;
            }
            for backend in cluster.backends.iter().filter(|b| b.accepting) {
                gone.retain(|&a| a != backend.slot.address);
            }
        }
        for address in gone {
            for (i, g) in self.http.pool.remove(&address).unwrap_or_default() {
                let idle = self
                    .http
                    .backends
                    .get(i, g)
                    .is_some_and(|b| b.pooled_since_ms.is_some());
                if idle {
                    self.close_backend((i, g));
                }
            }
        }
    }

    /// An idle pooled connection to `address`, taken out of the pool.
    fn take_pooled(&mut self, address: &SocketAddr) -> Option<(u32, u32)> {
        let idle = self.http.pool.get_mut(address)?;
        while let Some((i, g)) = idle.pop() {
            if let Some(b) = self.http.backends.get(i, g)
                && b.pooled_since_ms.is_some()
                && !b.closing
                && !b.eof
            {
                return Some((i, g));
            }
        }
        None
    }

    /// Closes a backend connection: its ops are cancelled and it is freed once they are back.
    pub(super) fn close_backend(&mut self, (bi, bg): (u32, u32)) {
        let Some(b) = self.http.backends.get_mut(bi, bg) else {
            return;
        };
        b.closing = true;
        b.owner = None;
        if b.pooled_since_ms.take().is_some() {
            self.http.pooled -= 1;
        }
        if b.connect_ops > 0 {
            self.ring
                .cancel(UserData::new(OpKind::BackendConnect, bi, bg));
        }
        if b.out.in_flight() {
            self.ring.cancel(UserData::new(OpKind::BackendSend, bi, bg));
        }
        self.reconcile_backend((bi, bg));
    }

    /// Matches a backend connection's receive and sends to its owner's wishes (a pooled one keeps its
    /// receive armed to notice a close), and frees a closed one once the ring returned its ops.
    pub(super) fn reconcile_backend(&mut self, (bi, bg): (u32, u32)) {
        let Some(b) = self.http.backends.get(bi, bg) else {
            return;
        };
        let want = if b.closing || !b.connected || b.eof {
            false
        } else {
            match b.owner {
                None => true,
                Some(owner) => self.owner_reads_backend(owner),
            }
        };
        let b = self.http.backends.get_mut(bi, bg).expect("checked above");
        let recv_op = UserData::new(OpKind::BackendRecv, bi, bg);
        steer(&mut self.ring, &b.fd, &mut b.recv, want, recv_op);
        if b.closing {
            b.out = Outbox {
                in_flight: b.out.in_flight,
                ..Outbox::default()
            };
            if b.quiet() {
                self.http.backends.remove(bi, bg);
            }
            return;
        }
        if b.connected {
            let send_op = UserData::new(OpKind::BackendSend, bi, bg);
            flush(&mut self.ring, &b.fd, &mut b.out, send_op);
        }
    }

    /// A completion of a backend connection's op.
    pub(in crate::worker) fn on_backend_completion(&mut self, completion: Completion) {
        let (bi, bg) = (completion.op.index, completion.op.generation);
        let now = self.now_ms;
        let Some(b) = self.http.backends.get_mut(bi, bg) else {
            debug_assert!(false, "completion for a freed backend slot");
            return;
        };
        let result = completion.result;
        match completion.op.kind {
            OpKind::BackendConnect | OpKind::BackendConnectTimeout => {
                b.connect_ops -= 1;
                if completion.op.kind == OpKind::BackendConnect {
                    b.connect_result = Some(result);
                }
                if b.connect_ops > 0 || b.closing {
                    return self.reconcile_backend((bi, bg));
                }
                let result = b.connect_result.take().unwrap_or(-libc::ECANCELED);
                let owner = b.owner;
                if result == 0 {
                    b.connected = true;
                    if let Some(owner) = owner {
                        self.set_wait(owner, Wait::None);
                        return self.session_event(owner, Event::BackendReady { reused: false });
                    }
                    return self.close_backend((bi, bg));
                }
                b.slot.record_connect_failure();
                if result == -libc::ECANCELED {
                    self.stats.connect_timeouts.inc();
                } else {
                    self.stats.connect_failures.inc();
                }
                tracing::debug!(
                    backend = %b.slot.address,
                    error = %std::io::Error::from_raw_os_error(-result),
                    "backend connect failed"
                );
                self.close_backend((bi, bg));
                if let Some(owner) = owner {
                    self.connect_failed(owner);
                }
            }
            OpKind::BackendRecv => {
                if !completion.more {
                    b.recv = Recv::Off;
                }
                if result == -libc::ENOBUFS || result == -libc::ECANCELED || b.closing {
                    // The owner may be waiting for this receive to stop (a tunnel hand-over).
                    return match b.owner {
                        Some(owner) if !b.closing => self.reconcile_session(owner),
                        _ => self.reconcile_backend((bi, bg)),
                    };
                }
                if result == 0 {
                    b.eof = true;
                }
                let Some(owner) = b.owner else {
                    // Idle in the pool: the backend closed it or spoke out of turn.
                    return self.close_backend((bi, bg));
                };
                let Some(s) = self.http.sessions.get_mut(owner.0, owner.1) else {
                    return self.close_backend((bi, bg));
                };
                if result > 0 {
                    s.last_active_ms = now;
                }
                match s.end {
                    End::Open => {
                        let event = match result {
                            0 => Event::BackendEof,
                            n if n > 0 => Event::BackendData(self.ring.received(&completion)),
                            _ => Event::BackendError,
                        };
                        if feed(
                            &mut self.http.sessions,
                            &self.table,
                            &mut self.http.actions,
                            owner,
                            event,
                        ) {
                            return self.perform_actions(owner);
                        }
                    }
                    End::Tunnel if result > 0 => {
                        s.out
                            .push(Bytes::copy_from_slice(self.ring.received(&completion)));
                    }
                    _ => {}
                }
                self.reconcile_session(owner);
            }
            OpKind::BackendSend => {
                let sent = b.out.completed();
                let ok = result >= 0 && result as usize == sent;
                let owner = b.owner;
                if !ok {
                    b.eof = true;
                }
                match owner {
                    Some(owner) if self.session_open(owner) => {
                        let event = if ok {
                            Event::BackendSent(sent)
                        } else {
                            Event::BackendError
                        };
                        self.session_event(owner, event);
                    }
                    Some(owner) => self.reconcile_session(owner),
                    None if !ok => self.close_backend((bi, bg)),
                    None => self.reconcile_backend((bi, bg)),
                }
            }
            other => unreachable!("{other:?} is not an op of a backend connection"),
        }
    }

    fn session_open(&self, handle: (u32, u32)) -> bool {
        self.http
            .sessions
            .get(handle.0, handle.1)
            .is_some_and(|s| s.end == End::Open)
    }

    fn set_wait(&mut self, handle: (u32, u32), wait: Wait) {
        if let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) {
            s.wait = wait;
        }
    }

    /// A connect failed: try another backend (up to [`MAX_CONNECT_ATTEMPTS`]), else 502.
    fn connect_failed(&mut self, handle: (u32, u32)) {
        let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) else {
            return;
        };
        s.backend = None;
        s.wait = Wait::None;
        if s.lease.take().is_some() {
            self.queue_dirty = true;
        }
        let attempts = s
            .want
            .as_ref()
            .map_or(0, |w| MAX_CONNECT_ATTEMPTS.min(w.route().backends.len()));
        let event = if s.tried.len() < attempts {
            self.pick_backend(handle)
        } else {
            Some(Event::BackendUnavailable(Unavailable::ConnectFailed))
        };
        self.follow_up(handle, event);
    }
}
