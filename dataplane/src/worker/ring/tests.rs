//! Tests of the ring wrapper against the real kernel: op memory lifetimes, cancellation, a full
//! submission queue, a kernel that refuses submissions, and ring sizes.

use super::*;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

fn ring() -> Ring {
    Ring::new(
        RingConfig {
            entries: 64,
            recv_buffers: provided::DEFAULT_BUFFERS,
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
                recv_buffers: provided::DEFAULT_BUFFERS,
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
            recv_buffers: provided::DEFAULT_BUFFERS,
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

fn small_ring(recv_buffers: u16) -> Ring {
    Ring::new(
        RingConfig {
            entries: 64,
            recv_buffers,
            iowq_max_workers: None,
        },
        None,
    )
    .expect("io_uring available")
}

/// Turns the ring until `done` holds for the bytes received so far; returns them with the completions.
fn receive_until(
    ring: &mut Ring,
    mut done: impl FnMut(&[u8], &[Completion]) -> bool,
) -> (Vec<u8>, Vec<Completion>) {
    let (mut bytes, mut all) = (Vec::new(), Vec::new());
    for _ in 0..500 {
        ring.submit_and_wait(Some(Duration::from_millis(20)))
            .unwrap();
        let mut batch = Vec::new();
        ring.drain_completions(&mut batch);
        for c in &batch {
            bytes.extend_from_slice(ring.received(c));
        }
        all.extend(batch);
        if done(&bytes, &all) {
            return (bytes, all);
        }
    }
    panic!(
        "condition never held: {} bytes, completions {all:?}",
        bytes.len()
    );
}

#[test]
fn a_multishot_receive_lends_buffers_for_one_turn_and_ends_with_eof() {
    use std::io::Write;
    let (mut peer, ours) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut ring = ring();
    let op = UserData::new(OpKind::ClientRecv, 5, 2);
    ring.recv_multi(ours.as_raw_fd(), op);
    assert_eq!(ring.recvs_armed(), 1);
    peer.write_all(b"first").unwrap();
    let (got, completions) = receive_until(&mut ring, |b, _| b == b"first");
    assert!(completions.iter().all(|c| c.more && c.op == op));
    assert!(
        ring.buffers_lent() >= 1,
        "the buffer is the worker's this turn"
    );
    peer.write_all(b" second").unwrap();
    drop(peer);
    let (rest, completions) =
        receive_until(&mut ring, |_, c| c.iter().any(|c| !c.more && c.result == 0));
    assert_eq!([got, rest].concat(), b"first second");
    let last = completions.last().unwrap();
    assert_eq!((last.result, last.more, last.buffer), (0, false, None));
    assert_eq!(ring.recvs_armed(), 0, "end of file ends the receive");
    ring.submit().unwrap();
    assert_eq!(ring.buffers_lent(), 0, "every lent buffer went back");
}

#[test]
fn receives_that_run_out_of_buffers_end_with_enobufs_and_lose_nothing() {
    use std::io::Write;
    // Eight sockets with four buffers' worth queued each, received in one turn by a ring of 16 buffers.
    const SOCKETS: usize = 8;
    let per_socket = 4 * provided::BUFFER_SIZE as usize;
    let mut ring = small_ring(16);
    let mut pairs = Vec::new();
    for s in 0..SOCKETS {
        let (mut peer, ours) = std::os::unix::net::UnixStream::pair().unwrap();
        let payload: Vec<u8> = (0..per_socket).map(|i| ((i + s) % 251) as u8).collect();
        peer.write_all(&payload).unwrap();
        pairs.push((peer, ours, payload, Vec::new(), false));
    }
    let mut enobufs = 0;
    for _ in 0..1000 {
        for (i, (_, ours, _, _, armed)) in pairs.iter_mut().enumerate() {
            if !*armed {
                *armed = true;
                ring.recv_multi(
                    ours.as_raw_fd(),
                    UserData::new(OpKind::BackendRecv, i as u32, 0),
                );
            }
        }
        ring.submit_and_wait(Some(Duration::from_millis(20)))
            .unwrap();
        let mut batch = Vec::new();
        ring.drain_completions(&mut batch);
        for c in &batch {
            let (_, _, _, received, armed) = &mut pairs[c.op.index as usize];
            received.extend_from_slice(ring.received(c));
            if c.result == -libc::ENOBUFS {
                assert!(!c.more, "ENOBUFS ends a multishot receive");
                enobufs += 1;
            }
            if !c.more {
                // Re-armed next turn, when the lent buffers are back.
                *armed = false;
            }
        }
        if pairs.iter().all(|p| p.3.len() == per_socket) {
            break;
        }
    }
    for (i, (_, _, payload, received, _)) in pairs.iter().enumerate() {
        assert_eq!(received.len(), payload.len(), "socket {i}");
        assert!(received == payload, "socket {i}: bytes in order, none lost");
    }
    assert!(
        enobufs > 0,
        "16 buffers cannot hold 32 buffers' worth in one turn"
    );
}

#[test]
fn sends_keep_their_buffers_until_the_completion_and_go_out_in_order() {
    use std::io::Read;
    let (mut peer, ours) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut ring = ring();
    let one = UserData::new(OpKind::ClientSend, 1, 0);
    ring.send(ours.as_raw_fd(), vec![Bytes::from_static(b"head ")], one);
    let body = Bytes::from(vec![b'x'; 100_000]);
    let many = UserData::new(OpKind::BackendSend, 2, 0);
    // The caller's handles may go at once: the ring holds its own.
    ring.send(
        ours.as_raw_fd(),
        vec![
            Bytes::from_static(b"a"),
            body.clone(),
            Bytes::from_static(b"z"),
        ],
        many,
    );
    drop(body);
    assert_eq!(ring.sends_in_flight(), 2);
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; 5 + 100_002];
        peer.read_exact(&mut got).unwrap();
        got
    });
    let done = wait_for(&mut ring, &[OpKind::ClientSend, OpKind::BackendSend]);
    let got = reader.join().unwrap();
    assert_eq!(&got[..6], b"head a");
    assert!(got[6..100_006].iter().all(|&b| b == b'x'));
    assert_eq!(got[100_006], b'z');
    let result = |k| done.iter().find(|c| c.op.kind == k).unwrap().result;
    assert_eq!(result(OpKind::ClientSend), 5);
    assert_eq!(result(OpKind::BackendSend), 100_002, "all of it, in one op");
    assert_eq!(ring.sends_in_flight(), 0, "buffers released at completion");
}

#[test]
fn a_send_to_a_closed_peer_fails_with_epipe_rather_than_a_signal() {
    let (peer, ours) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(peer);
    let mut ring = ring();
    ring.send(
        ours.as_raw_fd(),
        vec![Bytes::from_static(b"nobody listens")],
        UserData::new(OpKind::ClientSend, 0, 0),
    );
    let done = wait_for(&mut ring, &[OpKind::ClientSend]);
    assert_eq!(done[0].result, -libc::EPIPE);
}

#[test]
fn a_ring_dropped_with_receives_armed_cancels_them_first() {
    let (_peer, ours) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut ring = ring();
    for i in 0..8 {
        ring.recv_multi(ours.as_raw_fd(), UserData::new(OpKind::ClientRecv, i, 0));
    }
    ring.submit().unwrap();
    let started = std::time::Instant::now();
    drop(ring);
    assert!(
        started.elapsed() < DROP_WAIT,
        "the cancelled receives completed at once, nothing had to be leaked"
    );
}
