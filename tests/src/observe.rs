//! What a process costs, read from `/proc`: resident memory and open descriptors; and this test
//! process's own descriptor limit.

use std::time::Duration;

/// A process's resident memory and open descriptors at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// `VmRSS`, in KiB.
    pub rss_kib: u64,
    /// `RssAnon` (heap, stacks), in KiB: what connections cost, without the binary's pages.
    pub anon_kib: u64,
    /// Entries in `/proc/PID/fd`.
    pub fds: usize,
    /// CPU time used so far (user and system), in milliseconds.
    pub cpu_ms: u64,
}

/// The usage of process `pid`; panics if it is gone.
pub fn usage(pid: i32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("process {pid}: {e}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("process {pid}: {e}"))
        .count();
    Usage {
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        fds,
        cpu_ms: cpu_ms(&format!("/proc/{pid}/stat")),
    }
}

/// User plus system CPU time of a process from its `stat` file, in milliseconds.
pub fn cpu_ms(stat_path: &str) -> u64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name; in clock ticks.
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let time = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (time(11) + time(12)) * 1000 / ticks
}

/// Waits up to `limit` for `pid`'s usage to satisfy `settled`; returns the last reading.
pub fn settle(pid: i32, limit: Duration, mut settled: impl FnMut(&Usage) -> bool) -> Usage {
    let mut last = usage(pid);
    crate::net::wait_until(limit, || {
        last = usage(pid);
        settled(&last)
    });
    last
}

/// This process's hard RLIMIT_NOFILE.
pub fn hard_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into memory we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_max
}

/// Raises this process's RLIMIT_NOFILE to at least `wanted` (soft and hard; above the hard limit only with
/// CAP_SYS_RESOURCE, as root has) and returns the soft limit now in force.
pub fn raise_fd_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into memory we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if limit.rlim_cur >= wanted {
        return limit.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max.max(wanted),
    };
    // SAFETY: setrlimit reads one rlimit from memory we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let within = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &within) };
    }
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_cur
}
