//! The worker's HTTP path: client sessions that drive [`HttpSession`] from ring completions, backend
//! connections in their own slab, the per-worker pool of idle backend connections, and the hand-over
//! of upgraded connections to the splice pump.
//!
//! - [`Slab`]: `(index, generation)` slabs; an op's `user_data` kind says which slab its index names
//!   (`ClientRecv`/`ClientSend`: sessions; `Backend*`: backend connections).
//! - `drive`: feeding completions to the session and performing its actions, per the driving contract
//!   in [`crate::http::session`].
//! - `backend`: per-request backend choice (balancer and lease: `maxconn` counts requests in flight),
//!   the queue, connects, and the pool.
//! - `end`: timers, closing, and the tunnel after a `101`.
//!
//! Reading: a socket the session wants read has a multishot receive armed; one it wants paused has
//! it cancelled (bytes a receive still delivers are passed in all the same). A pooled backend
//! connection keeps its receive armed, so a backend that closes it (or sends anything) while it is
//! idle is noticed at once and the connection discarded, with no syscall at reuse.
//!
//! - `splice`: bodies the session asks to splice ([`Read::Splice`](crate::http::session::Read)).

mod backend;
mod drive;
mod end;
mod splice;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use crate::http::session::{Action, HttpSession, TimerKind};
use crate::routing::{BackendSlot, ClusterRoute, Lease, RoutingTable};

use super::balance::Tried;
use super::ring::send::MAX_SEND_BUFFERS;
use super::ring::{Ring, UserData};
use super::slab::Slab;
use super::timers::Timers;

/// How long a client that is sent an error and closed may take to read it (its further bytes are
/// read and dropped meanwhile) before the connection is closed anyway.
const LINGER_MS: u64 = 1_000;

/// A socket's multishot receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    Off,
    Armed,
    /// A cancel was sent; the receive's last completion has not come back yet.
    Cancelling,
}

/// Bytes waiting to be sent to one socket, and the one send in flight.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Bytes>,
    /// Bytes of the send in flight (0: none).
    in_flight: usize,
}

impl Outbox {
    pub fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.queue.push_back(bytes);
        }
    }

    /// Nothing queued and nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.queue.is_empty()
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// Starts the next send on `fd` through `ring`, if one is due: up to [`MAX_SEND_BUFFERS`] queued
    /// buffers go in one op, moved straight into the ring's send box.
    fn send_next(&mut self, ring: &mut Ring, fd: RawFd, op: UserData) {
        if self.in_flight > 0 || self.queue.is_empty() {
            return;
        }
        let n = self.queue.len().min(MAX_SEND_BUFFERS);
        self.in_flight = ring.send(fd, self.queue.drain(..n), op);
    }

    /// The send in flight completed: its length.
    fn completed(&mut self) -> usize {
        std::mem::take(&mut self.in_flight)
    }
}

/// How a session is getting its backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    None,
    /// In the worker's HTTP queue until this time, for a backend slot.
    Queued {
        until_ms: u64,
    },
    /// A connect is in flight.
    Connecting,
}

/// The cluster the session's current request goes to.
#[derive(Debug)]
pub struct Want {
    /// The table whose router chose the route (the cluster index is into its clusters).
    pub table: Arc<RoutingTable>,
    pub cluster: usize,
    pub fresh: bool,
}

impl Want {
    pub fn route(&self) -> &Arc<ClusterRoute> {
        &self.table.clusters[self.cluster]
    }
}

/// How a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Open,
    /// The session asked to close; the sends to the client finish first. With `linger`, the write
    /// side is then shut down (`shut`) and the client's further bytes are read and dropped until it
    /// closes or [`LINGER_MS`] pass.
    Closing {
        linger: bool,
        shut: bool,
    },
    /// A `101` was forwarded: once every send completed and both receives stopped, both sockets go
    /// to the splice pump.
    Tunnel,
}

/// One HTTP client connection.
#[derive(Debug)]
pub struct ClientSession {
    pub fd: OwnedFd,
    pub http: HttpSession,
    /// The table the listener's router is taken from: the worker's current one (refreshed on each
    /// event), so a route change applies to the next request of an open connection.
    pub table: Arc<RoutingTable>,
    pub listener: usize,
    pub listener_address: SocketAddr,
    /// The client's address (`None` if the kernel would not say), for the access log.
    pub client: Option<SocketAddr>,
    pub recv: Recv,
    /// The client sent FIN (a receive returned 0): never re-armed.
    pub eof: bool,
    pub out: Outbox,
    /// The backend connection serving the current exchange.
    pub backend: Option<(u32, u32)>,
    pub wait: Wait,
    pub want: Option<Want>,
    /// The request's place on its backend (`maxconn`), from the pick until the response ends.
    pub lease: Option<Lease>,
    /// The backend of the current (or last) exchange, for its counters.
    pub backend_slot: Option<Arc<BackendSlot>>,
    pub tried: Tried,
    pub timer: Option<TimerKind>,
    pub timer_set_ms: u64,
    /// Due time of this session's latest entry in the worker's session timer heap.
    pub scheduled: Option<u64>,
    pub last_active_ms: u64,
    pub request_started_ms: u64,
    pub end: End,
    pub linger_until_ms: u64,
    /// Spliced bodies: client to backend, backend to client.
    pub splice: [splice::SpliceFlow; 2],
}

impl ClientSession {
    /// Switches to `table` if it is newer and still has this listener as an HTTP listener.
    fn refresh_table(&mut self, table: &Arc<RoutingTable>) {
        if Arc::ptr_eq(&self.table, table) {
            return;
        }
        if let Some(index) = table
            .listeners
            .iter()
            .position(|l| l.address == self.listener_address && l.http().is_some())
        {
            self.table = Arc::clone(table);
            self.listener = index;
        }
    }

    /// No op of this session is in the ring.
    fn quiet(&self) -> bool {
        self.recv == Recv::Off && !self.out.in_flight() && !self.splice.iter().any(|f| f.polling)
    }
}

/// One connection to a backend: serving a session's exchange (`owner`), or idle in the pool.
#[derive(Debug)]
pub struct BackendConn {
    pub fd: OwnedFd,
    pub slot: Arc<BackendSlot>,
    pub owner: Option<(u32, u32)>,
    /// Completions of the connect and its linked timeout still to come.
    pub connect_ops: u8,
    pub connect_result: Option<i32>,
    pub connected: bool,
    pub recv: Recv,
    pub eof: bool,
    pub out: Outbox,
    /// In the pool since this time, for `pool_idle_ms`.
    pub pooled_since_ms: Option<u64>,
    pub pool_idle_ms: u64,
    pub closing: bool,
}

impl BackendConn {
    fn quiet(&self) -> bool {
        self.recv == Recv::Off && !self.out.in_flight() && self.connect_ops == 0
    }
}

/// The HTTP path's state in a worker.
#[derive(Debug, Default)]
pub struct HttpPath {
    pub sessions: Slab<ClientSession>,
    pub backends: Slab<BackendConn>,
    /// Idle connections per backend address, most recently used last; may hold handles of
    /// connections closed since (skipped when taken). Looked up twice per request (take, give
    /// back) with FxHash: the keys come from the snapshot, not from clients, so a hash-flooding
    /// resistant (and 2 to 4 times slower) SipHash buys nothing here.
    pub pool: FxHashMap<SocketAddr, Vec<(u32, u32)>>,
    /// Connections idle in the pool now.
    pub pooled: usize,
    /// Sessions waiting for a backend slot, in arrival order (entries of sessions that left are
    /// skipped); `queued` counts the live ones.
    pub queue: VecDeque<(u32, u32)>,
    pub queued: usize,
    pub session_timers: Timers,
    /// Pool idle deadlines of backend connections.
    pub backend_timers: Timers,
    /// The actions of one `handle` call (reused).
    pub actions: Vec<Action>,
    /// Sessions whose spliced body spent its turn's budget.
    pub ready: Vec<(u32, u32)>,
}

impl HttpPath {
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.backends.is_empty()
    }
}
