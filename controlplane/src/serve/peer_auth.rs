//! Who may talk to the controlplane socket.
//!
//! The socket's mode (0660) already limits who can connect; the peer credentials the kernel attaches to a
//! Unix connection (`SO_PEERCRED`, through tokio's `peer_cred()`) are checked as well, so a permissive
//! directory or group cannot hand the routing state, or the ability to ACK it, to another user.
//! Allowed: the controlplane's own effective uid, plus `--allow-uid`.

use std::collections::BTreeSet;

/// Why a peer was turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefused {
    #[error("uid {uid} is not allowed (allowed: {allowed:?}; add it with --allow-uid)")]
    UidNotAllowed { uid: u32, allowed: Vec<u32> },
}

/// The set of uids allowed on the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    allowed: BTreeSet<u32>,
}

impl PeerPolicy {
    /// Our own effective uid plus `extra`.
    pub fn new(extra: impl IntoIterator<Item = u32>) -> Self {
        Self::with_own_uid(effective_uid(), extra)
    }

    fn with_own_uid(own: u32, extra: impl IntoIterator<Item = u32>) -> Self {
        let mut allowed: BTreeSet<u32> = extra.into_iter().collect();
        allowed.insert(own);
        Self { allowed }
    }

    pub fn check(&self, uid: u32) -> Result<(), PeerRefused> {
        if self.allowed.contains(&uid) {
            Ok(())
        } else {
            Err(PeerRefused::UidNotAllowed {
                uid,
                allowed: self.allowed.iter().copied().collect(),
            })
        }
    }
}

/// The effective uid of this process: the owner of the socket it creates.
#[allow(unsafe_code)]
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_and_listed_uids_pass_others_are_refused() {
        let policy = PeerPolicy::with_own_uid(1000, [0, 2000]);
        for uid in [0, 1000, 2000] {
            assert_eq!(policy.check(uid), Ok(()));
        }
        let err = policy.check(1001).unwrap_err();
        assert!(err.to_string().contains("uid 1001"), "{err}");
    }

    #[test]
    fn our_own_uid_is_always_allowed() {
        PeerPolicy::new([]).check(effective_uid()).unwrap();
    }
}
