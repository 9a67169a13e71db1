//! Listening sockets: one `SO_REUSEPORT` socket per worker for every listener address.
//!
//! They are bound by the subscriber *before* a snapshot is published, so a listener that cannot be opened
//! (address in use, permission denied) NACKs the snapshot and no worker ever sees a half-applied table.
//! Each worker accepts only on its own socket; the kernel spreads new connections across the sockets.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use socket2::{Domain, Socket, Type};

/// Accept queue length of each worker's socket (the kernel caps it at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Why a listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("listener {address}: cannot {action}: {source}")]
pub struct ListenerError {
    pub address: SocketAddr,
    pub action: &'static str,
    #[source]
    pub source: io::Error,
}

/// The per-worker sockets of one listening address. Closing happens when the last holder drops it: a
/// removed listener is closed once every worker has stopped accepting on it.
#[derive(Debug)]
pub struct ListenerSockets {
    pub address: SocketAddr,
    sockets: Vec<OwnedFd>,
}

impl ListenerSockets {
    pub fn bind(address: SocketAddr, workers: usize) -> Result<Self, ListenerError> {
        let sockets = (0..workers)
            .map(|_| bind_one(address))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { address, sockets })
    }

    /// Wraps sockets that were bound elsewhere (handed over by another process).
    pub fn from_sockets(address: SocketAddr, sockets: Vec<OwnedFd>) -> Self {
        Self { address, sockets }
    }

    /// The socket worker `worker` accepts on.
    pub fn fd(&self, worker: usize) -> RawFd {
        self.sockets[worker].as_raw_fd()
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

fn bind_one(address: SocketAddr) -> Result<OwnedFd, ListenerError> {
    let fail = |action, source| ListenerError {
        address,
        action,
        source,
    };
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )
    .map_err(|e| fail("create a socket", e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| fail("set SO_REUSEADDR", e))?;
    socket
        .set_reuse_port(true)
        .map_err(|e| fail("set SO_REUSEPORT", e))?;
    if address.is_ipv6() {
        // Lets an IPv4 listener on the same port coexist with an IPv6 one.
        socket
            .set_only_v6(true)
            .map_err(|e| fail("set IPV6_V6ONLY", e))?;
    }
    socket
        .set_tcp_nodelay(true)
        .map_err(|e| fail("set TCP_NODELAY", e))?;
    socket.bind(&address.into()).map_err(|e| fail("bind", e))?;
    socket
        .listen(LISTEN_BACKLOG)
        .map_err(|e| fail("listen", e))?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_gets_its_own_socket_on_one_port() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = probe.local_addr().unwrap();
        drop(probe);
        let sockets = ListenerSockets::bind(address, 3).unwrap();
        assert_eq!(sockets.len(), 3);
        assert_ne!(sockets.fd(0), sockets.fd(1));
    }

    #[test]
    fn a_port_held_without_reuseport_is_a_named_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let err = ListenerSockets::bind(address, 2).unwrap_err();
        assert_eq!(err.action, "bind");
        assert!(err.to_string().contains(&address.to_string()));
    }
}
