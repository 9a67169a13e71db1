//! One consistent-enough picture of the dataplane for `/stats`, `/metrics` and the status page.
//!
//! Built on demand from the published table and the shared counters; nothing here is on the data path.
//! Byte counters follow HAProxy's naming: `bytes_in` came from clients (and went to the backend),
//! `bytes_out` came from the backend (and went to clients).

use std::sync::Arc;

use serde::Serialize;

use crate::routing::{BackendSlot, Published, Serving, slots::UNLIMITED};
use crate::worker::stats::WorkerStats;

#[derive(Debug, Clone, Serialize)]
pub struct StatsView {
    pub status: &'static str,
    pub snapshot: SnapshotInfo,
    pub listeners: Vec<ListenerView>,
    pub services: Vec<ServiceView>,
    pub workers: Vec<WorkerView>,
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
}

pub fn status_word(serving: Serving) -> &'static str {
    match serving {
        Serving::Initializing => "initializing",
        Serving::Serving => "serving",
        Serving::Draining => "draining",
    }
}

impl StatsView {
    pub fn collect(published: &Published, workers: &[Arc<WorkerStats>]) -> Self {
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
                            .map(|l| l.cluster.clone())
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
