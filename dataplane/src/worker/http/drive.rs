//! Driving a client session: completions become [`Event`]s, the session's [`Action`]s are performed in
//! order, then each socket's reading and sending is reconciled with what the session wants.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use bytes::Bytes;

use crate::http::rewrite::{RewriteContext, Scheme};
use crate::http::session::{Action, Event, HttpSession, Read, SessionConfig};
use crate::routing::RoutingTable;
use crate::worker::Worker;
use crate::worker::balance::Tried;
use crate::worker::ring::{Completion, OpKind, Ring, UserData};
use crate::worker::slab::Slab;

use super::splice::SpliceFlow;
use super::{ClientSession, End, Outbox, Recv, Wait};

/// Hands `event` to session `(index, generation)` with the router of its (refreshed) table. Free of
/// `self` so that a received buffer (borrowed from the ring) can be passed in.
pub(super) fn feed(
    sessions: &mut Slab<ClientSession>,
    table: &Arc<RoutingTable>,
    actions: &mut Vec<Action>,
    (index, generation): (u32, u32),
    event: Event<'_>,
) -> bool {
    let Some(s) = sessions.get_mut(index, generation) else {
        return false;
    };
    if s.end != End::Open {
        return false;
    }
    s.refresh_table(table);
    let router = &s.table.listeners[s.listener]
        .http()
        .expect("an HTTP session's listener is an HTTP listener")
        .router;
    s.http.handle(event, router, actions);
    true
}

/// Arms or cancels a socket's multishot receive to match `want`.
pub(super) fn steer(ring: &mut Ring, fd: &OwnedFd, recv: &mut Recv, want: bool, op: UserData) {
    match (*recv, want) {
        (Recv::Off, true) => {
            ring.recv_multi(fd.as_raw_fd(), op);
            *recv = Recv::Armed;
        }
        (Recv::Armed, false) => {
            ring.cancel(op);
            *recv = Recv::Cancelling;
        }
        _ => {}
    }
}

/// Starts the next send of `out`, if one is due.
pub(super) fn flush(ring: &mut Ring, fd: &OwnedFd, out: &mut Outbox, op: UserData) {
    out.send_next(ring, fd.as_raw_fd(), op);
}

/// Whether a read mode wants a receive armed: buffered, or a splice that got no pipe (served by the
/// buffered path instead).
pub(super) fn reading(read: Read, flow: &SpliceFlow) -> bool {
    match read {
        Read::Buffered => true,
        Read::Splice(_) => flow.pipe.is_none(),
        Read::Paused => false,
    }
}

impl Worker {
    /// A client accepted on HTTP listener `listener` of `table`.
    pub(in crate::worker) fn start_http_session(
        &mut self,
        client: OwnedFd,
        table: Arc<RoutingTable>,
        listener: usize,
    ) {
        let route = &table.listeners[listener];
        let limits = route
            .http()
            .expect("an HTTP listener slot names an HTTP listener")
            .limits;
        // One getpeername per connection (the accept asked for no address): X-Forwarded-For.
        let peer = socket2::SockRef::from(&client)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket());
        let client_ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let config = SessionConfig {
            max_header_bytes: limits.max_header_bytes as usize,
            max_headers: usize::from(limits.max_headers),
            rewrite: RewriteContext {
                client: client_ip,
                listener_port: route.address.port(),
                scheme: Scheme::Http,
            },
        };
        let mut http = HttpSession::new(config);
        if self.drain_deadline_ms.is_some() {
            // Accepted in the turn the drain began.
            http.drain();
        }
        let session = ClientSession {
            fd: client,
            http,
            listener_address: route.address,
            client: peer,
            table,
            listener,
            recv: Recv::Off,
            eof: false,
            out: Outbox::default(),
            backend: None,
            wait: Wait::None,
            want: None,
            lease: None,
            backend_slot: None,
            tried: Tried::default(),
            timer: None,
            timer_set_ms: self.now_ms,
            scheduled: None,
            last_active_ms: self.now_ms,
            request_started_ms: self.now_ms,
            end: End::Open,
            linger_until_ms: 0,
            splice: Default::default(),
        };
        let handle = self.http.sessions.insert(session);
        self.stats
            .http_sessions
            .set(self.http.sessions.len() as u64);
        self.session_event(handle, Event::ClientData(&[]));
    }

    /// Hands an event without data to a session and performs what follows.
    pub(super) fn session_event(&mut self, handle: (u32, u32), event: Event<'_>) {
        if feed(
            &mut self.http.sessions,
            &self.table,
            &mut self.http.actions,
            handle,
            event,
        ) {
            self.perform_actions(handle);
        } else {
            self.reconcile_session(handle);
        }
    }

    /// Performs the actions of the last `handle` call; an action the worker answers at once (a pooled
    /// backend, no backend) is handed back as the next event only after the rest are performed.
    pub(super) fn perform_actions(&mut self, handle: (u32, u32)) {
        loop {
            let mut actions = std::mem::take(&mut self.http.actions);
            let mut follow_up = None;
            for action in actions.drain(..) {
                if let Some(event) = self.perform(handle, action) {
                    follow_up = Some(event);
                }
            }
            self.http.actions = actions;
            let Some(event) = follow_up else {
                break;
            };
            if !feed(
                &mut self.http.sessions,
                &self.table,
                &mut self.http.actions,
                handle,
                event,
            ) {
                break;
            }
        }
        self.reconcile_session(handle);
    }

    fn perform(&mut self, handle: (u32, u32), action: Action) -> Option<Event<'static>> {
        let now = self.now_ms;
        let s = self.http.sessions.get_mut(handle.0, handle.1)?;
        match action {
            Action::SendClient(bytes) => s.out.push(bytes),
            Action::SendBackend(bytes) => {
                let backend = s.backend;
                match backend.and_then(|(i, g)| self.http.backends.get_mut(i, g)) {
                    Some(b) => b.out.push(bytes),
                    None => debug_assert!(false, "a send to a backend the session does not have"),
                }
            }
            Action::ConnectBackend { route, fresh } => {
                return self.acquire_backend(handle, route, fresh);
            }
            Action::ReleaseBackend => self.give_up_backend(handle, true),
            Action::CloseBackend => self.give_up_backend(handle, false),
            Action::SetTimer(kind) => {
                s.timer = kind;
                s.timer_set_ms = now;
            }
            Action::RequestStarted => s.request_started_ms = now,
            Action::ExchangeDone(summary) => self.count_exchange(handle, &summary),
            Action::Tunnel => s.end = End::Tunnel,
            Action::CloseClient { reason, linger } => {
                s.end = End::Closing {
                    linger,
                    shut: false,
                };
                self.stats.http_closes.count(reason);
            }
        }
        None
    }

    /// Matches the session's receives, sends and timer to what it wants now.
    pub(super) fn reconcile_session(&mut self, handle: (u32, u32)) {
        let (index, generation) = handle;
        self.prepare_splices(handle);
        let Some(s) = self.http.sessions.get_mut(index, generation) else {
            return;
        };
        let recv_op = UserData::new(OpKind::ClientRecv, index, generation);
        let send_op = UserData::new(OpKind::ClientSend, index, generation);
        let want_client = match s.end {
            End::Open => !s.eof && reading(s.http.client_read(), &s.splice[0]),
            End::Closing { linger, shut } => linger && shut && !s.eof,
            End::Tunnel => false,
        };
        steer(&mut self.ring, &s.fd, &mut s.recv, want_client, recv_op);
        flush(&mut self.ring, &s.fd, &mut s.out, send_op);
        let backend = s.backend;
        let end = s.end;
        if let Some((bi, bg)) = backend {
            self.reconcile_backend((bi, bg));
        }
        match end {
            End::Open => {
                self.run_splices(handle);
                self.schedule_session_timer(handle);
            }
            End::Closing { .. } => self.continue_closing(handle),
            End::Tunnel => self.try_tunnel(handle),
        }
    }

    /// Whether the owner of a backend connection wants it read now.
    pub(super) fn owner_reads_backend(&self, owner: (u32, u32)) -> bool {
        self.http
            .sessions
            .get(owner.0, owner.1)
            .is_some_and(|s| s.end == End::Open && reading(s.http.backend_read(), &s.splice[1]))
    }

    /// A completion of a client session's receive or send.
    pub(in crate::worker) fn on_session_completion(&mut self, completion: Completion) {
        let handle = (completion.op.index, completion.op.generation);
        let now = self.now_ms;
        let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) else {
            debug_assert!(false, "completion for a freed session slot");
            return;
        };
        let result = completion.result;
        match completion.op.kind {
            OpKind::ClientRecv => {
                if !completion.more {
                    s.recv = Recv::Off;
                }
                if result == -libc::ENOBUFS || result == -libc::ECANCELED {
                    return self.reconcile_session(handle);
                }
                if result > 0 {
                    s.last_active_ms = now;
                    self.stats.bytes_up.add(result as u64);
                }
                match s.end {
                    End::Open => {
                        let event = match result {
                            0 => {
                                s.eof = true;
                                Event::ClientEof
                            }
                            n if n > 0 => Event::ClientData(self.ring.received(&completion)),
                            _ => Event::ClientError,
                        };
                        if feed(
                            &mut self.http.sessions,
                            &self.table,
                            &mut self.http.actions,
                            handle,
                            event,
                        ) {
                            return self.perform_actions(handle);
                        }
                    }
                    End::Closing { .. } => {
                        // Lingering: the client's further bytes are dropped; its FIN or an error ends it.
                        if result <= 0 {
                            s.eof = true;
                            s.linger_until_ms = now;
                        }
                    }
                    End::Tunnel => {
                        if result > 0 {
                            let bytes = Bytes::copy_from_slice(self.ring.received(&completion));
                            if let Some(b) = s
                                .backend
                                .and_then(|(i, g)| self.http.backends.get_mut(i, g))
                            {
                                b.out.push(bytes);
                            }
                        } else {
                            // The splice pump reads the FIN (or the error) again.
                            s.eof = true;
                        }
                    }
                }
            }
            OpKind::ClientSend => {
                let sent = s.out.completed();
                let ok = result >= 0 && result as usize == sent;
                if ok {
                    s.last_active_ms = now;
                    self.stats.bytes_down.add(sent as u64);
                }
                match (s.end, ok) {
                    (End::Open, true) => {
                        return self.session_event(handle, Event::ClientSent(sent));
                    }
                    (End::Open, false) => return self.session_event(handle, Event::ClientError),
                    (_, false) => {
                        // The client is gone: nothing more will reach it.
                        s.out = Outbox::default();
                        s.eof = true;
                        s.linger_until_ms = now;
                        if s.end == End::Tunnel {
                            s.end = End::Closing {
                                linger: false,
                                shut: true,
                            };
                            self.give_up_backend(handle, false);
                        }
                    }
                    (_, true) => {}
                }
            }
            other => unreachable!("{other:?} is not an op of a client session"),
        }
        self.reconcile_session(handle);
    }
}
