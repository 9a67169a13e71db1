//! Readiness reports to whoever started us: systemd (`sd_notify`, when `NOTIFY_SOCKET` is set) and a parent
//! started with `--detach` (a pipe named by `RINGWAY_READY_FD`).

use std::io::{self, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Environment variable naming the pipe a `--detach` parent waits on.
pub const READY_FD_ENV: &str = "RINGWAY_READY_FD";
/// What the child writes to that pipe once it serves.
pub const READY_LINE: &[u8] = b"ready\n";

/// Sends `state` (e.g. `READY=1`) to systemd; `Ok(false)` when not started by systemd.
pub fn systemd(state: &str) -> io::Result<bool> {
    notify_socket(std::env::var_os("NOTIFY_SOCKET"), state)
}

fn notify_socket(path: Option<std::ffi::OsString>, state: &str) -> io::Result<bool> {
    let Some(path) = path else {
        return Ok(false);
    };
    let path = path.to_string_lossy().into_owned();
    let address = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(&path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &address)?;
    Ok(true)
}

/// Tells a `--detach` parent that we serve, if we have one.
pub fn parent() -> io::Result<()> {
    let Some(fd) = crate::sys::take_inherited_fd(READY_FD_ENV) else {
        return Ok(());
    };
    std::fs::File::from(fd).write_all(READY_LINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_gets_the_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        assert!(notify_socket(Some(path.into_os_string()), "READY=1").unwrap());
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(
            !notify_socket(None, "READY=1").unwrap(),
            "without NOTIFY_SOCKET nothing is sent"
        );
    }
}
