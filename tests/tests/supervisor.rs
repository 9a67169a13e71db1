//! The container entrypoint, `ringway-controlplane --spawn-dataplane`: a crashed dataplane comes back, a
//! stop signal drains in order and exits 0, a dataplane that cannot start ends the supervisor with a
//! status that says so; and readiness reaches systemd (`NOTIFY_SOCKET`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use ringway_tests::http::get;
use ringway_tests::net::{connect, free_port};
use ringway_tests::procs::Proc;
use ringway_tests::supervised::{Supervisor, alive};
use ringway_tests::traffic::echo_round_trip;
use ringway_tests::{EchoBackend, Service, ServicesFile, wait_until};

/// The supervisor's documented exit statuses (controlplane/src/supervisor.rs, docs/operations.md).
const EXIT_CLEAN: i32 = 0;
const EXIT_SUPERVISOR_FAILED: i32 = 1;
const EXIT_CONTROLPLANE_FAILED: i32 = 3;
const EXIT_DATAPLANE_KEPT_CRASHING: i32 = 4;

fn services(dir: &Path, service: Service) -> ServicesFile {
    let file = ServicesFile::new(dir);
    file.write(&[service]);
    file
}

fn served(port: u16) -> bool {
    wait_until(Duration::from_secs(20), || {
        echo_round_trip(port, 7, 4096).is_ok()
    })
}

fn exit_code(supervisor: &mut Supervisor, limit: Duration) -> i32 {
    let status = supervisor.proc.wait_exit(limit).unwrap_or_else(|| {
        panic!(
            "still running after {limit:?}:\n{}",
            supervisor.proc.log_text()
        )
    });
    status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {status:?}"))
}

#[test]
fn a_killed_dataplane_comes_back_and_serves() {
    let echo = EchoBackend::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = services(dir.path(), Service::new("echo", port).backend(echo.port()));
    let mut supervisor = Supervisor::start(dir.path(), &file.path, &[], &[], &[]);
    let first = supervisor.wait_dataplanes(1);
    assert!(
        served(port),
        "never served:\n{}",
        supervisor.proc.log_text()
    );

    // SAFETY: kill has no pointer arguments; `first` is the dataplane this test's supervisor started.
    unsafe {
        libc::kill(first, libc::SIGKILL);
    }
    let second = supervisor.wait_dataplanes(2);
    assert_ne!(first, second);
    assert!(
        served(port),
        "the restarted dataplane does not serve:\n{}",
        supervisor.proc.log_text()
    );
    assert!(alive(second) && !alive(first));
    assert!(
        supervisor.proc.try_wait().is_none(),
        "the supervisor exited"
    );
    let exits = supervisor.proc.events("dataplane exited");
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0]["fields"]["pid"].as_i64(), Some(first as i64));
    assert_eq!(
        exits[0]["fields"]["status"].as_str(),
        Some("killed by signal 9 (SIGKILL)"),
        "the exit is logged with its signal"
    );
    // Real traffic, many times, through the new dataplane.
    for seed in 0..20 {
        echo_round_trip(port, seed, 64 * 1024).unwrap();
    }
}

#[test]
fn sigterm_drains_the_dataplane_then_stops_the_controlplane_and_exits_0() {
    let echo = EchoBackend::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = services(dir.path(), Service::new("echo", port).backend(echo.port()));
    let mut supervisor = Supervisor::start(
        dir.path(),
        &file.path,
        &[],
        &["--drain-grace", "2s", "--drain-timeout", "20s"],
        &[],
    );
    let dataplane = supervisor.wait_dataplanes(1);
    assert!(
        served(port),
        "never served:\n{}",
        supervisor.proc.log_text()
    );
    let admin = *supervisor
        .admin_addresses()
        .first()
        .expect("admin endpoint");
    assert_eq!(get(admin, "/status").unwrap().0, 200);

    let mut open = connect(port).unwrap();
    open.write_all(b"before").unwrap();
    let mut six = [0u8; 6];
    open.read_exact(&mut six).unwrap();

    supervisor.proc.signal(libc::SIGTERM);
    // The dataplane got the signal: DRAINING, while the grace period still accepts.
    assert!(
        wait_until(Duration::from_secs(5), || get(admin, "/status")
            .map(|r| r.0 == 503)
            .unwrap_or(false)),
        "/status never said DRAINING:\n{}",
        supervisor.proc.log_text()
    );
    echo_round_trip(port, 3, 1000).expect("the grace period still accepts");
    // Then listeners close, and the open connection keeps working while it drains.
    assert!(
        wait_until(Duration::from_secs(10), || connect(port).is_err()),
        "still accepting after the grace period"
    );
    open.write_all(b"during").unwrap();
    open.read_exact(&mut six).unwrap();
    assert_eq!(&six, b"during");
    assert!(
        supervisor.proc.try_wait().is_none() && alive(dataplane),
        "the supervisor waits for the dataplane, which waits for the open connection"
    );
    assert!(
        supervisor.socket.exists(),
        "the controlplane serves until the dataplane is gone"
    );
    drop(open);

    assert_eq!(
        exit_code(&mut supervisor, Duration::from_secs(30)),
        EXIT_CLEAN
    );
    assert!(!alive(dataplane));
    assert!(!supervisor.socket.exists(), "the socket was removed");
    // In order: the dataplane drained and exited before the controlplane stopped.
    let log = supervisor.proc.log_text();
    let drained = log.find("dataplane drained and exited").expect(&log);
    let stopped = log.find("controlplane stopped").expect(&log);
    assert!(drained < stopped, "{log}");
    assert_eq!(supervisor.dataplane_pids().len(), 1, "no restart on stop");
}

#[test]
fn a_dataplane_that_keeps_crashing_at_start_up_stops_the_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let file = services(dir.path(), Service::new("echo", free_port()).backend(1));
    // The real dataplane, failing at start-up: its admin port is taken.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = taken.local_addr().unwrap().to_string();
    let started = Instant::now();
    let mut supervisor = Supervisor::start(
        dir.path(),
        &file.path,
        &["--dataplane-max-start-failures", "3"],
        &["--status-endpoint", &endpoint],
        &[],
    );
    assert_eq!(
        exit_code(&mut supervisor, Duration::from_secs(60)),
        EXIT_DATAPLANE_KEPT_CRASHING
    );
    assert_eq!(supervisor.dataplane_pids().len(), 3, "exactly 3 tries");
    let exits = supervisor.proc.events("dataplane exited");
    assert!(
        exits
            .iter()
            .all(|e| e["fields"]["status"].as_str() == Some("exit code 1")),
        "{exits:?}"
    );
    let errors = supervisor.errors().join("\n");
    assert!(
        errors.contains("kept crashing at start-up") && errors.contains("3 times in a row"),
        "the reason is logged: {errors}"
    );
    let log = supervisor.proc.log_text();
    assert!(
        log.contains(&endpoint),
        "the dataplane's own error is in the log:\n{log}"
    );
    assert!(!supervisor.socket.exists(), "the controlplane was stopped");
    // Back-off 100 + 200 ms between three quick failures.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_crashing_program_configured_through_the_environment_is_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = services(dir.path(), Service::new("echo", free_port()).backend(1));
    let socket = dir.path().join("control.sock");
    let log = dir.path().join("supervisor.log");
    let mut proc = Proc::spawn(
        "ringway-controlplane",
        &[],
        log,
        &[
            ("RINGWAY_SERVICES", file.path.to_str().unwrap()),
            ("RINGWAY_SOCKET", socket.to_str().unwrap()),
            ("RINGWAY_LOG_FORMAT", "json"),
            ("RINGWAY_SPAWN_DATAPLANE", "true"),
            ("RINGWAY_DATAPLANE_BIN", "/bin/false"),
            ("RINGWAY_DATAPLANE_MAX_START_FAILURES", "4"),
        ],
    );
    let status = proc.wait_exit(Duration::from_secs(60)).expect("gives up");
    assert_eq!(status.code(), Some(EXIT_DATAPLANE_KEPT_CRASHING));
    assert_eq!(proc.events("dataplane started").len(), 4);
}

#[test]
fn a_controlplane_that_cannot_start_exits_3_and_starts_no_dataplane() {
    let dir = tempfile::tempdir().unwrap();
    let file = ServicesFile::new(dir.path());
    file.write_raw("[[service]]\nname = \"broken\"\nlisten = \"not an address\"\n");
    let mut supervisor = Supervisor::start(dir.path(), &file.path, &[], &[], &[]);
    assert_eq!(
        exit_code(&mut supervisor, Duration::from_secs(20)),
        EXIT_CONTROLPLANE_FAILED
    );
    assert!(supervisor.dataplane_pids().is_empty());
    let errors = supervisor.errors().join("\n");
    assert!(errors.contains("services.toml:3"), "{errors}");
}

#[test]
fn a_missing_dataplane_binary_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = services(dir.path(), Service::new("echo", free_port()).backend(1));
    let mut supervisor = Supervisor::start(
        dir.path(),
        &file.path,
        &["--dataplane-bin", "/nonexistent/ringway-dataplane"],
        &[],
        &[],
    );
    assert_eq!(
        exit_code(&mut supervisor, Duration::from_secs(20)),
        EXIT_SUPERVISOR_FAILED
    );
    let errors = supervisor.errors().join("\n");
    assert!(
        errors.contains("/nonexistent/ringway-dataplane") && errors.contains("--dataplane-bin"),
        "{errors}"
    );
    assert!(!supervisor.socket.exists(), "nothing was served");
}

/// A datagram socket standing in for systemd's notification socket.
fn notify_socket(dir: &Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (socket, path.display().to_string())
}

fn receive(socket: &UnixDatagram) -> Option<String> {
    let mut buffer = [0u8; 4096];
    let n = socket.recv(&mut buffer).ok()?;
    Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
}

#[test]
fn the_controlplane_tells_systemd_it_is_ready_once_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let file = services(dir.path(), Service::new("echo", free_port()).backend(1));
    let (notify, notify_path) = notify_socket(dir.path());
    let socket = dir.path().join("control.sock");
    let _controlplane = Proc::spawn(
        "ringway-controlplane",
        &[
            "--services".into(),
            file.path.display().to_string(),
            "--socket".into(),
            socket.display().to_string(),
        ],
        dir.path().join("controlplane.log"),
        &[("NOTIFY_SOCKET", &notify_path)],
    );
    let message = receive(&notify).expect("READY=1 within 20 s");
    assert!(message.lines().any(|l| l == "READY=1"), "{message:?}");
    assert!(
        message.contains(&socket.display().to_string()),
        "STATUS names the socket: {message:?}"
    );
    assert!(socket.exists(), "ready only once the socket is served");
}

#[test]
fn under_the_supervisor_only_the_supervisor_talks_to_systemd() {
    let echo = EchoBackend::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = services(dir.path(), Service::new("echo", port).backend(echo.port()));
    let (notify, notify_path) = notify_socket(dir.path());
    let supervisor = Supervisor::start(
        dir.path(),
        &file.path,
        &[],
        &[],
        &[("NOTIFY_SOCKET", &notify_path)],
    );
    let message = receive(&notify).expect("READY=1 within 20 s");
    assert!(message.lines().any(|l| l == "READY=1"), "{message:?}");
    assert!(served(port), "{}", supervisor.proc.log_text());
    // The dataplane child does not inherit NOTIFY_SOCKET: nothing more arrives.
    notify
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert_eq!(receive(&notify), None);
}
