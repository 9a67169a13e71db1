//! "The controlplane is serving its socket": told to systemd (`sd_notify` `READY=1`, for `Type=notify`
//! units) and to whoever waits for it in this process (the [`supervisor`](crate::supervisor) starts the
//! dataplane only then, so the dataplane's first connection attempt succeeds instead of backing off).
//!
//! Readiness is a fact about the process, like the `NOTIFY_SOCKET` it is reported to, so it is kept in a
//! process-wide flag rather than threaded through [`Config`](crate::Config).
//!
//! The notification protocol is a single datagram of `KEY=VALUE` lines to the `AF_UNIX` socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`). It is a documented, stable
//! interface (<https://systemd.io/PORTABILITY_AND_STABILITY/>), small enough that std's `UnixDatagram`
//! does it without a dependency on libsystemd or a crate.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::OnceLock;

use tokio::sync::watch;
use tracing::{debug, warn};

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

fn serving_flag() -> &'static watch::Sender<bool> {
    static FLAG: OnceLock<watch::Sender<bool>> = OnceLock::new();
    FLAG.get_or_init(|| watch::Sender::new(false))
}

/// Called once the snapshot server is bound and about to accept dataplanes on `socket`.
///
/// A failure to notify systemd is logged, not returned: the controlplane serves either way, and a unit
/// whose notification went missing is failed by systemd's start timeout, which names the cause.
pub fn serving(socket: &Path) {
    serving_flag().send_replace(true);
    let state = format!(
        "READY=1\nSTATUS=serving route snapshots on {}",
        socket.display()
    );
    match notify(&state) {
        Ok(true) => debug!("told systemd we are ready"),
        Ok(false) => {}
        Err(e) => warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET) that we are ready"),
    }
}

/// Waits until [`serving`] has been called (returns at once if it already was).
pub async fn wait_serving() {
    let mut flag = serving_flag().subscribe();
    // The sender lives in a static and is never dropped, so this only returns once the flag is set.
    let _ = flag.wait_for(|serving| *serving).await;
}

/// Sends `state` to `$NOTIFY_SOCKET`. `Ok(false)` when the variable is not set (not started by systemd,
/// or not as `Type=notify`).
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket `socket` (a path, or `@name` for an abstract socket).
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let address = socket_address(socket)?;
    let sender = UnixDatagram::unbound()?;
    let sent = sender.send_to_addr(state.as_bytes(), &address)?;
    if sent != state.len() {
        return Err(io::Error::other(format!(
            "short write to the notification socket ({sent} of {} bytes)",
            state.len()
        )));
    }
    Ok(())
}

fn socket_address(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(socket),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{NOTIFY_SOCKET}={:?} is neither an absolute path nor an abstract name (@name)",
                socket
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 512];
        let n = socket.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..n].to_vec()).unwrap()
    }

    #[test]
    fn notifies_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1\nSTATUS=x").unwrap();
        assert_eq!(receive(&receiver), "READY=1\nSTATUS=x");
    }

    #[test]
    fn notifies_an_abstract_socket() {
        let name = format!("ringway-test-notify-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        assert_eq!(receive(&receiver), "READY=1");
    }

    #[test]
    fn a_relative_or_missing_socket_is_an_error() {
        let relative = notify_to(OsStr::new("notify.sock"), "READY=1").unwrap_err();
        assert_eq!(relative.kind(), io::ErrorKind::InvalidInput);
        assert!(relative.to_string().contains("NOTIFY_SOCKET"), "{relative}");
        assert!(notify_to(OsStr::new("/nonexistent/ringway/notify.sock"), "READY=1").is_err());
    }

    #[tokio::test]
    async fn waiting_for_serving_returns_once_it_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let waiter = tokio::spawn(wait_serving());
        serving(&dir.path().join("control.sock"));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("wait_serving returned")
            .unwrap();
        // Later waiters return at once.
        tokio::time::timeout(Duration::from_secs(5), wait_serving())
            .await
            .unwrap();
    }
}
