//! Why a client session ended: one [`CloseReason`] per session, decided where the session ends and counted
//! per service ([`CloseCounts`], in `/stats` and `/metrics`), so an operator can tell timeouts from
//! refusals from peers that went away.
//!
//! A reason also decides how the session ends on the wire ([`CloseReason::resets`]): a session whose bytes
//! were all delivered (or that never carried any) ends with FIN; one that may have lost bytes ends with RST,
//! so neither peer can take a cut stream for a complete one.
//!
//! The reasons are per client session, not per backend connection: when HTTP sessions reuse pooled backend
//! connections, a session's reason stays the one that ended the session (a backend failure becomes the
//! session's reason only when it ends the session), and request-level outcomes (status codes) are counted
//! elsewhere.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client finished first (FIN), then the backend; every byte both ways was delivered.
    ClientEof,
    /// The backend finished first (FIN), then the client; every byte both ways was delivered.
    BackendEof,
    /// Nothing moved for the service's idle timeout and nothing was waiting to be delivered.
    IdleTimeout,
    /// The idle timeout struck while bytes were still waiting to be delivered (a peer stopped reading):
    /// reset, so the reader cannot mistake the cut stream for a complete one.
    IdleTimeoutStranded,
    /// The client left (FIN without having sent anything, or RST) while queued or connecting; it never
    /// took, or gave back at once, its backend slot.
    ClientAborted,
    /// Waited in the queue for the service's queue timeout without getting a backend slot.
    QueueTimeout,
    /// Every backend was full and this worker's queue was full too.
    QueueFull,
    /// The service has no backend that accepts connections.
    NoBackend,
    /// Every connect attempt (up to three backends) failed or timed out.
    ConnectFailed,
    /// Reading from or writing to the client failed (reset by the peer, broken pipe, another socket error).
    ClientReset,
    /// Reading from or writing to the backend failed (reset by the peer, broken pipe, another socket error).
    BackendReset,
    /// No descriptor was left for the backend socket (RLIMIT_NOFILE or the system's file table), and none
    /// freed up while the connection waited in the queue for one (up to the queue timeout).
    FdLimit,
    /// The dataplane stopped and the drain timeout passed with the session still open.
    Shutdown,
}

impl CloseReason {
    /// Every reason, in the order `/stats` and `/metrics` list them.
    pub const ALL: [CloseReason; 13] = [
        CloseReason::ClientEof,
        CloseReason::BackendEof,
        CloseReason::IdleTimeout,
        CloseReason::IdleTimeoutStranded,
        CloseReason::ClientAborted,
        CloseReason::QueueTimeout,
        CloseReason::QueueFull,
        CloseReason::NoBackend,
        CloseReason::ConnectFailed,
        CloseReason::ClientReset,
        CloseReason::BackendReset,
        CloseReason::FdLimit,
        CloseReason::Shutdown,
    ];

    /// The name in `/stats`, `/metrics` and the access log.
    pub const fn name(self) -> &'static str {
        match self {
            CloseReason::ClientEof => "client_eof",
            CloseReason::BackendEof => "backend_eof",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::IdleTimeoutStranded => "idle_timeout_stranded",
            CloseReason::ClientAborted => "client_aborted",
            CloseReason::QueueTimeout => "queue_timeout",
            CloseReason::QueueFull => "queue_full",
            CloseReason::NoBackend => "no_backend",
            CloseReason::ConnectFailed => "connect_failed",
            CloseReason::ClientReset => "client_reset",
            CloseReason::BackendReset => "backend_reset",
            CloseReason::FdLimit => "fd_limit",
            CloseReason::Shutdown => "shutdown",
        }
    }

    /// True if the session ends with RST on both sockets: bytes may have been lost, and a clean end
    /// would tell a peer its stream was complete.
    pub const fn resets(self) -> bool {
        matches!(
            self,
            CloseReason::IdleTimeoutStranded
                | CloseReason::ClientReset
                | CloseReason::BackendReset
                | CloseReason::Shutdown
        )
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Sessions ended per reason, for one service, shared by every worker.
#[derive(Debug, Default)]
pub struct CloseCounts([AtomicU64; CloseReason::ALL.len()]);

impl CloseCounts {
    pub fn count(&self, reason: CloseReason) {
        self.0[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: CloseReason) -> u64 {
        self.0[reason.index()].load(Ordering::Relaxed)
    }

    /// Every reason with its count, in [`CloseReason::ALL`] order.
    pub fn all(&self) -> impl Iterator<Item = (CloseReason, u64)> + '_ {
        CloseReason::ALL.into_iter().map(|r| (r, self.get(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_and_name() {
        let counts = CloseCounts::default();
        for (i, reason) in CloseReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i, "ALL is in declaration order");
            for _ in 0..=i {
                counts.count(reason);
            }
        }
        for (i, (reason, n)) in counts.all().enumerate() {
            assert_eq!(n, i as u64 + 1, "{reason:?}");
        }
        let mut names: Vec<_> = CloseReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CloseReason::ALL.len(), "names are unique");
    }

    #[test]
    fn only_sessions_that_may_have_lost_bytes_reset() {
        assert!(CloseReason::IdleTimeoutStranded.resets());
        assert!(CloseReason::BackendReset.resets());
        assert!(!CloseReason::IdleTimeout.resets());
        assert!(!CloseReason::ClientEof.resets());
        assert!(!CloseReason::QueueTimeout.resets());
    }
}
