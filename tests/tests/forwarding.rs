//! Bytes through the dataplane: integrity under concurrency in every forwarding mode, half-close in both
//! directions, resets that are passed on, retries past dead backends, idle timeouts.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::thread;
use std::time::Duration;

use ringway_tests::net::{connect, free_port};
use ringway_tests::traffic::echo_round_trip;
use ringway_tests::{EchoBackend, Harness, Service, wait_until};

const CONNECTIONS: usize = 200;
const BYTES_PER_CONNECTION: usize = 3 << 20;

/// 200 concurrent connections through 2 workers, each echoing 3 MiB of distinct data, every byte checked.
fn integrity(mode: &str) {
    let echo = EchoBackend::start();
    let port = free_port();
    let _h = Harness::start(
        &[Service::new("echo", port).backend(echo.port())],
        &[],
        &["--forward", mode],
    );
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| thread::spawn(move || echo_round_trip(port, i as u64 + 1, BYTES_PER_CONNECTION)))
        .collect();
    let failures: Vec<String> = clients
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| {
            c.join()
                .unwrap()
                .err()
                .map(|e| format!("connection {i}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {CONNECTIONS} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(
        echo.counters().accepted(),
        CONNECTIONS,
        "one backend connection per client connection"
    );
}

#[test]
fn integrity_poll_splice() {
    integrity("poll-splice");
}

#[test]
fn integrity_uring_splice() {
    integrity("uring-splice");
}

#[test]
fn integrity_copy() {
    integrity("copy");
}

#[test]
fn client_half_close_still_gets_the_reply() {
    let echo = EchoBackend::start();
    let port = free_port();
    let _h = Harness::start(&[Service::new("echo", port).backend(echo.port())], &[], &[]);
    let mut stream = connect(port).unwrap();
    stream
        .write_all(b"request that ends with a half-close")
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"request that ends with a half-close");
}

#[test]
fn server_half_close_lets_the_client_keep_sending() {
    // A backend that greets, half-closes, then counts what the client still sends.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_port = listener.local_addr().unwrap().port();
    let counted = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"banner").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        all.len()
    });
    let port = free_port();
    let _h = Harness::start(
        &[Service::new("greeter", port).backend(backend_port)],
        &[],
        &[],
    );
    let mut stream = connect(port).unwrap();
    let mut banner = Vec::new();
    stream.read_to_end(&mut banner).unwrap();
    assert_eq!(
        banner, b"banner",
        "the server's FIN arrives after its bytes"
    );
    let payload = vec![42u8; 1 << 20];
    stream.write_all(&payload).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        counted.join().unwrap(),
        payload.len(),
        "the client's bytes still flow after the server's FIN"
    );
}

#[test]
fn a_backend_reset_reaches_the_client_as_a_reset() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        (&s).read_exact(&mut buf).unwrap();
        (&s).write_all(b"partial").unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    });
    let port = free_port();
    let _h = Harness::start(
        &[Service::new("flaky", port).backend(backend_port)],
        &[],
        &[],
    );
    let mut stream = connect(port).unwrap();
    stream.write_all(b"hello").unwrap();
    let mut got = Vec::new();
    let result = stream.read_to_end(&mut got);
    assert!(
        matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "expected a reset, not a clean end: {result:?} after {got:?}"
    );
}

#[test]
fn dead_backends_are_skipped_by_retry() {
    let echo = EchoBackend::start();
    let dead = free_port();
    let port = free_port();
    let _h = Harness::start(
        &[Service::new("retry", port)
            .backend(dead)
            .backend(echo.port())],
        &[],
        &[],
    );
    for i in 0..20 {
        echo_round_trip(port, i, 1000).unwrap_or_else(|e| panic!("connection {i}: {e}"));
    }
    assert_eq!(echo.counters().accepted(), 20);
}

#[test]
fn idle_connections_are_closed_and_busy_ones_are_not() {
    let echo = EchoBackend::start();
    let port = free_port();
    let _h = Harness::start(
        &[Service::new("idle", port)
            .backend(echo.port())
            .extra("timeout_idle_ms = 1000")],
        &[],
        &[],
    );
    let mut idle = connect(port).unwrap();
    let mut busy = connect(port).unwrap();
    let keep_talking = thread::spawn(move || {
        for _ in 0..30 {
            busy.write_all(b"ping").unwrap();
            let mut four = [0u8; 4];
            busy.read_exact(&mut four).unwrap();
            thread::sleep(Duration::from_millis(100));
        }
    });
    let mut buf = [0u8; 1];
    assert_eq!(
        idle.read(&mut buf).unwrap(),
        0,
        "the idle connection is closed by the proxy"
    );
    keep_talking
        .join()
        .expect("the busy connection stayed open");
    assert!(
        wait_until(Duration::from_secs(5), || echo.counters().active() == 0),
        "the backend side is closed too"
    );
}
