//! The route snapshot: the whole routing state a dataplane needs, immutable once built.
//!
//! TCP listeners name the cluster every connection goes to; HTTP listeners carry their limits
//! ([`HttpListener`]) and are served by the top-level [`Route`]s that name them ([`http`]).
//!
//! A snapshot is always shipped whole (no deltas): it is simple, it heals any missed update, and at the
//! design's scale (10,000 services, 100,000 backends) it encodes in a few milliseconds. The controlplane
//! builds one with [`Snapshot::new`], which computes the content hash; the dataplane checks every snapshot
//! with [`Snapshot::validate`] before it touches its routing tables, and NACKs what fails.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub mod http;

pub use http::{ClusterHttp, HeaderMatch, HttpListener, PathMatch, Route};

/// Lowest backend weight. Zero is not a weight: draining is a [`BackendState`].
pub const WEIGHT_MIN: u16 = 1;
/// Highest backend weight.
pub const WEIGHT_MAX: u16 = 1000;
/// Weight of a backend whose source says nothing about it.
pub const DEFAULT_WEIGHT: u16 = 500;
/// Default total of concurrent connections per service on one dataplane (proxymatic's `MAX_CONNECTIONS`).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8192;
/// Default time allowed for a backend connect.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u32 = 2_000;
/// Default inactivity limit, client and server side.
pub const DEFAULT_IDLE_TIMEOUT_MS: u32 = 60_000;
/// Default time a connection may wait for a free backend slot.
pub const DEFAULT_QUEUE_TIMEOUT_MS: u32 = 5_000;
/// Default time an HTTP backend has to start its response after the request was sent (then `504`);
/// proxymatic's and HAProxy's `timeout server`.
pub const DEFAULT_SERVER_TIMEOUT_MS: u32 = 60_000;
/// Default inactivity limit of an upgraded (WebSocket) connection, both ways.
pub const DEFAULT_TUNNEL_TIMEOUT_MS: u32 = 3_600_000;

/// The whole routing state at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Strictly increasing per controlplane lineage; a dataplane never applies a version older than its own.
    pub version: u64,
    /// Hash of `listeners`, `routes` and `clusters` (not of `version`): equal hashes mean identical routing.
    pub hash: u64,
    pub listeners: Vec<Listener>,
    /// HTTP routes, each attached to one HTTP listener by address. Top-level rather than nested in the
    /// listener, so that a later delta protocol can change one route without resending a listener with
    /// thousands of virtual hosts.
    pub routes: Vec<Route>,
    pub clusters: Vec<Cluster>,
}

/// An address the dataplane accepts on, and where its connections go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// Service name, for logs and statistics.
    pub name: String,
    pub address: SocketAddr,
    pub protocol: Protocol,
    /// TCP: the [`Cluster`] that receives every connection (required). HTTP: `None`; routes decide.
    pub cluster: Option<String>,
    /// HTTP: the limits that apply before a route is known (required). TCP: `None`.
    pub http: Option<HttpListener>,
}

impl Listener {
    /// A TCP listener forwarding every connection to `cluster`.
    pub fn tcp(name: impl Into<String>, address: SocketAddr, cluster: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            address,
            protocol: Protocol::Tcp,
            cluster: Some(cluster.into()),
            http: None,
        }
    }

    /// An HTTP listener; its [`Route`]s say where each request goes.
    pub fn http(name: impl Into<String>, address: SocketAddr, http: HttpListener) -> Self {
        Self {
            name: name.into(),
            address,
            protocol: Protocol::Http,
            cluster: None,
            http: Some(http),
        }
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// Plain TCP: bytes are forwarded untouched.
    Tcp,
    /// HTTP/1.1: each request is routed by header, host and path.
    Http,
}

/// A set of interchangeable backends and how to choose among them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub balance: Balance,
    pub timeouts: Timeouts,
    /// Total concurrent connections for this cluster on one dataplane (all cores together); at least 1.
    pub max_connections: u32,
    pub backends: Vec<Backend>,
    /// Backend connection reuse; `Some` for clusters that serve HTTP routes.
    pub http: Option<ClusterHttp>,
}

/// Backend selection policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Balance {
    /// Smooth weighted round-robin (as nginx): weights are honoured without bursts to one backend.
    RoundRobin,
    /// Fewest current connections relative to weight.
    LeastConn,
}

/// Time limits of a cluster, in milliseconds. All are at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub connect_ms: u32,
    /// Inactivity in both directions after which both sides are closed.
    pub idle_ms: u32,
    /// How long a connection waits for a free backend slot before it is closed.
    pub queue_ms: u32,
    /// HTTP: time from the request sent to the first response byte (then `504`).
    pub server_ms: u32,
    /// HTTP: inactivity limit of an upgraded (`101`) connection.
    pub tunnel_ms: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            idle_ms: DEFAULT_IDLE_TIMEOUT_MS,
            queue_ms: DEFAULT_QUEUE_TIMEOUT_MS,
            server_ms: DEFAULT_SERVER_TIMEOUT_MS,
            tunnel_ms: DEFAULT_TUNNEL_TIMEOUT_MS,
        }
    }
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub address: SocketAddr,
    /// [`WEIGHT_MIN`]..=[`WEIGHT_MAX`].
    pub weight: u16,
    /// Concurrent connections this dataplane may open to the backend, already divided by the group size.
    /// `None` means no per-backend limit; `Some(0)` is invalid (it never means "unlimited").
    pub max_connections: Option<u32>,
    pub state: BackendState,
}

/// Whether a backend takes new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackendState {
    Active,
    /// Keeps its connections, takes no new ones.
    Draining,
}

/// A snapshot that breaks an invariant; `field` is a path such as `clusters[web].backends[1].weight`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("hash: snapshot says {claimed:#018x} but its content hashes to {actual:#018x}")]
    HashMismatch { claimed: u64, actual: u64 },
    #[error("content cannot be hashed: {0}")]
    Unhashable(String),
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl Snapshot {
    /// Builds a snapshot without HTTP routes and computes its content hash.
    pub fn new(
        version: u64,
        listeners: Vec<Listener>,
        clusters: Vec<Cluster>,
    ) -> Result<Self, ModelError> {
        Self::with_routes(version, listeners, Vec::new(), clusters)
    }

    /// Builds a snapshot and computes its content hash.
    pub fn with_routes(
        version: u64,
        listeners: Vec<Listener>,
        routes: Vec<Route>,
        clusters: Vec<Cluster>,
    ) -> Result<Self, ModelError> {
        let hash = content_hash(&listeners, &routes, &clusters)?;
        Ok(Self {
            version,
            hash,
            listeners,
            routes,
            clusters,
        })
    }

    /// An empty snapshot at version 0: what a dataplane has before anything was applied.
    pub fn empty() -> Self {
        Self::new(0, Vec::new(), Vec::new()).expect("an empty snapshot always encodes")
    }

    /// Number of backends over all clusters.
    pub fn backend_count(&self) -> usize {
        self.clusters.iter().map(|c| c.backends.len()).sum()
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Checks every invariant a dataplane relies on; the first violation is returned.
    pub fn validate(&self) -> Result<(), ModelError> {
        let actual = content_hash(&self.listeners, &self.routes, &self.clusters)?;
        if actual != self.hash {
            return Err(ModelError::HashMismatch {
                claimed: self.hash,
                actual,
            });
        }
        let mut cluster_names = HashSet::with_capacity(self.clusters.len());
        for (i, cluster) in self.clusters.iter().enumerate() {
            cluster.validate(i)?;
            if !cluster_names.insert(cluster.name.as_str()) {
                return Err(invalid(
                    format!("clusters[{}].name", cluster.name),
                    "duplicate cluster name",
                ));
            }
        }
        let mut addresses = HashSet::with_capacity(self.listeners.len());
        for (i, listener) in self.listeners.iter().enumerate() {
            // Field paths are built only for an error: validation runs on every snapshot received.
            let at = || format!("listeners[{}]", display_name(&listener.name, i));
            if listener.name.is_empty() {
                return Err(invalid(format!("{}.name", at()), "must not be empty"));
            }
            if listener.address.port() == 0 {
                return Err(invalid(format!("{}.address", at()), "port must not be 0"));
            }
            if !addresses.insert(listener.address) {
                return Err(invalid(
                    format!("{}.address", at()),
                    format!("{} is used by another listener", listener.address),
                ));
            }
            match (listener.protocol, &listener.cluster, &listener.http) {
                (Protocol::Tcp, Some(cluster), None) => {
                    if !cluster_names.contains(cluster.as_str()) {
                        return Err(invalid(
                            format!("{}.cluster", at()),
                            format!("no cluster named {cluster:?}"),
                        ));
                    }
                }
                (Protocol::Tcp, None, _) => {
                    return Err(invalid(
                        format!("{}.cluster", at()),
                        "a TCP listener needs one",
                    ));
                }
                (Protocol::Tcp, _, Some(_)) => {
                    return Err(invalid(format!("{}.http", at()), "only for HTTP listeners"));
                }
                (Protocol::Http, Some(_), _) => {
                    return Err(invalid(
                        format!("{}.cluster", at()),
                        "an HTTP listener routes by its routes, not to one cluster",
                    ));
                }
                (Protocol::Http, None, None) => {
                    return Err(invalid(
                        format!("{}.http", at()),
                        "an HTTP listener needs its limits",
                    ));
                }
                (Protocol::Http, None, Some(limits)) => {
                    limits.validate(|| format!("{}.http", at()))?;
                }
            }
        }
        http::validate_routes(&self.routes, &self.listeners, &cluster_names)
    }
}

impl Cluster {
    fn validate(&self, index: usize) -> Result<(), ModelError> {
        let at = || format!("clusters[{}]", display_name(&self.name, index));
        if self.name.is_empty() {
            return Err(invalid(format!("{}.name", at()), "must not be empty"));
        }
        if self.max_connections == 0 {
            return Err(invalid(
                format!("{}.max_connections", at()),
                "must be at least 1",
            ));
        }
        for (name, value) in [
            ("connect_ms", self.timeouts.connect_ms),
            ("idle_ms", self.timeouts.idle_ms),
            ("queue_ms", self.timeouts.queue_ms),
            ("server_ms", self.timeouts.server_ms),
            ("tunnel_ms", self.timeouts.tunnel_ms),
        ] {
            if value == 0 {
                return Err(invalid(
                    format!("{}.timeouts.{name}", at()),
                    "must be at least 1",
                ));
            }
        }
        if let Some(reuse) = &self.http {
            reuse.validate(|| format!("{}.http", at()))?;
        }
        let mut seen = HashSet::with_capacity(self.backends.len());
        for (i, backend) in self.backends.iter().enumerate() {
            let at = || format!("{}.backends[{i}]", at());
            if !(WEIGHT_MIN..=WEIGHT_MAX).contains(&backend.weight) {
                return Err(invalid(
                    format!("{}.weight", at()),
                    format!("{} is outside {WEIGHT_MIN}..={WEIGHT_MAX}", backend.weight),
                ));
            }
            if backend.max_connections == Some(0) {
                return Err(invalid(
                    format!("{}.max_connections", at()),
                    "must be at least 1",
                ));
            }
            if backend.address.port() == 0 {
                return Err(invalid(format!("{}.address", at()), "port must not be 0"));
            }
            if !seen.insert(backend.address) {
                return Err(invalid(
                    format!("{}.address", at()),
                    format!("{} appears twice in the cluster", backend.address),
                ));
            }
        }
        Ok(())
    }
}

pub(crate) fn display_name(name: &str, index: usize) -> String {
    if name.is_empty() {
        index.to_string()
    } else {
        name.to_string()
    }
}

/// Hash of the routing content; stable across processes and platforms because it hashes the wire encoding.
pub fn content_hash(
    listeners: &[Listener],
    routes: &[Route],
    clusters: &[Cluster],
) -> Result<u64, ModelError> {
    let bytes = crate::codec::encode(&(listeners, routes, clusters))
        .map_err(|e| ModelError::Unhashable(e.to_string()))?;
    Ok(xxhash_rust::xxh3::xxh3_64(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Snapshot {
        let backend = |port, weight| Backend {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
            max_connections: Some(10),
            state: BackendState::Active,
        };
        Snapshot::new(
            7,
            vec![Listener::tcp(
                "web",
                "127.0.0.1:18080".parse().unwrap(),
                "web",
            )],
            vec![Cluster {
                name: "web".into(),
                balance: Balance::RoundRobin,
                timeouts: Timeouts::default(),
                max_connections: 100,
                backends: vec![backend(19001, 500), backend(19002, 1)],
                http: None,
            }],
        )
        .unwrap()
    }

    pub(crate) fn field_of(err: ModelError) -> String {
        match err {
            ModelError::Invalid { field, .. } => field,
            other => panic!("expected a field error, got {other}"),
        }
    }

    #[test]
    fn sample_is_valid() {
        sample().validate().unwrap();
        Snapshot::empty().validate().unwrap();
    }

    #[test]
    fn hash_ignores_version_but_not_content() {
        let a = sample();
        let mut b = sample();
        b.version += 1;
        assert_eq!(
            a.hash,
            Snapshot::new(b.version, b.listeners.clone(), b.clusters.clone())
                .unwrap()
                .hash
        );
        b.clusters[0].backends[0].weight = 501;
        let rehashed = Snapshot::new(b.version, b.listeners, b.clusters).unwrap();
        assert_ne!(a.hash, rehashed.hash);
    }

    #[test]
    fn tampered_content_fails_the_hash_check() {
        let mut s = sample();
        s.clusters[0].backends[0].weight = 2;
        assert!(matches!(s.validate(), Err(ModelError::HashMismatch { .. })));
    }

    fn rebuilt(mut edit: impl FnMut(&mut Snapshot)) -> Snapshot {
        let mut s = sample();
        edit(&mut s);
        Snapshot::new(s.version, s.listeners, s.clusters).unwrap()
    }

    #[test]
    fn each_invariant_names_its_field() {
        type Edit = Box<dyn FnMut(&mut Snapshot)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|s| s.clusters[0].backends[0].weight = 0),
                "clusters[web].backends[0].weight",
            ),
            (
                Box::new(|s| s.clusters[0].backends[1].weight = 1001),
                "clusters[web].backends[1].weight",
            ),
            (
                Box::new(|s| s.clusters[0].backends[0].max_connections = Some(0)),
                "clusters[web].backends[0].max_connections",
            ),
            (
                Box::new(|s| s.clusters[0].max_connections = 0),
                "clusters[web].max_connections",
            ),
            (
                Box::new(|s| s.clusters[0].timeouts.idle_ms = 0),
                "clusters[web].timeouts.idle_ms",
            ),
            (
                Box::new(|s| s.clusters[0].timeouts.server_ms = 0),
                "clusters[web].timeouts.server_ms",
            ),
            (
                Box::new(|s| s.listeners[0].cluster = None),
                "listeners[web].cluster",
            ),
            (
                Box::new(|s| s.listeners[0].http = Some(HttpListener::default())),
                "listeners[web].http",
            ),
            (
                Box::new(|s| {
                    let b = s.clusters[0].backends[0].clone();
                    s.clusters[0].backends[1] = b;
                }),
                "clusters[web].backends[1].address",
            ),
            (
                Box::new(|s| s.listeners[0].cluster = Some("nope".into())),
                "listeners[web].cluster",
            ),
            (
                Box::new(|s| {
                    let l = s.listeners[0].clone();
                    s.listeners.push(Listener {
                        name: "other".into(),
                        ..l
                    });
                }),
                "listeners[other].address",
            ),
            (
                Box::new(|s| {
                    let c = s.clusters[0].clone();
                    s.clusters.push(c);
                }),
                "clusters[web].name",
            ),
        ];
        for (mut edit, field) in cases {
            let s = rebuilt(&mut edit);
            assert_eq!(field_of(s.validate().unwrap_err()), field);
        }
    }
}
