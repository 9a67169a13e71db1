//! Zero-drop dataplane upgrades: a new binary takes the listening sockets over while traffic flows.

use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ringway_tests::net::{connect, free_port};
use ringway_tests::procs::bin;
use ringway_tests::traffic::echo_round_trip;
use ringway_tests::{Dataplane, EchoBackend, Harness, Service, wait_until};

/// Short connections from `clients` threads, one every `pace`, until stopped: (served, failures).
fn short_connection_load(
    port: u16,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<(usize, Vec<String>)>> {
    (0..clients)
        .map(|c| {
            let stop = stop.clone();
            thread::spawn(move || {
                let (mut served, mut failures) = (0, Vec::new());
                let mut seed = (c as u64) << 32;
                while !stop.load(Ordering::SeqCst) {
                    seed += 1;
                    match echo_round_trip(port, seed, 256) {
                        Ok(()) => served += 1,
                        Err(e) => failures.push(e),
                    }
                    thread::sleep(Duration::from_millis(30));
                }
                (served, failures)
            })
        })
        .collect()
}

/// Long echo streams until stopped: each returns its rounds or the error that broke it.
fn long_streams(
    port: u16,
    streams: usize,
    stop: &Arc<AtomicBool>,
    ready: &Arc<AtomicUsize>,
) -> Vec<JoinHandle<Result<u64, String>>> {
    (0..streams)
        .map(|i| {
            let (stop, ready) = (stop.clone(), ready.clone());
            thread::spawn(move || {
                let mut s = connect(port).map_err(|e| format!("connect: {e}"))?;
                ready.fetch_add(1, Ordering::SeqCst);
                let mut rounds = 0u64;
                let mut echo = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    let block = [((rounds + i as u64) % 251) as u8; 4096];
                    s.write_all(&block)
                        .map_err(|e| format!("write after {rounds} rounds: {e}"))?;
                    s.read_exact(&mut echo)
                        .map_err(|e| format!("read after {rounds} rounds: {e}"))?;
                    if echo != block {
                        return Err(format!("corrupt echo after {rounds} rounds"));
                    }
                    rounds += 1;
                    thread::sleep(Duration::from_millis(5));
                }
                Ok(rounds)
            })
        })
        .collect()
}

fn served_and_failures(clients: Vec<JoinHandle<(usize, Vec<String>)>>) -> (usize, Vec<String>) {
    clients.into_iter().map(|c| c.join().unwrap()).fold(
        (0, Vec::new()),
        |(s, mut f), (served, failures)| {
            f.extend(failures);
            (s + served, f)
        },
    )
}

fn wait_for_event(dataplane: &Dataplane, message: &str) {
    assert!(
        wait_until(Duration::from_secs(20), || !dataplane
            .proc
            .events(message)
            .is_empty()),
        "no {message:?} in the log:\n{}",
        dataplane.proc.log_text()
    );
}

#[test]
fn upgrade_under_load_refuses_and_resets_nothing() {
    let echo = EchoBackend::start();
    let port = free_port();
    let mut h = Harness::start(&[Service::new("echo", port).backend(echo.port())], &[], &[]);
    let stop_short = Arc::new(AtomicBool::new(false));
    let stop_long = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(0));
    let streams = long_streams(port, 20, &stop_long, &ready);
    assert!(wait_until(Duration::from_secs(20), || ready
        .load(Ordering::SeqCst)
        == 20));
    let clients = short_connection_load(port, 200, &stop_short);
    thread::sleep(Duration::from_millis(700));

    let mut successor = Dataplane::start(h.path(), &h.controlplane.socket, &["--takeover"]);
    wait_for_event(
        &successor,
        "took over the listening sockets; the predecessor drains",
    );
    wait_for_event(
        &h.dataplane,
        "sockets handed over; no longer accepting, draining",
    );
    thread::sleep(Duration::from_millis(700));
    stop_short.store(true, Ordering::SeqCst);
    let (served, failures) = served_and_failures(clients);
    assert!(served > 200, "the load ran ({served} connections served)");
    assert!(
        failures.is_empty(),
        "{} of {} short connections failed: {:?}",
        failures.len(),
        served + failures.len(),
        &failures[..failures.len().min(5)]
    );

    assert!(
        h.dataplane.proc.try_wait().is_none(),
        "the old dataplane waits for its streams"
    );
    stop_long.store(true, Ordering::SeqCst);
    for (i, s) in streams.into_iter().enumerate() {
        let rounds = s
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("stream {i} broke: {e}"));
        assert!(rounds > 0);
    }
    let status = h
        .dataplane
        .proc
        .wait_exit(Duration::from_secs(20))
        .expect("the old dataplane exits once its connections end");
    assert!(status.success(), "old dataplane exit status {status:?}");

    echo_round_trip(port, 77, 10_000).expect("the successor serves on its own");
    let admin = successor.admin_address();
    let stats = ringway_tests::http::stats(admin);
    assert!(
        ringway_tests::http::accepted_total(&stats) > 0,
        "the successor accepted the new connections"
    );
}

#[test]
fn upgrades_between_different_worker_counts_refuse_nothing() {
    let echo = EchoBackend::start();
    let port = free_port();
    let mut h = Harness::start(&[Service::new("echo", port).backend(echo.port())], &[], &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = short_connection_load(port, 50, &stop);
    thread::sleep(Duration::from_millis(300));

    // 2 workers → 1 worker: the one worker accepts on both inherited sockets.
    let mut one = Dataplane::start(
        h.path(),
        &h.controlplane.socket,
        &["--takeover", "--workers", "1"],
    );
    wait_for_event(
        &h.dataplane,
        "sockets handed over; no longer accepting, draining",
    );
    assert!(
        h.dataplane
            .proc
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
    thread::sleep(Duration::from_millis(300));

    // 1 worker (2 sockets) → 3 workers: a third socket joins the group.
    let three = Dataplane::start(
        h.path(),
        &h.controlplane.socket,
        &["--takeover", "--workers", "3"],
    );
    wait_for_event(&one, "sockets handed over; no longer accepting, draining");
    assert!(
        one.proc
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
    thread::sleep(Duration::from_millis(300));

    stop.store(true, Ordering::SeqCst);
    let (served, failures) = served_and_failures(clients);
    assert!(served > 50);
    assert!(
        failures.is_empty(),
        "{} connections failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    drop(three);
}

/// Kills a process we did not start (the detached dataplane) when the test ends.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill has no pointer arguments.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
        }
    }
}

#[test]
fn detach_returns_once_the_successor_serves() {
    let echo = EchoBackend::start();
    let port = free_port();
    let mut h = Harness::start(&[Service::new("echo", port).backend(echo.port())], &[], &[]);
    // The successor inherits the reload command's output: send it to a file, not a pipe we would wait on.
    let log = h.path().join("reload.log");
    let file = std::fs::File::create(&log).unwrap();
    let status = Command::new(bin("ringway-dataplane"))
        .args([
            "--takeover",
            "--detach",
            "--workers",
            "2",
            "--status-endpoint",
            "",
            "--log-format",
            "json",
        ])
        .arg("--socket")
        .arg(&h.controlplane.socket)
        .arg("--state-file")
        .arg(h.path().join("detached.snapshot"))
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "the reload command failed: {stderr}");
    let pid: i32 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("ringway-dataplane: new dataplane pid "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid reported: {stderr}"));
    let _guard = KillOnDrop(pid);
    assert!(
        h.dataplane
            .proc
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "the predecessor drained and exited"
    );
    echo_round_trip(port, 5, 1000).expect("the detached successor serves");
}
