//! `ringway-dataplane`: forwards TCP connections on every core, following route snapshots pushed by the
//! controlplane.
//!
//! - [`cli`]: flags and environment.
//! - [`probe`]: checks io_uring at start-up and explains what is missing.
//! - [`subscriber`]: the controlplane session; validates, applies, ACKs/NACKs snapshots.
//! - [`state_file`]: the last applied snapshot on disk.
//! - [`routing`]: routing tables, cross-core connection counters, listening sockets, publication.
//! - [`worker`]: the per-core io_uring event loop and connection state machines.
//! - [`pipes`]: pools of splice pipes and copy buffers, within a process-wide pipe budget.
//! - [`limits`]: the descriptor plan and the process-wide connection cap.
//! - [`close`]: why a session ended (a typed reason, counted per service).
//! - [`http`]: the sans-IO HTTP/1.1 engine: parsers, framing rules, router, per-client state machine.
//! - [`admin`]: the status endpoint (`/status`, `/stats`, `/metrics`, `/config`, `/`).
//! - [`takeover`]: handing listening sockets to a new dataplane binary; [`detach`]: the reload command.
//! - [`notify`]: readiness reports to systemd and to a `--detach` parent.
//! - `sys`: the system calls made directly (with `worker::ring`, the only `unsafe`).

// `unsafe` is allowed only where the dataplane wraps system calls (`sys`) and submits to its ring
// (`worker::ring`); every block there says why it is sound (`// SAFETY:`).
#![deny(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod close;
pub mod detach;
pub mod http;
pub mod limits;
pub mod notify;
pub mod pipes;
pub mod probe;
pub mod routing;
pub mod state_file;
pub mod subscriber;
#[allow(unsafe_code)]
mod sys;
pub mod takeover;
pub mod worker;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use cli::Config;
use limits::Limits;
use routing::{ListenerSockets, Published, Serving, TableBuilder, Wakers};
use subscriber::Subscriber;
use takeover::TakeoverServer;
use worker::forward::ForwardMode;
use worker::ring::RingConfig;
use worker::stats::WorkerStats;
use worker::{Shared, WorkerConfig, spawn_workers};

/// How often the main thread looks for signals, dead workers and readiness.
const SUPERVISE_TICK: Duration = Duration::from_millis(50);

type Workers = Vec<JoinHandle<std::io::Result<()>>>;

/// What starting the workers sets up: the published tables, each worker's statistics, the process-wide
/// limits, and the threads.
struct Started {
    published: Arc<Published>,
    stats: Vec<Arc<WorkerStats>>,
    limits: Limits,
    handles: Workers,
}

/// Runs the dataplane until SIGTERM/SIGINT (or a successor's takeover) has drained it. Errors are start-up
/// failures or a dead worker.
pub fn run(config: Config) -> anyhow::Result<()> {
    if config.detach {
        return detach::run();
    }
    let uring_splice = config.forward == ForwardMode::UringSplice;
    probe::check(config.ring_entries, uring_splice)?;
    let Started {
        published,
        stats,
        limits,
        handles,
    } = start_workers(&config)?;
    let workers = published.workers();

    let takeover_path = config.takeover_path();
    let handover = if config.takeover {
        let handover = takeover::take_over(&takeover_path, workers)?;
        if handover.is_none() {
            tracing::info!(path = %takeover_path.display(), "--takeover: no running dataplane to take over from; starting fresh");
        }
        handover
    } else {
        None
    };

    let mut builder = TableBuilder::new(workers, Arc::clone(&published.wakers));
    let mut inherited_admin = None;
    let mut inherited_snapshot = None;
    let mut handover_ack = None;
    if let Some(mut handover) = handover {
        for (address, fds) in std::mem::take(&mut handover.listeners) {
            builder.adopt_listener(ListenerSockets::adopt(address, fds, workers)?);
        }
        inherited_admin = handover.admin.take();
        inherited_snapshot = handover.snapshot.take();
        handover_ack = Some(handover);
    }

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
        builder,
        state_file,
    );
    match inherited_snapshot {
        Some(snapshot) => {
            let version = snapshot.version;
            match subscriber.apply(snapshot) {
                Ok(()) => tracing::info!(version, "serving the predecessor's snapshot"),
                Err(e) => {
                    tracing::warn!(error = %e, "the predecessor's snapshot was not applied");
                    subscriber.restore();
                }
            }
        }
        None => subscriber.restore(),
    }

    let admin_socket = if config.status_endpoint.is_empty() {
        None
    } else {
        let address = config.status_endpoint.parse().with_context(|| {
            format!(
                "--status-endpoint {:?} is not an IP:port",
                config.status_endpoint
            )
        })?;
        let state = admin::AdminState {
            published: Arc::clone(&published),
            workers: stats.clone(),
            limits: limits.clone(),
        };
        let (bound, socket) = admin::start(address, inherited_admin, state)?;
        Some((bound, socket))
    };

    let took_over = handover_ack.is_some();
    if let Some(handover) = handover_ack {
        handover
            .ready()
            .context("telling the predecessor to stop accepting")?;
        tracing::info!("took over the listening sockets; the predecessor drains");
    }
    let server = if took_over {
        TakeoverServer::replace(&takeover_path)?
    } else {
        TakeoverServer::bind(&takeover_path)?
    };
    match server {
        Some(server) => {
            let published = Arc::clone(&published);
            std::thread::Builder::new()
                .name("ringway-takeover".into())
                .spawn(move || server.run(published, admin_socket))
                .context("starting the takeover thread")?;
        }
        None => tracing::warn!(
            path = %takeover_path.display(),
            "another dataplane offers takeover at this path; this one cannot be upgraded in place"
        ),
    }

    std::thread::Builder::new()
        .name("ringway-subscriber".into())
        .spawn(move || subscriber.run())
        .context("starting the subscriber thread")?;

    supervise(&config, &published, handles, took_over)
}

/// Creates the shared state and starts one pinned worker per core (or `--workers`).
fn start_workers(config: &Config) -> anyhow::Result<Started> {
    let uring_splice = config.forward == ForwardMode::UringSplice;
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
    let limits = Limits::establish(
        config.max_connections_total,
        config.pipe_size,
        workers,
        wakers,
    );
    let stats: Vec<Arc<WorkerStats>> = (0..workers)
        .map(|_| Arc::new(WorkerStats::default()))
        .collect();
    let configs = (0..workers)
        .map(|index| WorkerConfig {
            index,
            core: (!config.no_pin && !cores.is_empty()).then(|| cores[index % cores.len()]),
            ring: RingConfig {
                entries: config.ring_entries,
                recv_buffers: config.recv_buffers,
                iowq_max_workers: uring_splice.then_some(config.iowq_max_workers),
            },
            forward: config.forward,
            buffer_size: config.buffer_size,
            queue_limit: config.queue_size,
            drain_timeout: config.drain_timeout,
            access_log: config.access_log,
        })
        .collect();
    let shared = |index: usize| Shared {
        published: Arc::clone(&published),
        stats: Arc::clone(&stats[index]),
        gate: Arc::clone(&limits.gate),
        pipes: Arc::clone(&limits.pipes),
    };
    let handles =
        spawn_workers(configs, shared).map_err(|e| probe::explain(e, config.ring_entries))?;
    tracing::info!(workers, forward = ?config.forward, pinned = !config.no_pin, "workers started");
    Ok(Started {
        published,
        stats,
        limits,
        handles,
    })
}

/// Watches signals, workers and readiness until the dataplane has drained.
fn supervise(
    config: &Config,
    published: &Arc<Published>,
    handles: Workers,
    took_over: bool,
) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let mut announced = false;
    let mut check = |signals: &mut Signals| -> anyhow::Result<Option<i32>> {
        // Once stopping (a successor took over), workers end as soon as they have drained.
        if let Some(dead) = handles.iter().position(|h| h.is_finished())
            && !published.is_stopping()
        {
            published.stop();
            anyhow::bail!("worker {dead} stopped unexpectedly");
        }
        if !announced && published.serving() == Serving::Serving {
            announced = true;
            announce_ready(took_over);
        }
        Ok(signals.pending().next())
    };
    loop {
        if let Some(signal) = check(&mut signals)? {
            drain_after_signal(config, published, signal, &mut signals, &mut check)?;
            break;
        }
        if published.is_handed_over() {
            break;
        }
        std::thread::sleep(SUPERVISE_TICK);
    }
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

/// `/status` turns DRAINING while listeners keep accepting for `--drain-grace`, so an upstream balancer
/// health-checking it moves away before anything is refused. A second signal cuts the grace short.
fn drain_after_signal(
    config: &Config,
    published: &Published,
    signal: i32,
    signals: &mut Signals,
    check: &mut impl FnMut(&mut Signals) -> anyhow::Result<Option<i32>>,
) -> anyhow::Result<()> {
    published.set_draining();
    tracing::info!(
        signal,
        grace_s = config.drain_grace.as_secs_f64(),
        drain_timeout_s = config.drain_timeout.as_secs_f64(),
        "stopping: /status says DRAINING; still accepting for the grace period"
    );
    let grace_ends = Instant::now() + config.drain_grace;
    while Instant::now() < grace_ends && !published.is_handed_over() {
        if check(signals)?.is_some() {
            tracing::info!("second signal: ending the grace period now");
            break;
        }
        std::thread::sleep(SUPERVISE_TICK);
    }
    tracing::info!("no longer accepting; draining connections");
    Ok(())
}

/// Tells systemd (and a `--detach` parent) that we serve. A successor names itself the unit's main process
/// first, so systemd follows the upgrade (the unit needs `NotifyAccess=all`).
fn announce_ready(took_over: bool) {
    let state = if took_over {
        format!("MAINPID={}\nREADY=1", std::process::id())
    } else {
        "READY=1".to_string()
    };
    if let Err(e) = notify::systemd(&state) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
    if let Err(e) = notify::parent() {
        tracing::warn!(error = %e, "could not tell the parent we serve");
    }
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
