//! A worker driven by hand on the test's thread (it owns the ring, so it must): connections are handed to
//! it directly and the loop is turned until a condition holds.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_shared::{Balance, Timeouts};

use super::conn::Phase;
use super::*;
use crate::close::CloseReason;
use crate::limits::ConnectionGate;
use crate::pipes::PipeBudget;
use crate::routing::{BackendSlot, ClusterSlot, Lease, RouteBackend, Wakers};

/// An epoch no worker table has: connections use the stateless pick, so no table is needed.
const NO_TABLE: u64 = u64::MAX;

pub(super) struct TestWorker {
    pub(super) worker: Worker,
    completions: Vec<Completion>,
}

impl TestWorker {
    pub(super) fn new(forward: ForwardMode) -> Self {
        let wakers = Arc::new(Wakers::new(1).unwrap());
        let config = WorkerConfig {
            index: 0,
            core: None,
            ring: RingConfig {
                entries: 256,
                recv_buffers: ring::provided::DEFAULT_BUFFERS,
                iowq_max_workers: None,
            },
            forward,
            buffer_size: 16 * 1024,
            queue_limit: 64,
            drain_timeout: Duration::from_secs(1),
            access_log: false,
        };
        let shared = Shared {
            published: Arc::new(Published::new(Arc::clone(&wakers))),
            stats: Arc::new(WorkerStats::default()),
            gate: Arc::new(ConnectionGate::new(100_000, wakers)),
            pipes: Arc::new(PipeBudget::new(1024, 64 * 1024, 1)),
        };
        let worker = Worker::new(config, shared).unwrap();
        Self {
            worker,
            completions: Vec::new(),
        }
    }

    /// Turns the loop until `done` holds; panics after 10 s.
    pub(super) fn turn_until(&mut self, what: &str, mut done: impl FnMut(&Worker) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&self.worker) {
            assert!(Instant::now() < deadline, "never happened: {what}");
            self.worker.turn(&mut self.completions).unwrap();
        }
    }

    /// Hands a new client to the worker; returns the test's end of it.
    fn connect_client(&mut self, route: &Arc<ClusterRoute>) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        // As an accept does: the connection counts under the cap until its sockets close.
        self.worker.gate.admit();
        self.worker
            .start_connection(OwnedFd::from(ours), (Arc::clone(route), NO_TABLE, 0));
        theirs
    }
}

pub(super) fn route(backends: &[SocketAddr], limit: u32, timeouts: Timeouts) -> Arc<ClusterRoute> {
    Arc::new(ClusterRoute {
        name: "t".into(),
        balance: Balance::RoundRobin,
        timeouts,
        slot: Arc::new(ClusterSlot::new(
            "t".into(),
            limit,
            Arc::new(Wakers::new(1).unwrap()),
        )),
        pool: Default::default(),
        backends: backends
            .iter()
            .map(|&address| RouteBackend {
                slot: Arc::new(BackendSlot::new(address, None)),
                weight: 500,
                accepting: true,
            })
            .collect(),
    })
}

/// Connections of the worker whose bytes flow.
fn established(worker: &Worker) -> usize {
    worker
        .conns
        .handles()
        .into_iter()
        .filter(|&(i, g)| {
            worker
                .conns
                .get(i, g)
                .is_some_and(|c| c.phase == Phase::Established)
        })
        .count()
}

/// A backend that accepts and at once closes every connection, on its own thread.
fn closing_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    address
}

/// A worker with one client queued for a one-slot cluster whose slot the test holds.
fn queued_behind_the_only_slot() -> (
    TestWorker,
    Arc<ClusterRoute>,
    Lease,
    UnixStream,
    TcpListener,
) {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let route = route(&[backend.local_addr().unwrap()], 1, Timeouts::default());
    let mut t = TestWorker::new(ForwardMode::PollSplice);
    let held = Lease::acquire(&route.slot, &route.backends[0].slot).unwrap();
    let client = t.connect_client(&route);
    assert_eq!(route.slot.waiters(), 1, "the only slot is taken: queued");
    (t, route, held, client, backend)
}

#[test]
fn a_queued_connection_whose_backend_socket_fails_stays_queued_once_and_then_connects() {
    let (mut t, route, held, _client, _backend) = queued_behind_the_only_slot();

    // The slot frees up, but the backend socket cannot be created (descriptors exhausted).
    crate::sys::faults::fail_sockets(1, libc::EMFILE);
    drop(held);
    t.worker.serve_queue();
    assert_eq!(
        route.slot.waiters(),
        1,
        "still waiting, counted once: for a descriptor now"
    );
    assert_eq!(route.slot.active(), 0, "and holding no slot meanwhile");
    t.turn_until("the connection connects once a descriptor is there", |_| {
        route.slot.active() == 1
    });
    assert_eq!(route.slot.waiters(), 0, "it left the queue exactly once");
}

#[test]
fn a_backend_socket_that_cannot_be_created_for_another_reason_ends_the_connection() {
    let (mut t, route, held, _client, _backend) = queued_behind_the_only_slot();
    crate::sys::faults::fail_sockets(1, libc::EAFNOSUPPORT);
    drop(held);
    t.worker.serve_queue();
    assert_eq!(route.slot.waiters(), 0, "it left the queue exactly once");
    assert_eq!(route.slot.active(), 0, "and holds no slot");
    assert_eq!(route.slot.closes.get(CloseReason::ConnectFailed), 1);
    t.turn_until("the connection is released", |w| w.conns.is_empty());
}

#[test]
fn closed_connections_leave_no_entry_behind_in_the_timer_heap() {
    const CONNECTIONS: usize = 6_000;
    const BATCH: usize = 100;
    let backend = closing_backend();
    let timeouts = Timeouts {
        idle_ms: 600_000,
        ..Timeouts::default()
    };
    let route = route(&[backend], 10_000, timeouts);
    let mut t = TestWorker::new(ForwardMode::PollSplice);
    for _ in 0..CONNECTIONS / BATCH {
        let clients: Vec<UnixStream> = (0..BATCH).map(|_| t.connect_client(&route)).collect();
        // The backend leaves at once; the client stays until its connection is established (armed its
        // idle timer), then leaves too.
        t.turn_until("a batch of connections is established", |w| {
            established(w) == BATCH
        });
        drop(clients);
        t.turn_until("a batch of connections ends", |w| w.conns.is_empty());
    }
    assert_eq!(
        route.backends[0].slot.total(),
        CONNECTIONS as u64,
        "every connection reached the backend (and so armed its idle timer)"
    );
    assert!(
        t.worker.timers.len() <= 2 * timers::COMPACT_AFTER,
        "{} timer entries after {CONNECTIONS} connections closed, none open",
        t.worker.timers.len()
    );
}

#[test]
fn a_client_that_leaves_while_queued_gives_up_its_place_and_one_that_half_closes_keeps_it() {
    use std::io::Write;
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let route = route(&[backend.local_addr().unwrap()], 1, Timeouts::default());
    let mut t = TestWorker::new(ForwardMode::PollSplice);
    let held = Lease::acquire(&route.slot, &route.backends[0].slot).unwrap();
    let leaving = t.connect_client(&route);
    let mut asking = t.connect_client(&route);
    asking.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    asking.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(route.slot.waiters(), 2);

    drop(leaving);
    t.turn_until("the client that left is closed", |w| w.conns.len() == 1);
    assert_eq!(route.slot.waiters(), 1, "it gave up its place in the queue");
    assert_eq!(route.slot.closes.get(CloseReason::ClientAborted), 1);
    for _ in 0..5 {
        t.worker.turn(&mut t.completions).unwrap();
    }
    assert_eq!(
        route.slot.waiters(),
        1,
        "a half-close after a request is not a client giving up"
    );

    drop(held);
    t.worker.serve_queue();
    assert_eq!(route.slot.waiters(), 0);
    assert_eq!(
        route.backends[0].slot.total(),
        2,
        "the half-closing client got the slot (the first lease was the test's)"
    );
}

#[test]
fn a_connection_holds_its_place_under_the_cap_until_its_sockets_close() {
    let backend = closing_backend();
    let route = route(&[backend], 10, Timeouts::default());
    let mut t = TestWorker::new(ForwardMode::PollSplice);
    let client = t.connect_client(&route);
    assert_eq!(t.worker.gate.open(), 1);
    drop(client);
    t.turn_until("the connection ends", |w| w.conns.is_empty());
    assert_eq!(t.worker.gate.open(), 0);
    let closes: u64 = route.slot.closes.all().map(|(_, n)| n).sum();
    assert_eq!(closes, 1, "one close, counted once");
}

#[test]
fn a_connection_that_never_gets_a_descriptor_ends_at_its_queue_deadline_as_fd_limit() {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let timeouts = Timeouts {
        queue_ms: 50,
        ..Timeouts::default()
    };
    let route = route(&[backend.local_addr().unwrap()], 10, timeouts);
    let mut t = TestWorker::new(ForwardMode::PollSplice);
    crate::sys::faults::fail_sockets(u32::MAX, libc::EMFILE);
    let _client = t.connect_client(&route);
    assert_eq!(route.slot.waiters(), 1, "waits for a descriptor");
    t.turn_until("the queue deadline passes", |w| w.conns.is_empty());
    crate::sys::faults::fail_sockets(0, 0);
    assert_eq!(route.slot.closes.get(CloseReason::FdLimit), 1);
    assert_eq!((route.slot.waiters(), route.slot.active()), (0, 0));
}

#[test]
fn a_socket_accepted_for_a_listener_slot_that_is_gone_is_closed_not_kept() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut test = TestWorker::new(ForwardMode::PollSplice);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // An accept whose listener slot does not exist (a completion the worker cannot serve).
    test.worker
        .ring
        .accept(listener.as_raw_fd(), UserData::new(OpKind::Accept, 7, 0));
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut byte = [0u8; 1];
    loop {
        test.worker.turn(&mut test.completions).unwrap();
        match client.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => panic!("nothing is sent to this client"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(_) => assert!(
                Instant::now() < deadline,
                "the accepted socket was kept open: the client hangs"
            ),
        }
    }
}
