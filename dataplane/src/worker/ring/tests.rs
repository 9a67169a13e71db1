//! Tests of the ring wrapper against the real kernel: op memory lifetimes, cancellation, a full
//! submission queue, a kernel that refuses submissions, and ring sizes.

use super::*;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

fn ring() -> Ring {
    Ring::new(
        RingConfig {
            entries: 64,
            iowq_max_workers: None,
        },
        None,
    )
    .expect("io_uring available")
}

fn wait_for(ring: &mut Ring, kinds: &[OpKind]) -> Vec<Completion> {
    let mut all = Vec::new();
    for _ in 0..200 {
        ring.submit_and_wait(Some(Duration::from_millis(20)))
            .unwrap();
        ring.drain_completions(&mut all);
        if kinds.iter().all(|k| all.iter().any(|c| c.op.kind == *k)) {
            return all;
        }
    }
    panic!("completions {kinds:?} did not arrive; got {all:?}");
}

#[test]
fn user_data_round_trips_and_wraps_generation() {
    let op = UserData::new(OpKind::SpliceOutDown, u32::MAX, 0x00ab_cdef);
    assert_eq!(UserData::decode(op.encode()), Some(op));
    assert_eq!(next_generation(GEN_MASK), 0);
    assert_eq!(UserData::decode(0), None);
}

#[test]
fn connect_memory_lives_until_both_completions() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target: SocketAddr = listener.local_addr().unwrap();
    let mut ring = ring();
    let fd = crate::sys::tcp_socket_for(&target).unwrap();
    let op = UserData::new(OpKind::Connect, 7, 1);
    ring.connect(
        fd.as_raw_fd(),
        &SockAddr::from(target),
        Duration::from_secs(5),
        op,
    );
    assert_eq!(ring.connects_in_flight(), 1);
    let done = wait_for(&mut ring, &[OpKind::Connect, OpKind::ConnectTimeout]);
    let connect = done.iter().find(|c| c.op.kind == OpKind::Connect).unwrap();
    assert_eq!(connect.result, 0, "connect to a listening socket succeeds");
    assert_eq!(connect.op.index, 7);
    let timeout = done
        .iter()
        .find(|c| c.op.kind == OpKind::ConnectTimeout)
        .unwrap();
    assert_eq!(
        timeout.result,
        -libc::ECANCELED,
        "the timer is cancelled by the finished connect"
    );
    assert_eq!(ring.connects_in_flight(), 0);
}

/// A loopback address whose connects hang: a listener that never accepts, its queue already full, so
/// the kernel drops further SYNs.
fn black_hole() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let address = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_nonblocking(true).unwrap();
        let _ = socket.connect(&address.into());
        fillers.push(std::net::TcpStream::from(socket));
    }
    std::thread::sleep(Duration::from_millis(50));
    (listener, fillers, address)
}

#[test]
fn connect_timeout_cancels_the_connect_and_frees_memory() {
    let (_listener, _fillers, target) = black_hole();
    let mut ring = ring();
    let fd = crate::sys::tcp_socket_for(&target).unwrap();
    let op = UserData::new(OpKind::Connect, 1, 1);
    ring.connect(
        fd.as_raw_fd(),
        &SockAddr::from(target),
        Duration::from_millis(30),
        op,
    );
    let done = wait_for(&mut ring, &[OpKind::Connect, OpKind::ConnectTimeout]);
    let connect = done.iter().find(|c| c.op.kind == OpKind::Connect).unwrap();
    assert_eq!(
        connect.result,
        -libc::ECANCELED,
        "the linked timeout cancels a hanging connect"
    );
    let timeout = done
        .iter()
        .find(|c| c.op.kind == OpKind::ConnectTimeout)
        .unwrap();
    assert_eq!(timeout.result, -libc::ETIME);
    assert_eq!(ring.connects_in_flight(), 0);
}

#[test]
fn cancelled_poll_completes_before_its_descriptor_may_be_reused() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut ring = ring();
    let op = UserData::new(OpKind::PollUp, 3, 9);
    ring.poll(a.as_raw_fd(), libc::POLLIN, op);
    ring.submit().unwrap();
    ring.cancel(op);
    let done = wait_for(&mut ring, &[OpKind::PollUp, OpKind::Cancel]);
    let poll = done.iter().find(|c| c.op.kind == OpKind::PollUp).unwrap();
    assert_eq!(poll.result, -libc::ECANCELED);
    assert_eq!(poll.op, op);
}

/// A ring whose submissions fail (here: used from a thread other than its single issuer, which the
/// kernel refuses with EEXIST) must not make `push` spin forever once the queue is full.
#[test]
fn a_push_that_cannot_submit_gives_up_instead_of_spinning() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = a.as_raw_fd();
    let (to_owner, from_test) = std::sync::mpsc::channel::<Ring>();
    let (to_test, from_owner) = std::sync::mpsc::channel::<Ring>();
    let owner = std::thread::spawn(move || {
        let ring = Ring::new(
            RingConfig {
                entries: 16,
                iowq_max_workers: None,
            },
            None,
        )
        .unwrap();
        to_test.send(ring).unwrap();
        // Get it back and submit from the issuer: nothing pushed meanwhile was lost.
        let mut ring = from_test.recv().unwrap();
        let mut got = Vec::new();
        for _ in 0..100 {
            ring.submit_and_wait(Some(Duration::from_millis(20)))
                .unwrap();
            ring.drain_completions(&mut got);
            if got.len() == 40 {
                break;
            }
        }
        got.len()
    });
    let mut ring = from_owner.recv().unwrap();
    let (done, pushed) = std::sync::mpsc::channel();
    let pusher = std::thread::spawn(move || {
        for i in 0..40 {
            ring.poll(fd, libc::POLLOUT, UserData::new(OpKind::PollDown, i, 0));
        }
        done.send(()).unwrap();
        ring
    });
    assert!(
        pushed.recv_timeout(Duration::from_secs(10)).is_ok(),
        "push spins forever when the kernel keeps refusing submissions"
    );
    let mut ring = pusher.join().unwrap();
    assert_eq!(
        ring.overflowing(),
        40 - 16,
        "what did not fit waits, in order"
    );
    assert!(
        ring.submit_and_wait(Some(Duration::from_millis(1)))
            .is_err(),
        "the wrong thread still cannot submit"
    );
    to_owner.send(ring).unwrap();
    assert_eq!(owner.join().unwrap(), 40, "every pushed entry ran");
}

#[test]
fn the_largest_ring_the_flag_allows_can_be_created() {
    let entries = 32_768;
    match Ring::new(
        RingConfig {
            entries,
            iowq_max_workers: None,
        },
        None,
    ) {
        Ok(_) => {}
        // Not root: the locked-memory limit may be lower than this ring needs; that is a fine refusal.
        Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => {}
        Err(e) => panic!("{entries} entries: {}", crate::probe::explain(e, entries)),
    }
}

#[test]
fn full_submission_queue_never_drops_entries() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut ring = ring();
    // Four times the queue size: pushes must submit in between rather than fail.
    let total = 256u32;
    for i in 0..total {
        ring.poll(
            a.as_raw_fd(),
            libc::POLLOUT,
            UserData::new(OpKind::PollDown, i, 0),
        );
    }
    let mut got = Vec::new();
    for _ in 0..100 {
        ring.submit_and_wait(Some(Duration::from_millis(20)))
            .unwrap();
        ring.drain_completions(&mut got);
        if got.len() == total as usize {
            break;
        }
    }
    assert_eq!(got.len(), total as usize);
    assert!(got.iter().all(|c| c.result & libc::POLLOUT as i32 != 0));
}

#[test]
fn an_accepted_socket_is_owned_by_the_ring_until_taken_once() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ring = ring();
    ring.accept_multi(listener.as_raw_fd(), UserData::new(OpKind::Accept, 0, 0));
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let done = wait_for(&mut ring, &[OpKind::Accept]);
    let accept = done.iter().find(|c| c.op.kind == OpKind::Accept).unwrap();
    assert!(accept.result >= 0, "accept failed: {}", accept.result);
    let socket = ring.take_accepted(accept.result).expect("held by the ring");
    assert!(ring.take_accepted(accept.result).is_none(), "one owner");
    let server = std::net::TcpStream::from(socket);
    assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
}
