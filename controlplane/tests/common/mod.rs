//! Shared pieces of the integration tests: a server on a background runtime, a fake dataplane speaking the
//! wire protocol with blocking std sockets, and catalogs and services files to feed them.
//!
//! Every wait has a generous deadline only so a broken build fails instead of hanging; no test asserts how
//! long anything took.

#![allow(dead_code)]

use std::io::ErrorKind;
use std::num::NonZeroU32;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_controlplane::model::{Catalog, Instance, Service, ServiceMode, ServiceTimeouts};
use ringway_controlplane::pipeline::compiler::CompileSettings;
use ringway_controlplane::pipeline::publisher::{PublishOutcome, Publisher};
use ringway_controlplane::serve::registry::DataplaneRegistry;
use ringway_controlplane::serve::snapshot_server::{ServerOptions, SnapshotServer};
use ringway_shared::wire::{
    FrameDecoder, Hello, Message, Role, WireError, read_message, write_message,
};
use ringway_shared::{BackendState, Balance, Snapshot};
use tokio::sync::oneshot;

/// Upper bound on any wait; reaching it means the test failed.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// A ping interval long enough that pings never show up in tests that do not look for them.
pub const QUIET_PING: Duration = Duration::from_secs(600);

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn settings() -> CompileSettings {
    CompileSettings::new(NonZeroU32::MIN, NonZeroU32::new(100).unwrap())
}

/// One service `web` on 127.0.0.1:18080 with one backend of `weight`.
pub fn catalog(weight: u16) -> Catalog {
    Catalog {
        services: vec![Service {
            name: "web".into(),
            listen: "127.0.0.1:18080".parse().unwrap(),
            balance: Balance::RoundRobin,
            maxconn: None,
            max_connections: None,
            timeouts: ServiceTimeouts::default(),
            mode: ServiceMode::Tcp,
            route: Default::default(),
            vhost: None,
            app_id: None,
            http_listener: Default::default(),
            instances: vec![Instance {
                address: "127.0.0.1:19001".parse().unwrap(),
                weight,
                maxconn: None,
                state: BackendState::Active,
            }],
        }],
    }
}

/// A services file text with service `web` whose single backend has `weight`.
pub fn services_toml(weight: u16) -> String {
    format!(
        "[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:18080\"\nmaxconn = 10\n\
         backends = [ {{ address = \"127.0.0.1:19001\", weight = {weight} }} ]\n"
    )
}

/// The weight of the first backend of cluster `web`: what the tests change to tell snapshots apart.
pub fn web_weight(snapshot: &Snapshot) -> u16 {
    snapshot.cluster("web").unwrap().backends[0].weight
}

/// A snapshot server on its own runtime, with a publisher the test drives directly.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub publisher: Arc<Publisher>,
    pub registry: DataplaneRegistry,
    shutdown: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    pub runtime: tokio::runtime::Runtime,
}

impl Harness {
    pub fn start(ping_interval: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run").join("control.sock");
        let runtime = runtime();
        let publisher = Arc::new(Publisher::new(settings()));
        let registry = DataplaneRegistry::new();
        let server = runtime
            .block_on(SnapshotServer::bind(
                ServerOptions {
                    socket: socket.clone(),
                    allow_uids: Vec::new(),
                    ping_interval,
                },
                Arc::clone(&publisher),
                registry.clone(),
            ))
            .unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let served = runtime.spawn(server.serve(async {
            let _ = rx.await;
        }));
        Self {
            dir,
            socket,
            publisher,
            registry,
            shutdown: Some(tx),
            served: Some(served),
            runtime,
        }
    }

    /// Publishes and returns the new version; panics if nothing was published.
    pub fn publish(&self, catalog: &Catalog) -> u64 {
        match self.publisher.publish(catalog).unwrap() {
            PublishOutcome::Published { version } => version,
            other => panic!("expected a publish, got {other:?}"),
        }
    }

    pub fn connect(&self, name: &str) -> FakeDataplane {
        FakeDataplane::connect(&self.socket, name)
    }

    /// Stops the server and waits until it has finished.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(served) = self.served.take() {
            self.runtime.block_on(served).unwrap();
        }
    }
}

/// A dataplane as seen on the wire.
pub struct FakeDataplane {
    pub name: String,
    pub stream: UnixStream,
    decoder: FrameDecoder,
}

impl FakeDataplane {
    pub fn connect(socket: &Path, name: &str) -> Self {
        let stream = UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Self {
            name: name.into(),
            stream,
            decoder: FrameDecoder::new(),
        }
    }

    pub fn send(&mut self, message: &Message) {
        write_message(&mut self.stream, message).unwrap();
    }

    /// Sends our hello claiming `applied`, returns the controlplane's hello.
    pub fn hello(&mut self, applied_version: u64, applied_hash: u64) -> Hello {
        let hello = Hello::new(
            Role::Dataplane,
            self.name.clone(),
            applied_version,
            applied_hash,
        );
        self.send(&Message::Hello(hello));
        match self.recv() {
            Message::Hello(theirs) => {
                assert_eq!(theirs.role, Role::Controlplane);
                theirs
            }
            other => panic!("expected hello, got {other:?}"),
        }
    }

    /// The next message; panics on end of stream or after [`DEADLINE`].
    pub fn recv(&mut self) -> Message {
        match self.try_recv() {
            Ok(Some(message)) => message,
            Ok(None) => panic!("{}: stream ended", self.name),
            Err(e) => panic!("{}: {e}", self.name),
        }
    }

    pub fn try_recv(&mut self) -> Result<Option<Message>, WireError> {
        read_message(&mut self.stream, &mut self.decoder)
    }

    pub fn recv_snapshot(&mut self) -> Snapshot {
        match self.recv() {
            Message::Snapshot(s) => *s,
            other => panic!("{}: expected a snapshot, got {other:?}", self.name),
        }
    }

    /// Sends a ping and returns every message that arrived before its pong: a barrier showing that the
    /// controlplane has processed everything sent before it.
    pub fn round_trip(&mut self, nonce: u64) -> Vec<Message> {
        self.send(&Message::Ping { nonce });
        let mut before = Vec::new();
        loop {
            match self.recv() {
                Message::Pong { nonce: n } if n == nonce => return before,
                other => before.push(other),
            }
        }
    }

    /// Asserts the controlplane closes the session, skipping its pings; returns what else arrived.
    pub fn expect_closed(&mut self) -> Vec<Message> {
        let mut other = Vec::new();
        loop {
            match self.try_recv() {
                Ok(None) => return other,
                Ok(Some(Message::Ping { .. })) => {}
                Ok(Some(message)) => other.push(message),
                Err(WireError::Io(e)) if e.kind() == ErrorKind::ConnectionReset => return other,
                Err(e) => panic!("{}: expected the session to close, got {e}", self.name),
            }
        }
    }
}

/// Polls `condition` until it holds; panics after [`DEADLINE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
