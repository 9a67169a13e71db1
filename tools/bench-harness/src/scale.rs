//! Figure 7: routing-state scale — a snapshot of 10,000 services / 100,000 backends applied on every core,
//! and connection errors while it happens.
//!
//! The snapshot is pushed by a small controlplane of our own that speaks `ringway_shared::wire`, not
//! through a services file: the file format requires a `listen` address per service, and 10,000
//! listeners × 2 workers is more sockets than the 20,000 fd hard limit allows. A snapshot may hold
//! clusters without listeners (`Snapshot::validate` only requires listeners to name existing clusters), so
//! this one has [`LISTENERS`] listeners — which the dataplane binds on every worker — and 10,000 clusters.
//!
//! Meanwhile prober threads open connections through one listener that exists in every version; every
//! failed connection (refused, reset, wrong or missing answer) is counted. The dataplane's own JSON log
//! gives the time it took to build the tables (`build_ms`, listener binding included) and to have every
//! worker switch (`apply_ms`); the harness adds the time from sending the frame to the ACK.

use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ringway_shared::wire::{self, FrameDecoder, Hello, Message, Role};
use ringway_shared::{
    Backend, BackendState, Balance, Cluster, Listener, Protocol, Snapshot, Timeouts,
};
use serde::Serialize;

use crate::fleet::{self, Paths};
use crate::reconfig::{NamedBackend, probe};
use crate::stats::median;
use crate::targets::{
    RINGWAY_MODES, SCALE_LISTENERS_FROM, SCALE_PROBE_BACKEND, SCALE_PROBE_LISTEN,
};

/// Listeners in the big snapshot (the probe's included): a few hundred, far below the fd limit.
pub const LISTENERS: usize = 200;
/// Backends per cluster.
const BACKENDS_PER_CLUSTER: usize = 10;
/// Threads opening connections during the applies.
const PROBERS: usize = 2;
/// Longest wait for the dataplane to connect, and for one ACK.
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket read tick while waiting for a reply.
const READ_TICK: Duration = Duration::from_millis(100);
/// Probe traffic before and after the applies, so "during" is surrounded by steady traffic.
const PROBE_MARGIN: Duration = Duration::from_millis(300);
/// Name byte of the probe backend.
const PROBE_NAME: u8 = b'S';

/// One snapshot applied.
#[derive(Debug, Clone, Serialize)]
pub struct Apply {
    pub version: u64,
    /// Encoded frame size.
    pub frame_bytes: usize,
    /// Frame sent → ACK received, as the controlplane sees it.
    pub ack_ms: f64,
    /// From the dataplane's "snapshot applied" log line.
    pub build_ms: f64,
    pub apply_ms: f64,
}

/// Figure 7.
#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    pub services: usize,
    pub backends: usize,
    pub listeners: usize,
    pub workers: usize,
    pub applies: Vec<Apply>,
    pub median_apply_ms: f64,
    pub median_ack_ms: f64,
    pub probe_connections: u64,
    pub probe_errors: u64,
}

/// The big snapshot: `services` clusters of [`BACKENDS_PER_CLUSTER`] backends. The probe cluster has one
/// real backend and draining placeholders (never picked); all other backends are unroutable addresses no
/// connection is ever sent to. `variant` changes every weight, so each version is new content.
pub fn big_snapshot(version: u64, services: usize, variant: u16) -> anyhow::Result<Snapshot> {
    let weight = 100 + variant % 800;
    let mut clusters = Vec::with_capacity(services);
    clusters.push(probe_cluster(weight));
    for i in 1..services {
        let backends = (0..BACKENDS_PER_CLUSTER)
            .map(|b| Backend {
                address: SocketAddr::from((
                    [10, (i >> 8) as u8, (i & 0xff) as u8, b as u8 + 1],
                    8080,
                )),
                weight,
                max_connections: Some(100),
                state: BackendState::Active,
            })
            .collect();
        clusters.push(Cluster {
            name: format!("svc-{i:05}"),
            balance: if i % 2 == 0 {
                Balance::RoundRobin
            } else {
                Balance::LeastConn
            },
            timeouts: Timeouts::default(),
            max_connections: 8192,
            backends,
            http: None,
        });
    }
    let mut listeners = vec![probe_listener()];
    let others = clusters.iter().skip(1).take(LISTENERS - 1);
    for (l, cluster) in others.enumerate() {
        listeners.push(Listener {
            name: cluster.name.clone(),
            address: SocketAddr::from(([127, 0, 0, 1], SCALE_LISTENERS_FROM + l as u16)),
            protocol: Protocol::Tcp,
            cluster: Some(cluster.name.clone()),
            http: None,
        });
    }
    Ok(Snapshot::new(version, listeners, clusters)?)
}

fn probe_listener() -> Listener {
    Listener {
        name: "probe".into(),
        address: SocketAddr::from(([127, 0, 0, 1], SCALE_PROBE_LISTEN)),
        protocol: Protocol::Tcp,
        cluster: Some("probe".into()),
        http: None,
    }
}

fn probe_cluster(weight: u16) -> Cluster {
    let mut backends = vec![Backend {
        address: SocketAddr::from(([127, 0, 0, 1], SCALE_PROBE_BACKEND)),
        weight,
        max_connections: None,
        state: BackendState::Active,
    }];
    backends.extend((1..BACKENDS_PER_CLUSTER).map(|b| Backend {
        address: SocketAddr::from(([127, 0, 0, 1], SCALE_PROBE_BACKEND + 1000 + b as u16)),
        weight,
        max_connections: None,
        state: BackendState::Draining,
    }));
    Cluster {
        name: "probe".into(),
        balance: Balance::RoundRobin,
        timeouts: Timeouts::default(),
        max_connections: 8192,
        backends,
        http: None,
    }
}

/// The controlplane end of one dataplane session.
struct Session {
    stream: UnixStream,
    decoder: FrameDecoder,
}

impl Session {
    fn accept(listener: &UnixListener) -> anyhow::Result<Self> {
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + SESSION_TIMEOUT;
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        bail!("the dataplane did not connect within {SESSION_TIMEOUT:?}");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(READ_TICK))?;
        let mut session = Self {
            stream,
            decoder: FrameDecoder::new(),
        };
        match session.next()? {
            Message::Hello(h) => h.check_compatible()?,
            other => bail!("dataplane opened with {} instead of hello", other.kind()),
        }
        wire::write_message(
            &mut session.stream,
            &Message::Hello(Hello::new(Role::Controlplane, "ringway-bench", 0, 0)),
        )?;
        Ok(session)
    }

    /// The next message other than ping/pong, within [`SESSION_TIMEOUT`].
    fn next(&mut self) -> anyhow::Result<Message> {
        let deadline = Instant::now() + SESSION_TIMEOUT;
        loop {
            match wire::read_message(&mut self.stream, &mut self.decoder) {
                Ok(Some(Message::Ping { nonce })) => {
                    wire::write_message(&mut self.stream, &Message::Pong { nonce })?
                }
                Ok(Some(Message::Pong { .. })) => {}
                Ok(Some(m)) => return Ok(m),
                Ok(None) => bail!("the dataplane closed the session"),
                Err(wire::WireError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() > deadline {
                bail!("no reply from the dataplane within {SESSION_TIMEOUT:?}");
            }
        }
    }

    /// Sends a snapshot and waits for its ACK; returns the frame size and the time to the ACK.
    fn apply(&mut self, snapshot: &Snapshot) -> anyhow::Result<(usize, Duration)> {
        let frame = wire::encode_snapshot_frame(snapshot)?;
        let sent = Instant::now();
        std::io::Write::write_all(&mut self.stream, &frame)?;
        loop {
            match self.next()? {
                Message::Ack { version, .. } if version == snapshot.version => {
                    return Ok((frame.len(), sent.elapsed()));
                }
                Message::Nack { version, reason } => {
                    bail!("the dataplane refused snapshot {version}: {reason}")
                }
                _ => {}
            }
        }
    }
}

/// Counts probe connections and failures until stopped.
struct Probers {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Probers {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let threads = (0..PROBERS)
            .map(|_| {
                let (stop, ok, errors) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&errors));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        match probe(SCALE_PROBE_LISTEN) {
                            Ok(PROBE_NAME) => ok.fetch_add(1, Ordering::Relaxed),
                            _ => errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            errors,
            threads,
        }
    }

    /// Stops the threads; returns (connections, errors).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let ok = self.ok.load(Ordering::Relaxed);
        let errors = self.errors.load(Ordering::Relaxed);
        (ok + errors, errors)
    }
}

impl Drop for Probers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `build_ms` and `apply_ms` of the dataplane's "snapshot applied" line for `version`.
fn logged_times(log: &Path, version: u64) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["fields"].clone())
        .find(|f| f["message"] == "snapshot applied" && f["version"].as_u64() == Some(version))
        .and_then(|f| Some((f["build_ms"].as_f64()?, f["apply_ms"].as_f64()?)))
}

/// Starts a dataplane on our own controlplane socket and applies `applies` big snapshots under probe load.
pub fn run(paths: &Paths, services: usize, applies: usize) -> anyhow::Result<Scale> {
    let socket = paths.run.join("scale.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).context("binding the scale controlplane socket")?;
    let _backend = NamedBackend::start(SCALE_PROBE_BACKEND, PROBE_NAME)?;
    let mut dataplane =
        fleet::start_dataplane(paths, "ringway-scale", &socket, RINGWAY_MODES[0], &[])?;
    let mut session = Session::accept(&listener)?;

    // Version 1: only the probe service, so traffic flows before the big snapshot arrives.
    let small = Snapshot::new(1, vec![probe_listener()], vec![probe_cluster(100)])?;
    session.apply(&small)?;
    let probers = Probers::start();
    std::thread::sleep(PROBE_MARGIN);
    let mut results = Vec::with_capacity(applies);
    let mut backends = 0;
    for k in 0..applies {
        let version = 2 + k as u64;
        let snapshot = big_snapshot(version, services, k as u16)?;
        backends = snapshot.backend_count();
        let (frame_bytes, ack) = session.apply(&snapshot)?;
        if !dataplane.alive() {
            bail!(
                "the dataplane exited during the scale test:\n{}",
                dataplane.log_tail()
            );
        }
        results.push((version, frame_bytes, ack));
    }
    std::thread::sleep(PROBE_MARGIN);
    let (probe_connections, probe_errors) = probers.finish();
    let applies: Vec<Apply> = results
        .into_iter()
        .map(|(version, frame_bytes, ack)| {
            let (build_ms, apply_ms) = logged_times(&dataplane.log, version).unwrap_or((0.0, 0.0));
            Apply {
                version,
                frame_bytes,
                ack_ms: ack.as_secs_f64() * 1e3,
                build_ms,
                apply_ms,
            }
        })
        .collect();
    let apply_ms: Vec<f64> = applies.iter().map(|a| a.apply_ms).collect();
    let ack_ms: Vec<f64> = applies.iter().map(|a| a.ack_ms).collect();
    Ok(Scale {
        services,
        backends,
        listeners: LISTENERS.min(services),
        workers: crate::targets::PROXY_WORKERS,
        median_apply_ms: median(&apply_ms).unwrap_or(0.0),
        median_ack_ms: median(&ack_ms).unwrap_or(0.0),
        applies,
        probe_connections,
        probe_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_big_snapshot_is_valid_and_has_the_design_scale() {
        let s = big_snapshot(2, 10_000, 0).unwrap();
        s.validate().unwrap();
        assert_eq!(s.clusters.len(), 10_000);
        assert_eq!(s.backend_count(), 100_000);
        assert_eq!(s.listeners.len(), LISTENERS);
        assert_ne!(s.hash, big_snapshot(3, 10_000, 1).unwrap().hash);
    }
}
