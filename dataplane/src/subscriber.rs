//! The dataplane's side of the controlplane socket: connect (with capped backoff), say hello with the
//! applied version, then validate, apply and ACK or NACK every snapshot that arrives.
//!
//! Applying means: check the snapshot's invariants, build a routing table (binding any new listeners),
//! publish it to every worker and wait until all have switched, then persist it to the state file.
//! Anything that fails before publication leaves the previous routes serving, and the NACK says why.
//!
//! A listener that cannot be opened (another program holds the port, a privileged port) is not such a
//! failure: the rest of the snapshot is applied on every worker, the ACK lists the listener with the
//! operating system's error, and binding it is retried with backoff; each change of that list is ACKed
//! again for the same version.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_shared::wire::{self, FrameDecoder, Hello, Message, Role};
use ringway_shared::{ListenerFailure, ModelError, Snapshot};

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
/// Read timeout on the socket: how often the session loop checks liveness, shutdown and bind retries.
const READ_TICK: Duration = Duration::from_millis(500);
/// First retry of a listener that could not be opened; doubled after each failed retry.
const BIND_RETRY_START: Duration = Duration::from_secs(1);
/// Longest delay between retries of a listener that could not be opened.
const BIND_RETRY_MAX: Duration = Duration::from_secs(30);

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
    /// When to try again to open the listeners the applied table lacks, and the delay after that.
    bind_retry: Option<(Instant, Duration)>,
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
            bind_retry: None,
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
        let before = self.published.load().failed.clone();
        let failed = table.failed.clone();
        if let Err(lag) = self.published.publish(table, APPLY_WAIT) {
            tracing::warn!(%lag, "snapshot published but not yet applied everywhere");
        }
        log_bind_changes(&before, &failed);
        self.schedule_bind_retry(&failed, BIND_RETRY_START);
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

    /// Tries again, when it is time, to open the listeners the applied table lacks. True if the list of
    /// failed listeners changed (and the table with the newly opened ones was published).
    pub fn retry_binds(&mut self) -> bool {
        let Some((at, delay)) = self.bind_retry else {
            return false;
        };
        if Instant::now() < at {
            return false;
        }
        let Some(snapshot) = self.applied.clone() else {
            self.bind_retry = None;
            return false;
        };
        let before = self.published.load().failed.clone();
        // Only the missing listeners are tried; the table is rebuilt only when one of them changed.
        if self.builder.retry_failed(&before) == before {
            self.schedule_bind_retry(&before, (delay * 2).min(BIND_RETRY_MAX));
            return false;
        }
        let table = match self.builder.build(snapshot) {
            Ok(table) => table,
            Err(e) => {
                // The same snapshot built before; it cannot fail now. Stop retrying rather than spin.
                tracing::error!(error = %e, "rebuilding the applied snapshot failed; listener retries stop");
                self.bind_retry = None;
                return false;
            }
        };
        let after = table.failed.clone();
        let changed = after != before;
        if changed {
            // Same version: workers pick up the new listeners; the wait returns at once.
            let _ = self.published.publish(table, APPLY_WAIT);
            log_bind_changes(&before, &after);
        }
        let delay = if changed {
            BIND_RETRY_START
        } else {
            (delay * 2).min(BIND_RETRY_MAX)
        };
        self.schedule_bind_retry(&after, delay);
        changed
    }

    /// Retries opening the `failed` listeners `delay` from now; none failed, no retry.
    fn schedule_bind_retry(&mut self, failed: &[ListenerFailure], delay: Duration) {
        self.bind_retry = (!failed.is_empty()).then(|| (Instant::now() + delay, delay));
    }

    /// The ACK of `version`: what the workers serve, and the listeners they could not open.
    fn ack(&self, version: u64) -> Message {
        Message::Ack {
            version,
            failed_listeners: self.published.load().failed.clone(),
        }
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
            self.retry_binds();
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
                        // A new session knows nothing of listeners we could not open; if the
                        // controlplane has nothing newer to send, no ACK would tell it otherwise.
                        if self.applied.is_some() && !self.published.load().failed.is_empty() {
                            wire::write_message(&mut stream, &self.ack(self.applied_version()))?;
                        }
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
            if greeted && self.retry_binds() {
                wire::write_message(&mut stream, &self.ack(self.applied_version()))?;
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
                    Ok(()) => self.ack(version),
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

/// One line per listener whose state changed between two tables: newly failed (or failing
/// differently), or opened after all.
fn log_bind_changes(before: &[ListenerFailure], after: &[ListenerFailure]) {
    for failure in after.iter().filter(|f| !before.contains(f)) {
        tracing::warn!(
            listener = failure.name,
            address = %failure.address,
            error = failure.error,
            retry_max_ms = BIND_RETRY_MAX.as_millis() as u64,
            "listener cannot be opened; the rest of the snapshot is served and opening it is retried"
        );
    }
    for opened in before
        .iter()
        .filter(|b| !after.iter().any(|a| a.address == b.address))
    {
        tracing::info!(listener = opened.name, address = %opened.address, "listener opened after all, or no longer wanted");
    }
}
