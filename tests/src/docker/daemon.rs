//! A private `dockerd` for one test: its own data root, exec root, socket, pid file, configuration file
//! and cgroup parent, all under one temporary directory; `--bridge=none --iptables=false
//! --ip6tables=false`, so it creates no network interface and no firewall rule (containers use
//! `--network host`, and every address stays on loopback). Stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::host::{self, HostSnapshot};
use super::{Docker, bounded_output, find_on_path, is_executable};
use crate::net::wait_until;

/// Why no daemon could be started here (the caller skips its test, saying this).
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A running private Docker daemon.
pub struct DockerDaemon {
    /// The temporary directory holding everything of this daemon's (short: socket paths are limited).
    root: PathBuf,
    child: Option<Child>,
    pub docker: Docker,
    /// Version of dockerd, e.g. "20.10.24+dfsg1".
    pub version: String,
    cgroup_parent: String,
    before: HostSnapshot,
    stopped: bool,
}

/// How long dockerd may take to answer after it was started, and to exit after SIGTERM.
const START_LIMIT: Duration = Duration::from_secs(60);
const STOP_LIMIT: Duration = Duration::from_secs(30);

impl DockerDaemon {
    /// Starts a daemon, or says why none can run here: not root, no `dockerd`, or it did not come up.
    pub fn start() -> Result<Self, Unavailable> {
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Unavailable(
                "dockerd needs root, and this test runs as another user".into(),
            ));
        }
        let dockerd = find_on_path("dockerd").ok_or_else(|| {
            Unavailable("no dockerd on PATH: install Debian's docker.io (tools/test does)".into())
        })?;
        let version = docker_version(&dockerd).ok_or_else(|| {
            Unavailable(format!("`{} --version` does not answer", dockerd.display()))
        })?;
        let client = client_for(&dockerd, &version).ok_or_else(|| {
            Unavailable(
                "no docker client on PATH: install Debian's docker.io (tools/test does)".into(),
            )
        })?;
        let before = HostSnapshot::take();
        let root = tempfile::Builder::new()
            .prefix("rwd-")
            .tempdir()
            .map_err(|e| Unavailable(format!("cannot create a temporary directory: {e}")))?
            .keep();
        std::fs::create_dir_all(root.join("client")).unwrap();
        host::mount_tmpfs(&root.join("data"));
        // Docker before 23 writes an identity key to /etc/docker/key.json unless told otherwise (only in
        // the configuration file); later versions know no such setting and would refuse it.
        let config = if major(&version) < 23 {
            serde_json::json!({ "deprecated-key-path": root.join("key.json") })
        } else {
            serde_json::json!({})
        };
        std::fs::write(root.join("daemon.json"), config.to_string()).unwrap();
        let cgroup_parent = format!(
            "ringway-test-{}-{}",
            std::process::id(),
            root.file_name().unwrap().to_string_lossy()
        );
        let socket = root.join("docker.sock");
        let log = std::fs::File::create(root.join("dockerd.log")).unwrap();
        let child = Command::new(&dockerd)
            .arg("--config-file")
            .arg(root.join("daemon.json"))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .args(["--cgroup-parent", &cgroup_parent])
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn();
        let docker = Docker {
            client,
            host: format!("unix://{}", socket.display()),
            config: root.join("client"),
        };
        let mut daemon = Self {
            root,
            child: None,
            docker,
            version,
            cgroup_parent,
            before,
            stopped: false,
        };
        match child {
            Ok(child) => daemon.child = Some(child),
            Err(e) => {
                daemon.stop();
                return Err(Unavailable(format!(
                    "cannot run {}: {e}",
                    dockerd.display()
                )));
            }
        }
        if let Err(reason) = daemon.wait_ready() {
            let log = daemon.log_tail(30);
            daemon.stop();
            return Err(Unavailable(format!("{reason}; its log ends:\n{log}")));
        }
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let mut exited = None;
        let answered = wait_until(START_LIMIT, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                exited = Some(status);
                return true;
            }
            let mut command = self.docker.command();
            command.args(["version", "--format", "{{.Server.Version}}"]);
            bounded_output(&mut command, Duration::from_secs(10))
                .is_ok_and(|output| output.status.success())
        });
        match (exited, answered) {
            (Some(status), _) => Err(format!("dockerd exited at start-up ({status})")),
            (None, true) => Ok(()),
            (None, false) => Err(format!("dockerd did not answer within {START_LIMIT:?}")),
        }
    }

    /// The last `lines` lines of dockerd's own log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops the daemon and removes everything it made; returns what is still left (nothing, normally):
    /// processes, mounts, its directory, cgroups, and any network interface or firewall rule of Docker's
    /// that appeared while it ran.
    pub fn stop(&mut self) -> Vec<String> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        let mut problems = Vec::new();
        if let Some(child) = self.child.as_mut()
            && child.try_wait().ok().flatten().is_none()
        {
            // Containers first: on SIGTERM dockerd would stop each running one with its own stop timeout.
            let mut ps = self.docker.command();
            ps.args(["ps", "--all", "--quiet"]);
            if let Ok(output) = bounded_output(&mut ps, Duration::from_secs(30)) {
                let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                if !ids.is_empty() {
                    let mut rm = self.docker.command();
                    rm.args(["rm", "--force", "--volumes"]).args(&ids);
                    let _ = bounded_output(&mut rm, Duration::from_secs(60));
                }
            }
            // SAFETY: kill has no pointer arguments; the pid is our own child's, not yet reaped.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let exited = wait_until(STOP_LIMIT, || child.try_wait().ok().flatten().is_some());
            if !exited {
                problems.push(format!(
                    "dockerd did not exit within {STOP_LIMIT:?} of SIGTERM"
                ));
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("---- end of dockerd's log ----\n{}", self.log_tail(40));
        }
        // Whatever is left of it (containerd and shims, were dockerd killed), then its mounts (the data
        // root's tmpfs, container root filesystems, and the bind mount of the host's network namespace,
        // which dockerd leaves even after a clean exit), then its files and cgroups.
        host::kill_processes_under(&self.root);
        host::unmount_all_under(&self.root);
        let _ = std::fs::remove_dir_all(&self.root);
        host::remove_cgroups(&self.cgroup_parent);
        self.before.remove_new_shared_dirs();

        for (pid, cmdline) in host::processes_under(&self.root) {
            problems.push(format!("process {pid} is left: {cmdline}"));
        }
        for mount in host::mounts_under(&self.root) {
            problems.push(format!("mount {} is left", mount.display()));
        }
        if self.root.exists() {
            problems.push(format!("directory {} is left", self.root.display()));
        }
        for cgroup in host::cgroups_named(&self.cgroup_parent) {
            problems.push(format!("cgroup {} is left", cgroup.display()));
        }
        problems.extend(self.before.appeared_since());
        problems
    }
}

impl Drop for DockerDaemon {
    fn drop(&mut self) {
        for problem in self.stop() {
            eprintln!("docker daemon clean-up: {problem}");
        }
    }
}

/// "20.10.24+dfsg1" from "Docker version 20.10.24+dfsg1, build 5d6db84".
fn docker_version(program: &Path) -> Option<String> {
    let output = Command::new(program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.strip_prefix("Docker version ")?.split(',').next()?;
    Some(version.trim().to_string())
}

fn major(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// The `docker` client of the same version as `dockerd` (another client on PATH may be newer and, without
/// the buildx plugin, unable to use BuildKit), else the first one on PATH.
fn client_for(dockerd: &Path, version: &str) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = dockerd
        .parent()
        .map(|dir| dir.join("docker"))
        .into_iter()
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("docker")));
    }
    candidates.retain(|c| is_executable(c));
    candidates
        .iter()
        .find(|c| docker_version(c).as_deref() == Some(version))
        .cloned()
        .or_else(|| find_on_path("docker"))
}
