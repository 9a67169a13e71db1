//! The real `ringway-controlplane` and `ringway-dataplane` binaries as child processes.
//!
//! The binaries are looked up in `RINGWAY_BIN_DIR`, else in the workspace's `target/debug` (what
//! `tools/test` builds before running the tests). Logs go to files in the test's directory as JSON lines,
//! so tests can wait for and assert on events ("snapshot applied", NACK reasons).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::net::wait_until;

/// Path of a built binary.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("RINGWAY_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("debug")
        });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`, which tools/test does)",
        path.display()
    );
    path
}

/// A child process, killed when dropped.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, args: &[String], log: PathBuf, envs: &[(&str, &str)]) -> Self {
        Self::spawn_path(&bin(name), args, log, envs)
    }

    /// Spawns the program at `path` (etcd, say), logging into `log`.
    pub fn spawn_path(path: &Path, args: &[String], log: PathBuf, envs: &[(&str, &str)]) -> Self {
        let name = path.display().to_string();
        let file = File::create(&log).unwrap();
        let mut command = Command::new(path);
        command
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RINGWAY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        if path
            .file_name()
            .is_some_and(|n| n == "ringway-controlplane")
        {
            // Every test controlplane gets a free API port and no state file unless it says otherwise:
            // the defaults (127.0.0.1:9095, /var/lib/ringway) would be shared by tests running in parallel.
            command
                .env("RINGWAY_API", "127.0.0.1:0")
                .env("RINGWAY_API_STATE_FILE", "");
        }
        for (k, v) in envs {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Parsed JSON log lines whose message is `message`.
    pub fn events(&self, message: &str) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"].as_str() == Some(message))
            .collect()
    }

    pub fn signal(&self, signal: i32) {
        send_signal(self.pid(), signal);
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn send_signal(pid: i32, signal: i32) {
    // SAFETY: kill has no pointer arguments; the pid is our own child's.
    unsafe {
        libc::kill(pid, signal);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- log of {} ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// A running controlplane.
pub struct Controlplane {
    pub proc: Proc,
    pub socket: PathBuf,
}

impl Controlplane {
    pub fn start(dir: &Path, services: &Path, extra: &[&str]) -> Self {
        let socket = dir.join("control.sock");
        Self::start_on(dir, &socket, services, extra)
    }

    pub fn start_on(dir: &Path, socket: &Path, services: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["--services", &services.to_str().unwrap()];
        args.extend(extra);
        Self::start_args(dir, socket, &args)
    }

    /// Starts a controlplane with only `args` (discovery flags) besides the socket and JSON logs.
    pub fn start_with(dir: &Path, args: &[&str]) -> Self {
        Self::start_args(dir, &dir.join("control.sock"), args)
    }

    fn start_args(dir: &Path, socket: &Path, extra: &[&str]) -> Self {
        let _ = std::fs::remove_file(socket);
        let mut args = vec![
            "--socket".to_string(),
            socket.display().to_string(),
            "--log-format".into(),
            "json".into(),
        ];
        // A free API port (read back with `api_address`) and a state file in the test's directory, so a
        // controlplane restarted in the same directory finds what the API registered.
        let state = dir.join("api-state.json").display().to_string();
        for (flag, value) in [
            ("--api", "127.0.0.1:0"),
            ("--api-state-file", state.as_str()),
        ] {
            if !extra.contains(&flag) {
                args.push(flag.into());
                args.push(value.into());
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = unique(dir, "controlplane", "log");
        let mut proc = Proc::spawn("ringway-controlplane", &args, log, &[]);
        let up = wait_until(Duration::from_secs(15), || {
            socket.exists() || proc.try_wait().is_some()
        });
        assert!(
            up && proc.try_wait().is_none(),
            "controlplane did not start:\n{}",
            proc.log_text()
        );
        Self {
            proc,
            socket: socket.to_path_buf(),
        }
    }

    /// Where the API listens (from the log); waits for it to be up.
    pub fn api_address(&mut self) -> std::net::SocketAddr {
        let mut found = None;
        let ok = wait_until(Duration::from_secs(15), || {
            found = self
                .proc
                .events("API listening")
                .first()
                .and_then(|e| e["fields"]["address"].as_str().and_then(|a| a.parse().ok()));
            found.is_some() || self.proc.try_wait().is_some()
        });
        assert!(
            ok && found.is_some(),
            "API never came up:\n{}",
            self.proc.log_text()
        );
        found.unwrap()
    }

    /// A client of this controlplane's API, without a token.
    pub fn api(&mut self) -> crate::api::ApiClient {
        crate::api::ApiClient::new(self.api_address())
    }

    /// Versions of every snapshot this controlplane published.
    pub fn published_versions(&self) -> Vec<u64> {
        self.proc
            .events("published snapshot")
            .iter()
            .filter_map(|e| e["fields"]["version"].as_u64())
            .collect()
    }
}

/// A running dataplane.
pub struct Dataplane {
    pub proc: Proc,
    pub state_file: PathBuf,
}

impl Dataplane {
    /// Starts a dataplane with 2 workers (every test machine has at least the cores to pin them or runs them
    /// unpinned) and a state file in `dir`.
    pub fn start(dir: &Path, socket: &Path, extra: &[&str]) -> Self {
        Self::start_limited(dir, socket, extra, None)
    }

    /// Like [`Dataplane::start`], with RLIMIT_NOFILE (soft and hard) set to `nofile` through `prlimit`,
    /// which then executes the dataplane (same pid).
    pub fn start_limited(dir: &Path, socket: &Path, extra: &[&str], nofile: Option<u64>) -> Self {
        let state_file = dir.join("dataplane.snapshot");
        let state = state_file.display().to_string();
        let socket = socket.display().to_string();
        // Defaults a test may override by passing the same flag in `extra`. The status endpoint gets a
        // free port (tests run in parallel); `admin_address` reads it back from the log.
        let defaults = [
            ("--socket", socket.as_str()),
            ("--workers", "2"),
            ("--state-file", state.as_str()),
            ("--log-format", "json"),
            ("--status-endpoint", "127.0.0.1:0"),
            ("--drain-grace", "1s"),
        ];
        let mut args: Vec<String> = Vec::new();
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.push(flag.to_string());
                args.push(value.to_string());
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = unique(dir, "dataplane", "log");
        let proc = match nofile {
            None => Proc::spawn("ringway-dataplane", &args, log, &[]),
            Some(n) => {
                let mut wrapped = vec![
                    format!("--nofile={n}"),
                    "--".to_string(),
                    bin("ringway-dataplane").display().to_string(),
                ];
                wrapped.extend(args);
                Proc::spawn_path(Path::new("/usr/bin/prlimit"), &wrapped, log, &[])
            }
        };
        Self { proc, state_file }
    }

    /// Where the status endpoint listens (from the log); waits for it to be up.
    pub fn admin_address(&mut self) -> std::net::SocketAddr {
        let mut found = None;
        let ok = wait_until(Duration::from_secs(15), || {
            found = self
                .proc
                .events("status endpoint listening")
                .first()
                .and_then(|e| e["fields"]["address"].as_str().and_then(|a| a.parse().ok()));
            found.is_some() || self.proc.try_wait().is_some()
        });
        assert!(
            ok && found.is_some(),
            "status endpoint never came up:\n{}",
            self.proc.log_text()
        );
        found.unwrap()
    }

    /// Versions of every "snapshot applied" event so far.
    pub fn applied_versions(&self) -> Vec<u64> {
        self.proc
            .events("snapshot applied")
            .iter()
            .filter_map(|e| e["fields"]["version"].as_u64())
            .collect()
    }

    /// Waits until `count` snapshots have been applied; panics with the log otherwise.
    pub fn wait_applied(&mut self, count: usize) -> u64 {
        let ok = wait_until(Duration::from_secs(20), || {
            self.applied_versions().len() >= count || self.proc.try_wait().is_some()
        });
        assert!(
            ok && self.proc.try_wait().is_none(),
            "dataplane did not apply {count} snapshot(s):\n{}",
            self.proc.log_text()
        );
        *self.applied_versions().last().unwrap()
    }
}

fn unique(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    (0..)
        .map(|i| dir.join(format!("{stem}-{i}.{ext}")))
        .find(|p| !p.exists())
        .unwrap()
}
