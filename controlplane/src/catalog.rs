//! The source-independent view of what should be load balanced.
//!
//! Every discovery source (today the static services file; Marathon, Consul, etcd and the HTTP API later)
//! turns what it knows into a [`Catalog`] and hands the *whole* catalog over as a [`CatalogUpdate`]. Keeping
//! this seam free of routing details means a source only knows its own format, and the
//! [`compiler`](crate::compiler) is the one place that knows the snapshot model, the group size and the
//! defaults.
//!
//! A catalog is what a source said, already validated by that source: values are in range and addresses
//! parse. Defaults that are operator policy (the service-wide connection limit, timeouts) stay `None` here so
//! that the compiler applies them in one place.

use std::fmt;
use std::net::SocketAddr;

use ringway_shared::{BackendState, Balance};
use serde::Serialize;
use tokio::sync::mpsc;

/// Everything one source currently knows: its full view, never a delta.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub services: Vec<Service>,
}

impl Catalog {
    /// Number of instances over all services, for logs.
    pub fn instance_count(&self) -> usize {
        self.services.iter().map(|s| s.instances.len()).sum()
    }
}

/// One load-balanced service: where it is reached and which instances serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Unique among all services; names the listener and cluster in the snapshot.
    pub name: String,
    /// Address the dataplane accepts this service's connections on.
    pub listen: SocketAddr,
    pub balance: Balance,
    /// Concurrent connections each instance accepts from the whole Ringway group, *before* division by the
    /// group size. `None`: no per-instance limit. Never `Some(0)`.
    pub maxconn: Option<u32>,
    /// Total concurrent connections for the service on one dataplane; `None` takes `--max-connections`.
    pub max_connections: Option<u32>,
    pub timeouts: ServiceTimeouts,
    pub instances: Vec<Instance>,
}

/// Per-service time limits in milliseconds; `None` takes the model's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceTimeouts {
    pub connect_ms: Option<u32>,
    pub idle_ms: Option<u32>,
    pub queue_ms: Option<u32>,
}

/// One backend instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub address: SocketAddr,
    /// 1..=1000 (the model's `WEIGHT_MIN..=WEIGHT_MAX`).
    pub weight: u16,
    pub state: BackendState,
}

/// Names the source a catalog came from, for logs and, once there are several sources, for merging.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(pub String);

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a source is doing, for logs now and the status API later.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    /// Attempts to read the source so far, successful or not.
    pub attempts: u64,
    /// When the source last produced a good catalog.
    pub last_ok_unix_us: Option<u64>,
    /// Why the latest attempt failed; `None` once an attempt succeeds again. While set, the last good
    /// catalog stays in force.
    pub last_error: Option<String>,
}

/// A source's new full view. Sources send these on a [`CatalogSender`]; the receiving end coalesces bursts
/// (latest wins) and publishes (see [`Publisher::consume`](crate::publisher::Publisher::consume)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogUpdate {
    pub source: SourceId,
    pub catalog: Catalog,
}

/// The seam every source writes to.
pub type CatalogSender = mpsc::Sender<CatalogUpdate>;
/// The seam the publisher reads from.
pub type CatalogReceiver = mpsc::Receiver<CatalogUpdate>;

/// Room for a burst of updates; a source that outruns the publisher waits, which is the back-pressure we want.
pub const CATALOG_CHANNEL_CAPACITY: usize = 16;

/// The channel between the sources and the publisher.
pub fn catalog_channel() -> (CatalogSender, CatalogReceiver) {
    mpsc::channel(CATALOG_CHANNEL_CAPACITY)
}
