//! `ringway-dataplane`: forwards TCP connections on every core, following route snapshots pushed by the
//! controlplane.
//!
//! - [`cli`]: flags and environment.
//! - [`admin`]: the status endpoint (`/status`, `/stats`, `/metrics`, `/config`, `/`).
//! - [`probe`]: checks io_uring at start-up and explains what is missing.
//! - [`subscriber`]: the controlplane session; validates, applies, ACKs/NACKs snapshots.
//! - [`state_file`]: the last applied snapshot on disk.
//! - [`routing`]: routing tables, cross-core connection counters, listening sockets, publication.
//! - [`worker`]: the per-core io_uring event loop and connection state machines.
//! - [`pipes`]: pools of splice pipes and copy buffers.
//! - `sys`: the system calls the data path makes directly (with `worker::ring`, the only `unsafe`).

pub mod admin;
pub mod cli;
pub mod pipes;
pub mod probe;
pub mod routing;
pub mod state_file;
pub mod subscriber;
mod sys;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};

use cli::Config;
use routing::{Published, TableBuilder, Wakers};
use subscriber::Subscriber;
use worker::forward::ForwardMode;
use worker::ring::RingConfig;
use worker::stats::WorkerStats;
use worker::{WorkerConfig, spawn_workers};

/// How often the main thread looks for signals and dead workers.
const SUPERVISE_TICK: Duration = Duration::from_millis(50);

/// Runs the dataplane until SIGTERM/SIGINT has drained it. Errors are start-up failures or a dead worker.
pub fn run(config: Config) -> anyhow::Result<()> {
    let uring_splice = config.forward == ForwardMode::UringSplice;
    probe::check(config.ring_entries, uring_splice)?;

    let cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let workers = match config.workers {
        0 => cores.len().max(1),
        n => n,
    };
    let wakers = Arc::new(Wakers::new(workers).context("creating worker eventfds")?);
    let published = Arc::new(Published::new(Arc::clone(&wakers)));
    let stats: Vec<Arc<WorkerStats>> = (0..workers)
        .map(|_| Arc::new(WorkerStats::default()))
        .collect();
    let configs = (0..workers)
        .map(|index| WorkerConfig {
            index,
            core: (!config.no_pin && !cores.is_empty()).then(|| cores[index % cores.len()]),
            ring: RingConfig {
                entries: config.ring_entries,
                iowq_max_workers: uring_splice.then_some(config.iowq_max_workers),
            },
            forward: config.forward,
            pipe_size: config.pipe_size,
            buffer_size: config.buffer_size,
            queue_limit: config.queue_size,
            drain_timeout: config.drain_timeout,
            access_log: config.access_log,
        })
        .collect();
    let handles = spawn_workers(configs, &published, &stats)
        .map_err(|e| probe::explain(e, config.ring_entries))?;
    tracing::info!(workers, forward = ?config.forward, pinned = !config.no_pin, "workers started");

    let state_file =
        (!config.state_file.is_empty()).then(|| std::path::PathBuf::from(&config.state_file));
    let name = config
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let mut subscriber = Subscriber::new(
        config.socket.clone(),
        name,
        Arc::clone(&published),
        TableBuilder::new(workers, wakers),
        state_file,
    );
    subscriber.restore();
    if !config.status_endpoint.is_empty() {
        let address = config.status_endpoint.parse().with_context(|| {
            format!(
                "--status-endpoint {:?} is not an IP:port",
                config.status_endpoint
            )
        })?;
        admin::start(
            address,
            admin::AdminState {
                published: Arc::clone(&published),
                workers: stats.clone(),
            },
        )?;
    }
    std::thread::Builder::new()
        .name("ringway-subscriber".into())
        .spawn(move || subscriber.run())
        .context("starting the subscriber thread")?;

    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("installing signal handlers")?;
    let supervise = |signals: &mut signal_hook::iterator::Signals| -> anyhow::Result<Option<i32>> {
        if let Some(dead) = handles.iter().position(|h| h.is_finished()) {
            published.stop();
            anyhow::bail!("worker {dead} stopped unexpectedly");
        }
        Ok(signals.pending().next())
    };
    let signal = loop {
        if let Some(signal) = supervise(&mut signals)? {
            break signal;
        }
        std::thread::sleep(SUPERVISE_TICK);
    };
    // DRAINING first, while still accepting, so an upstream balancer health-checking /status moves away
    // before anything is refused. A second signal cuts the grace short.
    published.set_draining();
    tracing::info!(
        signal,
        grace_s = config.drain_grace.as_secs_f64(),
        drain_timeout_s = config.drain_timeout.as_secs_f64(),
        "stopping: /status says DRAINING; still accepting for the grace period"
    );
    let grace_ends = std::time::Instant::now() + config.drain_grace;
    while std::time::Instant::now() < grace_ends {
        if supervise(&mut signals)?.is_some() {
            tracing::info!("second signal: ending the grace period now");
            break;
        }
        std::thread::sleep(SUPERVISE_TICK);
    }
    tracing::info!("no longer accepting; draining connections");
    published.stop();
    for (index, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(worker = index, error = %e, "worker failed while draining")
            }
            Err(_) => tracing::error!(worker = index, "worker panicked while draining"),
        }
    }
    tracing::info!("drained; exiting");
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "dataplane".into())
}

/// Installs the log subscriber: `RUST_LOG` filters (default `info`), `--log-format` picks text or JSON.
pub fn init_logging(format: cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().init(),
    }
}
