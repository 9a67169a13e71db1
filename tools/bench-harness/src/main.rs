//! `ringway-bench`: measures Ringway against HAProxy, nginx stream, pen and a direct connection on this
//! machine, in one interleaved run, and writes `benchmarks.{md,json,svg}`. `tools/bench` builds Ringway and
//! runs it; `docs/benchmarks.md` explains the method.

mod chart;
mod cpu;
mod fleet;
mod idle;
mod load;
mod machine;
mod markdown;
mod procs;
mod reconfig;
mod report;
mod rounds;
mod routing_conf;
mod scale;
mod stats;
mod summary;
mod targets;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

use fleet::{Fleet, Paths};
use rounds::{Bench, Plan, Record};

/// Only one harness may measure at a time: two at once measure each other.
const LOCK_FILE: &str = "/tmp/ringway-bench.lock";

#[derive(Debug, Parser)]
#[command(
    about = "Benchmark Ringway against HAProxy, nginx, pen and a direct connection, interleaved"
)]
struct Cli {
    /// A few seconds per figure: proves the harness works end to end; numbers are not comparable.
    #[arg(long)]
    quick: bool,
    /// Measured rounds (after the warm-up round). Default 5, or 1 with --quick.
    #[arg(long)]
    rounds: Option<usize>,
    /// Discarded warm-up rounds. Default 1, or 0 with --quick.
    #[arg(long)]
    warmup_rounds: Option<usize>,
    /// Directory of the ringway-controlplane and ringway-dataplane binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where benchmarks.md, benchmarks.json and benchmarks.svg are written.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
    /// Only these targets (comma-separated names; see docs/benchmarks.md). Default: all.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Keep the run directory (configs, logs) instead of removing it.
    #[arg(long)]
    keep_run_dir: bool,
    /// Stop starting new runs after this many minutes (default 180, or 20 with --quick) and report what was
    /// measured: under persistent foreign load every run would otherwise wait and be repeated for hours.
    #[arg(long)]
    time_limit_min: Option<u64>,
    /// How long to wait for another harness run to finish before giving up.
    #[arg(long, default_value_t = 3600)]
    lock_wait_s: u64,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("ringway-bench: {e:#}");
        std::process::exit(1);
    }
}

/// Takes the harness lock, waiting up to `wait`.
fn lock(wait: Duration) -> anyhow::Result<File> {
    let file = File::create(LOCK_FILE).with_context(|| format!("creating {LOCK_FILE}"))?;
    let deadline = Instant::now() + wait;
    let mut told = false;
    loop {
        // SAFETY: a valid open descriptor; flock has no pointer arguments.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        if Instant::now() >= deadline {
            bail!("another ringway-bench holds {LOCK_FILE} (waited {wait:?}); one run at a time");
        }
        if !told {
            eprintln!("ringway-bench: another run holds {LOCK_FILE}; waiting for it");
            told = true;
        }
        procs::check_interrupted()?;
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The run directory, removed on drop unless kept.
struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("ringway-bench: run directory kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn plan(cli: &Cli) -> Plan {
    if cli.quick {
        Plan {
            warmup_rounds: cli.warmup_rounds.unwrap_or(0),
            rounds: cli.rounds.unwrap_or(1),
            bulk_secs: 2,
            http_secs: 2,
            c1_secs: 1,
            idle_connections: 200,
            max_attempts: 1,
            discard_foreign: false,
            gate_max_wait_s: 1,
            time_limit_s: cli.time_limit_min.unwrap_or(20) * 60,
        }
    } else {
        Plan {
            warmup_rounds: cli.warmup_rounds.unwrap_or(1),
            rounds: cli.rounds.unwrap_or(5),
            bulk_secs: 5,
            http_secs: 10,
            c1_secs: 5,
            idle_connections: 2500,
            max_attempts: 4,
            discard_foreign: true,
            gate_max_wait_s: cpu::IDLE_GATE_MAX_WAIT.as_secs(),
            time_limit_s: cli.time_limit_min.unwrap_or(180) * 60,
        }
    }
}

/// Changes measured for figure 6, and (services, applies) for figure 7.
fn figure_sizes(quick: bool) -> (usize, usize, usize) {
    if quick {
        (10, 2_000, 1)
    } else {
        (100, 10_000, 5)
    }
}

fn progress(r: &Record) {
    let what = if let Some(kib) = r.idle_kib_per_connection {
        format!("{kib:.2} KiB/conn over {} conns", r.idle_connections)
    } else if r.test.starts_with("bulk") {
        format!("{:.2} Gb/s", r.rate)
    } else if let Some(p99) = r.p99_us {
        format!("{:.0} req/s p99 {p99:.0} us", r.rate)
    } else {
        // h2load reports no percentiles.
        format!("{:.0} req/s", r.rate)
    };
    let wall = r.wall_s.max(1e-3);
    eprintln!(
        "  round {}{} {:<11} {:<22} {:<32} proxy {:.2} client {:.2} box {:.2} foreign {:+.2} cores{}{}",
        r.round,
        if r.warmup { " (warm-up)" } else { "" },
        r.test,
        r.target,
        what,
        r.proxy_cpu_s / wall,
        r.client_cpu_s / wall,
        r.box_cpu_s / wall,
        r.foreign_cores,
        if r.valid { "" } else { "  DISCARDED" },
        r.note
            .as_ref()
            .map(|n| format!("  ({n})"))
            .unwrap_or_default(),
    );
}

fn run(cli: Cli) -> anyhow::Result<()> {
    procs::handle_interrupts();
    let started_at = Instant::now();
    let started = report::now_utc();
    let _lock = lock(Duration::from_secs(cli.lock_wait_s))?;
    let plan = plan(&cli);
    let repo = std::env::current_dir()?;
    let bin_dir = std::fs::canonicalize(&cli.bin_dir)
        .with_context(|| format!("no Ringway binaries in {}", cli.bin_dir.display()))?;
    for bin in ["ringway-controlplane", "ringway-dataplane"] {
        if !bin_dir.join(bin).is_file() {
            bail!(
                "{} is missing (cargo build --release --bins)",
                bin_dir.join(bin).display()
            );
        }
    }
    let iperf3 = fleet::tool("iperf3")?;
    let wrk = fleet::tool("wrk")?;
    let h2load = fleet::tool("h2load")?;
    for peer in ["haproxy", "nginx", "pen"] {
        fleet::tool(peer)?;
    }
    if !Path::new("/usr/lib/nginx/modules/ngx_stream_module.so").exists() {
        bail!("nginx's stream module is missing (Debian package libnginx-mod-stream)");
    }
    let all = targets::all();
    let selected: Vec<targets::Target> = if cli.targets.is_empty() {
        all
    } else {
        for name in &cli.targets {
            if !all.iter().any(|t| t.name == name) {
                bail!(
                    "unknown target {name}; known: {}",
                    all.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
                );
            }
        }
        all.into_iter()
            .filter(|t| cli.targets.iter().any(|n| n == t.name))
            .collect()
    };
    let ports: Vec<u16> =
        (targets::BASE_PORT..targets::SCALE_LISTENERS_FROM + scale::LISTENERS as u16).collect();
    fleet::check_ports_free(&ports)?;

    let run_dir = RunDir {
        path: std::env::temp_dir().join(format!("ringway-bench.{}", std::process::id())),
        keep: cli.keep_run_dir,
    };
    let _ = std::fs::remove_dir_all(&run_dir.path);
    std::fs::create_dir_all(&run_dir.path)?;
    let paths = Paths {
        bin_dir,
        run: run_dir.path.clone(),
    };
    let machine = machine::Machine::describe(&repo);
    eprintln!(
        "ringway-bench: {} mode, {} warm-up + {} rounds, {} targets; run directory {}",
        if cli.quick { "quick" } else { "full" },
        plan.warmup_rounds,
        plan.rounds,
        selected.len(),
        paths.run.display()
    );

    let (records, cut_short) = {
        let hold = idle::HoldBackend::start()?;
        let mut fleet = Fleet::start(&paths, &selected)?;
        let work = paths.run.join("client");
        std::fs::create_dir_all(&work)?;
        let mut bench = Bench {
            plan: &plan,
            fleet: &mut fleet,
            hold: &hold,
            targets: &selected,
            work: &work,
            iperf3: &iperf3,
            wrk: &wrk,
            h2load: &h2load,
        };
        bench.run(&mut progress)?
    };
    if cut_short {
        eprintln!(
            "ringway-bench: time limit reached; the cells not reached are reported as not measured"
        );
    }
    let (changes, services, applies) = figure_sizes(cli.quick);
    procs::check_interrupted()?;
    let mut reconfigs = Vec::new();
    for (through, run) in [
        ("the services file", reconfig::run_file as fn(&_, _) -> _),
        ("the HTTP API", reconfig::run_api),
    ] {
        procs::check_interrupted()?;
        eprintln!("ringway-bench: figure 6, {changes} reconfigurations through {through}");
        let r = run(&paths, changes)?;
        eprintln!(
            "  median {:.1} ms, p99 {:.1} ms, {} timeouts",
            r.median_ms, r.p99_ms, r.timeouts
        );
        reconfigs.push(r);
    }
    procs::check_interrupted()?;
    eprintln!(
        "ringway-bench: figure 7, {services} services / {} backends, {applies} applies",
        services * 10
    );
    let scale = scale::run(&paths, services, applies)?;
    eprintln!(
        "  median apply {:.1} ms, {} errors in {} probe connections",
        scale.median_apply_ms, scale.probe_errors, scale.probe_connections
    );

    let report = report::Report {
        generated_by: "tools/bench (ringway-bench)",
        mode: if cli.quick { "quick" } else { "full" },
        started,
        duration_s: started_at.elapsed().as_secs_f64(),
        cut_short,
        configs: report::configs(&paths.conf(), &paths.run),
        metrics: summary::summarize(&records, &selected),
        discards: summary::discards(&records),
        plan,
        machine,
        layout: report::LAYOUT,
        targets: selected.iter().map(|t| t.name.to_string()).collect(),
        reconfig: reconfigs,
        scale: Some(scale),
        records,
    };
    report.write(&cli.out)?;
    eprintln!(
        "ringway-bench: wrote {}/benchmarks.{{md,json,svg}} ({} runs, {} discarded)",
        cli.out.display(),
        report.discards.runs,
        report.discards.discarded
    );
    Ok(())
}
