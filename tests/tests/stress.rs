//! The fault suite, part two: resources. A dataplane with 512 descriptors facing 2,000 clients, 200,000
//! short connections with a 10-minute idle timeout, and 10,000 idle connections (or as many as the hard
//! descriptor limit allows: each needs two descriptors in the dataplane and two here). Each case checks
//! that every stream completes byte-exact and that memory and descriptors come back to where they were.
//!
//! The cases run one at a time (they would otherwise share the two cores and measure each other), and
//! each prints what it measured (`--nocapture`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringway_tests::http::{close_count, stats, workers_sum};
use ringway_tests::load::{self, AsyncEcho};
use ringway_tests::net::{free_port, local};
use ringway_tests::observe::{self, Usage};
use ringway_tests::{Harness, Service, wait_until};

/// One load case at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serialised() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const KIB: u64 = 1024;

/// Waits until the dataplane holds no connection; returns its usage then.
fn idle_usage(h: &mut Harness) -> Usage {
    let admin = h.dataplane.admin_address();
    assert!(
        wait_until(Duration::from_secs(30), || workers_sum(
            &stats(admin),
            "connections"
        ) == 0),
        "connections never drained: {}",
        stats(admin)["workers"]
    );
    // Closing sockets and returning pipes finishes within a loop turn of the workers.
    std::thread::sleep(Duration::from_millis(300));
    observe::usage(h.dataplane.proc.pid())
}

/// Descriptors the dataplane keeps on purpose: idle pooled pipes (two each).
fn pooled_pipe_fds(h: &mut Harness) -> usize {
    2 * workers_sum(&stats(h.dataplane.admin_address()), "pipes_idle") as usize
}

#[test]
fn with_512_descriptors_2000_clients_wait_their_turn_and_every_stream_completes_byte_exact() {
    let _one = serialised();
    const CLIENTS: usize = 2000;
    const BYTES: usize = 64 * 1024;
    let echo = AsyncEcho::start();
    let port = free_port();
    let mut h = Harness::start_limited(
        &[Service::new("echo", port).backend(echo.port())],
        &[],
        &[],
        Some(512),
    );
    let runtime = load::runtime(1);
    // Warm-up: pools, the connection slab and the allocator reach their working size.
    let warm = load::run_exchanges(
        &runtime,
        local(port),
        400,
        400,
        BYTES,
        Duration::from_secs(120),
    );
    assert_eq!(warm.completed, 400, "warm-up: {:?}", warm.failures);
    let before = idle_usage(&mut h);
    let before_pooled = pooled_pipe_fds(&mut h);

    let outcome = load::run_exchanges(
        &runtime,
        local(port),
        CLIENTS,
        CLIENTS,
        BYTES,
        Duration::from_secs(150),
    );
    assert_eq!(
        (outcome.completed, outcome.failed),
        (CLIENTS, 0),
        "every client is served byte-exact once earlier ones leave: {:?}",
        outcome.failures
    );
    let after = idle_usage(&mut h);
    let after_pooled = pooled_pipe_fds(&mut h);
    eprintln!(
        "fd exhaustion: {CLIENTS} clients x {BYTES} B echoed under nofile 512 in {:.1} s; dataplane \
         before {before:?} ({before_pooled} fds of pooled pipes), after {after:?} ({after_pooled})",
        outcome.elapsed.as_secs_f64()
    );
    assert_eq!(
        after.fds - after_pooled,
        before.fds - before_pooled,
        "descriptors besides pooled pipes return to their baseline"
    );
    assert!(
        after.rss_kib <= before.rss_kib + 2 * KIB,
        "RSS grew from {} to {} KiB",
        before.rss_kib,
        after.rss_kib
    );

    let admin = h.dataplane.admin_address();
    let stats = stats(admin);
    let total = (CLIENTS + 400) as u64;
    assert_eq!(
        close_count(&stats, "echo", "client_eof"),
        total,
        "{}",
        stats["services"]
    );
    assert_eq!(close_count(&stats, "echo", "fd_limit"), 0);
    // Logged once per state change: "reached" and "below again" alternate, and there are far fewer of
    // them than connections (the count only leaves the cap's neighbourhood when the queue runs dry, or
    // when a loaded machine lets it sag below three quarters before the workers refill it).
    const REACHED: &str = "connection cap reached: accepting paused";
    const BELOW: &str = "below the connection cap again: accepting";
    let changes: Vec<String> = h
        .dataplane
        .proc
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["fields"]["message"].as_str().map(str::to_string))
        .filter(|m| m == REACHED || m == BELOW)
        .collect();
    assert!(
        changes.first().is_some_and(|m| m == REACHED),
        "the cap was reached"
    );
    assert!(
        changes.windows(2).all(|w| w[0] != w[1]),
        "a state logged twice in a row: {changes:?}"
    );
    assert!(
        changes.len() <= CLIENTS / 50,
        "{} state changes logged for {CLIENTS} clients",
        changes.len()
    );
    for message in ["accept failed; retrying shortly", "out of file descriptors"] {
        assert!(
            h.dataplane.proc.events(message).is_empty(),
            "no accept ran out of descriptors (the cap keeps a reserve): {message}"
        );
    }
}

#[test]
fn churn_of_200000_short_connections_with_a_10_minute_idle_timeout_leaves_memory_where_it_was() {
    let _one = serialised();
    const CONNECTIONS: usize = 200_000;
    // Bounded in time as well as count: on a loaded machine fewer connections complete, and each closed
    // connection that kept 16 bytes (one timer entry) would still show as 1.5 MiB and more.
    const AT_LEAST: usize = 100_000;
    const TIME: Duration = Duration::from_secs(100);
    const WARM_UP: usize = 10_000;
    const CONCURRENCY: usize = 32;
    let echo = AsyncEcho::start();
    let port = free_port();
    let mut h = Harness::start(
        &[Service::new("churn", port)
            .backend(echo.port())
            .extra("timeout_idle_ms = 600000")],
        &[],
        &[],
    );
    let runtime = load::runtime(1);
    let warm = load::run_exchanges(&runtime, local(port), WARM_UP, CONCURRENCY, 16, TIME);
    assert_eq!(warm.completed, WARM_UP, "warm-up: {:?}", warm.failures);
    let before = idle_usage(&mut h);
    let test_cpu_before = observe::cpu_ms("/proc/self/stat");

    let outcome = load::run_exchanges(&runtime, local(port), CONNECTIONS, CONCURRENCY, 16, TIME);
    let done = outcome.completed;
    let rate = done as f64 / outcome.elapsed.as_secs_f64();
    assert_eq!(outcome.failed, 0, "{:?}", outcome.failures);
    assert!(
        done >= AT_LEAST,
        "only {done} connections in {TIME:?} ({rate:.0}/s): too few to see a per-connection leak"
    );
    let after = idle_usage(&mut h);
    let cpu_us = |ms: u64| ms as f64 * 1000.0 / done as f64;
    eprintln!(
        "churn: {done} connections in {:.1} s ({rate:.0}/s) after {WARM_UP} to warm up; dataplane \
         CPU {:.1} us per connection (this test process: {:.1} us); RSS {} -> {} KiB (anonymous {} -> {} \
         KiB), fds {} -> {}",
        outcome.elapsed.as_secs_f64(),
        cpu_us(after.cpu_ms - before.cpu_ms),
        cpu_us(observe::cpu_ms("/proc/self/stat") - test_cpu_before),
        before.rss_kib,
        after.rss_kib,
        before.anon_kib,
        after.anon_kib,
        before.fds,
        after.fds
    );
    assert!(
        after.rss_kib <= before.rss_kib + KIB,
        "RSS grew by {} KiB over {done} closed connections: something is kept per connection",
        after.rss_kib as i64 - before.rss_kib as i64
    );
    let stats = stats(h.dataplane.admin_address());
    assert_eq!(
        close_count(&stats, "churn", "client_eof"),
        (done + WARM_UP) as u64,
        "{}",
        stats["services"]
    );
}

/// Descriptors of a process besides its connections (test harness, runtime, dataplane reserve).
const SLACK_FDS: u64 = 1_000;

#[test]
fn up_to_10000_idle_connections_through_two_workers_leave_the_dataplane_responsive() {
    let _one = serialised();
    const WANTED: usize = 10_000;
    // A proxied connection is two descriptors in the dataplane (client and backend socket), and here
    // two in this process too (the client, and the echo backend's end). The dataplane inherits our
    // limit, which cannot go past the hard limit without CAP_SYS_RESOURCE: hold as many as that allows.
    let hard = observe::hard_fd_limit();
    let idle = WANTED.min((hard.saturating_sub(SLACK_FDS) / 2) as usize);
    let limit = observe::raise_fd_limit(2 * idle as u64 + SLACK_FDS);
    assert!(
        limit >= 2 * idle as u64 + SLACK_FDS / 2,
        "descriptor limit {limit}"
    );
    if idle < WANTED {
        eprintln!(
            "idle: holding {idle} connections, not {WANTED}: the hard descriptor limit is {hard} and \
             {WANTED} proxied connections need {} descriptors in the dataplane alone",
            2 * WANTED
        );
    }
    let echo = AsyncEcho::start();
    let port = free_port();
    let cap = (idle + 100).to_string();
    let mut h = Harness::start(
        &[Service::new("idle", port)
            .backend(echo.port())
            .extra("timeout_idle_ms = 600000")],
        // Above the per-service default (8,192), which would queue the rest.
        &["--max-connections", &cap],
        &["--max-connections-total", &cap],
    );
    let admin = h.dataplane.admin_address();
    let runtime = load::runtime(1);
    let warm = load::open_idle(&runtime, local(port), 200, 100).unwrap();
    load::close_all(&runtime, warm);
    let before = idle_usage(&mut h);

    let started = Instant::now();
    let streams = load::open_idle(&runtime, local(port), idle, 200).unwrap_or_else(|e| {
        let stats = stats(admin);
        panic!("{e}; dataplane: {} {}", stats["limits"], stats["services"])
    });
    let opened_in = started.elapsed();
    assert!(wait_until(Duration::from_secs(30), || workers_sum(
        &stats(admin),
        "connections"
    ) == idle as u64));
    let held = observe::usage(h.dataplane.proc.pid());
    let per_connection = |kib_before: u64, kib_after: u64| {
        (kib_after.saturating_sub(kib_before) * KIB) as f64 / idle as f64
    };

    // Liveness, not speed: a new connection is served promptly beside 10,000 idle ones.
    let probe = Instant::now();
    let outcome = load::run_exchanges(&runtime, local(port), 1, 1, 1000, Duration::from_secs(10));
    let probe_took = probe.elapsed();
    eprintln!(
        "idle: {idle} connections opened in {:.1} s; dataplane RSS {} -> {} KiB = {:.0} bytes per idle \
         connection (anonymous memory: {:.0} bytes), fds {} -> {}; a new connection took {} ms",
        opened_in.as_secs_f64(),
        before.rss_kib,
        held.rss_kib,
        per_connection(before.rss_kib, held.rss_kib),
        per_connection(before.anon_kib, held.anon_kib),
        before.fds,
        held.fds,
        probe_took.as_millis()
    );
    assert_eq!(outcome.completed, 1, "{:?}", outcome.failures);
    assert!(
        probe_took < Duration::from_secs(1),
        "a new connection took {probe_took:?} beside {idle} idle ones"
    );
    assert!(
        held.fds >= before.fds + 2 * idle,
        "every connection is proxied"
    );

    load::close_all(&runtime, streams);
    let after = idle_usage(&mut h);
    assert!(
        after.fds <= before.fds + pooled_pipe_fds(&mut h),
        "descriptors come back: {before:?} -> {after:?}"
    );
    assert_eq!(echo.active(), 0, "every backend connection was closed");
}
