//! Ringway's controlplane: turns what discovery sources say into route snapshots and serves them to the
//! dataplanes over a Unix socket.
//!
//! ```text
//! services file ─► FileWatch ──┐
//! Marathon ──────► Marathon ───┤  SourceHandle     intake: one channel, in order, bursts coalesced
//! registrator ───► Registrator ┼─► CatalogSender ─► Publisher: merge, overrides, compile, version, encode
//! etcd v3 ───────► EtcdV3 ─────┤  (+ SourceRegistry:                                  │ watch channel
//! Consul ────────► Consul ─────┤   ok/stale/failing)           SnapshotServer ─► one session per dataplane
//! HTTP API ──────► api source ─┘  + override edits (applied after the merge), answered with their version
//! ```
//!
//! One folder per stage, in the order data flows through them. Each imports only the stages before it, which
//! a unit test (`layering.rs`) checks on every `cargo test`:
//! - [`model`]: the plain data every stage shares (`Catalog`, `Service`, `Instance`, `SourceId`) and the
//!   rule that merges services sharing a listen address. Imports nothing. [`clock`]: the wall clock.
//! - [`sources`]: the framework every source reports through (handle, registry of states), what the
//!   discovery sources share (options, HTTP, backoff, labels), and one module per source: `file`,
//!   `marathon`, `registrator`, `etcd_v3`, `consul`. They know the model and the intake's channel only.
//! - [`pipeline`]: `intake` (the one channel every change comes in by), `merge` (which source wins),
//!   `overrides`, `compiler`, `versions`, `publisher` (the current snapshot, encoded once).
//! - [`serve`]: the snapshot server on the Unix socket, one session per dataplane, the registry of
//!   dataplanes and their ACKs, peer checks.
//! - [`api`]: the HTTP API, itself a source (docker-flow-proxy's calls) and a writer of overrides.
//! - [`startup`]: command line, configuration, logging, readiness.
//! - [`supervisor`]: `--spawn-dataplane`, this controlplane and a dataplane child in one process tree.
//!
//! This file is the composition root: [`run_until`] builds each stage and wires it to the next.

#![deny(unsafe_code)]

pub mod api;
pub mod clock;
pub mod model;
pub mod pipeline;
pub mod serve;
pub mod sources;
pub mod startup;
pub mod supervisor;

/// The import rules between the stages above, checked.
#[cfg(test)]
mod layering;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tracing::info;

pub use startup::config::Config;

use api::guard::Access;
use api::state::{API_SOURCE, ApiState};
use api::{ApiContext, ApiServer};
use model::SourceId;
use pipeline::compiler::compile;
use pipeline::intake::{self, CatalogSender, catalog_channel};
use pipeline::publisher::Publisher;
use serve::registry::DataplaneRegistry;
use serve::snapshot_server::SnapshotServer;
use sources::SourceRegistry;
use sources::client::ClientError;
use sources::consul::Consul;
use sources::etcd_v3::EtcdV3;
use sources::file::FileWatch;
use sources::marathon::Marathon;
use sources::registrator::Registrator;
use startup::readiness;

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
///
/// Discovery sources that are down at start-up are not errors: the controlplane serves at once, and the
/// first snapshot goes out when every source has answered (or `--initial-sync-timeout` has passed and one
/// has). Until then dataplanes keep what they have (their state file).
pub async fn run_until(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    if !config.has_source() {
        anyhow::bail!(
            "no discovery source configured: pass --services FILE, --marathon, --registrator, --etcd-v3 or \
             --consul (or set RINGWAY_SERVICES, MARATHON_URL, REGISTRATOR_URL, RINGWAY_ETCD_V3_URL, CONSUL_URL)"
        );
    }
    // Installed before anything slow so an early SIGHUP re-reads instead of killing the process.
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;

    let publisher = Arc::new(Publisher::new(config.compile_settings()));
    let registry = DataplaneRegistry::new();
    let sources = SourceRegistry::new();
    let (sink, updates) = catalog_channel();
    let mut tasks = JoinSet::new();

    // Before the first publish, so restored overrides and API services are in it.
    let api_state = match config.api {
        Some(_) => {
            let handle = sources.handle(SourceId::new(API_SOURCE), sink.clone());
            let mut policy = config.api_policy.clone();
            policy.reserved.extend(config.api.map(|a| a.port()));
            let state = ApiState::start(
                handle,
                Arc::clone(&publisher),
                config.discovery.listen_ip,
                config.discovery.vhost_port,
                config.api_state_file.clone(),
                &policy,
            )
            .await
            .context("cannot start")?;
            Some(Arc::new(state))
        }
        None => None,
    };

    if let Some(services) = config.services.clone() {
        let handle = sources.handle(FileWatch::source_id(&services), sink.clone());
        let mut file = FileWatch::new(services, handle)
            .context("cannot start")?
            .with_poll_interval(config.file_poll_interval)
            .with_refresh_interval(config.discovery.refresh_interval);
        let catalog = file.load().context("cannot start")?;
        const NO_COMPILE: &str = "cannot start: services file does not compile";
        // The file is the operator's own word: a service in it that cannot compile is a start-up error,
        // not a service left out.
        compile(&catalog, &config.compile_settings())
            .and_then(|c| c.whole())
            .context(NO_COMPILE)?;
        if config.is_file_only() {
            // Nothing else to wait for: the first snapshot is ready before the socket appears.
            publisher.record(file.handle().id().clone(), catalog.clone());
            publisher.publish_inputs().context(NO_COMPILE)?;
        }
        file.handle().publish(catalog).await;
        tasks.spawn(file.run());
    }
    spawn_discovery(&config, &sources, &sink, &mut tasks).context("cannot start")?;
    drop(sink);
    // SIGHUP re-reads every source, as `POST /v1/refresh` does (marathon-lb's `/_mlb_signal/hup`).
    let refresh = sources.clone();
    tasks.spawn(async move {
        while hangup.recv().await.is_some() {
            let asked = refresh.refresh_all();
            info!(
                sources = asked.len(),
                "SIGHUP received, re-reading every source"
            );
        }
    });

    // The API source answers requests: it has nothing to wait for at start-up.
    let expected = sources
        .ids()
        .into_iter()
        .filter(|id| id.0 != API_SOURCE)
        .collect();
    tasks.spawn(intake::run(
        Arc::clone(&publisher),
        updates,
        expected,
        config.coalescing,
    ));

    let server = SnapshotServer::bind(
        config.server_options(),
        Arc::clone(&publisher),
        registry.clone(),
    )
    .await
    .context("cannot start")?;
    if let (Some(address), Some(state)) = (config.api, api_state) {
        let context = ApiContext {
            sources: sources.clone(),
            publisher: Arc::clone(&publisher),
            dataplanes: registry,
            state,
            access: Access {
                token: config.api_token.clone().map(|t| t.0),
                allowed_origins: config.api_allowed_origins.clone(),
            },
            policy: config.api_policy.clone(),
        };
        let api = ApiServer::bind(address, context)
            .await
            .context("cannot start")?;
        tasks.spawn(api.serve(std::future::pending()));
    }
    readiness::serving(&config.socket);

    server.serve(shutdown).await;
    tasks.shutdown().await;
    info!("controlplane stopped");
    Ok(())
}

/// Starts one task per configured discovery source; a client that cannot be set up (an unreadable CA or
/// client certificate) is a start-up error.
fn spawn_discovery(
    config: &Config,
    sources: &SourceRegistry,
    sink: &CatalogSender,
    tasks: &mut JoinSet<()>,
) -> Result<(), ClientError> {
    let options = config.discovery.clone();
    let handle = |name: &str| sources.handle(SourceId::new(name), sink.clone());
    if let Some(marathon) = &config.marathon {
        let source = Marathon::new(marathon.clone(), options.clone(), handle("marathon"))?;
        tasks.spawn(source.run());
    }
    if let Some(url) = &config.registrator {
        let source = Registrator::new(
            url.clone(),
            &config.etcd_tls,
            options.clone(),
            handle("registrator"),
        )?;
        tasks.spawn(source.run());
    }
    if let Some(etcd) = &config.etcd_v3 {
        let source = EtcdV3::new(etcd.clone(), options.clone(), handle("etcd-v3"))?;
        tasks.spawn(source.run());
    }
    if let Some(consul) = &config.consul {
        tasks.spawn(Consul::new(consul.clone(), options, handle("consul"))?.run());
    }
    Ok(())
}
