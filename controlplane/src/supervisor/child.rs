//! The dataplane child process: starting it, signalling it, and saying how it ended.

use std::io;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::startup::readiness::NOTIFY_SOCKET;
use crate::startup::supervisor_args::DataplaneCommand;

/// A running dataplane.
#[derive(Debug)]
pub struct Dataplane {
    child: Child,
    pid: u32,
    started: Instant,
}

impl Dataplane {
    /// Starts `command` with the supervisor's environment plus `command.env`, stdout and stderr shared
    /// with the supervisor (one log stream for the container), stdin closed.
    ///
    /// `NOTIFY_SOCKET` is removed: under systemd the supervisor is the main process and reports readiness
    /// itself; a child's `READY=1` (or a takeover dataplane's `MAINPID=`) would only confuse systemd.
    ///
    /// The child gets SIGTERM (and so drains) if the supervisor dies without stopping it, even by
    /// SIGKILL: otherwise it would keep serving unsupervised, and a restarted supervisor would start a
    /// second dataplane beside it on the same `SO_REUSEPORT` ports. `PR_SET_PDEATHSIG` follows the
    /// *thread* that forked, so call this from a thread that lives as long as the process (the supervisor
    /// runs on the main thread, in `block_on`). The kernel clears it when the executed file has file
    /// capabilities (the container image's dataplane has `cap_net_bind_service`); there the supervisor
    /// is PID 1, and its death ends every process of the container anyway. `kill_on_drop` covers the
    /// supervisor's own early returns and panics.
    pub fn spawn(command: &DataplaneCommand) -> io::Result<Self> {
        let mut process = Command::new(&command.program);
        process
            .args(&command.args)
            .envs(command.env.iter().map(|(k, v)| (*k, v)))
            .env_remove(NOTIFY_SOCKET)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        die_with_parent(&mut process);
        let child = process.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the dataplane exited before it had a pid"))?;
        Ok(Self {
            child,
            pid,
            started: Instant::now(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How long it has been running.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for it to exit (cancel-safe: may be used in `select!`).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Asks it to drain and stop. Does nothing once it has been reaped, so a recycled pid is never hit.
    pub fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            send_signal(pid, libc::SIGTERM);
        }
    }

    /// Kills it and waits until it is gone.
    pub async fn kill(&mut self) -> io::Result<ExitStatus> {
        self.child.kill().await?;
        self.child.wait().await
    }
}

#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only makes two system calls, both
    // async-signal-safe, touching no memory shared with the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then nobody would send the signal.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::other("the supervisor exited while starting it"));
            }
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill has no pointer arguments; `pid` is our own child, not yet reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// "exit code 1", "killed by signal 9 (SIGKILL)", "killed by signal 11 (SIGSEGV), core dumped".
pub fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(signal) => {
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            match signal_name(signal) {
                Some(name) => format!("killed by signal {signal} ({name}){core}"),
                None => format!("killed by signal {signal}{core}"),
            }
        }
        None => format!("{status}"),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return None,
    })
}

/// Whether a dataplane asked to stop stopped as asked: it drained and exited 0, or our SIGTERM reached
/// it before it had installed its handler (it had not started serving, so nothing was cut).
pub fn stopped_cleanly(status: ExitStatus) -> bool {
    status.success() || status.signal() == Some(libc::SIGTERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_well() {
        assert_eq!(describe(ExitStatus::from_raw(1 << 8)), "exit code 1");
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGKILL)),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGSEGV | 0x80)),
            "killed by signal 11 (SIGSEGV), core dumped"
        );
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGRTMIN() + 2)),
            format!("killed by signal {}", libc::SIGRTMIN() + 2)
        );
    }

    #[test]
    fn clean_stops() {
        assert!(stopped_cleanly(ExitStatus::from_raw(0)));
        assert!(stopped_cleanly(ExitStatus::from_raw(libc::SIGTERM)));
        assert!(!stopped_cleanly(ExitStatus::from_raw(1 << 8)));
        assert!(!stopped_cleanly(ExitStatus::from_raw(libc::SIGKILL)));
    }

    #[tokio::test]
    async fn spawns_with_the_extra_environment_and_without_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let command = DataplaneCommand {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                format!(
                    "echo \"$RINGWAY_SOCKET ${{NOTIFY_SOCKET:-unset}}\" > {}",
                    out.display()
                ),
            ],
            env: vec![("RINGWAY_SOCKET", "/x/control.sock".into())],
        };
        let mut child = Dataplane::spawn(&command).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "/x/control.sock unset"
        );
    }

    #[tokio::test]
    async fn terminate_then_wait() {
        let command = DataplaneCommand {
            program: "/bin/sleep".into(),
            args: vec!["30".into()],
            env: vec![],
        };
        let mut child = Dataplane::spawn(&command).unwrap();
        child.terminate();
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        // Reaped: terminating again must not signal anything.
        child.terminate();
    }
}
