//! CPU and memory accounting from `/proc`: the whole box, process trees, the harness itself; and the idle
//! gate that keeps runs from starting while someone else's work is on the machine.
//!
//! A process's `/proc/PID/stat` utime+stime covers all its threads, io_uring io-wq workers included
//! (they are threads of the process), so a proxy's CPU is the sum over the processes of its tree.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A run may start only when the box was at most this busy (in cores) over one sample.
pub const IDLE_BUSY_MAX_CORES: f64 = 0.15;
/// One idle-gate sample.
pub const IDLE_SAMPLE: Duration = Duration::from_secs(1);
/// How long the gate waits for an idle box before running anyway (the foreign filter then judges the run).
pub const IDLE_GATE_MAX_WAIT: Duration = Duration::from_secs(90);

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no pointer arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Busy CPU seconds of the whole box since boot (all cores; idle and iowait excluded).
pub fn box_busy_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let fields: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let total: f64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0);
    (total - idle) / ticks_per_second()
}

/// Number of online CPUs.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Fields of `/proc/PID/stat` after the command name (which may contain spaces and parentheses).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Parent of every process on the box.
fn parents() -> HashMap<i32, i32> {
    let mut map = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            // Field 4 of stat is the ppid; index 1 after the command name.
            if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1)?.parse().ok()) {
                map.insert(pid, ppid);
            }
        }
    }
    map
}

/// `roots` and all their descendants.
pub fn trees(roots: &[i32]) -> Vec<i32> {
    let parents = parents();
    let mut out: Vec<i32> = roots.to_vec();
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(
            parents
                .iter()
                .filter(|&(_, &ppid)| ppid == p)
                .map(|(&c, _)| c),
        );
        i += 1;
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// utime + stime of each process (all its threads), in seconds; processes that are gone count 0.
pub fn cpu_seconds(pids: &[i32]) -> f64 {
    let hz = ticks_per_second();
    pids.iter()
        .filter_map(|&pid| {
            let f = stat_fields(pid)?;
            // utime and stime are fields 14 and 15 of stat: indices 11 and 12 after the command name.
            let u: f64 = f.get(11)?.parse().ok()?;
            let s: f64 = f.get(12)?.parse().ok()?;
            Some((u + s) / hz)
        })
        .sum()
}

/// Resident set size of each process, summed, in bytes.
pub fn rss_bytes(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|&pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .sum()
}

/// CPU seconds the harness process itself used so far (all its threads).
pub fn self_seconds() -> f64 {
    // SAFETY: rusage is plain data that getrusage fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a local.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Result of waiting for an idle box.
#[derive(Debug, Clone, Copy)]
pub struct Gate {
    /// Busy cores in the last sample.
    pub busy_cores: f64,
    pub waited: Duration,
    pub idle: bool,
}

impl Gate {
    /// For runs that are not counted (warm-up): no wait.
    pub fn skipped() -> Self {
        Self {
            busy_cores: 0.0,
            waited: Duration::ZERO,
            idle: false,
        }
    }
}

/// Samples the box until one [`IDLE_SAMPLE`] shows at most [`IDLE_BUSY_MAX_CORES`] busy, for up to `max_wait`.
pub fn idle_gate(max_wait: Duration) -> Gate {
    let started = Instant::now();
    loop {
        let before = box_busy_seconds();
        let t = Instant::now();
        std::thread::sleep(IDLE_SAMPLE);
        let busy_cores = (box_busy_seconds() - before) / t.elapsed().as_secs_f64();
        let waited = started.elapsed();
        if busy_cores <= IDLE_BUSY_MAX_CORES || waited >= max_wait {
            return Gate {
                busy_cores,
                waited,
                idle: busy_cores <= IDLE_BUSY_MAX_CORES,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_tree_has_cpu_and_memory() {
        let me = std::process::id() as i32;
        let tree = trees(&[me]);
        assert!(tree.contains(&me));
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(cpu_seconds(&[me]) > 0.0);
        assert!(rss_bytes(&[me]) > 0);
        assert!(box_busy_seconds() > 0.0);
    }

    #[test]
    fn a_gone_process_counts_nothing() {
        assert_eq!(cpu_seconds(&[i32::MAX]), 0.0);
        assert_eq!(rss_bytes(&[i32::MAX]), 0);
    }
}
