//! Measures the time from a source change to the first connection routed to the new backend: an etcd write
//! (registrator layout, real etcd) and a Marathon event (through the double). Not a pass/fail test (no test
//! asserts wall-clock times); run it explicitly on a release build:
//!
//! ```sh
//! cargo build --release --bins
//! RINGWAY_BIN_DIR=target/release RINGWAY_TEST_LOG=info,ringway_controlplane=debug \
//!     cargo test --release -p ringway-tests --test discovery_latency -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Each of [`CHANGES`] changes moves the service's only instance to the other of two backends, then probes the
//! listener until a connection reaches the new one. The clock starts just before the write (or the event)
//! is sent, so etcd's own commit is included. The logs' timestamps split each change into stages: source
//! read (the controlplane has the new catalog), published (compiled, versioned, encoded), applied (every
//! dataplane worker has the new table), routed (the probe saw the new backend).

use std::io::Write;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringway_tests::discovery::{Stack, assert_routes};
use ringway_tests::doubles::marathon::{MarathonDouble, host_app};
use ringway_tests::net::{connect, free_port};
use ringway_tests::{Etcd, read_name};
use serde_json::json;

/// A backend that greets with its name and closes, accepting with a blocking `accept` (the shared
/// `NamedBackend` polls every 2 ms, which would be measured as Ringway's time).
struct QuickBackend {
    name: String,
    port: u16,
}

impl QuickBackend {
    fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let greeting = format!("{name}\n");
        thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = stream.write_all(greeting.as_bytes());
            }
        });
        Self {
            name: name.to_string(),
            port,
        }
    }

    fn port(&self) -> u16 {
        self.port
    }
}

/// Changes measured per source.
const CHANGES: usize = 100;
/// Pause between changes, so each is measured on its own rather than coalesced with the previous one.
const SETTLE: Duration = Duration::from_millis(30);
/// Longest one change may take before the measurement gives up.
const GIVE_UP: Duration = Duration::from_secs(10);
/// Pause between probes.
const PROBE_GAP: Duration = Duration::from_micros(200);

/// Seconds since the epoch, as the JSON logs' timestamps are compared.
fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `2026-11-22T00:05:45.623318Z` → seconds since the epoch.
fn parse_timestamp(ts: &str) -> Option<f64> {
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut t = time.split(':');
    let (h, min, s) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + s)
}

/// Timestamps of log events whose message is one of `messages`.
fn event_times(log: &str, messages: &[&str]) -> Vec<f64> {
    let mut times: Vec<f64> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| messages.contains(&m))
        })
        .filter_map(|v| parse_timestamp(v["timestamp"].as_str()?))
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// The first time in `times` at or after `after`, as milliseconds after `after`.
fn first_after(times: &[f64], after: f64) -> Option<f64> {
    times
        .iter()
        .find(|t| **t >= after)
        .map(|t| (t - after) * 1000.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return format!("{name}: no samples");
    }
    format!(
        "{name}: n={} median={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
        values.len(),
        percentile(&values, 0.5),
        percentile(&values, 0.9),
        percentile(&values, 0.99),
        values[values.len() - 1]
    )
}

/// Probes `port` until a connection reaches `name`.
fn wait_routed(port: u16, name: &str) -> bool {
    let deadline = Instant::now() + GIVE_UP;
    while Instant::now() < deadline {
        if let Ok(mut s) = connect(port) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            if read_name(&mut s).is_ok_and(|n| n == name) {
                return true;
            }
        }
        thread::sleep(PROBE_GAP);
    }
    false
}

/// Runs the changes: `change(i, backend)` makes the source point at `backend`; returns the start times (s)
/// and the routed latencies (ms).
fn measure(
    port: u16,
    backends: &[QuickBackend; 2],
    mut change: impl FnMut(&QuickBackend),
) -> (Vec<f64>, Vec<f64>) {
    let (mut starts, mut routed) = (Vec::new(), Vec::new());
    for i in 0..CHANGES {
        let target = &backends[(i + 1) % 2];
        thread::sleep(SETTLE);
        let (start_s, start) = (now_s(), Instant::now());
        change(target);
        assert!(
            wait_routed(port, &target.name),
            "change {i} never routed to {}",
            target.name
        );
        routed.push(start.elapsed().as_secs_f64() * 1000.0);
        starts.push(start_s);
    }
    (starts, routed)
}

fn report(source: &str, stack: &Stack, starts: &[f64], routed: Vec<f64>) {
    let cp = stack.log();
    let dp = stack.dataplane.proc.log_text();
    let read = event_times(&cp, &["source read", "source ok"]);
    let published = event_times(&cp, &["published snapshot"]);
    let applied = event_times(&dp, &["snapshot applied"]);
    let stage = |times: &[f64]| {
        starts
            .iter()
            .filter_map(|s| first_after(times, *s))
            .collect::<Vec<_>>()
    };
    println!(
        "== {source}: change → first connection routed to the new backend ({CHANGES} changes)"
    );
    println!("   {}", summary("source read  ", stage(&read)));
    println!("   {}", summary("published    ", stage(&published)));
    println!("   {}", summary("applied      ", stage(&applied)));
    println!("   {}", summary("routed (total)", routed));
}

#[test]
#[ignore = "a measurement: run explicitly on a release build (see the module docs)"]
fn latency_from_an_etcd_write_to_a_routed_connection() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let backends = [QuickBackend::start("a"), QuickBackend::start("b")];
    let port = free_port();
    let key = format!("/services/web/host1:web.0:{port}");
    etcd.v2_set(&key, &format!("127.0.0.1:{}", backends[0].port()));
    let registrator = format!("etcd://127.0.0.1:{}/services", etcd.client_port);
    let stack = Stack::start(dir.path(), &["--registrator", &registrator]);
    assert_routes(&stack, port, &["a"]);
    let (starts, routed) = measure(port, &backends, |target| {
        etcd.v2_set(&key, &format!("127.0.0.1:{}", target.port()));
    });
    report("etcd (registrator v2 write)", &stack, &starts, routed);
}

#[test]
#[ignore = "a measurement: run explicitly on a release build (see the module docs)"]
fn latency_from_a_marathon_event_to_a_routed_connection() {
    let backends = [QuickBackend::start("a"), QuickBackend::start("b")];
    let port = free_port();
    let leader = MarathonDouble::leader(json!([host_app(
        "/web",
        port,
        &[backends[0].port()],
        json!({})
    )]));
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), &["--marathon", &leader.url()]);
    assert_routes(&stack, port, &["a"]);
    while leader.attached() == 0 {
        thread::sleep(Duration::from_millis(10));
    }
    let (starts, routed) = measure(port, &backends, |target| {
        leader.set_apps(json!([host_app("/web", port, &[target.port()], json!({}))]));
        leader.emit(
            "status_update_event",
            json!({"appId": "/web", "taskStatus": "TASK_RUNNING"}),
        );
    });
    report("Marathon (status_update_event)", &stack, &starts, routed);
}

#[test]
fn timestamps_parse_to_epoch_seconds() {
    assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0.0));
    let t = parse_timestamp("2026-11-22T00:05:45.623318Z").unwrap();
    assert!((t - 1_795_305_945.623_318).abs() < 1e-6, "{t}");
    assert_eq!(first_after(&[1.0, 2.0, 3.0], 1.5), Some(500.0));
}
