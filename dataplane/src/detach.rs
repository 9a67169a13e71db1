//! `--detach`: start the real dataplane in the background and return once it serves.
//!
//! systemd's `ExecReload=` must finish, while the new dataplane must keep running: the reload command
//! starts the new process (same flags, without `--detach`) in its own process group, hands it one end of a
//! pipe (`RINGWAY_READY_FD`), and exits 0 when the child writes that it serves, or non-zero with the reason
//! when the child dies first. Under systemd the child then reports its own pid (`MAINPID=`), so the unit
//! follows it.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::notify::{READY_FD_ENV, READY_LINE};
use crate::sys;

/// How long the child may take to serve.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the dataplane again without `--detach` and waits until it serves.
pub fn run() -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the dataplane binary")?;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    // A blocking pipe: the waiter below sleeps in read() until the child writes or exits.
    let (read, write) = std::io::pipe().context("creating the readiness pipe")?;
    let write = std::os::fd::OwnedFd::from(write);
    sys::clear_cloexec(std::os::fd::AsFd::as_fd(&write)).context("passing the readiness pipe")?;
    let mut child = Command::new(exe)
        .args(&args)
        .env(READY_FD_ENV, write.as_raw_fd().to_string())
        .env_remove("RINGWAY_DETACH")
        .stdin(Stdio::null())
        // Not in our process group: a terminal's Ctrl-C for the reload command must not stop it.
        .process_group(0)
        .spawn()
        .context("starting the new dataplane")?;
    drop(write);
    let waiter = std::thread::spawn(move || {
        let mut reader = read;
        let mut got = Vec::new();
        let _ = reader.read_to_end(&mut got);
        got
    });
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        if waiter.is_finished() {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the new dataplane (pid {}) exited before serving: {}",
                child.id(),
                describe(status)
            );
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "the new dataplane (pid {}) did not serve within {:?}; it keeps running",
                child.id(),
                READY_TIMEOUT
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = waiter.join().unwrap_or_default();
    if got.starts_with(READY_LINE) {
        // One write: the successor logs to the same output, and eprintln! may split a line into
        // several writes that its lines could land between.
        let line = format!(
            "ringway-dataplane: new dataplane pid {} is serving\n",
            child.id()
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        return Ok(());
    }
    match exit_within(&mut child, Duration::from_secs(1)) {
        Some(status) => bail!(
            "the new dataplane (pid {}) exited before serving: {}",
            child.id(),
            describe(status)
        ),
        None => bail!(
            "the new dataplane (pid {}) closed its readiness pipe without serving",
            child.id()
        ),
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// The child's exit status if it ends within `limit` (it closed the pipe because it is exiting).
fn exit_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
