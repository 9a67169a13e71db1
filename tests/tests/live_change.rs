//! Configuration changes never touch established connections.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use ringway_tests::net::{connect, free_port};
use ringway_tests::{Harness, NamedBackend, Service, read_name, wait_until};

/// A client that keeps an echo stream going until told to stop; returns its backend and any error.
fn stream_until(
    port: u16,
    stop: Arc<AtomicBool>,
    ready: Arc<std::sync::atomic::AtomicUsize>,
) -> (String, Result<u64, String>) {
    let mut s = connect(port).unwrap();
    let name = read_name(&mut s).unwrap();
    ready.fetch_add(1, Ordering::SeqCst);
    let mut rounds = 0u64;
    let result = (|| {
        let mut echo = [0u8; 1024];
        while !stop.load(Ordering::SeqCst) {
            let block = [(rounds % 251) as u8; 1024];
            s.write_all(&block).map_err(|e| format!("write: {e}"))?;
            s.read_exact(&mut echo).map_err(|e| format!("read: {e}"))?;
            if echo != block {
                return Err("corrupt echo".to_string());
            }
            rounds += 1;
            thread::sleep(Duration::from_millis(5));
        }
        Ok(rounds)
    })();
    (name, result)
}

#[test]
fn streams_survive_a_change_and_new_connections_use_only_current_backends() {
    let a = NamedBackend::start("a");
    let b = NamedBackend::start("b");
    let c = NamedBackend::start("c");
    let port = free_port();
    let mut h = Harness::start(
        &[Service::new("live", port)
            .backend(a.port())
            .backend(b.port())],
        &[],
        &[],
    );

    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let streams: Vec<_> = (0..50)
        .map(|_| {
            let (stop, ready) = (stop.clone(), ready.clone());
            thread::spawn(move || stream_until(port, stop, ready))
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || ready
        .load(Ordering::SeqCst)
        == 50));
    let on_a = a.counters().active();
    assert!(
        on_a > 0 && b.counters().active() > 0,
        "streams spread over a and b"
    );

    // Remove a, add c.
    h.reconfigure(&[Service::new("live", port)
        .backend(b.port())
        .backend(c.port())]);
    assert_eq!(
        a.counters().active(),
        on_a,
        "the removed backend keeps its streams"
    );

    for i in 0..30 {
        let mut s = connect(port).unwrap();
        let name = read_name(&mut s).unwrap();
        assert!(
            name == "b" || name == "c",
            "new connection {i} went to {name}"
        );
    }
    assert!(
        c.counters().accepted() > 0,
        "the added backend takes new connections"
    );

    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    for s in streams {
        let (name, result) = s.join().unwrap();
        let rounds = result.unwrap_or_else(|e| panic!("a stream on {name} broke: {e}"));
        assert!(rounds > 0);
    }
    assert!(
        wait_until(Duration::from_secs(10), || a.counters().active() == 0),
        "the removed backend's streams end with their clients"
    );
}

#[test]
fn a_removed_listener_stops_accepting_but_its_connections_finish() {
    let a = NamedBackend::start("a");
    let keep = NamedBackend::start("keep");
    let (gone_port, keep_port) = (free_port(), free_port());
    let mut h = Harness::start(
        &[
            Service::new("gone", gone_port).backend(a.port()),
            Service::new("keep", keep_port).backend(keep.port()),
        ],
        &[],
        &[],
    );
    let mut open = connect(gone_port).unwrap();
    assert_eq!(read_name(&mut open).unwrap(), "a");
    h.reconfigure(&[Service::new("keep", keep_port).backend(keep.port())]);
    assert!(
        wait_until(Duration::from_secs(5), || connect(gone_port).is_err()),
        "the removed listener still accepts"
    );
    open.write_all(b"still here").unwrap();
    let mut echo = [0u8; 10];
    open.read_exact(&mut echo).unwrap();
    assert_eq!(
        &echo, b"still here",
        "the connection accepted before the change keeps working"
    );
    let mut other = connect(keep_port).unwrap();
    assert_eq!(read_name(&mut other).unwrap(), "keep");
}
