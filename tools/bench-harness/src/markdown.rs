//! `docs/benchmarks.md`: the fixed description (`doc_head.md`), then the tables of one run, written by the
//! harness so the document always shows the run its JSON and chart come from. A hand-written notes section
//! between the NOTES markers is carried over from the previous file, so analysis survives a re-run.

use std::fmt::Write as _;

use crate::report::Report;
use crate::summary::MetricSummary;
use crate::targets::{HEADLINE, PEERS};

const HEAD: &str = include_str!("doc_head.md");
pub const NOTES_BEGIN: &str =
    "<!-- BEGIN NOTES (hand-written; kept when tools/bench rewrites this file) -->";
pub const NOTES_END: &str = "<!-- END NOTES -->";
/// A ratio worse than this (in the unfavourable direction) is listed as "behind", per the reference's
/// decision rule (10 %).
const BEHIND_MARGIN: f64 = 0.10;

/// The notes section of an earlier file, markers included, or an empty one.
pub fn carried_notes(previous: &str) -> String {
    match (previous.find(NOTES_BEGIN), previous.find(NOTES_END)) {
        (Some(a), Some(b)) if b > a => previous[a..b + NOTES_END.len()].to_string(),
        _ => format!("{NOTES_BEGIN}\n_No notes yet._\n{NOTES_END}"),
    }
}

/// Formats a value in its unit's usual precision.
pub fn num(v: f64, unit: &str) -> String {
    match unit {
        "req/s" | "conn/s" => thousands(v),
        "µs" => format!("{v:.0}"),
        "Gb/s" => format!("{v:.2}"),
        "CPU-s/GiB" => format!("{v:.3}"),
        "CPU-µs" => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "–".to_string(), |v| num(v, unit))
}

fn ratio_text(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

pub fn render(report: &Report, notes: &str) -> String {
    let mut md = String::from(HEAD);
    let w = &mut md;
    let r = report;
    let m = &r.machine;
    let _ = writeln!(w, "\n## Results of the committed run\n");
    let _ = writeln!(
        w,
        "Run of {} ({} mode), {:.0} minutes; {} warm-up round(s) discarded, {} measured round(s); {} runs in all, {} discarded for foreign CPU load or a failed client, {} cell(s) left without a valid run. Ringway commit {}.\n",
        r.started,
        r.mode,
        r.duration_s / 60.0,
        r.plan.warmup_rounds,
        r.plan.rounds,
        r.discards.runs,
        r.discards.discarded,
        r.discards.not_measured,
        m.ringway_commit
    );
    if r.cut_short {
        let _ = writeln!(
            w,
            "**The time limit stopped this run before every round was run** (persistent foreign load); cells without a valid run show \"–\".\n"
        );
    }
    let _ = writeln!(w, "Layout: {}.\n", r.layout);
    let _ = writeln!(
        w,
        "![Ringway ({HEADLINE}) ÷ each peer, median of per-round ratios](benchmarks.svg)\n"
    );
    let _ = writeln!(w, "### Machine\n\n| | |\n|---|---|");
    let rows = [
        ("CPU", format!("{} × {}", m.cores, m.cpu_model)),
        ("kernel / OS", format!("{} / {}", m.kernel, m.os)),
        ("memory", m.memory.clone()),
        (
            "open files / memlock (KiB)",
            format!("{} / {}", m.fd_limit, m.memlock_limit_kib),
        ),
        ("HAProxy", m.haproxy.clone()),
        ("nginx", m.nginx.clone()),
        (
            "iperf3 / wrk / h2load",
            format!("{} / {} / {}", m.iperf3, m.wrk, m.h2load),
        ),
        ("rustc", m.rustc.clone()),
    ];
    for (k, v) in rows {
        let _ = writeln!(w, "| {k} | {v} |");
    }
    let packages: Vec<String> = m.packages.iter().map(|(p, v)| format!("{p} {v}")).collect();
    let _ = writeln!(w, "| Debian packages | {} |", packages.join(", "));
    let sysctls: Vec<String> = m
        .sysctls
        .iter()
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect();
    let _ = writeln!(w, "| sysctls | {} |", sysctls.join(" "));

    let names: Vec<&str> = r.targets.iter().map(String::as_str).collect();
    let _ = writeln!(w, "\n### Figures 1–5: medians over the measured rounds\n");
    let _ = writeln!(w, "| figure | metric | unit | {} |", names.join(" | "));
    let _ = writeln!(w, "|---|---|---|{}", "---|".repeat(names.len()));
    for s in &r.metrics {
        let cells: Vec<String> = names
            .iter()
            .map(|t| opt(s.cells.get(t).and_then(|c| c.median), s.unit))
            .collect();
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            s.figure,
            s.label,
            s.unit,
            cells.join(" | ")
        );
    }
    let _ = writeln!(
        w,
        "\nSpread of each cell, (max − min) / median, and the number of valid rounds n:\n"
    );
    let _ = writeln!(w, "| metric | {} |", names.join(" | "));
    let _ = writeln!(w, "|---|{}", "---|".repeat(names.len()));
    for s in &r.metrics {
        let cells: Vec<String> = names
            .iter()
            .map(|t| match s.cells.get(t) {
                Some(c) => match (c.min, c.max, c.median) {
                    (Some(a), Some(b), Some(med)) if med != 0.0 => {
                        format!("{:.0} % (n={})", (b - a) / med.abs() * 100.0, c.n)
                    }
                    _ => format!("n={}", c.n),
                },
                None => "–".into(),
            })
            .collect();
        let _ = writeln!(w, "| {} | {} |", s.key, cells.join(" | "));
    }

    for ours in r.targets.iter().filter(|t| t.starts_with("ringway")) {
        let _ = writeln!(
            w,
            "\n### Ratios of {ours} to each peer (median of per-round ratios)\n"
        );
        let _ = writeln!(
            w,
            "| metric | better is | {} |",
            PEERS.map(|p| format!("÷ {p}")).join(" | ")
        );
        let _ = writeln!(w, "|---|---|{}", "---|".repeat(PEERS.len()));
        for s in &r.metrics {
            let cells: Vec<String> = PEERS
                .iter()
                .map(|p| {
                    ratio_text(
                        s.ratios
                            .get(ours.as_str())
                            .and_then(|x| x.get(p))
                            .and_then(|x| x.median),
                    )
                })
                .collect();
            let better = if s.higher_is_better {
                "higher"
            } else {
                "lower"
            };
            let _ = writeln!(w, "| {} | {better} | {} |", s.label, cells.join(" | "));
        }
    }

    let _ = writeln!(
        w,
        "\n### Where {HEADLINE} is behind a peer by more than {:.0} %\n",
        BEHIND_MARGIN * 100.0
    );
    let behind = behind(&r.metrics);
    if behind.is_empty() {
        let _ = writeln!(w, "Nowhere.");
    }
    for line in behind {
        let _ = writeln!(w, "- {line}");
    }

    let _ = writeln!(
        w,
        "\n### Figure 6: reconfiguration latency (Ringway, {HEADLINE})\n"
    );
    let _ = writeln!(
        w,
        "| source | changes | median ms | p99 ms | max ms | timeouts | probe errors / probes |\n|---|---|---|---|---|---|---|"
    );
    for c in &r.reconfig {
        let _ = writeln!(
            w,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {} / {} |",
            c.source,
            c.changes,
            c.median_ms,
            c.p99_ms,
            c.max_ms,
            c.timeouts,
            c.probe_errors,
            c.probes
        );
    }
    if let Some(s) = &r.scale {
        let _ = writeln!(
            w,
            "\n### Figure 7: routing-state scale (Ringway, {HEADLINE}, {} workers)\n",
            s.workers
        );
        let _ = writeln!(
            w,
            "{} services (clusters), {} backends, {} listeners, pushed over the wire protocol; {} probe connections during the applies, **{} failed**. Median apply (all workers switched) {:.1} ms, median send → ACK {:.1} ms.\n",
            s.services,
            s.backends,
            s.listeners,
            s.probe_connections,
            s.probe_errors,
            s.median_apply_ms,
            s.median_ack_ms
        );
        let _ = writeln!(
            w,
            "| version | frame | build ms | apply ms (build + all workers switched) | send → ACK ms |\n|---|---|---|---|---|"
        );
        for a in &s.applies {
            let _ = writeln!(
                w,
                "| {} | {:.1} MiB | {:.1} | {:.1} | {:.1} |",
                a.version,
                a.frame_bytes as f64 / 1048576.0,
                a.build_ms,
                a.apply_ms,
                a.ack_ms
            );
        }
    }
    let _ = writeln!(w, "\n## Notes on the committed run\n\n{notes}");
    let _ = writeln!(w, "\n## Appendix: the configuration files of this run\n");
    let _ = writeln!(
        w,
        "Written by `tools/bench-harness/src/fleet.rs` into the run directory; `RUN` is that directory.\n"
    );
    for (name, text) in &r.configs {
        let _ = writeln!(w, "#### {name}\n\n```\n{}\n```\n", text.trim_end());
    }
    md
}

/// Headline ratios that are worse than [`BEHIND_MARGIN`], as sentences.
pub fn behind(metrics: &[MetricSummary]) -> Vec<String> {
    let mut out = Vec::new();
    for s in metrics {
        let Some(ratios) = s.ratios.get(HEADLINE) else {
            continue;
        };
        for (peer, r) in ratios {
            let Some(v) = r.median else { continue };
            if peer == &"direct" {
                continue;
            }
            let worse = if s.higher_is_better {
                v < 1.0 - BEHIND_MARGIN
            } else {
                v > 1.0 + BEHIND_MARGIN
            };
            if worse {
                out.push(format!(
                    "{} vs {peer}: ratio {v:.2} ({} is better; n={})",
                    s.label,
                    if s.higher_is_better {
                        "higher"
                    } else {
                        "lower"
                    },
                    r.n
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_notes() {
        assert_eq!(num(102796.2, "req/s"), "102,796");
        assert_eq!(num(999.0, "conn/s"), "999");
        assert_eq!(num(12.345, "Gb/s"), "12.35");
        let kept = carried_notes(&format!("x\n{NOTES_BEGIN}\nmine\n{NOTES_END}\ny"));
        assert!(kept.contains("mine") && kept.ends_with(NOTES_END));
        assert!(carried_notes("nothing").contains("No notes yet"));
    }
}
