//! Child processes the harness owns: servers (peers, backends, Ringway) that live for the whole run, and
//! load clients (wrk, iperf3) that run once and are reaped with their resource usage.
//!
//! Every child gets its own process group, so stopping it also stops what it forked (nginx workers), and
//! `PR_SET_PDEATHSIG = SIGTERM`, so it is told to stop even if the harness itself is killed. Every wait is
//! bounded; a child that ignores SIGTERM is killed.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a server may take to exit after SIGTERM before its group is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often bounded waits look at a child again.
const WAIT_TICK: Duration = Duration::from_millis(5);

/// Set by SIGINT/SIGTERM: the run stops at the next check and cleans up through the normal drops.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Release);
}

/// Makes SIGINT and SIGTERM stop the run cleanly (every server stopped, the run directory removed)
/// instead of killing the harness mid-figure.
pub fn handle_interrupts() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Acquire)
}

/// Fails with "interrupted" once SIGINT or SIGTERM arrived.
pub fn check_interrupted() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// CPU time of a reaped child (user + system), in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChildCpu {
    pub seconds: f64,
}

/// A long-running server, stopped (with its whole process group) when dropped.
#[derive(Debug)]
pub struct Server {
    pub name: String,
    pid: i32,
    reaped: bool,
    pub log: PathBuf,
}

/// Builds the command for a child: own process group, SIGTERM when the harness dies, no stdin, output to
/// `log`.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, so children are spawned from the main
/// thread only.
fn command(program: &Path, args: &[String], log: &Path) -> anyhow::Result<Command> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(command)
}

impl Server {
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: PathBuf,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut command = command(program, args, &log)?;
        for (k, v) in envs {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Self {
            name: name.to_string(),
            pid: child.id() as i32,
            reaped: false,
            log,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// False once the process has exited (it is reaped then).
    pub fn alive(&mut self) -> bool {
        if self.reaped {
            return false;
        }
        if reap(self.pid, false).is_some() {
            self.reaped = true;
        }
        !self.reaped
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// SIGTERM to the group, a bounded wait, then SIGKILL to the group.
    pub fn stop(&mut self) {
        if self.reaped {
            // The leader is gone, but forked workers may remain in its group.
            signal_group(self.pid, libc::SIGKILL);
            return;
        }
        signal_group(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if reap(self.pid, false).is_some() {
                self.reaped = true;
                break;
            }
            std::thread::sleep(WAIT_TICK);
        }
        signal_group(self.pid, libc::SIGKILL);
        if !self.reaped {
            reap(self.pid, true);
            self.reaped = true;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: no pointers; the group is one the harness created for its own child.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

/// `wait4` on one child; `Some(cpu)` once it has exited. `block` waits for it.
fn reap(pid: i32, block: bool) -> Option<(i32, ChildCpu)> {
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if block { 0 } else { libc::WNOHANG };
    // SAFETY: valid pointers to locals; pid is our own child.
    let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
    if r != pid {
        return None;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some((
        status,
        ChildCpu {
            seconds: tv(usage.ru_utime) + tv(usage.ru_stime),
        },
    ))
}

/// What a load client produced.
#[derive(Debug)]
pub struct ClientOutput {
    pub stdout: String,
    pub cpu: ChildCpu,
    pub wall: Duration,
}

/// Runs a load client to completion (killed after `limit`), capturing its output and its CPU time.
pub fn run_client(
    program: &Path,
    args: &[String],
    dir: &Path,
    limit: Duration,
) -> anyhow::Result<ClientOutput> {
    let log = dir.join("client.out");
    let mut command = command(program, args, &log)?;
    command.stderr(File::create(dir.join("client.err"))?);
    let started = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let pid = child.id() as i32;
    let deadline = started + limit;
    let (status, cpu) = loop {
        if let Some(done) = reap(pid, false) {
            break done;
        }
        if interrupted() {
            signal_group(pid, libc::SIGKILL);
            reap(pid, true);
            bail!("interrupted");
        }
        if Instant::now() >= deadline {
            signal_group(pid, libc::SIGKILL);
            reap(pid, true);
            bail!(
                "{} {} did not finish within {limit:?}",
                program.display(),
                args.join(" ")
            );
        }
        std::thread::sleep(WAIT_TICK);
    };
    let wall = started.elapsed();
    let stdout = std::fs::read_to_string(&log).unwrap_or_default();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let stderr = std::fs::read_to_string(dir.join("client.err")).unwrap_or_default();
        bail!(
            "{} {} failed (status {status}): {}{}",
            program.display(),
            args.join(" "),
            stderr.trim(),
            stdout.chars().take(2000).collect::<String>()
        );
    }
    Ok(ClientOutput { stdout, cpu, wall })
}

/// Runs a short command (version queries) and returns its stdout and stderr, or "" when it fails.
pub fn capture(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.trim().to_string()
        })
        .unwrap_or_default()
}

/// Finds `name` on PATH (and in the sbin directories, where Debian puts haproxy and nginx).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}
