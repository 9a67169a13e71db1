//! The dataplane's side of the controlplane socket: connect (with capped backoff), say hello with the
//! applied version, then validate, apply and ACK or NACK every snapshot that arrives.
//!
//! Applying means: check the snapshot's invariants, build a routing table (binding any new listeners),
//! publish it to every worker and wait until all have switched, then persist it to the state file.
//! Anything that fails before publication leaves the previous routes serving, and the NACK says why.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_shared::wire::{self, FrameDecoder, Hello, Message, Role};
use ringway_shared::{ModelError, Snapshot};

use crate::routing::{BuildError, Published, TableBuilder};
use crate::state_file;

/// First retry delay after the controlplane could not be reached.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest delay between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often we ping the controlplane; a session silent for three intervals is considered dead.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long all workers get to switch to a new table before the subscriber logs a warning.
const APPLY_WAIT: Duration = Duration::from_secs(5);
/// Read timeout on the socket: how often the session loop checks liveness and shutdown.
const READ_TICK: Duration = Duration::from_millis(500);

/// Why a snapshot was refused (the text of the NACK).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("invalid snapshot: {0}")]
    Invalid(#[from] ModelError),
    #[error("version {offered} is not newer than the applied version {applied}")]
    Stale { offered: u64, applied: u64 },
    #[error("{0}")]
    Build(#[from] BuildError),
}

/// Why a session with the controlplane ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error("controlplane closed the connection")]
    Closed,
    #[error("controlplane silent for {0:?}")]
    Silent(Duration),
    #[error("controlplane sent {0} before hello")]
    NoHello(&'static str),
}

/// Applies snapshots; owns what persists across them.
pub struct Subscriber {
    socket: PathBuf,
    name: String,
    published: Arc<Published>,
    builder: TableBuilder,
    state_file: Option<PathBuf>,
    applied: Option<Arc<Snapshot>>,
    /// `applied` is not in the state file yet. It is written after the ACK has gone out, so a large
    /// snapshot's disk write does not delay the controlplane's view of the rollout.
    unsaved: bool,
    /// The last session got as far as the controlplane's hello.
    greeted: bool,
}

impl Subscriber {
    pub fn new(
        socket: PathBuf,
        name: String,
        published: Arc<Published>,
        builder: TableBuilder,
        state_file: Option<PathBuf>,
    ) -> Self {
        Self {
            socket,
            name,
            published,
            builder,
            state_file,
            applied: None,
            unsaved: false,
            greeted: false,
        }
    }

    pub fn applied_version(&self) -> u64 {
        self.applied.as_ref().map_or(0, |s| s.version)
    }

    /// Validates and applies one snapshot on every worker.
    pub fn apply(&mut self, snapshot: Snapshot) -> Result<(), ApplyError> {
        snapshot.validate()?;
        if let Some(applied) = &self.applied {
            if snapshot.version == applied.version && snapshot.hash == applied.hash {
                return Ok(());
            }
            // New content must come with a new version: one version, one routing.
            if snapshot.version <= applied.version {
                return Err(ApplyError::Stale {
                    offered: snapshot.version,
                    applied: applied.version,
                });
            }
        }
        let started = Instant::now();
        let snapshot = Arc::new(snapshot);
        let table = self.builder.build(Arc::clone(&snapshot))?;
        let built = started.elapsed();
        if let Err(lag) = self.published.publish(table, APPLY_WAIT) {
            tracing::warn!(%lag, "snapshot published but not yet applied everywhere");
        }
        tracing::info!(
            version = snapshot.version,
            listeners = snapshot.listeners.len(),
            clusters = snapshot.clusters.len(),
            backends = snapshot.backend_count(),
            build_ms = built.as_secs_f64() * 1e3,
            apply_ms = started.elapsed().as_secs_f64() * 1e3,
            "snapshot applied"
        );
        self.applied = Some(snapshot);
        self.unsaved = true;
        Ok(())
    }

    /// Writes the applied snapshot to the state file if it is not there yet.
    pub fn save(&mut self) {
        if !std::mem::take(&mut self.unsaved) {
            return;
        }
        if let (Some(path), Some(snapshot)) = (&self.state_file, &self.applied)
            && let Err(e) = state_file::store(path, snapshot)
        {
            tracing::warn!(error = %e, "could not save the state file; a restart would start without routes until the controlplane answers");
        }
    }

    /// Applies the state file's snapshot, if there is a usable one.
    pub fn restore(&mut self) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        match state_file::load(&path) {
            Ok(Some(snapshot)) => {
                let version = snapshot.version;
                match self.apply(snapshot) {
                    Ok(()) => {
                        // It came from the file: nothing to write back.
                        self.unsaved = false;
                        tracing::info!(version, path = %path.display(), "serving the saved snapshot until the controlplane answers")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "saved snapshot not applied")
                    }
                }
            }
            Ok(None) => tracing::info!(path = %path.display(), "no saved snapshot yet"),
            Err(e) => tracing::warn!(error = %e, "saved snapshot not applied"),
        }
    }

    /// Keeps a session with the controlplane for as long as the dataplane runs.
    pub fn run(mut self) {
        // A snapshot taken over from the predecessor is saved before anything else.
        self.save();
        let mut backoff = BACKOFF_START;
        let mut last_error: Option<String> = None;
        while !self.published.is_stopping() {
            self.greeted = false;
            let result = self.session();
            if self.published.is_stopping() {
                break;
            }
            if self.greeted {
                // A working session ended: start over quickly, and report the next failure afresh.
                backoff = BACKOFF_START;
                last_error = None;
            }
            let error = match result {
                Ok(()) => SessionError::Closed.to_string(),
                Err(e) => e.to_string(),
            };
            // One line per change of state, not one per retry.
            if last_error.as_deref() != Some(error.as_str()) {
                tracing::warn!(%error, retry_max_ms = BACKOFF_MAX.as_millis() as u64, "controlplane unreachable; routes stay as they are");
                last_error = Some(error);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn session(&mut self) -> Result<(), SessionError> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| SessionError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        stream
            .set_read_timeout(Some(READ_TICK))
            .map_err(|source| SessionError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (version, hash) = self
            .applied
            .as_ref()
            .map_or((0, 0), |s| (s.version, s.hash));
        wire::write_message(
            &mut stream,
            &Message::Hello(Hello::new(Role::Dataplane, &self.name, version, hash)),
        )?;
        let mut decoder = FrameDecoder::new();
        let mut greeted = false;
        let mut last_heard = Instant::now();
        let mut last_ping = Instant::now();
        let mut nonce = 0u64;
        loop {
            if self.published.is_stopping() {
                return Ok(());
            }
            match wire::read_message(&mut stream, &mut decoder) {
                Ok(Some(message)) => {
                    last_heard = Instant::now();
                    if !greeted {
                        let Message::Hello(hello) = message else {
                            return Err(SessionError::NoHello(message.kind()));
                        };
                        hello.check_compatible()?;
                        greeted = true;
                        self.greeted = true;
                        tracing::info!(controlplane = %hello.name, version = hello.applied_version, "connected to the controlplane");
                        continue;
                    }
                    if let Some(reply) = self.handle(message) {
                        wire::write_message(&mut stream, &reply)?;
                        self.save();
                    }
                }
                Ok(None) => return Err(SessionError::Closed),
                Err(wire::WireError::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
            if last_heard.elapsed() > PING_INTERVAL * 3 {
                return Err(SessionError::Silent(last_heard.elapsed()));
            }
            if last_ping.elapsed() >= PING_INTERVAL {
                nonce += 1;
                wire::write_message(&mut stream, &Message::Ping { nonce })?;
                stream.flush().map_err(wire::WireError::Io)?;
                last_ping = Instant::now();
            }
        }
    }

    fn handle(&mut self, message: Message) -> Option<Message> {
        match message {
            Message::Snapshot(snapshot) => {
                let version = snapshot.version;
                Some(match self.apply(*snapshot) {
                    Ok(()) => Message::Ack { version },
                    Err(e) => {
                        tracing::warn!(version, reason = %e, "snapshot refused; previous routes keep serving");
                        Message::Nack {
                            version,
                            reason: e.to_string(),
                        }
                    }
                })
            }
            Message::Ping { nonce } => Some(Message::Pong { nonce }),
            Message::Pong { .. } => None,
            other => {
                tracing::warn!(
                    kind = other.kind(),
                    "unexpected message from the controlplane ignored"
                );
                None
            }
        }
    }
}
