//! A proxied connection's state, and the worker's slab of them.
//!
//! A slot is freed only when no op that names it is still in the ring (`pending` is empty), and every
//! reuse bumps its generation, so a completion can never be applied to the wrong connection.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::pipes::{Buffer, Pipe};
use crate::routing::{ClusterRoute, Lease};

use super::balance::Tried;
use super::ring::{OpKind, UserData};
use super::slab::Slab;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted; no backend chosen yet.
    New,
    /// Waiting in the worker's queue for a backend slot.
    Queued,
    /// A connect to the chosen backend is in flight.
    Connecting,
    /// Bytes flow both ways.
    Established,
    /// Closed; waiting for the ring to return the ops still in flight.
    Closing,
}

/// The two directions of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

impl Direction {
    pub fn poll_op(self) -> OpKind {
        match self {
            Direction::Up => OpKind::PollUp,
            Direction::Down => OpKind::PollDown,
        }
    }

    pub fn splice_in_op(self) -> OpKind {
        match self {
            Direction::Up => OpKind::SpliceInUp,
            Direction::Down => OpKind::SpliceInDown,
        }
    }

    pub fn splice_out_op(self) -> OpKind {
        match self {
            Direction::Up => OpKind::SpliceOutUp,
            Direction::Down => OpKind::SpliceOutDown,
        }
    }
}

/// One direction's bytes in transit.
#[derive(Debug, Default)]
pub struct Flow {
    /// Bytes read from the source and not yet written to the destination.
    pub in_transit: usize,
    /// Held only while `in_transit > 0` or a splice op may touch it.
    pub pipe: Option<Pipe>,
    /// Copy mode's equivalent of `pipe`.
    pub buffer: Option<Buffer>,
    /// The source sent FIN.
    pub source_closed: bool,
    /// FIN was passed on to the destination: this direction is finished.
    pub finished: bool,
    /// Total bytes delivered to the destination.
    pub delivered: u64,
    /// `uring-splice`: the last read filled the pipe, so more is probably waiting (skip the poll).
    pub last_read_full: bool,
}

/// A client connection and, once chosen, its backend connection.
#[derive(Debug)]
pub struct Conn {
    pub phase: Phase,
    pub client: OwnedFd,
    pub server: Option<OwnedFd>,
    /// The cluster as of the table that accepted this connection: it is routed by that version only.
    pub route: Arc<ClusterRoute>,
    /// The worker's table epoch at accept time and the cluster's index in that table: the worker's balancer
    /// state is only valid while the epoch is current.
    pub table_epoch: u64,
    pub cluster: usize,
    pub lease: Option<Lease>,
    pub backend: usize,
    pub tried: Tried,
    /// Result of the last connect, held until its linked timeout has completed too.
    pub connect_result: Option<i32>,
    pub up: Flow,
    pub down: Flow,
    /// Ops in the ring that name this connection, one bit per [`OpKind`].
    pub pending: u32,
    pub last_active_ms: u64,
    /// When the connection was accepted (worker clock), for the access log.
    pub opened_ms: u64,
    /// Queue deadline while queued.
    pub queued_until_ms: u64,
    /// An entry for this connection is in the timer heap.
    pub timer_armed: bool,
    /// The direction whose source ended first: who closed first, for the close reason.
    pub first_eof: Option<Direction>,
    /// Queued because no descriptor was left for the backend socket (not for want of a backend slot).
    pub waiting_for_fd: bool,
    /// Inactivity timeout once established: the cluster's `idle_ms`, or `tunnel_ms` for an upgraded
    /// HTTP connection.
    pub idle_ms: u64,
}

impl Conn {
    pub fn new(
        client: OwnedFd,
        route: Arc<ClusterRoute>,
        table_epoch: u64,
        cluster: usize,
        now_ms: u64,
    ) -> Self {
        let idle_ms = u64::from(route.timeouts.idle_ms);
        Self {
            idle_ms,
            phase: Phase::New,
            client,
            server: None,
            route,
            table_epoch,
            cluster,
            lease: None,
            backend: 0,
            tried: Tried::default(),
            connect_result: None,
            up: Flow::default(),
            down: Flow::default(),
            pending: 0,
            last_active_ms: now_ms,
            opened_ms: now_ms,
            queued_until_ms: 0,
            timer_armed: false,
            first_eof: None,
            waiting_for_fd: false,
        }
    }

    pub fn flow_mut(&mut self, direction: Direction) -> &mut Flow {
        match direction {
            Direction::Up => &mut self.up,
            Direction::Down => &mut self.down,
        }
    }

    /// A direction's flow with its `(source, destination)` sockets. Only valid once a server socket exists.
    pub fn flow_and_ends(
        &mut self,
        direction: Direction,
    ) -> (&mut Flow, BorrowedFd<'_>, BorrowedFd<'_>) {
        let server = self
            .server
            .as_ref()
            .expect("established connection has a server socket")
            .as_fd();
        let client = self.client.as_fd();
        match direction {
            Direction::Up => (&mut self.up, client, server),
            Direction::Down => (&mut self.down, server, client),
        }
    }

    pub fn is_pending(&self, op: OpKind) -> bool {
        self.pending & op.bit() != 0
    }

    pub fn mark_pending(&mut self, op: OpKind) {
        debug_assert!(
            !self.is_pending(op),
            "{op:?} submitted twice for one connection"
        );
        self.pending |= op.bit();
    }

    pub fn clear_pending(&mut self, op: OpKind) {
        self.pending &= !op.bit();
    }

    /// Ops still in the ring, for cancellation.
    pub fn pending_ops(&self) -> impl Iterator<Item = OpKind> + use<> {
        let pending = self.pending;
        ALL_CONN_OPS
            .into_iter()
            .filter(move |op| pending & op.bit() != 0)
    }
}

const ALL_CONN_OPS: [OpKind; 9] = [
    OpKind::ClientWatch,
    OpKind::Connect,
    OpKind::ConnectTimeout,
    OpKind::PollUp,
    OpKind::PollDown,
    OpKind::SpliceInUp,
    OpKind::SpliceOutUp,
    OpKind::SpliceInDown,
    OpKind::SpliceOutDown,
];

/// The worker's connections, addressed by `(index, generation)`: a [`Slab`] whose `remove` also checks
/// that no op naming the connection is still in the ring.
#[derive(Debug, Default)]
pub struct ConnSlab(Slab<Conn>);

impl ConnSlab {
    /// Frees a slot. Its ops must all have completed: freeing earlier would let a late completion
    /// address the next connection in this slot.
    pub fn remove(&mut self, index: u32, generation: u32) -> Option<Conn> {
        let pending = self.0.get(index, generation)?.pending;
        assert_eq!(pending, 0, "slot freed with ops still in the ring");
        self.0.remove(index, generation)
    }
}

impl std::ops::Deref for ConnSlab {
    type Target = Slab<Conn>;

    fn deref(&self) -> &Slab<Conn> {
        &self.0
    }
}

impl std::ops::DerefMut for ConnSlab {
    fn deref_mut(&mut self) -> &mut Slab<Conn> {
        &mut self.0
    }
}

/// The `user_data` of `op` for connection `(index, generation)`.
pub fn op_for(op: OpKind, index: u32, generation: u32) -> UserData {
    UserData::new(op, index, generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{ClusterSlot, Wakers};
    use ringway_shared::{Balance, Timeouts};

    fn conn() -> Conn {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let route = Arc::new(ClusterRoute {
            name: "t".into(),
            balance: Balance::RoundRobin,
            timeouts: Timeouts::default(),
            slot: Arc::new(ClusterSlot::new(
                "t".into(),
                1,
                Arc::new(Wakers::new(0).unwrap()),
            )),
            backends: Vec::new(),
            pool: Default::default(),
        });
        Conn::new(OwnedFd::from(a), route, 1, 0, 0)
    }

    #[test]
    fn reused_slot_rejects_the_old_generation() {
        let mut slab = ConnSlab::default();
        let (i, g) = slab.insert(conn());
        assert!(slab.remove(i, g).is_some());
        let (i2, g2) = slab.insert(conn());
        assert_eq!(i, i2);
        assert_ne!(g, g2);
        assert!(
            slab.get_mut(i, g).is_none(),
            "a late completion for the old connection finds nothing"
        );
        assert!(slab.get_mut(i2, g2).is_some());
        assert_eq!(slab.len(), 1);
    }

    #[test]
    #[should_panic(expected = "ops still in the ring")]
    fn freeing_a_slot_with_ops_in_flight_is_a_bug() {
        let mut slab = ConnSlab::default();
        let mut c = conn();
        c.mark_pending(OpKind::PollUp);
        let (i, g) = slab.insert(c);
        slab.remove(i, g);
    }

    #[test]
    fn pending_ops_lists_what_to_cancel() {
        let mut c = conn();
        c.mark_pending(OpKind::PollDown);
        c.mark_pending(OpKind::Connect);
        let ops: Vec<_> = c.pending_ops().collect();
        assert_eq!(ops, vec![OpKind::Connect, OpKind::PollDown]);
        c.clear_pending(OpKind::Connect);
        assert_eq!(c.pending_ops().count(), 1);
    }
}
