//! One consistent-enough picture of the dataplane for `/stats`, `/metrics` and the status page.
//!
//! Built on demand from the published table and the shared counters; nothing here is on the data path.
//! Byte counters follow HAProxy's naming: `bytes_in` came from clients (and went to the backend),
//! `bytes_out` came from the backend (and went to clients).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::AdminState;
use crate::routing::http_counts::HttpCounts;
use crate::routing::{BackendSlot, Serving, slots::UNLIMITED};

#[derive(Debug, Clone, Serialize)]
pub struct StatsView {
    pub status: &'static str,
    pub snapshot: SnapshotInfo,
    pub limits: LimitsView,
    pub listeners: Vec<ListenerView>,
    pub services: Vec<ServiceView>,
    pub workers: Vec<WorkerView>,
}

/// The process-wide budgets: descriptors, the connection cap and splice pipes.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsView {
    /// RLIMIT_NOFILE in force.
    pub fd_limit: u64,
    /// Descriptors kept for listeners, the admin endpoint and the like.
    pub fd_reserve: u64,
    /// `--max-connections-total`, or derived from the descriptor limit.
    pub max_connections: u32,
    /// Connections open now, all workers together.
    pub connections: u32,
    /// False while some worker stopped accepting at the cap (clients wait in the accept queue).
    pub accepting: bool,
    /// Splice pipes the process may hold, and holds now (in use and idle).
    pub max_pipes: u32,
    pub pipes: u32,
    pub pipe_size: usize,
    /// Full-size pipes this user's `fs.pipe-user-pages-soft` allows, when that limit applies.
    pub pipes_by_user_pages: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub version: u64,
    pub hash: String,
    /// Milliseconds since the Unix epoch; 0 if nothing was applied yet.
    pub applied_at_unix_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerView {
    pub name: String,
    pub address: String,
    pub service: String,
    /// `listening`, or `bind_failed`: the snapshot has it but it could not be opened (see `error`); it
    /// is retried with backoff.
    pub state: &'static str,
    /// Why it could not be opened, in the operating system's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub balance: &'static str,
    pub connections: u32,
    pub max_connections: u32,
    /// Connections waiting for a backend slot, all workers together.
    pub queued: u32,
    /// Sessions ended, by reason (see `docs/operations.md`).
    pub closes: BTreeMap<&'static str, u64>,
    /// HTTP requests routed to this service (absent until the first one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpView>,
    /// The HTTP routes that send requests here (absent for a TCP service).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteView>,
    pub backends: Vec<BackendView>,
}

/// One HTTP route of the applied snapshot: which requests on which listener go to a service.
#[derive(Debug, Clone, Serialize)]
pub struct RouteView {
    /// The route's name (the service's, unless several routes share a cluster).
    pub name: String,
    /// The HTTP listener's address.
    pub listener: String,
    /// Host names and `*.` wildcards; empty: any host.
    pub hosts: Vec<String>,
    /// Empty: every path.
    pub paths: Vec<String>,
    /// `prefix`, `exact` or `regex`.
    pub path_match: &'static str,
    /// A header that must match (`name: value`, marathon-lb's app-id routing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

impl RouteView {
    fn of(route: &ringway_shared::Route) -> Self {
        Self {
            name: route.name.clone(),
            listener: route.listener.to_string(),
            hosts: route.hosts.clone(),
            paths: route.paths.clone(),
            path_match: match route.path_match {
                ringway_shared::PathMatch::Prefix => "prefix",
                ringway_shared::PathMatch::Exact => "exact",
                ringway_shared::PathMatch::Regex => "regex",
            },
            header: route
                .header
                .as_ref()
                .map(|h| format!("{}: {}", h.name, h.value)),
        }
    }
}

/// HTTP requests of a service, a backend, or (unrouted) a worker.
#[derive(Debug, Clone, Serialize)]
pub struct HttpView {
    pub requests: u64,
    /// Requests by the final status's class (`1xx` .. `5xx`), whoever answered.
    pub status: BTreeMap<&'static str, u64>,
    /// The proxy's own answers, by name (`not_found`, `bad_gateway`, ...).
    pub errors: BTreeMap<&'static str, u64>,
    /// Cumulative request-duration buckets (`le` in milliseconds, `None` = +Inf) and their sum, for
    /// `/metrics`.
    #[serde(skip)]
    pub durations: (Vec<(Option<u64>, u64)>, u64),
}

impl HttpView {
    pub fn of(counts: &HttpCounts) -> Self {
        let classes = counts.classes();
        Self {
            requests: counts.total(),
            status: ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .into_iter()
                .zip(classes)
                .collect(),
            errors: counts.errors().map(|(e, n)| (e.name(), n)).collect(),
            durations: counts.histogram(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendView {
    pub address: String,
    /// `active`, `draining` (by the snapshot) or `removed` (left the snapshot, connections still open).
    pub state: &'static str,
    pub weight: Option<u16>,
    /// Per-instance connection limit after division by the group size; `None` = no limit.
    pub limit: Option<u32>,
    pub connections: u32,
    pub total: u64,
    pub connect_failures: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// HTTP requests this backend answered (absent until the first one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub index: usize,
    pub applied_version: u64,
    pub connections: u64,
    pub queued: u64,
    pub accepted: u64,
    pub accept_errors: u64,
    pub connect_failures: u64,
    pub connect_timeouts: u64,
    pub no_backend: u64,
    pub queue_timeouts: u64,
    pub queue_full: u64,
    pub idle_timeouts: u64,
    pub resets: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Empty splice pipes kept for reuse.
    pub pipes_idle: u64,
    /// Splice turns that copied through a buffer because no pipe could be had.
    pub copied_turns: u64,
    /// Stopped accepting at the connection cap.
    pub accept_paused: bool,
    /// HTTP client sessions open now.
    pub http_sessions: u64,
    /// Idle backend connections in the worker's HTTP pool.
    pub http_pooled: u64,
    /// Requests sent on a reused (pooled) backend connection.
    pub http_reused: u64,
    /// HTTP client sessions ended, by reason.
    pub http_closes: BTreeMap<&'static str, u64>,
    /// Requests answered without a route (404) or refused before routing (400, 408, 431, ...).
    pub http_unrouted: HttpView,
}

pub fn status_word(serving: Serving) -> &'static str {
    match serving {
        Serving::Initializing => "initializing",
        Serving::Serving => "serving",
        Serving::Draining => "draining",
    }
}

impl StatsView {
    pub fn collect(state: &AdminState) -> Self {
        let (published, workers, limits) = (&state.published, &state.workers, &state.limits);
        let table = published.load();
        // One pass over the routes (a listener may carry thousands of virtual hosts).
        let mut routes: HashMap<&str, Vec<RouteView>> = HashMap::new();
        for route in &table.snapshot.routes {
            routes
                .entry(route.cluster.as_str())
                .or_default()
                .push(RouteView::of(route));
        }
        let mut services: Vec<ServiceView> = table
            .clusters
            .iter()
            .map(|cluster| ServiceView {
                name: cluster.name.clone(),
                balance: match cluster.balance {
                    ringway_shared::Balance::RoundRobin => "round-robin",
                    ringway_shared::Balance::LeastConn => "least-conn",
                },
                connections: cluster.slot.active(),
                max_connections: cluster.slot.limit(),
                queued: cluster.slot.waiters(),
                closes: cluster
                    .slot
                    .closes
                    .all()
                    .map(|(reason, n)| (reason.name(), n))
                    .collect(),
                http: cluster.slot.http_if_any().map(HttpView::of),
                routes: routes.remove(cluster.name.as_str()).unwrap_or_default(),
                backends: cluster
                    .backends
                    .iter()
                    .map(|b| {
                        backend_view(
                            &b.slot,
                            if b.accepting { "active" } else { "draining" },
                            Some(b.weight),
                        )
                    })
                    .collect(),
            })
            .collect();
        for retired in &table.retired {
            if retired.slot.active() == 0 {
                continue;
            }
            if let Some(service) = services.iter_mut().find(|s| s.name == retired.cluster) {
                service
                    .backends
                    .push(backend_view(&retired.slot, "removed", None));
            }
        }
        Self {
            status: status_word(published.serving()),
            snapshot: SnapshotInfo {
                version: table.version,
                hash: format!("{:016x}", table.hash),
                applied_at_unix_ms: published.applied_at_unix_ms(),
            },
            limits: LimitsView {
                fd_limit: limits.plan.nofile,
                fd_reserve: limits.plan.reserve,
                max_connections: limits.gate.limit(),
                connections: limits.gate.open(),
                accepting: !limits.gate.any_paused(),
                max_pipes: limits.pipes.limit(),
                pipes: limits.pipes.live(),
                pipe_size: limits.pipes.pipe_size(),
                pipes_by_user_pages: limits.pipes_by_user_pages,
            },
            listeners: table
                .listeners
                .iter()
                .map(|l| ListenerView {
                    name: l.name.clone(),
                    address: l.address.to_string(),
                    service: l
                        .tcp_cluster()
                        .map_or_else(|| "http".to_string(), |c| table.clusters[c].name.clone()),
                    state: "listening",
                    error: None,
                })
                .chain(table.failed.iter().map(|f| {
                    ListenerView {
                        name: f.name.clone(),
                        address: f.address.to_string(),
                        service: table
                            .snapshot
                            .listeners
                            .iter()
                            .find(|l| l.address == f.address)
                            .and_then(|l| l.cluster.clone())
                            .unwrap_or_default(),
                        state: "bind_failed",
                        error: Some(f.error.clone()),
                    }
                }))
                .collect(),
            services,
            workers: workers
                .iter()
                .enumerate()
                .map(|(index, w)| WorkerView {
                    index,
                    applied_version: published.applied(index),
                    connections: w.connections.get(),
                    queued: w.queued.get(),
                    accepted: w.accepted.get(),
                    accept_errors: w.accept_errors.get(),
                    connect_failures: w.connect_failures.get(),
                    connect_timeouts: w.connect_timeouts.get(),
                    no_backend: w.no_backend.get(),
                    queue_timeouts: w.queue_timeouts.get(),
                    queue_full: w.queue_full.get(),
                    idle_timeouts: w.idle_timeouts.get(),
                    resets: w.resets.get(),
                    bytes_in: w.bytes_up.get(),
                    bytes_out: w.bytes_down.get(),
                    pipes_idle: w.pipes_idle.get(),
                    copied_turns: w.copied_turns.get(),
                    accept_paused: w.accept_paused.get() != 0,
                    http_sessions: w.http_sessions.get(),
                    http_pooled: w.http_pooled.get(),
                    http_reused: w.http_reused.get(),
                    http_closes: w.http_closes.all().collect(),
                    http_unrouted: HttpView::of(&w.http_unrouted),
                })
                .collect(),
        }
    }
}

fn backend_view(slot: &BackendSlot, state: &'static str, weight: Option<u16>) -> BackendView {
    let limit = slot.limit();
    BackendView {
        address: slot.address.to_string(),
        state,
        weight,
        limit: (limit != UNLIMITED).then_some(limit),
        connections: slot.active(),
        total: slot.total(),
        connect_failures: slot.connect_failures(),
        bytes_in: slot.traffic().0,
        bytes_out: slot.traffic().1,
        http: slot.http_if_any().map(HttpView::of),
    }
}
