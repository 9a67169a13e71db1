//! Zero-drop binary upgrade: a running dataplane hands its listening sockets to its successor.
//!
//! The sockets themselves cross a Unix socket (`SCM_RIGHTS`), so their accept queues are never closed: for a
//! moment both processes accept on the same sockets, then the old one stops accepting and drains. Like
//! Envoy's hot restart, sockets go over per worker index; unlike a re-bind, no connection that is already
//! queued in the kernel can be lost.
//!
//! ```text
//! new                                  old (TakeoverServer)
//!  connect takeover.sock  ─────────►   peer uid checked
//!  Request{pid, workers}  ─────────►
//!                         ◄─────────   Offer{listeners, admin, snapshot length}, snapshot frame,
//!                         ◄─────────   descriptors (SCM_RIGHTS, in batches)
//!  adopt sockets, apply snapshot, accept
//!  Ready                  ─────────►   stop accepting (sockets untouched), drain, exit
//! ```
//!
//! Messages are length-prefixed JSON: this protocol only ever runs between two builds of the dataplane on one
//! host, and JSON keeps it debuggable with `socat`. Reads are exact-length so no read ever consumes the byte
//! that carries the descriptors.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ringway_shared::Snapshot;
use ringway_shared::wire::{self, Message};
use serde::{Deserialize, Serialize};

use crate::routing::Published;
use crate::sys;

/// Longest JSON message accepted.
const MAX_MESSAGE: usize = 1 << 20;
/// Longest snapshot frame accepted (the wire protocol's own limit).
const MAX_SNAPSHOT: usize = ringway_shared::wire::MAX_FRAME_LEN;
/// How long either side waits for the other before giving up.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("takeover socket {path}: {source}")]
    Socket { path: PathBuf, source: io::Error },
    #[error("takeover with the running dataplane failed: {0}")]
    Exchange(#[from] io::Error),
    #[error("takeover: the running dataplane sent {0}")]
    Protocol(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    pid: u32,
    workers: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Offer {
    listeners: Vec<OfferedListener>,
    /// The admin endpoint's listening socket, sent after all listener sockets.
    admin: Option<SocketAddr>,
    snapshot_bytes: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct OfferedListener {
    address: SocketAddr,
    sockets: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    ready: bool,
}

fn write_message(stream: &mut UnixStream, value: &impl Serialize) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(io::Error::other)?;
    stream.write_all(&(body.len() as u32).to_be_bytes())?;
    stream.write_all(&body)
}

fn read_exact_vec(stream: &mut UnixStream, len: usize) -> io::Result<Vec<u8>> {
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(body)
}

fn read_message<T: for<'de> Deserialize<'de>>(stream: &mut UnixStream) -> io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::other(format!(
            "message of {len} bytes is too long"
        )));
    }
    serde_json::from_slice(&read_exact_vec(stream, len)?).map_err(io::Error::other)
}

/// What a new dataplane received from its predecessor.
#[derive(Debug)]
pub struct Handover {
    pub listeners: Vec<(SocketAddr, Vec<OwnedFd>)>,
    pub admin: Option<(SocketAddr, OwnedFd)>,
    /// The predecessor's applied snapshot, so the new process routes exactly as it did.
    pub snapshot: Option<Snapshot>,
    stream: UnixStream,
}

impl Handover {
    /// Tells the predecessor we accept on the sockets now; it stops accepting and drains.
    pub fn ready(mut self) -> io::Result<()> {
        write_message(&mut self.stream, &Ready { ready: true })
    }
}

/// Asks the dataplane serving `path` for its sockets. `Ok(None)`: nobody serves it (a fresh start).
pub fn take_over(path: &Path, workers: usize) -> Result<Option<Handover>, TakeoverError> {
    let mut stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(source) => {
            return Err(TakeoverError::Socket {
                path: path.into(),
                source,
            });
        }
    };
    stream.set_read_timeout(Some(PEER_TIMEOUT))?;
    write_message(
        &mut stream,
        &Request {
            pid: std::process::id(),
            workers,
        },
    )?;
    let offer: Offer = read_message(&mut stream)?;
    if offer.snapshot_bytes > MAX_SNAPSHOT {
        return Err(TakeoverError::Protocol(format!(
            "a snapshot of {} bytes",
            offer.snapshot_bytes
        )));
    }
    let snapshot = if offer.snapshot_bytes == 0 {
        None
    } else {
        match wire::decode_frame(&read_exact_vec(&mut stream, offer.snapshot_bytes)?) {
            Ok(Message::Snapshot(snapshot)) => Some(*snapshot),
            Ok(other) => {
                return Err(TakeoverError::Protocol(format!(
                    "a {} message for a snapshot",
                    other.kind()
                )));
            }
            Err(e) => {
                return Err(TakeoverError::Protocol(format!(
                    "an unreadable snapshot: {e}"
                )));
            }
        }
    };
    let expected = offer.listeners.iter().map(|l| l.sockets).sum::<usize>()
        + usize::from(offer.admin.is_some());
    let mut fds = Vec::with_capacity(expected);
    while fds.len() < expected {
        let batch = sys::recv_fds(stream.as_fd(), expected - fds.len())?;
        if batch.is_empty() {
            return Err(TakeoverError::Protocol(
                "a descriptor message without descriptors".into(),
            ));
        }
        fds.extend(batch);
    }
    let mut fds = fds.into_iter();
    let listeners = offer
        .listeners
        .iter()
        .map(|l| (l.address, fds.by_ref().take(l.sockets).collect()))
        .collect();
    let admin = offer
        .admin
        .and_then(|address| fds.next().map(|fd| (address, fd)));
    Ok(Some(Handover {
        listeners,
        admin,
        snapshot,
        stream,
    }))
}

/// Offers this dataplane's sockets to a successor.
pub struct TakeoverServer {
    listener: UnixListener,
    path: PathBuf,
}

impl TakeoverServer {
    /// Binds `path` (mode 0600). A stale socket file is replaced; `Ok(None)` if another live dataplane
    /// already serves it (then this one cannot be taken over, which is logged, not fatal).
    pub fn bind(path: &Path) -> Result<Option<Self>, TakeoverError> {
        let err = |source| TakeoverError::Socket {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Ok(None);
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        Ok(Some(Self {
            listener,
            path: path.into(),
        }))
    }

    /// Like [`bind`](Self::bind), but first removes the socket of the predecessor we just took over from.
    pub fn replace(path: &Path) -> Result<Option<Self>, TakeoverError> {
        let _ = std::fs::remove_file(path);
        Self::bind(path)
    }

    /// Serves successors until one has taken over; then this process hands over and drains.
    pub fn run(self, published: Arc<Published>, admin: Option<(SocketAddr, OwnedFd)>) {
        let own_uid = sys::effective_uid();
        for stream in self.listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            match sys::peer_uid(stream.as_fd()) {
                Some(uid) if uid == own_uid => {}
                other => {
                    tracing::warn!(peer_uid = ?other, "takeover refused: not our own user");
                    continue;
                }
            }
            let _ = stream.set_read_timeout(Some(PEER_TIMEOUT));
            let admin_fd = admin.as_ref().map(|(address, fd)| (*address, fd.as_fd()));
            match offer(&mut stream, &published, admin_fd) {
                Ok(pid) => {
                    tracing::info!(successor = pid, path = %self.path.display(), "sockets handed over; no longer accepting, draining");
                    published.hand_over();
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "takeover attempt failed; still serving"),
            }
        }
    }
}

/// One handover: returns the successor's pid once it said it accepts.
fn offer(
    stream: &mut UnixStream,
    published: &Published,
    admin: Option<(SocketAddr, BorrowedFd<'_>)>,
) -> io::Result<u32> {
    let request: Request = read_message(stream)?;
    let table = published.load();
    let frame = if table.version == 0 {
        Vec::new()
    } else {
        wire::encode_snapshot_frame(&table.snapshot).map_err(io::Error::other)?
    };
    let offer = Offer {
        listeners: table
            .listeners
            .iter()
            .map(|l| OfferedListener {
                address: l.address,
                sockets: l.sockets.len(),
            })
            .collect(),
        admin: admin.map(|(address, _)| address),
        snapshot_bytes: frame.len(),
    };
    write_message(stream, &offer)?;
    stream.write_all(&frame)?;
    let mut fds: Vec<BorrowedFd<'_>> = table
        .listeners
        .iter()
        .flat_map(|l| l.sockets.all())
        .collect();
    fds.extend(admin.map(|(_, fd)| fd));
    for batch in fds.chunks(sys::MAX_FDS_PER_MESSAGE) {
        sys::send_fds(stream.as_fd(), batch)?;
    }
    let ready: Ready = read_message(stream)?;
    if !ready.ready {
        return Err(io::Error::other("successor was not ready"));
    }
    Ok(request.pid)
}
