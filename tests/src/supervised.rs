//! `ringway-controlplane --spawn-dataplane` (the container entrypoint) as a child process.
//!
//! The supervisor and its dataplane children share one log file (children inherit stdout/stderr), both in
//! JSON; the supervisor's events carry the children's pids.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::net::wait_until;
use crate::procs::Proc;

/// A running supervisor.
pub struct Supervisor {
    pub proc: Proc,
    pub socket: PathBuf,
}

impl Supervisor {
    /// Starts `ringway-controlplane --spawn-dataplane` on `services`, with `supervisor_args` for it and,
    /// after `--`, test defaults for the dataplane (2 workers, a state file in `dir`, a free admin port,
    /// a 1 s drain grace) and `dataplane_args`; a flag given there replaces its default.
    pub fn start(
        dir: &Path,
        services: &Path,
        supervisor_args: &[&str],
        dataplane_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let socket = dir.join("control.sock");
        let state = dir.join("dataplane.snapshot").display().to_string();
        let mut args: Vec<String> = vec![
            "--services".into(),
            services.display().to_string(),
            "--socket".into(),
            socket.display().to_string(),
            "--log-format".into(),
            "json".into(),
            "--spawn-dataplane".into(),
        ];
        args.extend(supervisor_args.iter().map(|s| s.to_string()));
        args.push("--".into());
        let defaults = [
            ("--workers", "2"),
            ("--state-file", state.as_str()),
            ("--status-endpoint", "127.0.0.1:0"),
            ("--drain-grace", "1s"),
        ];
        for (flag, value) in defaults {
            if !dataplane_args.contains(&flag) {
                args.push(flag.into());
                args.push(value.into());
            }
        }
        args.extend(dataplane_args.iter().map(|s| s.to_string()));
        let log = (0..)
            .map(|i| dir.join(format!("supervisor-{i}.log")))
            .find(|p| !p.exists())
            .unwrap();
        let proc = Proc::spawn("ringway-controlplane", &args, log, envs);
        Self { proc, socket }
    }

    /// Pids of every dataplane started so far, in order.
    pub fn dataplane_pids(&self) -> Vec<i32> {
        self.proc
            .events("dataplane started")
            .iter()
            .filter_map(|e| e["fields"]["pid"].as_i64())
            .map(|pid| pid as i32)
            .collect()
    }

    /// Waits until `count` dataplanes have been started; returns the last one's pid.
    pub fn wait_dataplanes(&mut self, count: usize) -> i32 {
        let ok = wait_until(Duration::from_secs(20), || {
            self.dataplane_pids().len() >= count || self.proc.try_wait().is_some()
        });
        assert!(
            ok && self.dataplane_pids().len() >= count,
            "fewer than {count} dataplanes were started:\n{}",
            self.proc.log_text()
        );
        *self.dataplane_pids().last().unwrap()
    }

    /// Addresses of the admin endpoints started so far (one per dataplane that got that far), in order.
    pub fn admin_addresses(&self) -> Vec<SocketAddr> {
        self.proc
            .events("status endpoint listening")
            .iter()
            .filter_map(|e| e["fields"]["address"].as_str()?.parse().ok())
            .collect()
    }

    /// Messages of every event at level ERROR.
    pub fn errors(&self) -> Vec<String> {
        self.proc
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] == "ERROR")
            .filter_map(|v| v["fields"]["message"].as_str().map(str::to_string))
            .collect()
    }
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: "pid (comm) S ...".
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

impl Drop for Supervisor {
    /// Kills the supervisor, then any dataplane it left: they would otherwise drain for their grace
    /// period (they get SIGTERM when the supervisor dies) and hold their ports meanwhile.
    fn drop(&mut self) {
        self.proc.kill9();
        for pid in self.dataplane_pids() {
            let is_dataplane = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains("ringway-dataplane"))
                .unwrap_or(false);
            if is_dataplane && alive(pid) {
                // SAFETY: kill has no pointer arguments; the pid is a dataplane this test started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}
