//! A real Docker engine for the container tests: a private `dockerd` (its own data root, socket, exec root,
//! cgroup parent; no bridge, no firewall rules), a Debian base image made from Debian's packages (no
//! registry is reachable here), and the `docker` client pointed at that daemon.
//!
//! Everything the daemon creates is removed when it stops, whatever happened, and [`DockerDaemon::stop`]
//! reports anything that is left (processes, mounts, directories, cgroups, network interfaces, firewall
//! rules), so a test can assert that nothing is.

mod base_image;
mod daemon;
mod host;

pub use base_image::{BASE_IMAGE, debian_base_image, import_base_image};
pub use daemon::{DockerDaemon, Unavailable};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `docker` client, talking only to one private daemon.
#[derive(Debug, Clone)]
pub struct Docker {
    client: PathBuf,
    host: String,
    config: PathBuf,
}

impl Docker {
    /// A `docker` command for this daemon: its socket, a client configuration directory of its own (no
    /// credential helpers or contexts from the user's `~/.docker`), and BuildKit (which Docker 20.10 only
    /// uses when asked; it builds only the stages the selected target needs).
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.client);
        command
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.config)
            .env("DOCKER_BUILDKIT", "1")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .stdin(Stdio::null());
        command
    }

    /// Runs `docker ARGS` for at most `limit`.
    pub fn run(&self, args: &[&str], limit: Duration) -> Output {
        let mut command = self.command();
        command.args(args);
        bounded_output(&mut command, limit)
            .unwrap_or_else(|e| panic!("docker {}: {e}", args.join(" ")))
    }

    /// Runs `docker ARGS`, asserts that it succeeds, and returns its standard output, trimmed.
    pub fn ok(&self, args: &[&str], limit: Duration) -> String {
        let output = self.run(args, limit);
        assert!(
            output.status.success(),
            "docker {} failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

/// Runs `command` to completion, collecting its output, for at most `limit`: then it gets SIGTERM (so a
/// tool such as mmdebstrap can clean up after itself), and SIGKILL 30 s later.
pub fn bounded_output(command: &mut Command, limit: Duration) -> Result<Output, String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_bounded(&mut child, limit);
    let collect = |h: std::thread::JoinHandle<Vec<u8>>| h.join().unwrap_or_default();
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(format!(
            "still running after {limit:?}; stopped it. Its output:\n{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Waits up to `limit` for `child`; on timeout stops it (SIGTERM, then SIGKILL) and returns `None`.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    if let Some(status) = wait_for(child, limit) {
        return Some(status);
    }
    // SAFETY: kill has no pointer arguments; the pid is our own child's, not yet reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    if wait_for(child, Duration::from_secs(30)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    None
}

fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first executable called `name` in `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where the container tests keep what outlives one run (the base image): `target/container-cache`, or
/// `RINGWAY_CONTAINER_CACHE`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RINGWAY_CONTAINER_CACHE") {
        return PathBuf::from(dir);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("container-cache")
}
