//! Faults and bad input: a dead or restarted controlplane, a cold start from the state file, refused
//! services files, garbage on the socket, snapshots the dataplane must NACK, and SIGTERM draining.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use ringway_shared::wire::Message;
use ringway_shared::{
    Backend, BackendState, Balance, Cluster, Listener, Protocol, Snapshot, Timeouts,
};
use ringway_tests::fake_controlplane::FakeControlplane;
use ringway_tests::http::{get, stats};
use ringway_tests::net::{connect, free_port, local};
use ringway_tests::traffic::echo_round_trip;
use ringway_tests::{Controlplane, Dataplane, EchoBackend, Harness, Service, wait_until};

/// Opens a new connection every few milliseconds until stopped; counts failures.
fn background_traffic(
    port: u16,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(usize, Vec<String>)> {
    thread::spawn(move || {
        let (mut ok, mut failures) = (0, Vec::new());
        let mut seed = 1000;
        while !stop.load(Ordering::SeqCst) {
            seed += 1;
            match echo_round_trip(port, seed, 4096) {
                Ok(()) => ok += 1,
                Err(e) => failures.push(e),
            }
            thread::sleep(Duration::from_millis(5));
        }
        (ok, failures)
    })
}

#[test]
fn controlplane_crash_changes_nothing_and_a_restart_resynchronises() {
    let echo = EchoBackend::start();
    let port = free_port();
    let mut h = Harness::start(&[Service::new("echo", port).backend(echo.port())], &[], &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = background_traffic(port, stop.clone());
    thread::sleep(Duration::from_millis(200));

    h.controlplane.proc.kill9();
    let mut long = connect(port).unwrap();
    thread::sleep(Duration::from_millis(500));
    long.write_all(b"still routed").unwrap();
    let mut echoed = [0u8; 12];
    long.read_exact(&mut echoed).unwrap();

    let applied = h.dataplane.applied_versions().len();
    let extra_port = free_port();
    h.services.write(&[
        Service::new("echo", port).backend(echo.port()),
        Service::new("extra", extra_port).backend(echo.port()),
    ]);
    h.controlplane = Controlplane::start_on(
        h.dir.path(),
        &h.controlplane.socket.clone(),
        &h.services.path,
        &[],
    );
    h.dataplane.wait_applied(applied + 1);
    assert!(
        wait_until(Duration::from_secs(10), || echo_round_trip(
            extra_port, 7, 100
        )
        .is_ok()),
        "the change made while the controlplane was down reached the dataplane after the restart"
    );

    stop.store(true, Ordering::SeqCst);
    let (ok, failures) = traffic.join().unwrap();
    assert!(ok > 0);
    assert!(
        failures.is_empty(),
        "{} connections failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}

#[test]
fn a_dataplane_started_while_the_controlplane_is_down_serves_from_its_state_file() {
    let echo = EchoBackend::start();
    let port = free_port();
    let mut h = Harness::start(&[Service::new("echo", port).backend(echo.port())], &[], &[]);
    h.controlplane.proc.kill9();
    h.dataplane.proc.signal(libc::SIGTERM);
    assert!(
        h.dataplane
            .proc
            .wait_exit(Duration::from_secs(20))
            .is_some()
    );
    assert!(connect(port).is_err(), "nothing listens any more");

    let socket = h.controlplane.socket.clone();
    let restarted = Dataplane::start(h.dir.path(), &socket, &[]);
    assert!(
        wait_until(Duration::from_secs(10), || echo_round_trip(port, 3, 1000)
            .is_ok()),
        "the restarted dataplane serves the saved routes:\n{}",
        restarted.proc.log_text()
    );
}

#[test]
fn bad_services_files_are_refused_with_the_field_and_old_routes_keep_serving() {
    let echo = EchoBackend::start();
    let (port, other) = (free_port(), free_port());
    let mut h = Harness::start(&[Service::new("echo", port).backend(echo.port())], &[], &[]);
    let applied = h.dataplane.applied_versions().len();
    let cases = [
        (
            format!(
                "[[service]]\nname = \"echo\"\nlisten = \"127.0.0.1:{port}\"\nbackends = [ {{ address = \"127.0.0.1:{}\", weight = 0 }} ]\n",
                echo.port()
            ),
            "weight",
        ),
        (
            format!(
                "[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:{other}\"\nbackends = []\n[[service]]\nname = \"b\"\nlisten = \"127.0.0.1:{other}\"\nbackends = []\n"
            ),
            "listen",
        ),
        ("[[service]\nname = broken".to_string(), "services.toml:1"),
    ];
    for (i, (text, field)) in cases.iter().enumerate() {
        let errors_before = h.controlplane.proc.log_text().matches("ERROR").count();
        h.services.write_raw(text);
        assert!(
            wait_until(Duration::from_secs(10), || h
                .controlplane
                .proc
                .log_text()
                .matches("ERROR")
                .count()
                > errors_before),
            "case {i}: no error logged"
        );
        let log = h.controlplane.proc.log_text();
        let last_error = log
            .lines()
            .rfind(|l| l.contains("ERROR"))
            .unwrap()
            .to_string();
        assert!(
            last_error.contains("services.toml") && last_error.contains(field),
            "case {i}: {last_error}"
        );
        echo_round_trip(port, i as u64, 1000)
            .unwrap_or_else(|e| panic!("case {i}: old routes stopped serving: {e}"));
    }
    assert_eq!(
        h.dataplane.applied_versions().len(),
        applied,
        "no refused file produced a snapshot"
    );
    // A good file is picked up again.
    h.reconfigure(&[
        Service::new("echo", port).backend(echo.port()),
        Service::new("other", other).backend(echo.port()),
    ]);
    echo_round_trip(other, 9, 1000).unwrap();
}

#[test]
fn garbage_on_the_socket_closes_that_session_and_others_keep_being_served() {
    let echo = EchoBackend::start();
    let (port, added) = (free_port(), free_port());
    let mut h = Harness::start(&[Service::new("echo", port).backend(echo.port())], &[], &[]);
    let mut rogue = UnixStream::connect(&h.controlplane.socket).unwrap();
    rogue
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    rogue
        .write_all(b"\x00\x00\x00\x10this is not bincode!")
        .unwrap();
    let mut buf = [0u8; 64];
    let closed = loop {
        match rogue.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(
        closed,
        "the controlplane closes a session that sent garbage"
    );
    h.reconfigure(&[
        Service::new("echo", port).backend(echo.port()),
        Service::new("added", added).backend(echo.port()),
    ]);
    echo_round_trip(added, 1, 1000).unwrap();
}

fn snapshot(version: u64, listen: u16, backend: u16, weight: u16) -> Snapshot {
    Snapshot::new(
        version,
        vec![Listener {
            name: "svc".into(),
            address: local(listen),
            protocol: Protocol::Tcp,
            cluster: Some("svc".into()),
            http: None,
        }],
        vec![Cluster {
            name: "svc".into(),
            balance: Balance::RoundRobin,
            timeouts: Timeouts::default(),
            max_connections: 100,
            backends: vec![Backend {
                address: local(backend),
                weight,
                max_connections: None,
                state: BackendState::Active,
            }],
            http: None,
        }],
    )
    .unwrap()
}

#[test]
fn invalid_snapshots_are_nacked_and_the_last_good_one_keeps_serving() {
    let echo = EchoBackend::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeControlplane::bind(&dir.path().join("fake.sock"));
    let _dataplane = Dataplane::start(dir.path(), &fake.path, &[]);
    let mut session = fake.accept();

    session.send(&snapshot(10, port, echo.port(), 500));
    assert_eq!(session.reply(), Message::ack(10));
    echo_round_trip(port, 1, 1000).unwrap();

    let cases = [
        (snapshot(11, port, echo.port(), 0), "weight"),
        (snapshot(5, port, echo.port(), 500), "not newer"),
    ];
    for (bad, expected) in &cases {
        session.send(bad);
        match session.reply() {
            Message::Nack { version, reason } => {
                assert_eq!(version, bad.version);
                assert!(
                    reason.contains(expected),
                    "NACK reason {reason:?} does not mention {expected:?}"
                );
            }
            other => panic!("expected a NACK for version {}, got {other:?}", bad.version),
        }
        echo_round_trip(port, bad.version, 1000).unwrap();
    }
    // Tampering with content under an unchanged hash is caught too.
    let mut tampered = snapshot(13, port, echo.port(), 500);
    tampered.clusters[0].backends[0].weight = 7;
    session.send(&tampered);
    assert!(matches!(session.reply(), Message::Nack { version: 13, .. }));
    echo_round_trip(port, 99, 1000).unwrap();

    // A listener that cannot be opened is no reason to refuse: the ACK names it, with the OS error.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let occupied = holder.local_addr().unwrap();
    session.send(&snapshot(14, occupied.port(), echo.port(), 500));
    match session.reply() {
        Message::Ack {
            version: 14,
            failed_listeners,
        } => {
            assert_eq!(failed_listeners.len(), 1, "{failed_listeners:?}");
            assert_eq!(failed_listeners[0].address, occupied);
            assert!(
                failed_listeners[0].error.contains("in use"),
                "{failed_listeners:?}"
            );
        }
        other => panic!("expected an ACK naming the failed listener, got {other:?}"),
    }
    // A new session, with nothing newer to send, still learns about it.
    drop(session);
    let mut again = fake.accept();
    assert_eq!(again.hello.applied_version, 14);
    match again.reply() {
        Message::Ack {
            version: 14,
            failed_listeners,
        } => assert_eq!(failed_listeners.len(), 1, "{failed_listeners:?}"),
        other => panic!("expected the failed listener again after reconnecting, got {other:?}"),
    }
    drop(holder);
}

#[test]
fn sigterm_stops_accepting_lets_connections_finish_and_exits_zero() {
    let echo = EchoBackend::start();
    let port = free_port();
    let mut h = Harness::start(&[Service::new("echo", port).backend(echo.port())], &[], &[]);
    let mut open = connect(port).unwrap();
    open.write_all(b"before").unwrap();
    let mut six = [0u8; 6];
    open.read_exact(&mut six).unwrap();

    h.dataplane.proc.signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(10), || connect(port).is_err()),
        "still accepting after SIGTERM"
    );
    let served = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        open.write_all(b"during").unwrap();
        open.read_exact(&mut six).unwrap();
        assert_eq!(&six, b"during");
        served.fetch_add(1, Ordering::SeqCst);
    }
    assert!(
        h.dataplane.proc.try_wait().is_none(),
        "the dataplane waits for the open connection"
    );
    drop(open);
    let status = h
        .dataplane
        .proc
        .wait_exit(Duration::from_secs(20))
        .expect("the dataplane exits once drained");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn a_listen_address_held_by_another_socket_does_not_freeze_the_others() {
    let echo = EchoBackend::start();
    // Held without SO_REUSEPORT, as another program would: the dataplane cannot join it.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = holder.local_addr().unwrap().port();
    let (good, later) = (free_port(), free_port());
    let services = |with_later: bool| {
        let mut list = vec![
            Service::new("good", good).backend(echo.port()),
            Service::new("held", held).backend(echo.port()),
        ];
        if with_later {
            list.push(Service::new("later", later).backend(echo.port()));
        }
        list
    };
    let mut h = Harness::start(&services(false), &[], &[]);
    echo_round_trip(good, 1, 1000).expect("the bindable service routes");

    // The failure is reported per listener, with the OS error: /stats, /metrics, and the controlplane.
    let admin = h.dataplane.admin_address();
    let listener = |stats: &serde_json::Value| {
        stats["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "held")
            .cloned()
            .unwrap_or_default()
    };
    let failed = listener(&stats(admin));
    assert_eq!(failed["state"], "bind_failed", "{failed}");
    assert!(
        failed["error"].as_str().unwrap_or("").contains("in use"),
        "{failed}"
    );
    let (_, metrics) = get(admin, "/metrics").unwrap();
    assert!(
        metrics.contains(&format!(
            "ringway_listener_up{{address=\"{}\",listener=\"held\"}} 0",
            local(held)
        )),
        "{metrics}"
    );
    let api = h.controlplane.api();
    let reported = |api: &ringway_tests::api::ApiClient| {
        api.get("/v1/services").1["dataplanes"][0]["failed_listeners"].clone()
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            reported(&api)[0]["address"] == local(held).to_string()
        }),
        "{}",
        reported(&api)
    );
    assert!(
        reported(&api)[0]["error"]
            .as_str()
            .unwrap()
            .contains("in use")
    );

    // Later changes still apply.
    h.reconfigure(&services(true));
    echo_round_trip(later, 2, 1000).expect("a later service routes");

    // Once the holder lets go, the dataplane binds it by itself (backoff from 1 s, at most 30 s).
    drop(holder);
    assert!(
        wait_until(Duration::from_secs(45), || echo_round_trip(held, 3, 100)
            .is_ok()),
        "the released address was never served"
    );
    assert!(
        wait_until(Duration::from_secs(10), || reported(&api)
            .as_array()
            .is_some_and(Vec::is_empty)),
        "{}",
        reported(&api)
    );
    assert_eq!(listener(&stats(admin))["state"], "listening");
}
