//! Listening sockets: one `SO_REUSEPORT` socket per worker for every listener address.
//!
//! They are bound by the subscriber *before* a snapshot is published, so every worker sees the same
//! listeners; one that cannot be opened (address in use, permission denied) is left out of the table,
//! reported and retried (see `TableBuilder::build`), and never holds up the rest of the snapshot.
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

/// The `SO_REUSEPORT` sockets of one listening address. Closing happens when the last holder drops it: a
/// removed listener is closed once every worker has stopped accepting on it.
///
/// Normally there is one socket per worker. Sockets handed over by a previous dataplane keep their accept
/// queues, so none is ever closed: with fewer workers than sockets, a worker accepts on several; with more
/// workers, new sockets join the group.
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

    /// Wraps sockets bound by another process, adding sockets until every worker has at least one.
    pub fn adopt(
        address: SocketAddr,
        mut sockets: Vec<OwnedFd>,
        workers: usize,
    ) -> Result<Self, ListenerError> {
        while sockets.len() < workers {
            sockets.push(bind_one(address)?);
        }
        Ok(Self { address, sockets })
    }

    /// The sockets worker `worker` of `workers` accepts on.
    pub fn fds_for(&self, worker: usize, workers: usize) -> impl Iterator<Item = RawFd> + '_ {
        self.sockets
            .iter()
            .enumerate()
            .filter(move |(i, _)| i % workers == worker)
            .map(|(_, fd)| fd.as_raw_fd())
    }

    /// Every socket, for handing them to another process.
    pub fn all(&self) -> impl Iterator<Item = std::os::fd::BorrowedFd<'_>> {
        self.sockets.iter().map(std::os::fd::AsFd::as_fd)
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
        let first: Vec<_> = sockets.fds_for(0, 3).collect();
        let second: Vec<_> = sockets.fds_for(1, 3).collect();
        assert_eq!((first.len(), second.len()), (1, 1));
        assert_ne!(first, second);
    }

    #[test]
    fn handed_over_sockets_are_spread_over_workers_and_topped_up() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = probe.local_addr().unwrap();
        drop(probe);
        let old = ListenerSockets::bind(address, 3).unwrap();
        let inherited: Vec<OwnedFd> = old
            .all()
            .map(|fd| fd.try_clone_to_owned().unwrap())
            .collect();
        // Fewer workers than sockets: none is dropped, one worker takes two.
        let fewer = ListenerSockets::adopt(address, inherited, 2).unwrap();
        assert_eq!(fewer.len(), 3);
        assert_eq!(fewer.fds_for(0, 2).count() + fewer.fds_for(1, 2).count(), 3);
        // More workers than sockets: new sockets join the group.
        let inherited: Vec<OwnedFd> = old
            .all()
            .map(|fd| fd.try_clone_to_owned().unwrap())
            .collect();
        let more = ListenerSockets::adopt(address, inherited, 5).unwrap();
        assert_eq!(more.len(), 5);
        assert!((0..5).all(|w| more.fds_for(w, 5).count() == 1));
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
