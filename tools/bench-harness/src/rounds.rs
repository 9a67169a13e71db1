//! The measurement protocol of `shared/reference/benchmarking.md`, section 8: rounds in which every test
//! runs every target once in a fixed order (A B C A B C …), an idle gate before each run, and runs during
//! which CPU was used by anything but the client, the harness's servers and the harness itself
//! ("foreign" load) discarded and repeated.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cpu;
use crate::fleet::Fleet;
use crate::idle::{self, HoldBackend};
use crate::load::{self, BULK_STREAMS, HTTP_CONNECTIONS};
use crate::procs::check_interrupted;
use crate::targets::Target;

const MIB: f64 = 1024.0 * 1024.0;

/// A run whose foreign CPU averaged more than this many cores is discarded.
pub const FOREIGN_MAX_CORES: f64 = 0.10;

/// The tests of one round, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// Figure 1 and 2: one iperf3 stream.
    Bulk1,
    /// Figure 1 and 2: eight iperf3 streams.
    Bulk8,
    /// Figure 3: keep-alive requests, wrk -t1 -c50.
    HttpKa,
    /// Figure 3, HTTP-routing targets: keep-alive requests again with the second load tool, h2load --h1
    /// -t1 -c50, so wrk and h2load cross-check each other.
    H2loadKa,
    /// Figure 4: one request per connection (`Connection: close`), wrk -t1 -c50.
    HttpClose,
    /// One connection, wrk -t1 -c1: the latency a proxy adds when nothing is queued.
    HttpC1,
    /// Figure 5: memory per idle proxied connection (once per run, on fresh processes).
    IdleMemory,
}

impl Test {
    /// Round order. Idle memory comes first, so the proxies have served nothing yet when it is measured;
    /// it needs no idle box and is never discarded, so a run cut short by its time limit still has it.
    pub const ALL: [Test; 7] = [
        Test::IdleMemory,
        Test::Bulk1,
        Test::Bulk8,
        Test::HttpKa,
        Test::H2loadKa,
        Test::HttpClose,
        Test::HttpC1,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Test::Bulk1 => "bulk1",
            Test::Bulk8 => "bulk8",
            Test::HttpKa => "http_ka",
            Test::H2loadKa => "h2load_ka",
            Test::HttpClose => "http_close",
            Test::HttpC1 => "http_c1",
            Test::IdleMemory => "idle_memory",
        }
    }

    /// Idle memory is measured once, first thing in the first round, on freshly started proxies: allocators
    /// keep freed memory, so a second measurement in the same process only shows growth beyond the first
    /// one's high-water mark (measured here: HAProxy 3.2 KiB per connection the first time, 0.05 after).
    fn applies_to(self, target: &Target, round: usize) -> bool {
        match self {
            Test::IdleMemory => target.is_proxy() && !target.routes_http() && round == 0,
            Test::Bulk1 | Test::Bulk8 => !target.routes_http(),
            Test::H2loadKa => target.routes_http(),
            _ => true,
        }
    }
}

/// Durations and counts of one run of the harness.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub warmup_rounds: usize,
    pub rounds: usize,
    pub bulk_secs: u32,
    pub http_secs: u32,
    pub c1_secs: u32,
    pub idle_connections: usize,
    pub max_attempts: usize,
    /// False in quick mode: a contaminated run is kept (flagged) rather than repeated, because quick mode
    /// proves that everything works, not how fast it is.
    pub discard_foreign: bool,
    pub gate_max_wait_s: u64,
    /// No run starts after this many seconds; the cells not reached are reported as not measured.
    pub time_limit_s: u64,
}

/// One run of one test on one target.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Record {
    pub round: usize,
    pub warmup: bool,
    pub test: &'static str,
    pub target: &'static str,
    pub attempt: usize,
    /// Counted in the results: no foreign load (or quick mode), and the client succeeded.
    pub valid: bool,
    /// Why not valid, or what to know about it.
    pub note: Option<String>,
    /// Gb/s (bulk) or requests/s (HTTP).
    pub rate: f64,
    pub bytes: f64,
    pub requests: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub errors: u64,
    pub wall_s: f64,
    pub client_cpu_s: f64,
    /// CPU of the target's processes (all threads).
    pub proxy_cpu_s: f64,
    pub backend_cpu_s: f64,
    pub harness_cpu_s: f64,
    /// CPU of every server the harness runs (all targets and backends).
    pub servers_cpu_s: f64,
    pub box_cpu_s: f64,
    pub foreign_cores: f64,
    pub gate_busy_cores: f64,
    pub gate_waited_s: f64,
    /// The idle gate saw an idle box (false: it gave up waiting and the run went ahead).
    pub gate_idle: bool,
    pub idle_connections: usize,
    pub idle_kib_per_connection: Option<f64>,
    /// RSS of all the proxy's processes without and with the idle connections, in MiB: a proxy that
    /// preallocates its connection table (pen) shows its cost here rather than per connection.
    pub idle_rss_before_mib: Option<f64>,
    pub idle_rss_after_mib: Option<f64>,
}

/// Everything the rounds need.
pub struct Bench<'a> {
    pub plan: &'a Plan,
    pub fleet: &'a mut Fleet,
    pub hold: &'a HoldBackend,
    pub targets: &'a [Target],
    pub work: &'a Path,
    pub iperf3: &'a Path,
    pub wrk: &'a Path,
    pub h2load: &'a Path,
}

impl Bench<'_> {
    /// Runs every round; returns every record, discarded ones included, and whether the time limit cut
    /// the run short.
    pub fn run(
        &mut self,
        progress: &mut dyn FnMut(&Record),
    ) -> anyhow::Result<(Vec<Record>, bool)> {
        let mut records = Vec::new();
        let total = self.plan.warmup_rounds + self.plan.rounds;
        let deadline = Instant::now() + Duration::from_secs(self.plan.time_limit_s);
        for round in 0..total {
            for test in Test::ALL {
                for target in self.targets.iter().filter(|t| test.applies_to(t, round)) {
                    // The once-only idle-memory figure counts even in the warm-up round.
                    let warmup = round < self.plan.warmup_rounds && test != Test::IdleMemory;
                    // A warm-up run only warms (caches, allocators, TIME_WAIT state): it is never counted,
                    // so it is neither gated nor repeated.
                    let attempts = if warmup { 1 } else { self.plan.max_attempts };
                    for attempt in 1..=attempts {
                        check_interrupted()?;
                        if Instant::now() > deadline {
                            return Ok((records, true));
                        }
                        let mut r = self.cell(test, target, warmup)?;
                        r.round = round;
                        r.warmup = warmup;
                        r.attempt = attempt;
                        progress(&r);
                        let done = r.valid || warmup;
                        records.push(r);
                        if done {
                            break;
                        }
                    }
                    self.fleet.check_alive()?;
                }
            }
        }
        Ok((records, false))
    }

    fn cell(&mut self, test: Test, target: &Target, warmup: bool) -> anyhow::Result<Record> {
        let mut r = Record {
            test: test.name(),
            target: target.name,
            ..Record::default()
        };
        let proxy = cpu::trees(&self.fleet.target_roots(target.name));
        if test == Test::IdleMemory {
            match idle::measure(self.hold, target.idle, &proxy, self.plan.idle_connections) {
                Ok(m) => {
                    r.valid = true;
                    r.idle_connections = m.connections;
                    r.idle_kib_per_connection = Some(m.kib_per_connection());
                    r.idle_rss_before_mib = Some(m.rss_before as f64 / MIB);
                    r.idle_rss_after_mib = Some(m.rss_after as f64 / MIB);
                }
                Err(e) => r.note = Some(format!("idle connections failed: {e:#}")),
            }
            return Ok(r);
        }
        let gate = if warmup {
            cpu::Gate::skipped()
        } else {
            cpu::idle_gate(Duration::from_secs(self.plan.gate_max_wait_s))
        };
        r.gate_busy_cores = gate.busy_cores;
        r.gate_waited_s = gate.waited.as_secs_f64();
        r.gate_idle = gate.idle;
        let backend = cpu::trees(&self.fleet.backend_roots());
        let servers = cpu::trees(&self.fleet.all_roots());
        let before = Counters::read(&proxy, &backend, &servers);
        let result = self.load(test, target);
        let after = Counters::read(&proxy, &backend, &servers);
        let load = match result {
            Ok(load) => load,
            Err(e) => {
                check_interrupted()?;
                r.note = Some(format!("client failed: {e:#}"));
                return Ok(r);
            }
        };
        r.rate = load.rate;
        r.bytes = load.bytes;
        r.requests = load.requests;
        r.p50_us = load.p50_us;
        r.p99_us = load.p99_us;
        r.errors = load.errors;
        r.wall_s = load.wall_s;
        r.client_cpu_s = load.client_cpu;
        r.proxy_cpu_s = after.proxy - before.proxy;
        r.backend_cpu_s = after.backend - before.backend;
        r.servers_cpu_s = after.servers - before.servers;
        r.harness_cpu_s = after.harness - before.harness;
        r.box_cpu_s = after.boxed - before.boxed;
        let known = r.client_cpu_s + r.servers_cpu_s + r.harness_cpu_s;
        r.foreign_cores = (r.box_cpu_s - known) / r.wall_s.max(1e-3);
        let clean = r.foreign_cores <= FOREIGN_MAX_CORES;
        r.valid = clean || !self.plan.discard_foreign;
        if !clean {
            r.note = Some(format!(
                "foreign load {:.2} cores > {FOREIGN_MAX_CORES}{}",
                r.foreign_cores,
                if r.valid { " (kept: quick mode)" } else { "" }
            ));
        }
        Ok(r)
    }

    fn load(&self, test: Test, t: &Target) -> anyhow::Result<load::Load> {
        let p = self.plan;
        match test {
            Test::Bulk1 => load::iperf3(self.iperf3, t.bulk, 1, p.bulk_secs, self.work),
            Test::Bulk8 => load::iperf3(self.iperf3, t.bulk, BULK_STREAMS, p.bulk_secs, self.work),
            Test::HttpKa => load::wrk(
                self.wrk,
                t.http,
                HTTP_CONNECTIONS,
                p.http_secs,
                false,
                self.work,
            ),
            Test::H2loadKa => load::h2load(
                self.h2load,
                t.http,
                HTTP_CONNECTIONS,
                p.http_secs,
                self.work,
            ),
            Test::HttpClose => load::wrk(
                self.wrk,
                t.http,
                HTTP_CONNECTIONS,
                p.http_secs,
                true,
                self.work,
            ),
            Test::HttpC1 => load::wrk(self.wrk, t.http, 1, p.c1_secs, false, self.work),
            Test::IdleMemory => unreachable!("measured without a load client"),
        }
    }
}

/// CPU seconds at one instant.
struct Counters {
    proxy: f64,
    backend: f64,
    servers: f64,
    harness: f64,
    boxed: f64,
}

impl Counters {
    fn read(proxy: &[i32], backend: &[i32], servers: &[i32]) -> Self {
        Self {
            proxy: cpu::cpu_seconds(proxy),
            backend: cpu::cpu_seconds(backend),
            servers: cpu::cpu_seconds(servers),
            harness: cpu::self_seconds(),
            boxed: cpu::box_busy_seconds(),
        }
    }
}
