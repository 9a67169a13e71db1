//! End to end: the harness in quick mode, against the debug Ringway binaries and the real peers, produces
//! every figure. It checks that each figure exists and is non-zero — never how fast anything is.
//!
//! The peers are Debian packages that `tools/test` installs (`tools/bench` too). If one is genuinely
//! missing, the test says so and skips, rather than fail on a machine set up without them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A quick run takes a few minutes; past this something hangs.
const RUN_LIMIT: Duration = Duration::from_secs(20 * 60);
const PEERS: [&str; 6] = ["haproxy", "nginx", "pen", "wrk", "h2load", "iperf3"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn found(name: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .any(|d| Path::new(d).join(name).is_file())
}

/// Where `tools/test` built the binaries (`cargo build --workspace --bins`).
fn ringway_bins() -> PathBuf {
    let dir = std::env::var_os("RINGWAY_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace().join("target"))
                .join("debug")
        });
    for bin in ["ringway-controlplane", "ringway-dataplane"] {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: build the binaries first (`cargo build --bins`, which tools/test does)",
            dir.join(bin).display()
        );
    }
    dir
}

fn positive(v: &serde_json::Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not produced ({v})"));
    assert!(x > 0.0, "{what}: {x} is not positive");
    x
}

#[test]
fn quick_run_produces_every_figure() {
    let missing: Vec<&str> = PEERS.iter().copied().filter(|p| !found(p)).collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED quick_run_produces_every_figure: {} not installed (tools/test and tools/bench install them)",
            missing.join(", ")
        );
        return;
    }
    let bins = ringway_bins();
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringway-bench"))
        .current_dir(workspace())
        .args(["--quick", "--bin-dir"])
        .arg(&bins)
        .arg("--out")
        .arg(out.path())
        .spawn()
        .expect("starting ringway-bench");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            // SIGTERM lets the harness stop its servers; it exits at its next check.
            // SAFETY: no pointers; our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
            panic!("ringway-bench --quick did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "ringway-bench --quick failed: {status}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("benchmarks.json")).unwrap())
            .unwrap();
    let targets: Vec<String> = json["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(targets.len(), 11, "every target measured: {targets:?}");
    for metric in json["metrics"].as_array().unwrap() {
        let key = metric["key"].as_str().unwrap();
        // The h2load cell measures the HTTP-routing targets only.
        let routing_only = key.starts_with("h2load");
        for target in &targets {
            if routing_only && !target.ends_with("-http") {
                continue;
            }
            let proxy_only =
                key.contains("cpu") || key.starts_with("idle") || key.contains("added");
            if proxy_only && target == "direct" {
                continue;
            }
            // The HTTP-routing targets are measured by the HTTP tests only.
            let not_http = key.starts_with("bulk") || key.starts_with("idle");
            if not_http && target.ends_with("-http") {
                continue;
            }
            let median = &metric["cells"][target]["median"];
            match key {
                // A difference of two latencies may be zero or negative on a fast proxy.
                "c1_added_us" => assert!(median.is_f64(), "{key}/{target} not produced"),
                // RSS grows in pages: a proxy whose per-connection state fits in memory it already holds
                // may grow by nothing over the quick run's 200 connections. Produced is what counts.
                "idle_kib_per_conn" => assert!(median.is_f64(), "{key}/{target} not produced"),
                _ => {
                    positive(median, &format!("{key}/{target}"));
                }
            }
        }
        if !routing_only {
            assert!(
                metric["ratios"]["ringway-poll-splice"]["haproxy-forced-splice"]["median"].is_f64(),
                "{key}: no ratio to the forced-splice HAProxy"
            );
        }
        if ["ka_", "close_", "c1_", "h2load_"]
            .iter()
            .any(|p| key.starts_with(p))
        {
            for peer in ["haproxy-http", "nginx-http"] {
                assert!(
                    metric["ratios"]["ringway-http"][peer]["median"].is_f64(),
                    "{key}: no ratio of HTTP routing to {peer}"
                );
            }
        }
    }
    let mut h2load_runs = 0;
    for record in json["records"].as_array().unwrap() {
        let target = record["target"].as_str().unwrap_or_default();
        if target.ends_with("-http") {
            // wrk's and h2load's runs alike: neither saw a non-2xx answer or a failed request.
            assert_eq!(
                record["errors"], 0,
                "{target}: every routed request is answered 2xx ({record})"
            );
        }
        if record["test"] == "h2load_ka" {
            assert!(target.ends_with("-http"), "h2load ran on {target}");
            positive(&record["requests"], "requests h2load completed");
            h2load_runs += 1;
        }
        if record["test"] == "idle_memory" {
            positive(&record["idle_connections"], "idle connections held");
        }
    }
    for (i, source) in ["file", "api"].into_iter().enumerate() {
        let reconfig = &json["reconfig"][i];
        assert_eq!(reconfig["source"], source);
        assert_eq!(
            reconfig["timeouts"], 0,
            "every reconfiguration through {source} became visible"
        );
        positive(&reconfig["median_ms"], "reconfiguration median");
        positive(&reconfig["p99_ms"], "reconfiguration p99");
    }
    let scale = &json["scale"];
    positive(&scale["median_apply_ms"], "snapshot apply time");
    positive(
        &scale["probe_connections"],
        "connections during the applies",
    );
    assert_eq!(
        scale["probe_errors"], 0,
        "connections failed while snapshots were applied"
    );
    assert_eq!(
        h2load_runs, 3,
        "h2load ran once on each HTTP-routing target"
    );
    let md = std::fs::read_to_string(out.path().join("benchmarks.md")).unwrap();
    assert!(md.contains("### Figures 1–5") && md.contains("### Figure 7"));
    let svg = std::fs::read_to_string(out.path().join("benchmarks.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("haproxy-forced-splice"));
}
