//! The Unix socket dataplanes connect to: setting it up safely, admitting peers, and running sessions.
//!
//! Setting up: the parent directory is created if missing. A socket file left at the path is probed: if a
//! process answers, another controlplane is serving and we refuse to start (two controlplanes would fight
//! over the dataplanes); if nothing answers it is a leftover from a crash and is removed. Anything that is
//! not a socket is never removed. After binding, the socket is set to mode 0660.
//!
//! Admitting: each connection's peer uid (`SO_PEERCRED`) is checked against [`PeerPolicy`] before a byte is
//! read. Each admitted connection then runs as its own task (see [`crate::serve::session`]), so a misbehaving
//! dataplane only ever ends its own session.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::pipeline::publisher::Publisher;
use crate::serve::peer_auth::PeerPolicy;
use crate::serve::registry::DataplaneRegistry;
use crate::serve::session::{self, PeerCred, SessionContext};

/// Mode of the socket file: owner and group may connect, nobody else.
pub const SOCKET_MODE: u32 = 0o660;
/// How long a probe of an existing socket may take before we call it stale.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Settings of the snapshot server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub socket: PathBuf,
    /// Uids allowed besides our own.
    pub allow_uids: Vec<u32>,
    pub ping_interval: Duration,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another controlplane is serving {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("cannot create socket directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot check existing socket {path}: {source}")]
    Probe { path: PathBuf, source: io::Error },
    #[error("cannot remove stale socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot bind {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot set mode {SOCKET_MODE:o} on {path}: {source}")]
    Chmod { path: PathBuf, source: io::Error },
}

/// A bound snapshot socket, ready to [`serve`](SnapshotServer::serve).
#[derive(Debug)]
pub struct SnapshotServer {
    listener: UnixListener,
    socket: SocketFile,
    policy: PeerPolicy,
    context: Arc<SessionContext>,
}

impl SnapshotServer {
    /// Claims the socket path and binds it. Must run inside a tokio runtime.
    pub async fn bind(
        options: ServerOptions,
        publisher: Arc<Publisher>,
        registry: DataplaneRegistry,
    ) -> Result<Self, ServerError> {
        let path = options.socket;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| ServerError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        clear_stale_socket(&path).await?;
        let listener = UnixListener::bind(&path).map_err(|source| ServerError::Bind {
            path: path.clone(),
            source,
        })?;
        // From here on, the file is ours and is removed when the server goes away.
        let socket = SocketFile::claim(path.clone());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(
            |source| ServerError::Chmod {
                path: path.clone(),
                source,
            },
        )?;
        info!(socket = %path.display(), "snapshot server listening");
        Ok(Self {
            listener,
            socket,
            policy: PeerPolicy::new(options.allow_uids),
            context: Arc::new(SessionContext {
                publisher,
                registry,
                ping_interval: options.ping_interval,
                name: format!("ringway-controlplane/{}", std::process::id()),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.socket.path
    }

    /// Accepts dataplanes until `shutdown` completes; then closes every session and removes the socket.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Self {
            listener,
            socket,
            policy,
            context,
        } = self;
        let mut sessions = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        if let Some(peer) = admit(&stream, &policy) {
                            sessions.spawn(session::run(stream, peer, Arc::clone(&context)));
                        }
                    }
                    Err(e) => {
                        error!("accept on {} failed: {e}", socket.path.display());
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                Some(joined) = sessions.join_next(), if !sessions.is_empty() => {
                    if let Err(e) = joined
                        && e.is_panic()
                    {
                        error!("a dataplane session panicked: {e}");
                    }
                }
            }
        }
        sessions.shutdown().await;
        drop(listener);
        drop(socket);
    }
}

/// The peer's credentials if it may use the socket; logs and returns `None` otherwise (the stream is then
/// dropped, which closes it).
fn admit(stream: &UnixStream, policy: &PeerPolicy) -> Option<PeerCred> {
    let cred = match stream.peer_cred() {
        Ok(cred) => cred,
        Err(e) => {
            warn!("refusing a connection whose credentials cannot be read: {e}");
            return None;
        }
    };
    let peer = PeerCred {
        pid: cred.pid(),
        uid: cred.uid(),
    };
    match policy.check(peer.uid) {
        Ok(()) => Some(peer),
        Err(refused) => {
            warn!(
                uid = peer.uid,
                pid = peer.pid,
                "refusing connection: {refused}"
            );
            None
        }
    }
}

/// Makes `path` free for binding, or says why it is not.
async fn clear_stale_socket(path: &Path) -> Result<(), ServerError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServerError::Probe {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(ServerError::NotASocket(path.to_path_buf()));
    }
    match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        Ok(Ok(_)) => return Err(ServerError::InUse(path.to_path_buf())),
        // A listener too busy to accept within the timeout is still a listener.
        Err(_) => return Err(ServerError::InUse(path.to_path_buf())),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Ok(Err(source)) => {
            return Err(ServerError::Probe {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    warn!(socket = %path.display(), "removing stale socket left by a previous controlplane");
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ServerError::RemoveStale {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The socket file we bound; removed on drop, unless someone has since replaced it.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    /// (device, inode) right after bind.
    identity: Option<(u64, u64)>,
}

impl SocketFile {
    fn claim(path: PathBuf) -> Self {
        let identity = std::fs::symlink_metadata(&path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Self { path, identity }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let current = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current.is_some()
            && current == self.identity
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            warn!(socket = %self.path.display(), "cannot remove socket: {e}");
        }
    }
}
