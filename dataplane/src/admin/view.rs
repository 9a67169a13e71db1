//! One consistent-enough picture of the dataplane for `/stats`, `/metrics` and the status page.
//!
//! Built on demand from the published table and the shared counters; nothing here is on the data path.
//! Byte counters follow HAProxy's naming: `bytes_in` came from clients (and went to the backend),
//! `bytes_out` came from the backend (and went to clients).

use std::collections::BTreeMap;

use serde::Serialize;

use super::AdminState;
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
    pub backends: Vec<BackendView>,
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
                    service: table.clusters[l.cluster].name.clone(),
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
    }
}
