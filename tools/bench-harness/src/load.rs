//! The load clients, run exactly as in the reference (`shared/reference/benchmarking.md`, section 4), and
//! the parsing of what they print.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::procs::{ClientOutput, run_client};

/// A client gets this much longer than its own duration before it is killed.
const CLIENT_SLACK: Duration = Duration::from_secs(20);
/// Connections of the loaded HTTP tests (wrk and h2load -c50, one client thread).
pub const HTTP_CONNECTIONS: u32 = 50;
/// iperf3 streams of the multi-stream bulk test.
pub const BULK_STREAMS: u32 = 8;

/// What one client run measured.
#[derive(Debug, Clone, Default)]
pub struct Load {
    /// Gb/s for bulk, requests (= connections for `Connection: close`) per second for HTTP.
    pub rate: f64,
    /// Payload bytes delivered (bulk).
    pub bytes: f64,
    /// Requests completed (HTTP).
    pub requests: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Socket errors and non-2xx responses (HTTP).
    pub errors: u64,
    /// CPU seconds of the client process.
    pub client_cpu: f64,
    pub wall_s: f64,
}

/// `iperf3 -c 127.0.0.1 -p PORT -t SECS -P STREAMS -J`.
pub fn iperf3(
    program: &Path,
    port: u16,
    streams: u32,
    secs: u32,
    dir: &Path,
) -> anyhow::Result<Load> {
    let args = [
        "-c".to_string(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-t".into(),
        secs.to_string(),
        "-P".into(),
        streams.to_string(),
        "-J".into(),
    ];
    measure(program, &args, dir, secs, parse_iperf3)
}

/// `wrk -t1 -cCONNS -dSECSs --latency -H 'Host: BENCH_HOST' [-H 'Connection: close'] http://127.0.0.1:PORT/`.
pub fn wrk(
    program: &Path,
    port: u16,
    connections: u32,
    secs: u32,
    close: bool,
    dir: &Path,
) -> anyhow::Result<Load> {
    let mut args = vec![
        "-t1".to_string(),
        format!("-c{connections}"),
        format!("-d{secs}s"),
        "--latency".into(),
        "-H".into(),
        format!("Host: {}", crate::targets::BENCH_HOST),
    ];
    if close {
        args.extend(["-H".to_string(), "Connection: close".into()]);
    }
    args.push(format!("http://127.0.0.1:{port}/"));
    measure(program, &args, dir, secs, parse_wrk)
}

/// `h2load --h1 -t1 -cCONNS -m1 -DSECS -H ':authority: BENCH_HOST' http://127.0.0.1:PORT/`: keep-alive
/// HTTP/1.1, one request in flight per connection, the second load tool of the HTTP figure. The virtual
/// host goes in `:authority` (h2load's `Host`); a `-H 'Host: …'` would be sent as a second `Host` field,
/// which proxies rightly answer with 400. (Seen with h2load 1.52: when every answer is such a 400 and the
/// connections close, its duration mode never ends and spins at 100 % CPU; [`CLIENT_SLACK`] ends it.)
pub fn h2load(
    program: &Path,
    port: u16,
    connections: u32,
    secs: u32,
    dir: &Path,
) -> anyhow::Result<Load> {
    let args = [
        "--h1".to_string(),
        "-t1".into(),
        format!("-c{connections}"),
        "-m1".into(),
        format!("-D{secs}"),
        "-H".into(),
        format!(":authority: {}", crate::targets::BENCH_HOST),
        format!("http://127.0.0.1:{port}/"),
    ];
    measure(program, &args, dir, secs, parse_h2load)
}

/// Runs a load client for about `secs` seconds and reads its report with `parse`.
fn measure(
    program: &Path,
    args: &[String],
    dir: &Path,
    secs: u32,
    parse: fn(&str) -> anyhow::Result<Load>,
) -> anyhow::Result<Load> {
    let out = run_client(
        program,
        args,
        dir,
        Duration::from_secs(secs.into()) + CLIENT_SLACK,
    )?;
    let mut load = parse(&out.stdout)?;
    fill(&mut load, &out);
    Ok(load)
}

fn fill(load: &mut Load, out: &ClientOutput) {
    load.client_cpu = out.cpu.seconds;
    load.wall_s = out.wall.as_secs_f64();
}

/// Reads `end.sum_received` of `iperf3 -J`.
pub fn parse_iperf3(json: &str) -> anyhow::Result<Load> {
    let v: serde_json::Value = serde_json::from_str(json).context("iperf3 -J output")?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    let received = &v["end"]["sum_received"];
    let bps = received["bits_per_second"]
        .as_f64()
        .context("iperf3: no end.sum_received.bits_per_second")?;
    let bytes = received["bytes"].as_f64().unwrap_or(0.0);
    Ok(Load {
        rate: bps / 1e9,
        bytes,
        ..Load::default()
    })
}

/// Parses wrk's text report: `Requests/sec:`, `N requests in`, the latency distribution and the errors.
pub fn parse_wrk(text: &str) -> anyhow::Result<Load> {
    let mut load = Load::default();
    let mut rate = None;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", r] => rate = r.parse().ok(),
            [n, "requests", "in", ..] => load.requests = n.parse().unwrap_or(0.0),
            ["50%", v] => load.p50_us = duration_us(v),
            ["99%", v] => load.p99_us = duration_us(v),
            ["Socket", "errors:", rest @ ..] => {
                load.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => load.errors += n.parse().unwrap_or(0),
            _ => {}
        }
    }
    load.rate = rate.context("wrk: no Requests/sec line")?;
    Ok(load)
}

/// Parses h2load's report: `finished in 2.00s, 47063.00 req/s, …`, then
/// `requests: T total, S started, D done, OK succeeded, F failed, E errored, O timeout`. Errors are the
/// failed (a status of 400 or more, or the connection lost mid-request), errored and timed-out requests;
/// the requests still in flight when the duration ends are neither done nor errors. h2load prints no
/// latency percentiles (its `time for request` row has min, max, mean and sd only), so p50 and p99 stay
/// empty.
pub fn parse_h2load(text: &str) -> anyhow::Result<Load> {
    let mut load = Load::default();
    let mut rate = None;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        match words.as_slice() {
            ["finished", "in", _, r, "req/s", ..] => rate = r.parse().ok(),
            ["requests:", counts @ ..] => {
                for pair in counts.chunks(2) {
                    let [n, what] = pair else { continue };
                    let n: f64 = n.parse().unwrap_or(0.0);
                    match *what {
                        "done" => load.requests = n,
                        "failed" | "errored" | "timeout" => load.errors += n as u64,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    load.rate = rate.context("h2load: no `finished in …, N req/s` line")?;
    Ok(load)
}

/// wrk durations: `458.00us`, `1.83ms`, `1.01s`, `2.00m`.
fn duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    let factor = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:27002/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   500.00us  200.00us   5.00ms   90.00%
    Req/Sec   100.00k     5.00k  110.00k    70.00%
  Latency Distribution
     50%  458.00us
     75%  600.00us
     90%  700.00us
     99%    1.83ms
  1028000 requests in 10.00s, 250.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec: 102796.21
Transfer/sec:     25.00MB
";

    #[test]
    fn wrk_report_is_read() {
        let l = parse_wrk(WRK).unwrap();
        assert_eq!(l.rate, 102796.21);
        assert_eq!(l.requests, 1028000.0);
        assert_eq!(l.p50_us, Some(458.0));
        assert_eq!(l.p99_us, Some(1830.0));
        assert_eq!(l.errors, 6);
    }

    #[test]
    fn wrk_without_rate_is_an_error() {
        assert!(parse_wrk("unable to connect to 127.0.0.1:1").is_err());
    }

    /// h2load 1.52 (Debian bookworm's nghttp2-client), `--h1 -c10 -D2` against nginx.
    const H2LOAD: &str = "starting benchmark...
spawning thread #0: 10 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
Application protocol: http/1.1
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 2.00s, 47063.00 req/s, 6.73MB/s
requests: 94126 total, 94136 started, 94126 done, 94120 succeeded, 4 failed, 1 errored, 1 timeout
status codes: 94120 2xx, 0 3xx, 4 4xx, 0 5xx
traffic: 13.46MB (14118900) total, 9.70MB (10166256) headers (space savings 0.00%), 275.78KB (282396) data
                     min         max         mean         sd        +/- sd
time for request:       98us      1.67ms       212us        52us    87.35%
req/s           :    4703.83     4707.67     4705.80        1.38    70.00%
";

    #[test]
    fn h2load_report_is_read() {
        let l = parse_h2load(H2LOAD).unwrap();
        assert_eq!(l.rate, 47063.0);
        assert_eq!(l.requests, 94126.0);
        assert_eq!(l.errors, 6);
        assert_eq!((l.p50_us, l.p99_us), (None, None));
    }

    #[test]
    fn h2load_without_a_result_is_an_error() {
        assert!(
            parse_h2load("starting benchmark...\nStopped all clients for thread #0\n").is_err()
        );
    }

    #[test]
    fn iperf3_json_is_read() {
        let l = parse_iperf3(r#"{"end":{"sum_received":{"bytes":1000,"bits_per_second":12.5e9}}}"#)
            .unwrap();
        assert_eq!(l.rate, 12.5);
        assert_eq!(l.bytes, 1000.0);
        assert!(parse_iperf3(r#"{"error":"the server is busy"}"#).is_err());
    }
}
