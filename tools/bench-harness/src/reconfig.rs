//! Figure 6: reconfiguration latency — a backend is added through a configuration source, and the clock
//! stops when the first connection reaches it.
//!
//! Two backends of the harness answer each connection with their own name byte. Each change makes the
//! other one the service's backend (it is added, the previous one removed in the same change), so the
//! first connection that reads the new name is the first routed by the new routes. A prober connects in a
//! loop from the moment the change is issued.
//!
//! Sources are behind [`Source`]: the static services file (the backend is replaced in the file) and the
//! controlplane's HTTP API (both backends are in the file; a blue/green switch moves the service to the
//! other one). etcd's latency is measured by `tests/tests/discovery_latency.rs` (see `docs/discovery.md`):
//! the harness installs no etcd.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::fleet::{self, Paths};
use crate::stats::percentile;
use crate::targets::{RECONFIG_API, RECONFIG_BACKENDS, RECONFIG_LISTEN, RINGWAY_MODES, local};

/// A change not visible after this long counts as a timeout (and is reported, not hidden).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a change has been seen, before the next one, so changes never overlap.
const BETWEEN_CHANGES: Duration = Duration::from_millis(50);
/// How long the stack may take to route the first connection at all.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Connect/read timeout of one probe connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Consecutive probes answered by the first backend before the API measurement starts: with both backends
/// in the catalog, one answer could come from the rotation rather than from the switch.
const SETTLED_PROBES: usize = 20;

/// A way of telling Ringway that the probed service's backend is now `port`.
pub trait Source {
    /// Short name for the report: "file", later "api", "etcd".
    fn name(&self) -> &'static str;
    /// Issues the change and returns the instant it was issued (the start of the measured interval).
    fn switch_to(&mut self, port: u16) -> anyhow::Result<Instant>;
}

/// The static services file, replaced atomically (write a temporary file, rename), as configuration
/// management tools do.
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    pub fn new(path: &Path, initial: u16) -> anyhow::Result<Self> {
        let source = Self {
            path: path.to_path_buf(),
        };
        std::fs::write(path, Self::text(initial))?;
        Ok(source)
    }

    fn text(port: u16) -> String {
        fleet::ringway_services(&[("reconf", RECONFIG_LISTEN, port)])
    }
}

impl Source for FileSource {
    fn name(&self) -> &'static str {
        "file"
    }

    fn switch_to(&mut self, port: u16) -> anyhow::Result<Instant> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, Self::text(port))?;
        let issued = Instant::now();
        std::fs::rename(&tmp, &self.path)?;
        Ok(issued)
    }
}

/// The controlplane's HTTP API: `POST /v1/services/<service>/switch` to the one backend (docs/api.md).
pub struct ApiSource {
    service: &'static str,
}

impl ApiSource {
    fn text() -> String {
        let backends: Vec<String> = RECONFIG_BACKENDS
            .iter()
            .map(|p| format!("{{ address = \"{}\" }}", local(*p)))
            .collect();
        format!(
            "# Written by tools/bench: both backends; the API's switch picks one.\n\n[[service]]\nname = \"reconf\"\nlisten = \"{}\"\nbackends = [{}]\n",
            local(RECONFIG_LISTEN),
            backends.join(", ")
        )
    }
}

impl Source for ApiSource {
    fn name(&self) -> &'static str {
        "api"
    }

    fn switch_to(&mut self, port: u16) -> anyhow::Result<Instant> {
        let body = format!("{{\"backends\":[\"{}\"]}}", local(port));
        let request = format!(
            "POST /v1/services/{}/switch HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.service,
            local(RECONFIG_API),
            body.len()
        );
        let issued = Instant::now();
        let mut stream = TcpStream::connect_timeout(&local(RECONFIG_API), PROBE_TIMEOUT)
            .context("connecting to the controlplane API")?;
        stream.set_read_timeout(Some(CHANGE_TIMEOUT))?;
        stream.write_all(request.as_bytes())?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .context("reading the API's answer")?;
        if !answer.starts_with("HTTP/1.1 200") {
            bail!(
                "the API refused the switch: {}",
                answer.lines().next().unwrap_or("")
            );
        }
        Ok(issued)
    }
}

/// A backend that answers every connection with one name byte and closes it.
pub struct NamedBackend {
    stop: Arc<AtomicBool>,
    port: u16,
    thread: Option<JoinHandle<()>>,
}

impl NamedBackend {
    pub fn start(port: u16, name: u8) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(local(port))
            .with_context(|| format!("binding a named backend on {port}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::Acquire) {
                    break;
                }
                if let Ok(mut s) = stream {
                    let _ = s.write_all(&[name]);
                }
            }
        });
        Ok(Self {
            stop,
            port,
            thread: Some(thread),
        })
    }
}

impl Drop for NamedBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&local(self.port), PROBE_TIMEOUT);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection through `port`: the name byte of the backend that answered.
pub fn probe(port: u16) -> std::io::Result<u8> {
    let mut s = TcpStream::connect_timeout(&local(port), PROBE_TIMEOUT)?;
    s.set_read_timeout(Some(PROBE_TIMEOUT))?;
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte)?;
    Ok(byte[0])
}

/// Figure 6 for one source.
#[derive(Debug, Clone, Serialize)]
pub struct Reconfig {
    pub source: String,
    pub changes: usize,
    /// Changes that were not visible within the timeout.
    pub timeouts: usize,
    /// Probe connections that failed (refused, reset, no answer) while changes were applied.
    pub probe_errors: u64,
    pub probes: u64,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples_ms: Vec<f64>,
}

/// Runs `changes` backend changes through `source` against a running Ringway listening on
/// [`RECONFIG_LISTEN`] whose backend is currently `RECONFIG_BACKENDS[0]`.
pub fn measure(source: &mut dyn Source, changes: usize) -> anyhow::Result<Reconfig> {
    let names = [b'A', b'B'];
    let ready = Instant::now() + READY_TIMEOUT;
    while probe(RECONFIG_LISTEN).ok() != Some(names[0]) {
        if Instant::now() > ready {
            bail!("the reconfiguration service never answered from its first backend");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut samples, mut timeouts, mut probes, mut errors) = (Vec::new(), 0, 0u64, 0u64);
    for i in 0..changes {
        let next = (i + 1) % 2;
        let issued = source.switch_to(RECONFIG_BACKENDS[next])?;
        let deadline = issued + CHANGE_TIMEOUT;
        loop {
            probes += 1;
            match probe(RECONFIG_LISTEN) {
                Ok(b) if b == names[next] => {
                    samples.push(issued.elapsed().as_secs_f64() * 1e3);
                    break;
                }
                Ok(_) => {}
                Err(_) => errors += 1,
            }
            if Instant::now() > deadline {
                timeouts += 1;
                break;
            }
        }
        std::thread::sleep(BETWEEN_CHANGES);
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Reconfig {
        source: source.name().to_string(),
        changes,
        timeouts,
        probe_errors: errors,
        probes,
        median_ms: percentile(&sorted, 50.0),
        p99_ms: percentile(&sorted, 99.0),
        max_ms: sorted.last().copied().unwrap_or(0.0),
        samples_ms: samples,
    })
}

/// Starts the backends and a Ringway pair on a services file, and measures the file source.
pub fn run_file(paths: &Paths, changes: usize) -> anyhow::Result<Reconfig> {
    let _a = NamedBackend::start(RECONFIG_BACKENDS[0], b'A')?;
    let _b = NamedBackend::start(RECONFIG_BACKENDS[1], b'B')?;
    let file = paths.conf().join("reconfig.services.toml");
    let mut source = FileSource::new(&file, RECONFIG_BACKENDS[0])?;
    let _ringway = fleet::start_ringway(paths, "ringway-reconfig", &file, RINGWAY_MODES[0], None)?;
    measure(&mut source, changes)
}

/// Starts the backends and a Ringway pair with its API, and measures switches through the API.
pub fn run_api(paths: &Paths, changes: usize) -> anyhow::Result<Reconfig> {
    let _a = NamedBackend::start(RECONFIG_BACKENDS[0], b'A')?;
    let _b = NamedBackend::start(RECONFIG_BACKENDS[1], b'B')?;
    let file = paths.conf().join("reconfig-api.services.toml");
    std::fs::write(&file, ApiSource::text())?;
    let _ringway = fleet::start_ringway(
        paths,
        "ringway-reconfig-api",
        &file,
        RINGWAY_MODES[0],
        Some(RECONFIG_API),
    )?;
    let mut source = ApiSource { service: "reconf" };
    let ready = Instant::now() + READY_TIMEOUT;
    loop {
        // The API answers once the controlplane runs; until then the switch fails.
        if source.switch_to(RECONFIG_BACKENDS[0]).is_ok() {
            break;
        }
        if Instant::now() > ready {
            bail!("the controlplane API never accepted the first switch");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut settled = 0;
    while settled < SETTLED_PROBES {
        if Instant::now() > ready {
            bail!("the first switch never took effect");
        }
        settled = if probe(RECONFIG_LISTEN).ok() == Some(b'A') {
            settled + 1
        } else {
            0
        };
    }
    measure(&mut source, changes)
}
