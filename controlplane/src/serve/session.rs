//! One dataplane's session on the snapshot socket, from `Hello` to close.
//!
//! ```text
//! dataplane                       controlplane
//!   Hello{applied v, hash}  ──►
//!                           ◄──   Hello{current V, hash}
//!                           ◄──   Snapshot V            (if v < V or the hashes differ)
//!   Ack V | Nack V, reason  ──►
//!                           ◄──   Snapshot V'           (every later publish)
//!   Ping n                  ──►   Pong n
//!                           ◄──   Ping m                (every ping interval)
//! ```
//!
//! Anything that leaves the byte stream in doubt (a garbage, oversized or truncated frame, a second `Hello`)
//! ends this session only; the dataplane reconnects and starts over, which is always safe because snapshots
//! are whole. A session that hears nothing for [`SILENCE_LIMIT_INTERVALS`] ping intervals is closed too, so
//! a hung dataplane does not pin a registry entry forever.

use std::sync::Arc;
use std::time::Duration;

use ringway_shared::wire::{FrameDecoder, Hello, Message, Role, WireError, encode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};
use tracing::{debug, error, info, warn};

use crate::pipeline::publisher::{Published, Publisher};
use crate::serve::registry::{DataplaneRegistry, NewSession, Registration};

/// Ping intervals of silence after which a session is closed.
pub const SILENCE_LIMIT_INTERVALS: u32 = 3;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// What every session needs to know, shared by all of them.
#[derive(Debug)]
pub struct SessionContext {
    pub publisher: Arc<Publisher>,
    pub registry: DataplaneRegistry,
    pub ping_interval: Duration,
    /// Our name in the `Hello` we send.
    pub name: String,
}

impl SessionContext {
    /// How long the peer may stay silent, and how long a write may take.
    fn silence_limit(&self) -> Duration {
        self.ping_interval * SILENCE_LIMIT_INTERVALS
    }
}

/// Credentials of the connected process, from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: Option<i32>,
    pub uid: u32,
}

/// Why a session ended other than by the peer closing it cleanly.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("no hello within {0:?}")]
    HelloTimeout(Duration),
    #[error("first message was {0}, expected hello")]
    NoHello(&'static str),
    #[error("hello says role {0:?}, expected a dataplane")]
    WrongRole(Role),
    #[error("nothing received for {0:?}")]
    Silent(Duration),
    #[error("peer did not take a {bytes}-byte frame within {limit:?}")]
    WriteTimeout { bytes: usize, limit: Duration },
}

/// Serves one connection until it ends, and logs how it ended.
pub async fn run(stream: UnixStream, peer: PeerCred, ctx: Arc<SessionContext>) {
    let mut session = Session {
        stream,
        decoder: FrameDecoder::new(),
        buf: vec![0; READ_CHUNK].into_boxed_slice(),
        peer,
        name: None,
        ctx,
    };
    let result = session.serve().await;
    let name = session.name.as_deref().unwrap_or("(before hello)");
    match result {
        // A probe, such as a second controlplane checking whether the socket is served.
        Ok(()) if session.name.is_none() => debug!(
            pid = peer.pid,
            uid = peer.uid,
            "connection closed before hello"
        ),
        Ok(()) => info!(
            dataplane = name,
            pid = peer.pid,
            uid = peer.uid,
            "dataplane disconnected"
        ),
        Err(e) => error!(
            dataplane = name,
            pid = peer.pid,
            uid = peer.uid,
            "closing dataplane session: {e}"
        ),
    }
}

struct Session {
    stream: UnixStream,
    decoder: FrameDecoder,
    buf: Box<[u8]>,
    peer: PeerCred,
    /// From the dataplane's `Hello`.
    name: Option<String>,
    ctx: Arc<SessionContext>,
}

impl Session {
    async fn serve(&mut self) -> Result<(), SessionError> {
        let limit = self.ctx.silence_limit();
        let first = match timeout(limit, self.read_message()).await {
            Err(_) => return Err(SessionError::HelloTimeout(limit)),
            Ok(first) => first?,
        };
        let hello = match first {
            None => return Ok(()),
            Some(Message::Hello(hello)) => hello,
            Some(other) => return Err(SessionError::NoHello(other.kind())),
        };
        // A peer of another protocol version gets nothing from us: it could not read it.
        hello.check_compatible()?;
        if hello.role != Role::Dataplane {
            return Err(SessionError::WrongRole(hello.role));
        }
        self.name = Some(hello.name.clone());
        info!(
            dataplane = hello.name,
            pid = self.peer.pid,
            uid = self.peer.uid,
            applied_version = hello.applied_version,
            "dataplane connected"
        );
        let registration = self.ctx.registry.register(NewSession {
            name: hello.name.clone(),
            pid: self.peer.pid,
            uid: self.peer.uid,
            hello_version: hello.applied_version,
        });
        self.converse(&hello, &registration).await
    }

    async fn converse(
        &mut self,
        hello: &Hello,
        registration: &Registration,
    ) -> Result<(), SessionError> {
        let ctx = Arc::clone(&self.ctx);
        let mut snapshots = ctx.publisher.subscribe();
        let current = snapshots.borrow_and_update().clone();
        let (our_version, our_hash) = current.as_ref().map_or((0, 0), |p| (p.version(), p.hash()));
        self.send(&Message::Hello(Hello::new(
            Role::Controlplane,
            ctx.name.clone(),
            our_version,
            our_hash,
        )))
        .await?;

        let mut last_sent = None;
        match current {
            Some(p) if hello.applied_version < p.version() || hello.applied_hash != p.hash() => {
                if hello.applied_version < p.version() {
                    self.send_snapshot(&p, registration).await?;
                    last_sent = Some(p.version());
                } else {
                    // It holds a version we never gave it (or not this content under it); the re-issued
                    // snapshot arrives through `snapshots` below.
                    self.resync(hello);
                }
            }
            // Up to date, or we have nothing yet: still keep our versions above what it reported.
            _ => self.resync(hello),
        }

        // Whatever arrived right behind the hello.
        while let Some(message) = self.decoder.next_message()? {
            self.handle(message, registration).await?;
        }

        let limit = ctx.silence_limit();
        let mut pings = interval_at(Instant::now() + ctx.ping_interval, ctx.ping_interval);
        pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut nonce = 0u64;
        loop {
            tokio::select! {
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        // The publisher is gone: the controlplane is shutting down.
                        return Ok(());
                    }
                    let next = snapshots.borrow_and_update().clone();
                    if let Some(p) = next.filter(|p| last_sent.is_none_or(|v| p.version() > v)) {
                        self.send_snapshot(&p, registration).await?;
                        last_sent = Some(p.version());
                    }
                }
                read = self.stream.read(&mut self.buf) => {
                    let n = read.map_err(WireError::from)?;
                    if n == 0 {
                        return if self.decoder.buffered() == 0 {
                            Ok(())
                        } else {
                            Err(self.decoder.truncation().into())
                        };
                    }
                    self.decoder.feed(&self.buf[..n]);
                    last_heard = Instant::now();
                    registration.seen();
                    while let Some(message) = self.decoder.next_message()? {
                        self.handle(message, registration).await?;
                    }
                }
                _ = pings.tick() => {
                    if last_heard.elapsed() >= limit {
                        return Err(SessionError::Silent(limit));
                    }
                    nonce = nonce.wrapping_add(1);
                    self.send(&Message::Ping { nonce }).await?;
                }
            }
        }
    }

    fn resync(&self, hello: &Hello) {
        match self
            .ctx
            .publisher
            .resync_above(hello.applied_version, hello.applied_hash)
        {
            Ok(Some(version)) => info!(
                dataplane = hello.name,
                theirs = hello.applied_version,
                ours = version,
                "dataplane was ahead of us with other content; re-issued the current snapshot above it"
            ),
            Ok(None) => {}
            Err(e) => error!(dataplane = hello.name, "cannot re-issue the snapshot: {e}"),
        }
    }

    async fn handle(
        &mut self,
        message: Message,
        registration: &Registration,
    ) -> Result<(), SessionError> {
        let name = self.name.as_deref().unwrap_or_default();
        match message {
            Message::Ping { nonce } => self.send(&Message::Pong { nonce }).await?,
            Message::Pong { .. } => {}
            Message::Ack {
                version,
                failed_listeners,
            } => {
                debug!(dataplane = name, version, "dataplane applied snapshot");
                let failed = failed_listeners.len();
                let summary: Vec<String> = failed_listeners
                    .iter()
                    .map(|f| format!("{} ({}): {}", f.address, f.name, f.error))
                    .collect();
                if registration.ack(version, failed_listeners) {
                    if failed == 0 {
                        info!(dataplane = name, version, "dataplane opened every listener");
                    } else {
                        warn!(
                            dataplane = name,
                            version,
                            failed_listeners = ?summary,
                            "dataplane applied the snapshot but cannot open some listeners; it retries them"
                        );
                    }
                }
            }
            Message::Nack { version, reason } => {
                warn!(
                    dataplane = name,
                    version, reason, "dataplane refused snapshot"
                );
                registration.nack(version, &reason);
            }
            other @ (Message::Hello(_) | Message::Snapshot(_)) => {
                return Err(WireError::Unexpected {
                    got: other.kind(),
                    expected: "ack, nack, ping or pong",
                }
                .into());
            }
        }
        Ok(())
    }

    /// The next message, `None` if the peer closed between frames.
    async fn read_message(&mut self) -> Result<Option<Message>, SessionError> {
        loop {
            if let Some(message) = self.decoder.next_message()? {
                return Ok(Some(message));
            }
            let n = self
                .stream
                .read(&mut self.buf)
                .await
                .map_err(WireError::from)?;
            if n == 0 {
                return if self.decoder.buffered() == 0 {
                    Ok(None)
                } else {
                    Err(self.decoder.truncation().into())
                };
            }
            self.decoder.feed(&self.buf[..n]);
        }
    }

    async fn send_snapshot(
        &mut self,
        published: &Published,
        registration: &Registration,
    ) -> Result<(), SessionError> {
        self.write(&published.frame).await?;
        registration.sent(published.version());
        debug!(
            dataplane = self.name.as_deref().unwrap_or_default(),
            version = published.version(),
            "sent snapshot"
        );
        Ok(())
    }

    async fn send(&mut self, message: &Message) -> Result<(), SessionError> {
        let frame = encode_frame(message)?;
        self.write(&frame).await
    }

    /// Writes one frame, bounded in time so a dataplane that stopped reading cannot hang the session.
    async fn write(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        let limit = self.ctx.silence_limit();
        match timeout(limit, self.stream.write_all(frame)).await {
            Err(_) => Err(SessionError::WriteTimeout {
                bytes: frame.len(),
                limit,
            }),
            Ok(result) => Ok(result.map_err(WireError::from)?),
        }
    }
}
