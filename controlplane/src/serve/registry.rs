//! Who is connected and what they applied: the controlplane's view of its dataplanes.
//!
//! Sessions write here as their dataplane says hello, ACKs, NACKs or is heard from; operators read it (the
//! HTTP API will serve [`DataplaneRegistry::dataplanes`]). It is behind a plain mutex because it is touched a
//! few times per snapshot per dataplane, never per proxied connection, and never held across an `await`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ringway_shared::ListenerFailure;
use serde::Serialize;

use crate::clock::unix_micros;

/// Identifies one session (one connection of a dataplane) for as long as it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SessionId(pub u64);

/// A NACK: the dataplane refused `version` and kept its previous snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nack {
    pub version: u64,
    pub reason: String,
}

/// One connected dataplane, as the API will show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataplaneInfo {
    pub session: SessionId,
    /// The name the dataplane gave in its `Hello`.
    pub name: String,
    /// From `SO_PEERCRED`; `None` if the kernel did not report it.
    pub pid: Option<i32>,
    pub uid: u32,
    pub connected_since_unix_us: u64,
    /// Last time any message arrived from it.
    pub last_seen_unix_us: u64,
    /// The version it said it had applied when it connected.
    pub hello_version: u64,
    /// The last version sent to it, if any.
    pub last_sent: Option<u64>,
    pub last_ack: Option<u64>,
    pub last_nack: Option<Nack>,
    /// Listeners of its last ACKed version it could not open (and keeps retrying), with the error.
    pub failed_listeners: Vec<ListenerFailure>,
}

/// Shared, cloneable handle to the registry.
#[derive(Debug, Clone, Default)]
pub struct DataplaneRegistry {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    sessions: BTreeMap<SessionId, DataplaneInfo>,
}

/// Identity of a dataplane as it connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub name: String,
    pub pid: Option<i32>,
    pub uid: u32,
    pub hello_version: u64,
}

impl DataplaneRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain data behind; still readable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a new session; the returned guard removes it when the session ends, however it ends.
    pub fn register(&self, session: NewSession) -> Registration {
        let now = unix_micros();
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = SessionId(inner.next_id);
        inner.sessions.insert(
            id,
            DataplaneInfo {
                session: id,
                name: session.name,
                pid: session.pid,
                uid: session.uid,
                connected_since_unix_us: now,
                last_seen_unix_us: now,
                hello_version: session.hello_version,
                last_sent: None,
                last_ack: None,
                last_nack: None,
                failed_listeners: Vec::new(),
            },
        );
        Registration {
            registry: self.clone(),
            id,
        }
    }

    fn update(&self, id: SessionId, edit: impl FnOnce(&mut DataplaneInfo)) {
        if let Some(info) = self.lock().sessions.get_mut(&id) {
            edit(info);
        }
    }

    /// Every connected dataplane, ordered by session.
    pub fn dataplanes(&self) -> Vec<DataplaneInfo> {
        self.lock().sessions.values().cloned().collect()
    }

    /// One session's record, if it is still connected.
    pub fn get(&self, id: SessionId) -> Option<DataplaneInfo> {
        self.lock().sessions.get(&id).cloned()
    }
}

/// A live session's entry; dropping it removes the entry.
#[derive(Debug)]
pub struct Registration {
    registry: DataplaneRegistry,
    id: SessionId,
}

impl Registration {
    pub fn id(&self) -> SessionId {
        self.id
    }

    pub fn seen(&self) {
        let now = unix_micros();
        self.registry
            .update(self.id, |info| info.last_seen_unix_us = now);
    }

    pub fn sent(&self, version: u64) {
        self.registry
            .update(self.id, |info| info.last_sent = Some(version));
    }

    /// Records an ACK; returns whether its failed listeners differ from the previous ACK's.
    pub fn ack(&self, version: u64, failed_listeners: Vec<ListenerFailure>) -> bool {
        let mut changed = false;
        self.registry.update(self.id, |info| {
            info.last_ack = Some(version);
            changed = info.failed_listeners != failed_listeners;
            info.failed_listeners = failed_listeners;
        });
        changed
    }

    pub fn nack(&self, version: u64, reason: &str) {
        self.registry.update(self.id, |info| {
            info.last_nack = Some(Nack {
                version,
                reason: reason.to_string(),
            })
        });
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().sessions.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_session(name: &str) -> NewSession {
        NewSession {
            name: name.into(),
            pid: Some(42),
            uid: 1000,
            hello_version: 3,
        }
    }

    #[test]
    fn sessions_are_recorded_updated_and_removed() {
        let registry = DataplaneRegistry::new();
        let a = registry.register(new_session("a"));
        let b = registry.register(new_session("b"));
        assert_ne!(a.id(), b.id());
        a.sent(10);
        a.ack(10, Vec::new());
        b.nack(11, "bind failed");
        let all = registry.dataplanes();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].name, "a");
        assert_eq!((all[0].last_sent, all[0].last_ack), (Some(10), Some(10)));
        assert_eq!(all[0].last_nack, None);
        assert_eq!(
            all[1].last_nack,
            Some(Nack {
                version: 11,
                reason: "bind failed".into()
            })
        );
        let id = a.id();
        drop(a);
        assert!(registry.get(id).is_none());
        assert_eq!(registry.dataplanes().len(), 1);
    }
}
