//! The fault suite, part one: peers that misbehave and clients that give up. A stalled reader, a
//! blackholed backend, a backend that resets mid-stream or half-closes first, and 200 clients against
//! two slots of which half give up while queued. Each case checks that no byte is silently lost (a cut
//! stream is a reset, never a clean end), that no slot leaks, and that `/stats` names why each
//! connection ended.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringway_tests::http::{close_count, find_service, stats, workers_sum};
use ringway_tests::net::{connect, free_port};
use ringway_tests::traffic::{PatternCheck, PatternStream, send_pattern};
use ringway_tests::{Harness, NamedBackend, ScriptedBackend, Service, read_name, wait_until};

/// Open connections of `service` in a `/stats` document.
fn open_connections(admin: SocketAddr, service: &str) -> u64 {
    let stats = stats(admin);
    find_service(&stats, service).map_or(u64::MAX, |s| s["connections"].as_u64().unwrap_or(0))
}

/// Reads until the stream ends; returns the bytes read and how it ended.
fn read_until_end(stream: &mut TcpStream) -> (usize, std::io::Result<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got += n,
            Err(e) => return (got, Err(e)),
        }
    }
}

#[test]
fn a_stalled_reader_is_reset_at_the_idle_timeout_never_given_a_clean_end() {
    const SENT: usize = 20 << 20;
    // The backend pours 20 MiB and closes cleanly; more than every buffer on the way can hold.
    let backend = ScriptedBackend::start(|stream| {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
        let _ = send_pattern(stream, 7, SENT);
    });
    let port = free_port();
    let mut h = Harness::start(
        &[Service::new("firehose", port)
            .backend(backend.port())
            .extra("timeout_idle_ms = 1000")],
        &[],
        &[],
    );
    let admin = h.dataplane.admin_address();
    let mut client = connect(port).unwrap();
    // The client reads nothing: buffers fill, the flow stalls, the idle timeout ends the connection.
    assert!(
        wait_until(Duration::from_secs(5), || open_connections(
            admin, "firehose"
        ) == 1),
        "the connection was never proxied"
    );
    assert!(
        wait_until(Duration::from_secs(20), || open_connections(
            admin, "firehose"
        ) == 0),
        "the idle timeout never closed the stalled connection"
    );
    let (got, end) = read_until_end(&mut client);
    assert!(got < SENT, "all {SENT} bytes arrived: nothing was stranded");
    assert!(
        matches!(&end, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the client saw {end:?} after {got} of {SENT} bytes: a cut stream must end in a reset, \
         not in a clean end that looks complete"
    );
    let stats = stats(admin);
    assert_eq!(
        close_count(&stats, "firehose", "idle_timeout_stranded"),
        1,
        "/stats names the reason: {}",
        stats["services"]
    );
    assert!(workers_sum(&stats, "resets") >= 1, "counted as a reset");
}

/// A loopback address that never answers a SYN: a listener that accepts nothing and whose queue is
/// already full, so the kernel drops further SYNs.
fn black_hole() -> (socket2::Socket, Vec<TcpStream>, u16) {
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let address = listener.local_addr().unwrap().as_socket().unwrap();
    let fillers: Vec<TcpStream> = (0..4)
        .map(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_nonblocking(true).unwrap();
            let _ = socket.connect(&address.into());
            TcpStream::from(socket)
        })
        .collect();
    thread::sleep(Duration::from_millis(100));
    (listener, fillers, address.port())
}

#[test]
fn a_blackholed_backend_ends_in_connect_failed_and_a_client_that_leaves_frees_its_slot_at_once() {
    let (_listener, _fillers, hole) = black_hole();
    let (quick, slow) = (free_port(), free_port());
    let mut h = Harness::start(
        &[
            Service::new("quick", quick)
                .backend(hole)
                .extra("timeout_connect_ms = 300"),
            Service::new("slow", slow)
                .backend(hole)
                .extra("timeout_connect_ms = 30000"),
        ],
        &[],
        &[],
    );
    let admin = h.dataplane.admin_address();

    // A client that gives up while its connect is in flight ends it now, not 30 s later.
    let client = connect(slow).unwrap();
    assert!(wait_until(Duration::from_secs(5), || open_connections(
        admin, "slow"
    ) == 1));
    thread::sleep(Duration::from_millis(200));
    drop(client);
    assert!(
        wait_until(Duration::from_secs(3), || open_connections(admin, "slow")
            == 0),
        "the slot is held until the connect times out although the client left"
    );
    let now = stats(admin);
    assert_eq!(
        close_count(&now, "slow", "client_aborted"),
        1,
        "{}",
        now["services"]
    );

    // The connect times out: the client is closed, not left hanging, and nothing is stranded.
    let mut client = connect(quick).unwrap();
    let started = Instant::now();
    let (got, end) = read_until_end(&mut client);
    assert!(
        got == 0 && end.is_ok(),
        "closed with nothing sent: {got} {end:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(wait_until(Duration::from_secs(5), || close_count(
        &stats(admin),
        "quick",
        "connect_failed"
    ) == 1));
}

#[test]
fn a_backend_reset_mid_stream_reaches_the_client_as_a_reset() {
    const SENT: usize = 8 << 20;
    let backend = ScriptedBackend::start(|stream| {
        let mut hello = [0u8; 5];
        if stream.read_exact(&mut hello).is_err() {
            return;
        }
        let mut pattern = PatternStream::new(3);
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0;
        while sent < SENT / 2 {
            pattern.fill(&mut buf);
            if stream.write_all(&buf).is_err() {
                return;
            }
            sent += buf.len();
        }
        socket2::SockRef::from(&*stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        // Dropping the stream now sends RST: half of what was promised never comes.
    });
    let port = free_port();
    let mut h = Harness::start(
        &[Service::new("flaky", port).backend(backend.port())],
        &[],
        &[],
    );
    let admin = h.dataplane.admin_address();
    let mut client = connect(port).unwrap();
    client.write_all(b"hello").unwrap();
    let (got, end) = read_until_end(&mut client);
    assert!(
        matches!(&end, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "expected a reset after {got} bytes, got {end:?}"
    );
    assert!(wait_until(Duration::from_secs(5), || open_connections(
        admin, "flaky"
    ) == 0));
    let stats = stats(admin);
    assert_eq!(
        close_count(&stats, "flaky", "backend_reset"),
        1,
        "{}",
        stats["services"]
    );
}

#[test]
fn a_backend_that_half_closes_first_still_receives_every_client_byte() {
    const SENT: usize = 4 << 20;
    let (tx, rx) = mpsc::channel();
    let backend = ScriptedBackend::start(move |stream| {
        stream.write_all(b"banner").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        // Everything the client sends after our FIN must still arrive, byte-exact.
        let mut check = PatternCheck::new(11, SENT);
        let mut buf = vec![0u8; 64 * 1024];
        let verdict = loop {
            match stream.read(&mut buf) {
                Ok(0) => break check.finish().map(|()| check.received()),
                Ok(n) => {
                    if let Err(e) = check.check(&buf[..n]) {
                        break Err(e);
                    }
                }
                Err(e) => break Err(format!("{e} after {}", check.received())),
            }
        };
        let _ = tx.send(verdict);
    });
    let port = free_port();
    let mut h = Harness::start(
        &[Service::new("greeter", port).backend(backend.port())],
        &[],
        &[],
    );
    let admin = h.dataplane.admin_address();
    let mut client = connect(port).unwrap();
    let mut banner = Vec::new();
    client.read_to_end(&mut banner).unwrap();
    assert_eq!(banner, b"banner");
    send_pattern(&mut client, 11, SENT).unwrap();
    let verdict = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(verdict, Ok(SENT));
    assert!(wait_until(Duration::from_secs(5), || open_connections(
        admin, "greeter"
    ) == 0));
    let stats = stats(admin);
    assert_eq!(
        close_count(&stats, "greeter", "backend_eof"),
        1,
        "{}",
        stats["services"]
    );
}

#[test]
fn overload_clients_that_give_up_while_queued_never_reach_the_backend_and_leak_no_slot() {
    const CLIENTS: usize = 200;
    let backend = NamedBackend::start("only");
    let port = free_port();
    let mut h = Harness::start(
        &[Service::new("narrow", port)
            .maxconn(2)
            .backend(backend.port())
            .extra("timeout_queue_ms = 1000")],
        &[],
        &[],
    );
    let admin = h.dataplane.admin_address();
    // Two clients hold both slots, so everyone else queues.
    let mut holders: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(port).unwrap();
            assert_eq!(read_name(&mut s).unwrap(), "only");
            s
        })
        .collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            thread::spawn(move || -> Option<Result<String, String>> {
                let mut stream = connect(port).map_err(|e| e.to_string()).ok()?;
                if i % 2 == 1 {
                    // Impatient: gives up while still queued.
                    thread::sleep(Duration::from_millis(100));
                    return None;
                }
                Some(read_name(&mut stream).map_err(|e| e.to_string()))
            })
        })
        .collect();
    let patient = CLIENTS / 2;
    let mut seen = Vec::new();
    let left_the_queue = wait_until(Duration::from_secs(5), || {
        let stats = stats(admin);
        let queued =
            find_service(&stats, "narrow").map_or(0, |s| s["queued"].as_u64().unwrap_or(0));
        if seen.last() != Some(&queued) {
            seen.push(queued);
        }
        queued == patient as u64
    });
    assert!(
        left_the_queue,
        "the clients that gave up keep their places in the queue: queued went {seen:?}, never {patient}"
    );
    holders.clear();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let served = results
        .iter()
        .filter(|r| matches!(r, Some(Ok(name)) if name == "only"))
        .count();
    assert_eq!(
        served,
        patient,
        "every patient client is served: {:?}",
        results
            .iter()
            .filter(|r| !matches!(r, None | Some(Ok(_))))
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        wait_until(Duration::from_secs(5), || {
            let stats = stats(admin);
            find_service(&stats, "narrow")
                .is_some_and(|s| s["connections"] == 0 && s["queued"] == 0)
        }),
        "a slot or queue place leaked: {}",
        stats(admin)["services"]
    );
    assert_eq!(
        backend.counters().accepted(),
        2 + patient,
        "only the holders and the patient clients reached the backend"
    );
    let stats = stats(admin);
    assert_eq!(
        close_count(&stats, "narrow", "client_aborted"),
        (CLIENTS - patient) as u64,
        "{}",
        stats["services"]
    );
}
