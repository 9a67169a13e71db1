//! Ringway's controlplane: turns what discovery sources say into route snapshots and serves them to the
//! dataplanes over a Unix socket.
//!
//! ```text
//! services file ─► FileWatch ─► CatalogUpdate ─► Publisher ─► (compile, version, encode) ─► watch channel
//!                  (source)      (the seam)       └ compiler                                    │
//!                                                                    SnapshotServer ─► one session per dataplane
//! ```
//!
//! Modules, in data-flow order:
//! - [`services_file`]: the TOML services file → [`catalog::Catalog`], with `file:line:col: field` errors.
//! - [`file_watch`]: re-reads it on change (inotify + poll) and SIGHUP; keeps the last good one.
//! - [`catalog`]: the source-independent view every source produces, and the channel they send it on.
//! - [`compiler`]: catalog + group size + defaults → deterministic `ringway_shared::Snapshot`.
//! - [`versions`]: versions that keep increasing across restarts.
//! - [`publisher`]: the current snapshot, encoded once, skipped when unchanged.
//! - [`snapshot_server`]: the socket, stale-socket handling and peer admission; [`session`]: the protocol.
//! - [`peer_auth`]: which uids may connect. [`registry`]: connected dataplanes, ACKs and NACKs.
//! - [`cli`], [`config`], [`logging`]: how it is started.
//! - [`readiness`]: "serving" for systemd (`sd_notify`) and the [`supervisor`] (`--spawn-dataplane`).

#![deny(unsafe_code)]

pub mod catalog;
pub mod cli;
pub mod compiler;
pub mod config;
pub mod file_watch;
pub mod logging;
pub mod peer_auth;
pub mod publisher;
pub mod readiness;
pub mod registry;
pub mod services_file;
pub mod session;
pub mod snapshot_server;
pub mod supervisor;
pub mod versions;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tracing::info;

pub use config::Config;

use catalog::catalog_channel;
use file_watch::FileWatch;
use publisher::Publisher;
use registry::DataplaneRegistry;
use snapshot_server::SnapshotServer;

/// Runs the controlplane until SIGTERM or SIGINT, then removes the socket and returns `Ok`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM received, shutting down"),
            _ = interrupt.recv() => info!("SIGINT received, shutting down"),
        }
    };
    run_until(config, shutdown).await
}

/// Runs the controlplane until `shutdown` completes. Start-up problems (no source, a bad services file, a
/// socket already served) are returned as errors before anything is served.
pub async fn run_until(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let services = config.services.clone().context(
        "no discovery source configured: pass --services FILE (or set RINGWAY_SERVICES)",
    )?;
    // Installed before anything slow so an early SIGHUP reloads instead of killing the process.
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;

    let publisher = Arc::new(Publisher::new(config.compile_settings()));
    let registry = DataplaneRegistry::new();
    let (sink, updates) = catalog_channel();

    let mut file = FileWatch::new(services, sink)
        .context("cannot start")?
        .with_poll_interval(config.file_poll_interval);
    let catalog = file.load().context("cannot start")?;
    publisher
        .publish(&catalog)
        .context("cannot start: services file does not compile")?;

    let server = SnapshotServer::bind(config.server_options(), Arc::clone(&publisher), registry)
        .await
        .context("cannot start")?;
    readiness::serving(&config.socket);

    let mut tasks = JoinSet::new();
    tasks.spawn(Arc::clone(&publisher).consume(updates));
    let reload = file.reload_handle();
    tasks.spawn(async move {
        while hangup.recv().await.is_some() {
            info!("SIGHUP received, re-reading the services file");
            reload.notify_one();
        }
    });
    tasks.spawn(file.run());

    server.serve(shutdown).await;
    tasks.shutdown().await;
    info!("controlplane stopped");
    Ok(())
}
