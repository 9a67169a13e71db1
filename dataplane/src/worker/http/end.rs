//! Timers, closing, the tunnel hand-over after a `101`, and the counters of finished exchanges.

use std::os::fd::AsFd;
use std::sync::Arc;

use crate::http::session::{Event, ExchangeSummary, TimerKind, Unavailable};
use crate::sys;
use crate::worker::Worker;
use crate::worker::conn::Conn;
use crate::worker::ring::{OpKind, UserData};

use super::drive::steer;
use super::{ClientSession, End, LINGER_MS, Outbox, Wait};
use crate::worker::access;

/// A session's next deadline: its queue wait, its timer, or the end of its linger.
fn deadline(s: &ClientSession) -> Option<u64> {
    match s.end {
        End::Closing {
            linger: true,
            shut: true,
        } if !s.eof => Some(s.linger_until_ms),
        End::Closing { .. } | End::Tunnel => None,
        End::Open => match s.wait {
            Wait::Queued { until_ms } => Some(until_ms),
            Wait::Connecting => None,
            Wait::None => {
                let kind = s.timer?;
                let limits = s.table.listeners[s.listener].http()?.limits;
                let timeouts = s.want.as_ref().map(|w| w.route().timeouts);
                let ms = match kind {
                    TimerKind::RequestHead => limits.request_head_ms,
                    TimerKind::KeepAlive => limits.keepalive_ms,
                    TimerKind::Response => timeouts?.server_ms,
                    TimerKind::Idle => timeouts?.idle_ms,
                };
                let since = if kind.refreshed_by_activity() {
                    s.timer_set_ms.max(s.last_active_ms)
                } else {
                    s.timer_set_ms
                };
                Some(since + u64::from(ms))
            }
        },
    }
}

impl Worker {
    /// Makes sure the session's deadline has an entry in the timer heap (one at or before it).
    pub(super) fn schedule_session_timer(&mut self, handle: (u32, u32)) {
        let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) else {
            return;
        };
        if self.drain_deadline_ms.is_some()
            && s.end == End::Open
            && s.wait == Wait::None
            && s.timer == Some(TimerKind::KeepAlive)
        {
            // Draining: a connection between requests closes now rather than at its keep-alive end.
            return self.session_event(handle, Event::Timeout(TimerKind::KeepAlive));
        }
        let Some(due) = deadline(s) else {
            return;
        };
        if s.scheduled.is_some_and(|at| at <= due) {
            return;
        }
        s.scheduled = Some(due);
        self.http.session_timers.schedule(due, handle.0, handle.1);
    }

    /// Handles the sessions' and the pool's deadlines that are due.
    pub(in crate::worker) fn expire_http_timers(&mut self) {
        let now = self.now_ms;
        while let Some(entry) = self.http.session_timers.pop_due(now) {
            let handle = (entry.index, entry.generation);
            let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) else {
                self.http.session_timers.discard_stale();
                continue;
            };
            if s.scheduled != Some(entry.due_ms) {
                continue; // superseded by an earlier entry
            }
            s.scheduled = None;
            if deadline(s).is_none_or(|due| due > now) {
                self.reconcile_session(handle);
                continue;
            }
            match (s.end, s.wait, s.timer) {
                (End::Closing { .. }, _, _) => {
                    s.eof = true; // stop lingering
                    self.reconcile_session(handle);
                }
                (End::Open, Wait::Queued { .. }, _) => {
                    self.leave_http_queue(handle);
                    self.stats.queue_timeouts.inc();
                    self.session_event(
                        handle,
                        Event::BackendUnavailable(Unavailable::QueueTimeout),
                    );
                }
                (End::Open, _, Some(kind)) => self.session_event(handle, Event::Timeout(kind)),
                _ => self.reconcile_session(handle),
            }
        }
        while let Some(entry) = self.http.backend_timers.pop_due(now) {
            let expired = self
                .http
                .backends
                .get(entry.index, entry.generation)
                .is_some_and(|b| {
                    b.pooled_since_ms
                        .is_some_and(|since| since + b.pool_idle_ms <= now)
                });
            if expired {
                self.close_backend((entry.index, entry.generation));
            }
        }
        let sessions = &self.http.sessions;
        self.http.session_timers.compact_if_worthwhile(|e| {
            sessions
                .get(e.index, e.generation)
                .is_some_and(|s| s.scheduled == Some(e.due_ms))
        });
    }

    /// A closing session: finish the sends, shut down and linger if asked, then free it.
    pub(super) fn continue_closing(&mut self, handle: (u32, u32)) {
        let now = self.now_ms;
        let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) else {
            return;
        };
        let End::Closing { linger, shut } = s.end else {
            return;
        };
        if !s.out.is_idle() {
            return;
        }
        if linger && !shut && !s.eof {
            sys::shutdown_write(s.fd.as_fd());
            s.end = End::Closing { linger, shut: true };
            s.linger_until_ms = now + LINGER_MS;
            return self.reconcile_session(handle);
        }
        if linger && shut && !s.eof {
            return self.schedule_session_timer(handle);
        }
        let op = UserData::new(OpKind::ClientRecv, handle.0, handle.1);
        steer(&mut self.ring, &s.fd, &mut s.recv, false, op);
        self.stop_splices(handle);
        let Some(s) = self.http.sessions.get(handle.0, handle.1) else {
            return;
        };
        if s.quiet() {
            self.free_session(handle);
        }
    }

    /// Frees a session whose ops are all back; its socket closes here.
    fn free_session(&mut self, handle: (u32, u32)) {
        self.give_up_backend(handle, false);
        let Some(s) = self.http.sessions.remove(handle.0, handle.1) else {
            return;
        };
        if s.scheduled.is_some() {
            self.http.session_timers.forget();
        }
        drop(s);
        self.gate.release();
        if self.fd_retry_at.is_some() {
            self.queue_dirty = true;
        }
        self.stats
            .http_sessions
            .set(self.http.sessions.len() as u64);
    }

    /// After a `101`: once every send completed and both receives stopped, the client socket and the
    /// backend connection (with its lease) become a forwarded connection with the tunnel timeout.
    pub(super) fn try_tunnel(&mut self, handle: (u32, u32)) {
        let Some(s) = self.http.sessions.get(handle.0, handle.1) else {
            return;
        };
        let Some((bi, bg)) = s.backend else {
            // Nothing to tunnel to (cannot happen after a 101): close.
            return self.abort_session(handle);
        };
        if !s.quiet() || !s.out.is_idle() {
            return;
        }
        let Some(b) = self.http.backends.get(bi, bg) else {
            return self.abort_session(handle);
        };
        if !b.quiet() || !b.out.is_idle() {
            return;
        }
        let mut s = self
            .http
            .sessions
            .remove(handle.0, handle.1)
            .expect("checked above");
        let b = self.http.backends.remove(bi, bg).expect("checked above");
        if s.scheduled.is_some() {
            self.http.session_timers.forget();
        }
        let want = s.want.take().expect("a tunnel follows a routed request");
        let route = Arc::clone(want.route());
        let tunnel_ms = u64::from(route.timeouts.tunnel_ms);
        let mut conn = Conn::new(s.fd, route, u64::MAX, want.cluster, self.now_ms);
        conn.server = Some(b.fd);
        conn.lease = s.lease.take();
        conn.idle_ms = tunnel_ms;
        let (index, generation) = self.conns.insert(conn);
        self.stats.connections.set(self.conns.len() as u64);
        self.stats
            .http_sessions
            .set(self.http.sessions.len() as u64);
        self.start_forwarding(index, generation);
    }

    /// Ends a session at once (shutdown, or an impossible state): no more sends, sockets reset.
    pub(in crate::worker) fn abort_session(&mut self, handle: (u32, u32)) {
        self.leave_http_queue(handle);
        self.give_up_backend(handle, false);
        let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) else {
            return;
        };
        sys::set_linger_zero(s.fd.as_fd());
        if s.out.in_flight() {
            self.ring
                .cancel(UserData::new(OpKind::ClientSend, handle.0, handle.1));
        }
        s.out = Outbox {
            in_flight: s.out.in_flight,
            ..Outbox::default()
        };
        s.eof = true;
        s.end = End::Closing {
            linger: false,
            shut: true,
        };
        self.continue_closing(handle);
    }

    /// Shutdown began: idle pooled connections close now, idle sessions too (see
    /// [`Worker::schedule_session_timer`]), and every other session's next response is its last.
    pub(in crate::worker) fn drain_http(&mut self) {
        let pooled: Vec<(u32, u32)> = self.http.pool.drain().flat_map(|(_, v)| v).collect();
        for handle in pooled {
            if self
                .http
                .backends
                .get(handle.0, handle.1)
                .is_some_and(|b| b.owner.is_none())
            {
                self.close_backend(handle);
            }
        }
        for handle in self.http.sessions.handles() {
            if let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) {
                s.http.drain();
            }
            self.reconcile_session(handle);
        }
    }

    /// The drain deadline passed: every session and backend connection is reset.
    pub(in crate::worker) fn abort_http(&mut self) {
        for handle in self.http.sessions.handles() {
            self.abort_session(handle);
        }
        for handle in self.http.backends.handles() {
            self.close_backend(handle);
        }
    }

    /// Counts a finished exchange for its service and backend, and logs it with `--access-log`.
    pub(super) fn count_exchange(&mut self, handle: (u32, u32), summary: &ExchangeSummary) {
        let Some(s) = self.http.sessions.get(handle.0, handle.1) else {
            return;
        };
        let duration = self.now_ms.saturating_sub(s.request_started_ms);
        self.stats.http_requests.inc();
        let routed = s
            .want
            .as_ref()
            .filter(|want| summary.route.is_some_and(|r| r.target == want.cluster));
        if self.config.access_log {
            // `tried` is reset for each routed request, so a backend in it belongs to this one.
            let backend = routed
                .filter(|_| !s.tried.is_empty())
                .and(s.backend_slot.as_ref())
                .map(|b| b.address);
            let context = access::RequestContext {
                client: s.client,
                service: routed.map(|want| want.route().name.as_str()),
                backend,
                duration_ms: duration,
            };
            access::log_request(&context, summary);
        }
        if let Some(want) = routed {
            want.route()
                .slot
                .http()
                .count(summary.status, summary.error, duration);
            if summary.error.is_none()
                && let Some(backend) = &s.backend_slot
            {
                backend
                    .http()
                    .count(summary.status, summary.error, duration);
            }
        } else {
            // No route (404), or rejected before routing: counted for the worker only.
            self.stats
                .http_unrouted
                .count(summary.status, summary.error, duration);
        }
    }
}
