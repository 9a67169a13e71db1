//! From run records to figures: per-cell medians over the valid rounds, and per-round ratios of each
//! Ringway mode to each peer, then their medians (never a ratio of medians, so drift between rounds
//! cancels out).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::rounds::Record;
use crate::stats::{median, range};
use crate::targets::{PEERS, Target};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// One reported figure.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub key: &'static str,
    /// The figure number.
    pub figure: u8,
    pub label: &'static str,
    pub unit: &'static str,
    pub test: &'static str,
    pub higher_is_better: bool,
    /// Only proxies have it (CPU of the proxy, memory per proxied connection).
    pub proxy_only: bool,
    /// Reported as the difference to `direct` in the same round (added latency).
    pub minus_direct: bool,
    pub value: fn(&Record) -> Option<f64>,
}

fn rate(r: &Record) -> Option<f64> {
    (r.rate > 0.0).then_some(r.rate)
}
fn cpu_per_gib(r: &Record) -> Option<f64> {
    (r.bytes > 0.0).then(|| r.proxy_cpu_s / (r.bytes / GIB))
}
fn cpu_us_per_request(r: &Record) -> Option<f64> {
    (r.requests > 0.0).then(|| r.proxy_cpu_s * 1e6 / r.requests)
}
fn p50(r: &Record) -> Option<f64> {
    r.p50_us
}
fn p99(r: &Record) -> Option<f64> {
    r.p99_us
}
fn idle_kib(r: &Record) -> Option<f64> {
    r.idle_kib_per_connection
}
fn idle_rss(r: &Record) -> Option<f64> {
    r.idle_rss_after_mib
}

const fn metric(
    key: &'static str,
    figure: u8,
    label: &'static str,
    unit: &'static str,
    test: &'static str,
    higher_is_better: bool,
    value: fn(&Record) -> Option<f64>,
) -> Metric {
    Metric {
        key,
        figure,
        label,
        unit,
        test,
        higher_is_better,
        proxy_only: false,
        minus_direct: false,
        value,
    }
}

const fn proxy_only(m: Metric) -> Metric {
    Metric {
        proxy_only: true,
        ..m
    }
}

/// Every figure, in report order.
pub const METRICS: [Metric; 18] = [
    metric(
        "bulk1_gbps",
        1,
        "bulk, 1 stream",
        "Gb/s",
        "bulk1",
        true,
        rate,
    ),
    metric(
        "bulk8_gbps",
        1,
        "bulk, 8 streams",
        "Gb/s",
        "bulk8",
        true,
        rate,
    ),
    proxy_only(metric(
        "bulk1_cpu_s_per_gib",
        2,
        "proxy CPU per GiB, 1 stream",
        "CPU-s/GiB",
        "bulk1",
        false,
        cpu_per_gib,
    )),
    proxy_only(metric(
        "bulk8_cpu_s_per_gib",
        2,
        "proxy CPU per GiB, 8 streams",
        "CPU-s/GiB",
        "bulk8",
        false,
        cpu_per_gib,
    )),
    metric(
        "ka_rps",
        3,
        "keep-alive requests (c=50)",
        "req/s",
        "http_ka",
        true,
        rate,
    ),
    metric(
        "ka_p50_us",
        3,
        "keep-alive latency p50",
        "µs",
        "http_ka",
        false,
        p50,
    ),
    metric(
        "ka_p99_us",
        3,
        "keep-alive latency p99",
        "µs",
        "http_ka",
        false,
        p99,
    ),
    proxy_only(metric(
        "ka_cpu_us_per_req",
        3,
        "proxy CPU per keep-alive request",
        "CPU-µs",
        "http_ka",
        false,
        cpu_us_per_request,
    )),
    metric(
        "h2load_ka_rps",
        3,
        "keep-alive requests, h2load --h1 (c=50)",
        "req/s",
        "h2load_ka",
        true,
        rate,
    ),
    proxy_only(metric(
        "h2load_ka_cpu_us_per_req",
        3,
        "proxy CPU per keep-alive request, h2load",
        "CPU-µs",
        "h2load_ka",
        false,
        cpu_us_per_request,
    )),
    metric(
        "close_cps",
        4,
        "new connections (Connection: close, c=50)",
        "conn/s",
        "http_close",
        true,
        rate,
    ),
    metric(
        "close_p50_us",
        4,
        "new-connection latency p50",
        "µs",
        "http_close",
        false,
        p50,
    ),
    metric(
        "close_p99_us",
        4,
        "new-connection latency p99",
        "µs",
        "http_close",
        false,
        p99,
    ),
    proxy_only(metric(
        "close_cpu_us_per_conn",
        4,
        "proxy CPU per new connection",
        "CPU-µs",
        "http_close",
        false,
        cpu_us_per_request,
    )),
    metric(
        "c1_p50_us",
        3,
        "one connection (c=1) latency p50",
        "µs",
        "http_c1",
        false,
        p50,
    ),
    Metric {
        minus_direct: true,
        proxy_only: true,
        ..metric(
            "c1_added_us",
            3,
            "added latency, one connection (p50 − direct p50)",
            "µs",
            "http_c1",
            false,
            p50,
        )
    },
    proxy_only(metric(
        "idle_kib_per_conn",
        5,
        "memory per idle proxied connection",
        "KiB",
        "idle_memory",
        false,
        idle_kib,
    )),
    proxy_only(metric(
        "idle_rss_mib",
        5,
        "proxy RSS holding the idle connections",
        "MiB",
        "idle_memory",
        false,
        idle_rss,
    )),
];

/// A metric's values for one target.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Cell {
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub n: usize,
    /// Round → value.
    pub per_round: BTreeMap<usize, f64>,
}

/// Median of per-round ratios of one Ringway target to one peer.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Ratio {
    pub median: Option<f64>,
    pub n: usize,
    pub per_round: BTreeMap<usize, f64>,
}

/// One metric over every target.
#[derive(Debug, Clone, Serialize)]
pub struct MetricSummary {
    pub key: &'static str,
    pub figure: u8,
    pub label: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    /// Target → cell.
    pub cells: BTreeMap<&'static str, Cell>,
    /// Ringway target → peer → ratio.
    pub ratios: BTreeMap<&'static str, BTreeMap<&'static str, Ratio>>,
}

/// Values of `m` per target and round, from valid measured (non-warm-up) records.
fn values(m: &Metric, records: &[Record]) -> BTreeMap<&'static str, BTreeMap<usize, f64>> {
    let mut out: BTreeMap<&'static str, BTreeMap<usize, f64>> = BTreeMap::new();
    let valid = || {
        records
            .iter()
            .filter(|r| r.valid && !r.warmup && r.test == m.test)
    };
    for r in valid() {
        if m.proxy_only && r.target == "direct" {
            continue;
        }
        let Some(mut v) = (m.value)(r) else { continue };
        if m.minus_direct {
            let direct = valid().find(|d| d.target == "direct" && d.round == r.round);
            let Some(d) = direct.and_then(|d| (m.value)(d)) else {
                continue;
            };
            v -= d;
        }
        out.entry(r.target).or_default().insert(r.round, v);
    }
    out
}

/// Summaries of every metric.
pub fn summarize(records: &[Record], targets: &[Target]) -> Vec<MetricSummary> {
    METRICS
        .iter()
        .map(|m| {
            let by_target = values(m, records);
            let cells = by_target
                .iter()
                .map(|(&t, rounds)| {
                    let v: Vec<f64> = rounds.values().copied().collect();
                    let (min, max) = range(&v).unzip();
                    let cell = Cell {
                        median: median(&v),
                        min,
                        max,
                        n: v.len(),
                        per_round: rounds.clone(),
                    };
                    (t, cell)
                })
                .collect();
            let mut ratios = BTreeMap::new();
            for ours in targets.iter().filter(|t| t.is_ringway()) {
                let mut by_peer = BTreeMap::new();
                for peer in PEERS {
                    if m.minus_direct && peer == "direct" {
                        continue;
                    }
                    let (Some(a), Some(b)) = (by_target.get(ours.name), by_target.get(peer)) else {
                        continue;
                    };
                    let per_round: BTreeMap<usize, f64> = a
                        .iter()
                        .filter_map(|(round, x)| {
                            let y = b.get(round)?;
                            (*y != 0.0).then(|| (*round, x / y))
                        })
                        .collect();
                    let v: Vec<f64> = per_round.values().copied().collect();
                    by_peer.insert(
                        peer,
                        Ratio {
                            median: median(&v),
                            n: v.len(),
                            per_round,
                        },
                    );
                }
                ratios.insert(ours.name, by_peer);
            }
            MetricSummary {
                key: m.key,
                figure: m.figure,
                label: m.label,
                unit: m.unit,
                higher_is_better: m.higher_is_better,
                cells,
                ratios,
            }
        })
        .collect()
}

/// How many runs were made and discarded, per test and target.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Discards {
    /// Runs of the measured rounds (warm-up runs are not counted here).
    pub runs: usize,
    pub warmup_runs: usize,
    pub discarded: usize,
    /// Cells (round, test, target) that got no valid run after every attempt.
    pub not_measured: usize,
    /// "test/target" → discarded runs.
    pub by_cell: BTreeMap<String, usize>,
}

pub fn discards(records: &[Record]) -> Discards {
    let mut d = Discards::default();
    let mut cells: BTreeMap<(usize, &str, &str), bool> = BTreeMap::new();
    d.runs = records.iter().filter(|r| !r.warmup).count();
    d.warmup_runs = records.len() - d.runs;
    for r in records.iter().filter(|r| !r.warmup) {
        let valid = cells.entry((r.round, r.test, r.target)).or_insert(false);
        *valid |= r.valid;
        if !r.valid {
            d.discarded += 1;
            *d.by_cell
                .entry(format!("{}/{}", r.test, r.target))
                .or_default() += 1;
        }
    }
    d.not_measured = cells.values().filter(|v| !**v).count();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets;

    fn rec(round: usize, target: &'static str, rate: f64) -> Record {
        Record {
            round,
            test: "bulk1",
            target,
            valid: true,
            rate,
            bytes: GIB,
            proxy_cpu_s: 0.5,
            ..Record::default()
        }
    }

    #[test]
    fn ratios_are_per_round_then_median() {
        let records = vec![
            rec(0, "ringway-poll-splice", 20.0),
            rec(0, "haproxy", 10.0),
            rec(1, "ringway-poll-splice", 30.0),
            rec(1, "haproxy", 10.0),
            rec(2, "ringway-poll-splice", 12.0),
            rec(2, "haproxy", 12.0),
            Record {
                valid: false,
                ..rec(3, "haproxy", 1.0)
            },
        ];
        let s = summarize(&records, &targets::all());
        let bulk1 = s.iter().find(|m| m.key == "bulk1_gbps").unwrap();
        assert_eq!(bulk1.cells["haproxy"].n, 3);
        assert_eq!(bulk1.cells["ringway-poll-splice"].median, Some(20.0));
        let r = &bulk1.ratios["ringway-poll-splice"]["haproxy"];
        assert_eq!((r.n, r.median), (3, Some(2.0)));
        let cpu = s.iter().find(|m| m.key == "bulk1_cpu_s_per_gib").unwrap();
        assert_eq!(cpu.cells["haproxy"].median, Some(0.5));
        let d = discards(&records);
        assert_eq!((d.runs, d.discarded, d.not_measured), (7, 1, 1));
    }
}
