//! Ringway's controlplane: turns what discovery sources say into route snapshots and serves them to the
//! dataplanes over a Unix socket.
//!
//! ```text
//! services file ─► FileWatch ──┐
//! Marathon ──────► Marathon ───┤  SourceHandle      Publisher (latest catalog per source, merge,
//! registrator ───► Registrator ┼─► CatalogUpdate ─► coalesce, compile, version, encode) ─► watch channel
//! etcd v3 ───────► EtcdV3 ─────┤  (+ SourceRegistry:                                          │
//! Consul ────────► Consul ─────┤   ok/stale/failing)          SnapshotServer ─► one session per dataplane
//! HTTP API ──────► api source ─┘  + override edits (applied after the merge), answered with their version
//! ```
//!
//! Modules, in data-flow order:
//! - Sources, one module each: [`services_file`] (the TOML file → [`catalog::Catalog`]) and [`file_watch`]
//!   (re-read on change and SIGHUP); [`marathon`] (`/v2/apps` + SSE `/v2/events`); [`registrator`]
//!   (registrator's etcd v2 tree); [`etcd_v3`] (an etcd v3 prefix through the JSON gateway); [`consul`]
//!   (catalog + health with blocking queries).
//! - What discovery sources share: [`discovery`] (options, HTTP client, backoff, host resolution, how a
//!   discovered port becomes a service) and [`labels`] (the label and tag settings users already write).
//! - [`source`]: the handle every source reports through, and the registry of source states.
//! - [`catalog`]: the source-independent view every source produces, and the channel they send it on.
//! - [`merge`]: sources and apps combined by listen address, names made unique, deterministically.
//! - [`compiler`]: catalog + group size + defaults → deterministic `ringway_shared::Snapshot`.
//! - [`versions`]: versions that keep increasing across restarts.
//! - [`publisher`]: per-source catalogs merged, bursts coalesced, unchanged snapshots skipped.
//! - [`snapshot_server`]: the socket, stale-socket handling and peer admission; [`session`]: the protocol.
//! - [`peer_auth`]: which uids may connect. [`registry`]: connected dataplanes, ACKs and NACKs.
//! - [`overrides`]: the operator's runtime word on backends (ready/drain/maint, weight) and blue/green
//!   switches, applied after the merge; [`intake`]: the one channel sources and the API change routing by.
//! - [`api`]: the HTTP API (sources, services, overrides, switch, docker-flow-proxy's calls as the `api`
//!   source).
//! - [`cli`], [`config`], [`logging`]: how it is started.
//! - [`readiness`]: "serving" for systemd (`sd_notify`) and the [`supervisor`] (`--spawn-dataplane`).

#![deny(unsafe_code)]

pub mod api;
pub mod clock;
pub mod model;
pub mod pipeline;
pub mod serve;
pub mod sources;
pub mod startup;
pub mod supervisor;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tracing::info;

pub use startup::config::Config;

use api::state::{API_SOURCE, ApiState};
use api::{ApiContext, ApiServer};
use model::SourceId;
use pipeline::compiler::compile;
use pipeline::intake::{self, CatalogSender, catalog_channel};
use pipeline::publisher::Publisher;
use serve::registry::DataplaneRegistry;
use serve::snapshot_server::SnapshotServer;
use sources::SourceRegistry;
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
    // Installed before anything slow so an early SIGHUP reloads instead of killing the process.
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
            let state = ApiState::start(
                handle,
                Arc::clone(&publisher),
                config.discovery.listen_ip,
                config.api_state_file.clone(),
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
        if config.is_file_only() {
            // Nothing else to wait for: the first snapshot is ready before the socket appears.
            publisher.record(file.handle().id().clone(), catalog.clone());
            publisher.publish_inputs().context(NO_COMPILE)?;
        } else {
            compile(&catalog, &config.compile_settings()).context(NO_COMPILE)?;
        }
        file.handle().publish(catalog).await;
        let reload = file.reload_handle();
        tasks.spawn(async move {
            while hangup.recv().await.is_some() {
                info!("SIGHUP received, re-reading the services file");
                reload.notify_one();
            }
        });
        tasks.spawn(file.run());
    }
    spawn_discovery(&config, &sources, &sink, &mut tasks);
    drop(sink);

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
            token: config.api_token.clone().map(|t| t.0),
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

/// Starts one task per configured discovery source.
fn spawn_discovery(
    config: &Config,
    sources: &SourceRegistry,
    sink: &CatalogSender,
    tasks: &mut JoinSet<()>,
) {
    let options = config.discovery.clone();
    let handle = |name: &str| sources.handle(SourceId::new(name), sink.clone());
    if !config.marathon.is_empty() {
        let source = Marathon::new(config.marathon.clone(), options.clone(), handle("marathon"));
        tasks.spawn(source.run());
    }
    if let Some(url) = &config.registrator {
        tasks.spawn(Registrator::new(url.clone(), options.clone(), handle("registrator")).run());
    }
    if let Some(url) = &config.etcd_v3 {
        let source = EtcdV3::new(
            url.clone(),
            config.etcd_prefix.clone(),
            options.clone(),
            handle("etcd-v3"),
        );
        tasks.spawn(source.run());
    }
    if let Some(url) = &config.consul {
        tasks.spawn(Consul::new(url.clone(), options, handle("consul")).run());
    }
}
