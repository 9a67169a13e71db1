//! A real dataplane serving HTTP listeners, fed by a scripted controlplane: the HTTP end-to-end tests
//! (`http_routing`, `http_websocket`) describe routes and clusters in a line each and apply them as
//! snapshots, without a controlplane or a services file in between.

use std::net::SocketAddr;

use ringway_shared::wire::Message;
use ringway_shared::{
    Backend, BackendState, Balance, Cluster, ClusterHttp, HttpListener, Listener, PathMatch, Route,
    Snapshot, Timeouts,
};

use crate::Dataplane;
use crate::fake_controlplane::{FakeControlplane, Session};
use crate::net::{free_port, local};

/// A dataplane fed by a scripted controlplane, with one HTTP listen address picked for it.
pub struct Proxy {
    session: Session,
    pub address: SocketAddr,
    pub dataplane: Dataplane,
    _dir: tempfile::TempDir,
}

impl Proxy {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra dataplane flags.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeControlplane::bind(&dir.path().join("cp.sock"));
        let dataplane = Dataplane::start(dir.path(), &fake.path, extra);
        let session = fake.accept();
        Self {
            session,
            address: local(free_port()),
            dataplane,
            _dir: dir,
        }
    }

    /// Sends `snapshot` and asserts the dataplane applied it.
    pub fn apply(&mut self, snapshot: Snapshot) {
        let version = snapshot.version;
        self.session.send(&snapshot);
        assert_eq!(self.session.reply(), Message::ack(version));
    }
}

/// A route: name, hosts, path prefixes, cluster.
pub type RouteSpec<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a str);

/// A snapshot with one HTTP listener, its prefix routes, and round-robin clusters of loopback backends
/// (by port).
pub fn snapshot(
    version: u64,
    listener: SocketAddr,
    http: HttpListener,
    routes: &[RouteSpec<'_>],
    clusters: &[(&str, &[u16])],
) -> Snapshot {
    Snapshot::with_routes(
        version,
        vec![Listener::http(format!("http:{listener}"), listener, http)],
        routes
            .iter()
            .map(|(name, hosts, paths, cluster)| Route {
                listener,
                name: name.to_string(),
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                paths: paths.iter().map(|p| p.to_string()).collect(),
                path_match: PathMatch::Prefix,
                header: None,
                cluster: cluster.to_string(),
            })
            .collect(),
        clusters
            .iter()
            .map(|(name, ports)| Cluster {
                name: name.to_string(),
                balance: Balance::RoundRobin,
                timeouts: Timeouts {
                    connect_ms: 2_000,
                    ..Timeouts::default()
                },
                max_connections: 10_000,
                backends: ports
                    .iter()
                    .map(|&port| Backend {
                        address: local(port),
                        weight: 500,
                        max_connections: None,
                        state: BackendState::Active,
                    })
                    .collect(),
                http: Some(ClusterHttp::default()),
            })
            .collect(),
    )
    .unwrap()
}
