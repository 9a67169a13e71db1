//! What the numbers were measured on: recorded with every result, because figures from another machine,
//! kernel or peer version are not comparable.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cpu;
use crate::procs::capture;

/// Kernel settings that change loopback TCP behaviour (the reference lists the same).
const SYSCTLS: [&str; 8] = [
    "net/ipv4/tcp_congestion_control",
    "net/ipv4/tcp_tw_reuse",
    "net/ipv4/ip_local_port_range",
    "net/ipv4/tcp_max_tw_buckets",
    "net/core/somaxconn",
    "fs/pipe-max-size",
    "kernel/io_uring_disabled",
    "fs/nr_open",
];

/// Debian packages whose versions are recorded.
const PACKAGES: [&str; 7] = [
    "haproxy",
    "nginx",
    "libnginx-mod-stream",
    "pen",
    "wrk",
    "nghttp2-client",
    "iperf3",
];

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub os: String,
    pub memory: String,
    pub fd_limit: String,
    pub memlock_limit_kib: String,
    pub sysctls: BTreeMap<String, String>,
    pub packages: BTreeMap<String, String>,
    pub haproxy: String,
    pub nginx: String,
    pub iperf3: String,
    pub wrk: String,
    pub h2load: String,
    pub rustc: String,
    pub ringway_commit: String,
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn rlimit(resource: libc::__rlimit_resource_t, unit: u64) -> String {
    // SAFETY: rlimit is plain data that getrlimit fills in.
    let mut l: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a local.
    unsafe { libc::getrlimit(resource, &mut l) };
    let show = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            (v / unit).to_string()
        }
    };
    format!("soft {} / hard {}", show(l.rlim_cur), show(l.rlim_max))
}

impl Machine {
    pub fn describe(repo: &std::path::Path) -> Self {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_default();
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|s| s.trim_matches('"').to_string())
            .unwrap_or_default();
        let memory = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal"))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        let sysctls = SYSCTLS
            .iter()
            .map(|s| {
                (
                    s.replace('/', "."),
                    read(&format!("/proc/sys/{s}")).replace('\t', " "),
                )
            })
            .collect();
        let packages = PACKAGES
            .iter()
            .map(|p| {
                let v = capture("dpkg-query", &["-W", "-f", "${Version}", p]);
                (
                    p.to_string(),
                    if v.contains("no packages") {
                        String::new()
                    } else {
                        v
                    },
                )
            })
            .collect();
        let repo = repo.display().to_string();
        let commit = capture("git", &["-C", &repo, "rev-parse", "--short=12", "HEAD"]);
        let dirty = !capture(
            "git",
            &["-C", &repo, "status", "--porcelain", "--untracked-files=no"],
        )
        .is_empty();
        Self {
            cpu_model,
            cores: cpu::cores(),
            kernel: read("/proc/sys/kernel/osrelease"),
            os,
            memory,
            fd_limit: rlimit(libc::RLIMIT_NOFILE, 1),
            memlock_limit_kib: rlimit(libc::RLIMIT_MEMLOCK, 1024),
            sysctls,
            packages,
            haproxy: first_line(&capture("haproxy", &["-v"])),
            nginx: first_line(&capture("nginx", &["-v"])),
            iperf3: first_line(&capture("iperf3", &["--version"])),
            wrk: first_line(&capture("wrk", &["-v"])),
            h2load: first_line(&capture("h2load", &["--version"])),
            rustc: capture("rustc", &["--version"]),
            ringway_commit: format!(
                "{commit}{}",
                if dirty {
                    " (with uncommitted changes)"
                } else {
                    ""
                }
            ),
        }
    }
}
