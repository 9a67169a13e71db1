//! A worker's listeners: multishot accepts, the pause at the process-wide connection cap, retries after
//! descriptor exhaustion, and the stop at shutdown.
//!
//! At the cap a worker cancels its accepts rather than accepting and resetting: clients whose handshake
//! the kernel already completed wait in the listening socket's accept queue until a place frees up (the
//! worker that frees it wakes the paused ones through the [`ConnectionGate`](crate::limits::ConnectionGate)).

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;

use crate::limits;
use crate::routing::ListenerSockets;
use crate::routing::listeners::LISTEN_BACKLOG;

/// A multishot accept takes everything waiting in a listening socket's queue in one pass, up to its
/// backlog: it is armed only while the connection cap is at least that far away, single accepts
/// (overshooting the cap by at most one per socket) otherwise. Should several full queues still carry a
/// worker past the cap, the extra connections wait in the worker's queue for descriptors; none is reset.
const MULTISHOT_HEADROOM: u32 = LISTEN_BACKLOG as u32;

use super::ring::{Completion, OpKind, UserData, next_generation};
use super::{ACCEPT_RETRY_MS, ListenerSlot, ListenerState, SlotTarget, Worker};

impl Worker {
    pub(super) fn start_listener(
        &mut self,
        address: SocketAddr,
        sockets: Arc<ListenerSockets>,
        fd: RawFd,
        (target, epoch): (SlotTarget, u64),
    ) {
        let slot = ListenerSlot {
            address,
            sockets,
            fd,
            target,
            epoch,
            state: ListenerState::Idle,
            multishot: false,
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
        if !self.accept_paused {
            self.arm_accept(index);
        }
    }

    fn arm_accept(&mut self, index: usize) {
        let multishot = self.gate.headroom() >= MULTISHOT_HEADROOM;
        let (generation, slot) = &mut self.listeners[index];
        let slot = slot.as_mut().expect("arming a live listener slot");
        slot.state = ListenerState::Accepting;
        slot.multishot = multishot;
        let fd = slot.fd;
        let op = UserData::new(OpKind::Accept, index as u32, *generation);
        if multishot {
            self.ring.accept_multi(fd, op);
        } else {
            self.ring.accept(fd, op);
        }
    }

    pub(super) fn stop_listener(&mut self, index: usize) {
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
            // The cancel is already in flight: its last completion frees the slot.
            ListenerState::Cancelling => slot.state = ListenerState::Removing,
            ListenerState::Idle | ListenerState::RetryAt(_) => self.free_listener(index),
            ListenerState::Removing => {}
        }
    }

    fn free_listener(&mut self, index: usize) {
        let (generation, slot) = &mut self.listeners[index];
        *slot = None;
        *generation = next_generation(*generation);
    }

    pub(super) fn on_accept(&mut self, completion: Completion) {
        let result = completion.result;
        // Taken before anything else, so that a completion no slot can serve closes its socket here
        // instead of leaving it open in the ring (a client that would hang until the worker exits).
        let client = (result >= 0).then(|| {
            self.ring
                .take_accepted(result)
                .expect("the ring holds every accepted socket until the worker takes it")
        });
        let index = completion.op.index as usize;
        let Some((generation, Some(slot))) = self.listeners.get(index) else {
            return;
        };
        if *generation != completion.op.generation {
            return;
        }
        if let Some(client) = client {
            // Served even if the listener is being removed or paused: the kernel already completed the
            // handshake, so dropping it now would reset a client we accepted.
            let target = slot.target.clone();
            let epoch = slot.epoch;
            let multishot = slot.multishot && completion.more;
            self.stats.accepted.inc();
            self.gate.fd_available();
            let below_cap = self.gate.admit();
            match target {
                SlotTarget::Tcp { route, cluster } => {
                    self.start_connection(client, (route, epoch, cluster))
                }
                SlotTarget::Http { table, listener } => {
                    self.start_http_session(client, table, listener)
                }
            }
            if !below_cap {
                self.pause_accepting();
            } else if multishot && self.gate.headroom() < MULTISHOT_HEADROOM {
                // Close to the cap: continue with single accepts (re-armed when this one ends).
                self.cancel_accept(index, ListenerState::Cancelling);
            }
        } else if result != -libc::ECANCELED {
            self.stats.accept_errors.inc();
            let error = std::io::Error::from_raw_os_error(-result);
            if limits::is_starvation(-result) {
                self.gate.fd_starved(&error);
            } else {
                tracing::warn!(
                    worker = self.config.index,
                    listener = %slot.address,
                    %error,
                    "accept failed; retrying shortly"
                );
            }
        }
        if completion.more {
            return;
        }
        let Some(state) = self.listeners[index].1.as_ref().map(|s| s.state) else {
            return;
        };
        let ended_cleanly = result >= 0 || result == -libc::ECANCELED;
        match state {
            ListenerState::Removing => self.free_listener(index),
            ListenerState::Accepting | ListenerState::Cancelling if self.accept_paused => {
                self.set_state(index, ListenerState::Idle)
            }
            ListenerState::Accepting | ListenerState::Cancelling if ended_cleanly => {
                self.arm_accept(index)
            }
            ListenerState::Accepting | ListenerState::Cancelling => {
                self.set_state(index, ListenerState::RetryAt(self.now_ms + ACCEPT_RETRY_MS))
            }
            ListenerState::Idle | ListenerState::RetryAt(_) => {}
        }
    }

    /// Cancels an armed accept; its last completion then finds the listener in `state`.
    fn cancel_accept(&mut self, index: usize, state: ListenerState) {
        let generation = self.listeners[index].0;
        if let Some(slot) = self.listeners[index].1.as_mut()
            && slot.state == ListenerState::Accepting
        {
            slot.state = state;
            self.ring
                .cancel(UserData::new(OpKind::Accept, index as u32, generation));
        }
    }

    fn set_state(&mut self, index: usize, state: ListenerState) {
        if let Some(slot) = self.listeners[index].1.as_mut() {
            slot.state = state;
        }
    }

    pub(super) fn retry_listeners(&mut self) {
        if self.accept_paused {
            return;
        }
        for index in 0..self.listeners.len() {
            if let Some(slot) = &self.listeners[index].1
                && matches!(slot.state, ListenerState::RetryAt(at) if at <= self.now_ms)
            {
                self.arm_accept(index);
            }
        }
    }

    /// The connection cap is reached: stop accepting on every listener of this worker.
    pub(super) fn pause_accepting(&mut self) {
        if self.accept_paused || self.drain_deadline_ms.is_some() {
            return;
        }
        self.accept_paused = true;
        for index in 0..self.listeners.len() {
            let Some(state) = self.listeners[index].1.as_ref().map(|s| s.state) else {
                continue;
            };
            match state {
                ListenerState::Accepting => self.cancel_accept(index, ListenerState::Cancelling),
                ListenerState::RetryAt(_) => self.set_state(index, ListenerState::Idle),
                ListenerState::Cancelling | ListenerState::Idle | ListenerState::Removing => {}
            }
        }
        tracing::debug!(
            worker = self.config.index,
            "accepting paused at the connection cap"
        );
        if self.gate.pause(self.config.index) {
            // A place freed up while we paused: its wake-up may have missed us.
            self.resume_accepting();
        }
    }

    /// There is room under the connection cap again: accept again.
    pub(super) fn resume_accepting(&mut self) {
        if !self.accept_paused {
            return;
        }
        self.accept_paused = false;
        self.gate.unpause(self.config.index);
        if self.drain_deadline_ms.is_some() {
            return;
        }
        for index in 0..self.listeners.len() {
            if let Some(slot) = &self.listeners[index].1
                && slot.state == ListenerState::Idle
            {
                self.arm_accept(index);
            }
        }
        // A listener still `Cancelling` re-arms when its cancel completes.
        tracing::debug!(worker = self.config.index, "accepting resumed");
    }

    /// Shutdown: stop accepting now, let connections finish until the drain deadline.
    pub(super) fn begin_drain(&mut self) {
        self.drain_deadline_ms = Some(self.now_ms + self.config.drain_timeout.as_millis() as u64);
        self.accept_paused = false;
        self.gate.unpause(self.config.index);
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
        self.drain_http();
        tracing::info!(
            worker = self.config.index,
            connections = self.conns.len(),
            http_sessions = self.http.sessions.len(),
            "draining"
        );
    }
}
