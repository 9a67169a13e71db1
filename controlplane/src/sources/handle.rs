//! The source framework: how every source (the services file, Marathon, registrator, etcd v3, Consul) reports,
//! and how its health is kept for operators.
//!
//! A source never talks to the publisher directly. It gets a [`SourceHandle`] and reports one of two things:
//! a new *full* [`Catalog`] ([`SourceHandle::publish`]), or a failure ([`SourceHandle::fail`]). A failure sends
//! nothing: the publisher keeps the source's last good catalog, so a source that is briefly down, answers
//! garbage or loses its watch never empties the routes (the peers' most common bug, see peers.md §6 D).
//!
//! The handle also keeps the source's [`SourceStatus`] in a shared [`SourceRegistry`], whose
//! [`SourceRegistry::sources`] is the serializable view the status API serves. The state machine is small:
//!
//! ```text
//!            success                    failure
//! Starting ───────────► Ok ◄────────┐  ─────────► Stale (a last good catalog is in force)
//!    │                 ▲  │ success └──────────────┘
//!    │ failure         │  │ partly last-known
//!    │          success│  ▼
//!    │                Degraded (read, but part of it is last-known data: a name that stopped resolving,
//!    │                          one service whose read failed)
//!    └──────────► Failing (never succeeded: nothing from this source is routed)
//! ```
//!
//! Every change of state (and of what is degraded) is logged once, not on every read.
//!
//! The registry also carries the refresh signal: [`SourceRegistry::refresh_all`] (SIGHUP, `POST
//! /v1/refresh`) makes every source that follows [`SourceHandle::refreshes`] re-read everything at once.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::clock::unix_micros;
use crate::model::{Catalog, SourceId};
use crate::pipeline::intake::{Applied, ApplyError, CatalogSender, CatalogUpdate, Input, submit};

/// Where a source stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    /// Not read yet.
    #[default]
    Starting,
    /// The latest attempt succeeded; its catalog is in force.
    Ok,
    /// The latest attempt failed; the last good catalog stays in force.
    Stale,
    /// The latest attempt succeeded, but part of what it sent is last-known data (see
    /// [`SourceStatus::degraded`]).
    Degraded,
    /// Every attempt so far failed; the source contributes nothing.
    Failing,
}

/// How a source is doing, for logs and the status API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    pub state: SourceState,
    /// Attempts to read the source so far, successful or not.
    pub attempts: u64,
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// When the source last produced a good catalog.
    pub last_ok_unix_us: Option<u64>,
    /// The most recent failure, kept after a recovery so an operator can still see what went wrong.
    pub last_error: Option<String>,
    pub last_error_unix_us: Option<u64>,
    /// While [`SourceState::Degraded`]: which part of the catalog is last-known data, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
}

impl SourceStatus {
    /// A good catalog at `now`.
    pub fn record_success(&mut self, now_us: u64) {
        self.attempts += 1;
        self.consecutive_failures = 0;
        self.last_ok_unix_us = Some(now_us);
        self.state = SourceState::Ok;
        self.degraded = None;
    }

    /// A catalog at `now` that is partly last-known data, for `reason`.
    pub fn record_degraded(&mut self, reason: String, now_us: u64) {
        self.record_success(now_us);
        self.state = SourceState::Degraded;
        self.degraded = Some(reason);
    }

    /// A failed attempt at `now`: stale if something good came before, failing otherwise.
    pub fn record_failure(&mut self, error: String, now_us: u64) {
        self.attempts += 1;
        self.consecutive_failures += 1;
        self.last_error = Some(error);
        self.last_error_unix_us = Some(now_us);
        self.state = if self.last_ok_unix_us.is_some() {
            SourceState::Stale
        } else {
            SourceState::Failing
        };
        self.degraded = None;
    }
}

/// One source's status with its name: an element of [`SourceRegistry::sources`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceView {
    pub source: SourceId,
    #[serde(flatten)]
    pub status: SourceStatus,
}

/// Every source's status, shared between the sources (writers) and whoever reports on them.
#[derive(Debug, Clone)]
pub struct SourceRegistry {
    inner: Arc<Mutex<BTreeMap<SourceId, Arc<watch::Sender<SourceStatus>>>>>,
    /// Bumped to make every source re-read.
    refresh: Arc<watch::Sender<u64>>,
}

impl Default for SourceRegistry {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            refresh: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl SourceRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every source to re-read everything now (SIGHUP, `POST /v1/refresh`); returns their names.
    pub fn refresh_all(&self) -> Vec<SourceId> {
        self.refresh.send_modify(|generation| *generation += 1);
        self.ids()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<SourceId, Arc<watch::Sender<SourceStatus>>>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `id` (status [`SourceState::Starting`]) and returns the handle it reports through.
    pub fn handle(&self, id: SourceId, sink: CatalogSender) -> SourceHandle {
        let status = Arc::clone(
            self.lock()
                .entry(id.clone())
                .or_insert_with(|| Arc::new(watch::Sender::new(SourceStatus::default()))),
        );
        let refresh = self.refresh.subscribe();
        SourceHandle {
            id,
            status,
            sink,
            refresh,
        }
    }

    /// Every registered source, ordered by name: what the status API serves.
    pub fn sources(&self) -> Vec<SourceView> {
        self.lock()
            .iter()
            .map(|(id, status)| SourceView {
                source: id.clone(),
                status: status.borrow().clone(),
            })
            .collect()
    }

    /// The registered source names.
    pub fn ids(&self) -> Vec<SourceId> {
        self.lock().keys().cloned().collect()
    }

    /// Follows one source's status (tests and the status API wait on changes).
    pub fn subscribe(&self, id: &SourceId) -> Option<watch::Receiver<SourceStatus>> {
        self.lock().get(id).map(|s| s.subscribe())
    }
}

/// What a source reports through. Cloneable: a source with several tasks (Consul's watchers) shares one.
#[derive(Debug, Clone)]
pub struct SourceHandle {
    id: SourceId,
    status: Arc<watch::Sender<SourceStatus>>,
    sink: CatalogSender,
    refresh: watch::Receiver<u64>,
}

impl SourceHandle {
    pub fn id(&self) -> &SourceId {
        &self.id
    }

    pub fn status(&self) -> SourceStatus {
        self.status.borrow().clone()
    }

    /// Changes whenever every source is asked to re-read (`changed().await` returns then).
    pub fn refreshes(&self) -> watch::Receiver<u64> {
        let mut refreshes = self.refresh.clone();
        refreshes.borrow_and_update();
        refreshes
    }

    /// Reports a new full catalog and marks the source ok. Returns `false` when the publisher is gone (the
    /// controlplane is shutting down), which tells the source to stop.
    pub async fn publish(&self, catalog: Catalog) -> bool {
        let recovered = self.status.borrow().state != SourceState::Ok;
        self.status.send_modify(|s| s.record_success(unix_micros()));
        if recovered {
            info!(source = %self.id, services = catalog.services.len(),
                  instances = catalog.instance_count(), "source ok");
        } else {
            debug!(source = %self.id, services = catalog.services.len(),
                   instances = catalog.instance_count(), "source read");
        }
        self.send(catalog).await
    }

    /// Reports a catalog that is only partly fresh (a name that stopped resolving, a service whose read
    /// failed: their last known data is inside): it is sent, and the source is marked degraded with
    /// `reason`, which is logged when it changes, not on every read.
    pub async fn publish_degraded(
        &self,
        catalog: Catalog,
        reason: &(dyn fmt::Display + Sync),
    ) -> bool {
        let reason = reason.to_string();
        let before = self.status.borrow().clone();
        self.status
            .send_modify(|s| s.record_degraded(reason.clone(), unix_micros()));
        if before.state != SourceState::Degraded || before.degraded.as_ref() != Some(&reason) {
            warn!(
                source = %self.id,
                "source degraded: part of its catalog is last-known data: {reason}"
            );
        }
        self.send(catalog).await
    }

    /// Reports a read: [`SourceHandle::publish`], or [`SourceHandle::publish_degraded`] when part of it
    /// is last-known data for `degraded`.
    pub async fn publish_read(&self, catalog: Catalog, degraded: Option<String>) -> bool {
        match degraded {
            Some(reason) => self.publish_degraded(catalog, &reason).await,
            None => self.publish(catalog).await,
        }
    }

    /// Marks the source ok without sending anything: for a source that has nothing to say yet (the API
    /// before anything was registered through it), whose empty catalog must not count as an answer about
    /// the world when the first snapshot waits for the sources.
    pub fn record_ok(&self) {
        self.status.send_modify(|s| s.record_success(unix_micros()));
    }

    /// Reports a failed attempt: nothing is sent, the last good catalog stays in force.
    pub fn fail(&self, error: &dyn fmt::Display) {
        let error = error.to_string();
        self.status
            .send_modify(|s| s.record_failure(error.clone(), unix_micros()));
        let status = self.status.borrow().clone();
        let state = match status.state {
            SourceState::Stale => "stale: its last good catalog stays in force",
            _ => "failing: nothing from it is routed yet",
        };
        warn!(
            source = %self.id,
            consecutive_failures = status.consecutive_failures,
            "source {state}: {error}"
        );
    }

    async fn send(&self, catalog: Catalog) -> bool {
        let update = self.update(catalog);
        self.sink
            .send(Input::Catalog {
                update,
                reply: None,
            })
            .await
            .is_ok()
    }

    fn update(&self, catalog: Catalog) -> CatalogUpdate {
        CatalogUpdate {
            source: self.id.clone(),
            catalog,
        }
    }

    /// Reports a new full catalog, like [`SourceHandle::publish`], and waits for the snapshot that carries
    /// it: for a source driven by requests (the API) that must answer with the version it produced.
    pub async fn publish_and_wait(&self, catalog: Catalog) -> Result<Applied, ApplyError> {
        let update = self.update(catalog);
        let result = submit(&self.sink, |reply| Input::Catalog {
            update,
            reply: Some(reply),
        })
        .await;
        if result.is_ok() {
            self.status.send_modify(|s| s.record_success(unix_micros()));
        }
        result
    }

    /// The channel into the publisher, for changes that are not a source's catalog (override edits).
    pub fn sink(&self) -> &CatalogSender {
        &self.sink
    }

    /// Resolves when the publisher is gone.
    pub async fn closed(&self) {
        self.sink.closed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::intake::catalog_channel;

    #[test]
    fn the_state_machine_distinguishes_stale_from_failing() {
        let mut s = SourceStatus::default();
        assert_eq!(s.state, SourceState::Starting);
        s.record_failure("refused".into(), 1);
        assert_eq!(s.state, SourceState::Failing, "never succeeded");
        assert_eq!((s.attempts, s.consecutive_failures), (1, 1));
        s.record_success(2);
        assert_eq!(s.state, SourceState::Ok);
        assert_eq!(s.last_ok_unix_us, Some(2));
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(
            s.last_error.as_deref(),
            Some("refused"),
            "the last error is kept"
        );
        s.record_failure("timeout".into(), 3);
        s.record_failure("timeout".into(), 4);
        assert_eq!(s.state, SourceState::Stale, "a good catalog came before");
        assert_eq!((s.attempts, s.consecutive_failures), (4, 2));
        assert_eq!(s.last_error_unix_us, Some(4));
        s.record_success(5);
        assert_eq!(s.state, SourceState::Ok);
    }

    #[tokio::test]
    async fn handles_report_into_the_registry_and_the_channel() {
        let registry = SourceRegistry::new();
        let (sink, mut updates) = catalog_channel();
        let a = registry.handle(SourceId::new("consul"), sink.clone());
        let b = registry.handle(SourceId::new("marathon"), sink);
        b.fail(&"connection refused");
        assert!(a.publish(Catalog::default()).await);
        let Ok(Input::Catalog {
            update,
            reply: None,
        }) = updates.try_recv()
        else {
            panic!("expected consul's catalog");
        };
        assert_eq!(update.source, SourceId::new("consul"));
        assert!(updates.try_recv().is_err(), "a failure sends nothing");

        let views = registry.sources();
        assert_eq!(views.len(), 2);
        assert_eq!(views[0].source.0, "consul");
        assert_eq!(views[0].status.state, SourceState::Ok);
        assert_eq!(views[1].status.state, SourceState::Failing);
        let json = serde_json::to_value(&views).unwrap();
        assert_eq!(json[1]["source"], "marathon");
        assert_eq!(json[1]["state"], "failing");
        assert_eq!(json[1]["last_error"], "connection refused");

        drop(updates);
        assert!(!a.publish(Catalog::default()).await, "publisher gone");
    }

    #[tokio::test]
    async fn a_degraded_read_is_sent_and_shown_with_its_reason_until_a_clean_one() {
        let registry = SourceRegistry::new();
        let (sink, mut updates) = catalog_channel();
        let consul = registry.handle(SourceId::new("consul"), sink);
        let reason = "web.example: name does not resolve, last known address kept";
        assert!(consul.publish_degraded(Catalog::default(), &reason).await);
        assert!(updates.try_recv().is_ok(), "a degraded read is still sent");
        let json = serde_json::to_value(registry.sources()).unwrap();
        assert_eq!(json[0]["state"], "degraded");
        assert_eq!(json[0]["degraded"], reason);
        assert!(consul.publish(Catalog::default()).await);
        let json = serde_json::to_value(registry.sources()).unwrap();
        assert_eq!(json[0]["state"], "ok");
        assert!(json[0].get("degraded").is_none(), "{json}");
    }
}
