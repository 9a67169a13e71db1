//! The container image, built from the repository's Dockerfile and run by a real Docker engine (Debian's
//! docker.io, a private daemon this test starts and removes): the operator's `docker run` from
//! docs/operations.md, checked the way an operator would notice.
//!
//! No image registry is reachable here, so the base image is made from Debian's packages (mmdebstrap,
//! cached in target/container-cache) and the image takes the binaries built on the host
//! (`BINARIES=prebuilt`). The test is skipped, saying why, only where no Docker daemon can start (not
//! root, no dockerd); `tools/test` installs docker.io and runs as root, so CI always runs it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringway_tests::docker::{
    BASE_IMAGE, Docker, DockerDaemon, cache_dir, debian_base_image, import_base_image,
};
use ringway_tests::net::{connect, free_port, local, wait_until};
use ringway_tests::procs::bin;
use ringway_tests::traffic::echo_round_trip;
use ringway_tests::{EchoBackend, Service, ServicesFile, http};

const IMAGE: &str = "ringway:test";
/// The image's fixed user (Dockerfile: RINGWAY_UID).
const RINGWAY_UID: &str = "10001";
/// CAP_NET_BIND_SERVICE as a capability mask, as /proc/PID/status shows it.
const NET_BIND_SERVICE: &str = "0000000000000400";
const NO_CAPABILITIES: &str = "0000000000000000";
/// The grace the test's dataplane says DRAINING while still accepting (the default is 5 s).
const DRAIN_GRACE: &str = "2s";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

#[test]
fn the_image_builds_from_debian_packages_and_runs_as_documented() {
    let began = Instant::now();
    let mut daemon = match DockerDaemon::start() {
        Ok(daemon) => daemon,
        Err(why) => {
            // Straight to the terminal: cargo test would swallow eprintln! of a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "\nSKIPPED deploy_docker: no Docker daemon can run here: {why}\n"
            );
            return;
        }
    };
    let docker = daemon.docker.clone();
    let tarball = debian_base_image(&cache_dir());
    import_base_image(&docker, &tarball);
    eprintln!("base image {BASE_IMAGE} ready after {:?}", began.elapsed());
    build_image(&docker);
    eprintln!("image built after {:?}", began.elapsed());

    let container = Running::start(&docker, &daemon.version);
    container.serves_as_the_non_root_user_with_one_capability();
    container.restarts_a_dataplane_that_dies();
    container.becomes_healthy_and_logs_json();
    container.drains_on_docker_stop();
    container.left_its_state_in_the_volume();
    drop(container);
    eprintln!("container checks done after {:?}", began.elapsed());

    a_seccomp_profile_without_io_uring_stops_it_with_the_reason(&docker, &daemon.version);
    eprintln!("seccomp check done after {:?}", began.elapsed());

    let left = daemon.stop();
    assert!(left.is_empty(), "the Docker daemon left: {left:#?}");
    eprintln!("done after {:?}", began.elapsed());
}

/// `docker build --build-arg BINARIES=prebuilt` from the repository, with the binaries the tests use.
fn build_image(docker: &Docker) {
    let binaries = bin("ringway-dataplane")
        .parent()
        .unwrap()
        .canonicalize()
        .unwrap();
    let relative = binaries
        .strip_prefix(repo())
        .ok()
        .filter(|dir| *dir == Path::new("target/debug") || *dir == Path::new("target/release"))
        .unwrap_or_else(|| {
            panic!(
                "the image is built from the repository's context, whose .dockerignore lets in only \
                 target/debug and target/release's binaries; these are in {}: build them into the \
                 repository's target/ (unset CARGO_TARGET_DIR and RINGWAY_BIN_DIR)",
                binaries.display()
            )
        })
        .display()
        .to_string();
    docker.ok(
        &[
            "build",
            // The daemon has no bridge, so the one apt-get of the Dockerfile reaches the mirror through
            // the host's network; with a default daemon no flag is needed.
            "--network",
            "host",
            "--build-arg",
            "BINARIES=prebuilt",
            "--build-arg",
            &format!("PREBUILT_DIR={relative}"),
            "--tag",
            IMAGE,
            &repo().display().to_string(),
        ],
        Duration::from_secs(600),
    );
}

/// A Ringway container started as docs/operations.md says, on free loopback ports, with a loopback echo
/// backend behind two services: one on an ordinary port, one on a port below 1024 (which needs the
/// dataplane's file capability).
struct Running<'a> {
    docker: &'a Docker,
    name: String,
    _echo: EchoBackend,
    port: u16,
    privileged_port: Option<u16>,
    status: SocketAddr,
    _config: tempfile::TempDir,
}

impl<'a> Running<'a> {
    fn start(docker: &'a Docker, daemon_version: &str) -> Self {
        let echo = EchoBackend::start();
        let (port, status, api) = (free_port(), free_port(), free_port());
        let privileged_port = free_privileged_port();
        // The configuration directory is mounted read-only and read by the image's user.
        let config = tempfile::tempdir().unwrap();
        let mut services = vec![Service::new("echo", port).backend(echo.port())];
        if let Some(low) = privileged_port {
            services.push(Service::new("low", low).backend(echo.port()));
        }
        let file = ServicesFile::new(config.path());
        file.write(&services);
        chmod(config.path(), 0o755);
        chmod(&file.path, 0o644);

        let name = format!("ringway-test-{}", std::process::id());
        let mut args = vec![
            "run".to_string(),
            "--detach".into(),
            "--name".into(),
            name.clone(),
        ];
        args.extend(run_flags(daemon_version));
        args.extend([
            "--volume".into(),
            format!("{}:/etc/ringway:ro", config.path().display()),
            "--volume".into(),
            format!("{name}-state:/var/lib/ringway"),
        ]);
        for (variable, value) in [
            ("STATUS_ENDPOINT", format!("127.0.0.1:{status}")),
            ("RINGWAY_API", format!("127.0.0.1:{api}")),
            ("RINGWAY_LOG_FORMAT", "json".into()),
            ("RINGWAY_DRAIN_GRACE", DRAIN_GRACE.into()),
        ] {
            args.extend(["--env".into(), format!("{variable}={value}")]);
        }
        args.push(IMAGE.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker.ok(&args, Duration::from_secs(60));
        let running = Self {
            docker,
            name,
            _echo: echo,
            port,
            privileged_port,
            status: local(status),
            _config: config,
        };
        running.wait_serving();
        running
    }

    fn logs(&self) -> String {
        let output = self
            .docker
            .run(&["logs", &self.name], Duration::from_secs(30));
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    fn inspect(&self, format: &str) -> String {
        self.docker.ok(
            &["inspect", "--format", format, &self.name],
            Duration::from_secs(30),
        )
    }

    fn wait_serving(&self) {
        let serving = wait_until(Duration::from_secs(30), || {
            matches!(http::get(self.status, "/status"), Ok((200, _)))
        });
        assert!(
            serving,
            "/status never said 200 OK; the container's log:\n{}",
            self.logs()
        );
    }

    /// The container's first process (the supervisor, as seen from the host) and its dataplane child.
    fn processes(&self) -> (i32, i32) {
        let supervisor: i32 = self.inspect("{{.State.Pid}}").parse().unwrap();
        let mut dataplanes = Vec::new();
        assert!(
            wait_until(Duration::from_secs(10), || {
                dataplanes = children(supervisor)
                    .into_iter()
                    .filter(|&pid| proc_status(pid, "Name") == "ringway-datapla")
                    .collect();
                dataplanes.len() == 1
            }),
            "the supervisor {supervisor} has no single dataplane child: {dataplanes:?}"
        );
        (supervisor, dataplanes[0])
    }

    fn traffic_flows(&self, seed: u64) {
        echo_round_trip(self.port, seed, 1 << 20)
            .unwrap_or_else(|e| panic!("echo through the container: {e}\n{}", self.logs()));
        if let Some(low) = self.privileged_port {
            echo_round_trip(low, seed + 1, 64 << 10).unwrap_or_else(|e| {
                panic!("echo through privileged port {low}: {e}\n{}", self.logs())
            });
        }
    }

    fn serves_as_the_non_root_user_with_one_capability(&self) {
        self.traffic_flows(1);
        let (status, body) = http::get(self.status, "/status").unwrap();
        assert_eq!((status, body.trim()), (200, "OK"));
        let (supervisor, dataplane) = self.processes();
        assert_eq!(proc_status(supervisor, "Name"), "ringway-control");
        for pid in [supervisor, dataplane] {
            let ids = [RINGWAY_UID; 4].join("\t");
            assert_eq!(proc_status(pid, "Uid"), ids, "uids of {pid}");
            assert_eq!(proc_status(pid, "Gid"), ids, "gids of {pid}");
            // --cap-drop=ALL --cap-add=NET_BIND_SERVICE: nothing else can ever be gained.
            assert_eq!(
                proc_status(pid, "CapBnd"),
                NET_BIND_SERVICE,
                "bounding set of {pid}"
            );
            assert_eq!(
                proc_status(pid, "CapAmb"),
                NO_CAPABILITIES,
                "ambient of {pid}"
            );
        }
        // The controlplane has no capability; the dataplane only the one its binary's file capability
        // grants, to listen below 1024.
        assert_eq!(proc_status(supervisor, "CapEff"), NO_CAPABILITIES);
        assert_eq!(proc_status(supervisor, "CapPrm"), NO_CAPABILITIES);
        assert_eq!(proc_status(dataplane, "CapEff"), NET_BIND_SERVICE);
        assert_eq!(proc_status(dataplane, "CapPrm"), NET_BIND_SERVICE);
        assert_eq!(
            self.inspect("{{.Config.User}}"),
            format!("{RINGWAY_UID}:{RINGWAY_UID}")
        );
    }

    /// The supervisor restarts a dataplane that is killed, and traffic flows again.
    fn restarts_a_dataplane_that_dies(&self) {
        let (supervisor, first) = self.processes();
        // SAFETY: kill has no pointer arguments; the pid is the container's dataplane, seen from the host.
        unsafe {
            libc::kill(first, libc::SIGKILL);
        }
        let restarted = wait_until(Duration::from_secs(20), || {
            children(supervisor)
                .into_iter()
                .any(|pid| pid != first && proc_status(pid, "Name") == "ringway-datapla")
        });
        assert!(restarted, "no new dataplane after a kill:\n{}", self.logs());
        self.wait_serving();
        self.traffic_flows(3);
    }

    fn becomes_healthy_and_logs_json(&self) {
        // The image's HEALTHCHECK runs every 10 s: the first check is due 10 s after the start.
        let mut health = String::new();
        let healthy = wait_until(Duration::from_secs(60), || {
            health = self.inspect("{{.State.Health.Status}}");
            health == "healthy"
        });
        assert!(
            healthy,
            "health is {health}: {}",
            self.inspect("{{json .State.Health}}")
        );
        let checks = self.inspect("{{json .State.Health.Log}}");
        assert!(checks.contains("200 OK"), "{checks}");

        let logs = self.logs();
        let events: Vec<serde_json::Value> = logs
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}\n{logs}"))
            })
            .collect();
        for event in &events {
            for field in ["timestamp", "level", "target"] {
                assert!(event[field].is_string(), "no {field}: {event}");
            }
            assert!(
                event["fields"]["message"].is_string(),
                "no message: {event}"
            );
        }
        let count = |message: &str| {
            events
                .iter()
                .filter(|e| e["fields"]["message"] == message)
                .count()
        };
        // Both processes' events: the supervisor's (two dataplanes started, one killed) and the
        // dataplanes' own.
        assert_eq!(count("dataplane started"), 2, "{logs}");
        assert!(count("dataplane exited") >= 1, "{logs}");
        assert!(count("snapshot applied") >= 2, "{logs}");
    }

    /// `docker stop`: DRAINING while still accepting for the grace, then no new connections, while one
    /// in flight keeps flowing until its client closes; then both processes exit 0 well before Docker's
    /// stop timeout.
    fn drains_on_docker_stop(&self) {
        let mut in_flight = connect(self.port).unwrap();
        echo_chunk(&mut in_flight, b'a');

        let stopping = Instant::now();
        let stop = {
            let (docker, name) = (self.docker.clone(), self.name.clone());
            std::thread::spawn(move || docker.run(&["stop", &name], Duration::from_secs(90)))
        };
        let draining = wait_until(
            Duration::from_secs(10),
            || matches!(http::get(self.status, "/status"), Ok((503, body)) if body.contains("DRAINING")),
        );
        assert!(draining, "/status never said DRAINING:\n{}", self.logs());
        let refused = wait_until(Duration::from_secs(20), || connect(self.port).is_err());
        assert!(
            refused,
            "still accepting long after the grace:\n{}",
            self.logs()
        );

        // The connection in flight still works after the listeners closed, until the client ends it.
        echo_chunk(&mut in_flight, b'b');
        in_flight.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        in_flight.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{} unexpected bytes", rest.len());

        let stopped = stop.join().unwrap();
        let took = stopping.elapsed();
        assert!(
            stopped.status.success(),
            "docker stop: {}",
            String::from_utf8_lossy(&stopped.stderr)
        );
        // Not killed: the image asks for 50 s (--stop-timeout); this drain needed the grace and our close.
        assert!(took < Duration::from_secs(40), "docker stop took {took:?}");
        assert_eq!(self.inspect("{{.State.ExitCode}}"), "0", "{}", self.logs());
        let logs = self.logs();
        assert!(logs.contains("dataplane drained and exited"), "{logs}");
        assert!(logs.contains("supervisor exiting"), "{logs}");
    }
}

impl Running<'_> {
    /// The state volume holds the dataplane's last applied routes and the API's state, owned by the
    /// image's user, for the next container.
    fn left_its_state_in_the_volume(&self) {
        let listing = self.docker.ok(
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--volume",
                &format!("{}-state:/var/lib/ringway", self.name),
                "--entrypoint",
                "ls",
                IMAGE,
                "-ln",
                "/var/lib/ringway",
            ],
            Duration::from_secs(60),
        );
        let snapshot = listing
            .lines()
            .find(|line| line.ends_with(" dataplane.snapshot"))
            .unwrap_or_else(|| panic!("no state file in the volume:\n{listing}"));
        let owner: Vec<&str> = snapshot.split_whitespace().skip(2).take(2).collect();
        assert_eq!(owner, [RINGWAY_UID, RINGWAY_UID], "{snapshot}");
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- docker logs {} ----\n{}", self.name, self.logs());
        }
        let _ = self.docker.run(
            &["rm", "--force", "--volumes", &self.name],
            Duration::from_secs(60),
        );
        let _ = self.docker.run(
            &["volume", "rm", &format!("{}-state", self.name)],
            Duration::from_secs(30),
        );
    }
}

/// Docker 25 and later block io_uring in their default seccomp profile (moby/moby#46762): on those the
/// dataplane cannot run without a profile that allows it. This emulates that profile's refusal (EPERM)
/// and checks what an operator sees: the container exits with the supervisor's status 4 and the log
/// names seccomp.
fn a_seccomp_profile_without_io_uring_stops_it_with_the_reason(docker: &Docker, version: &str) {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("no-io_uring.json");
    let refuse = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["io_uring_setup", "io_uring_enter", "io_uring_register"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::EPERM,
        }],
    });
    std::fs::write(&profile, refuse.to_string()).unwrap();
    let name = format!("ringway-seccomp-{}", std::process::id());
    let mut flags = run_flags(version);
    // This profile instead of whichever the documented flags chose.
    if let Some(at) = flags.iter().position(|flag| flag == "--security-opt") {
        flags.drain(at..at + 2);
    }
    let mut args: Vec<String> = vec!["run".into(), "--name".into(), name.clone()];
    args.extend(flags);
    args.extend([
        "--security-opt".into(),
        format!("seccomp={}", profile.display()),
        "--env".into(),
        format!("STATUS_ENDPOINT=127.0.0.1:{}", free_port()),
        "--env".into(),
        format!("RINGWAY_API=127.0.0.1:{}", free_port()),
        IMAGE.into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = docker.run(&args, Duration::from_secs(120));
    let logs = docker.run(&["logs", &name], Duration::from_secs(30));
    let _ = docker.run(&["rm", "--force", &name], Duration::from_secs(30));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    assert_eq!(output.status.code(), Some(4), "{said}");
    assert!(
        said.contains("io_uring_setup was refused") && said.contains("seccomp"),
        "{said}"
    );
}

/// The `docker run` flags docs/operations.md gives, for this daemon and host.
fn run_flags(daemon_version: &str) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--network",
        "host",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        "--stop-timeout",
        "50",
        "--ulimit",
    ]
    .map(String::from)
    .to_vec();
    flags.push(format!("memlock={}", memlock_limit()));
    // Docker 25+: io_uring needs a profile that allows it; docs/operations.md makes one from Docker's
    // default, which needs the network to fetch; `unconfined` is the documented alternative.
    let major: u32 = daemon_version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major >= 25 {
        flags.extend(["--security-opt".into(), "seccomp=unconfined".into()]);
    }
    flags
}

/// `-1` (unlimited), as documented, where the daemon may raise the limit; else this host's hard limit,
/// which is as high as a daemon without CAP_SYS_RESOURCE can set it (some sandboxes run root without it).
fn memlock_limit() -> String {
    const CAP_SYS_RESOURCE: u32 = 24;
    let effective =
        u64::from_str_radix(&proc_status(std::process::id() as i32, "CapEff"), 16).unwrap();
    if effective & (1 << CAP_SYS_RESOURCE) != 0 {
        return "-1".into();
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `limit`, a valid rlimit we own.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) },
        0
    );
    if limit.rlim_max == libc::RLIM_INFINITY {
        "-1".into()
    } else {
        limit.rlim_max.to_string()
    }
}

/// A free loopback port below the host's first unprivileged port (found by binding, as root), if there is
/// such a range; the search starts at a random port, so two runs at the same time are unlikely to meet.
fn free_privileged_port() -> Option<u16> {
    let first_unprivileged: u16 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
    let range = 600..first_unprivileged.min(1024);
    if range.is_empty() {
        return None;
    }
    let start = rand::random_range(range.clone());
    (start..range.end)
        .chain(range.start..start)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// Writes 4 KiB of `byte` and reads the echo back.
fn echo_chunk(stream: &mut std::net::TcpStream, byte: u8) {
    let chunk = [byte; 4096];
    stream.write_all(&chunk).unwrap();
    let mut back = [0u8; 4096];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, chunk);
}

/// A line of /proc/PID/status, without its name.
fn proc_status(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|value| value.trim().to_string())
        .unwrap_or_default()
}

/// Children of every thread of `pid` (a child belongs to the thread that forked it).
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
