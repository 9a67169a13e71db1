//! Holds the current snapshot and hands new ones to every session.
//!
//! The current snapshot lives in a [`tokio::sync::watch`] channel: each session keeps a receiver and wakes on
//! change, and a session that falls behind simply sees the newest snapshot (intermediate ones are never
//! needed, since a snapshot is the whole state). The snapshot is encoded into its frame once here, not once
//! per dataplane.
//!
//! Identical content is never re-published: the content hash (which does not cover the version) decides. The
//! one exception is [`Publisher::resync_above`], which re-issues the current content under a higher version
//! when a dataplane already holds a version at or above ours with other content (it outlived a controlplane
//! whose clock ran ahead); without it, that dataplane would ignore us until our versions caught up.
//!
//! The publisher also holds its [`Inputs`]: the latest catalog of every source and the operator's
//! overrides. The intake ([`crate::pipeline::intake::run`]) keeps them current; the API reads them to show
//! what was merged and overridden.
//!
//! What the merge did (services sharing a port, renamed names) and which services the compiler had to
//! leave out are logged once per change, not on every publish.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ringway_shared::Snapshot;
use ringway_shared::wire::{WireError, encode_snapshot_frame};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::model::merge::{MergeNote, Merged};
use crate::model::notes::OncePerChange;
use crate::model::{Catalog, SourceId};
use crate::pipeline::compiler::{CompileError, CompileSettings, DroppedService, compile};
use crate::pipeline::merge::merge_sources;
use crate::pipeline::overrides::{Edit, OverrideError, Overrides};
use crate::pipeline::versions::VersionClock;

/// A snapshot together with its encoded frame, shared by every session.
#[derive(Debug)]
pub struct Published {
    pub snapshot: Snapshot,
    /// `Message::Snapshot(snapshot)` encoded with [`encode_snapshot_frame`], ready to write.
    pub frame: Arc<[u8]>,
}

impl Published {
    fn new(snapshot: Snapshot) -> Result<Self, WireError> {
        let frame = encode_snapshot_frame(&snapshot)?;
        Ok(Self {
            snapshot,
            frame: frame.into(),
        })
    }

    pub fn version(&self) -> u64 {
        self.snapshot.version
    }

    pub fn hash(&self) -> u64 {
        self.snapshot.hash
    }
}

/// What sessions watch: `None` until the first snapshot is published.
pub type SnapshotWatch = watch::Receiver<Option<Arc<Published>>>;

/// What [`Publisher::publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// New content went out under this version.
    Published { version: u64 },
    /// The content equals the current snapshot's; nothing was sent.
    Unchanged { version: u64 },
}

/// Why a catalog was not published; the previous snapshot stays current.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("cannot encode snapshot: {0}")]
    Encode(#[from] WireError),
}

/// Keys an older state file's name-keyed overrides by listen address as their services appear.
fn adopt_legacy(overrides: &mut Overrides, merged: &Catalog) {
    for (service, listen) in overrides.adopt_legacy(merged) {
        info!(service, listen = %listen, "override from an older state file now keyed by listen address");
    }
}

/// The single writer of the current snapshot.
#[derive(Debug)]
pub struct Publisher {
    settings: CompileSettings,
    /// Also serialises publishes, so versions reach the channel in increasing order.
    clock: Mutex<VersionClock>,
    /// What was logged about the last publish.
    reported: Mutex<Reported>,
    current: watch::Sender<Option<Arc<Published>>>,
    inputs: Mutex<Inputs>,
}

/// What the last publish logged, so each note is logged once per change.
#[derive(Debug, Default)]
struct Reported {
    merges: OncePerChange<MergeNote>,
    dropped: OncePerChange<DroppedService>,
    left_out: OncePerChange<DroppedService>,
}

/// What every publish is made of.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The latest catalog of every source that sent one.
    pub latest: BTreeMap<SourceId, Catalog>,
    /// The operator's overrides, applied after the merge.
    pub overrides: Overrides,
}

impl Inputs {
    /// Every source's catalog merged (before overrides).
    pub fn merged(&self) -> Merged {
        merge_sources(&self.latest)
    }
}

impl Publisher {
    pub fn new(settings: CompileSettings) -> Self {
        Self {
            settings,
            clock: Mutex::new(VersionClock::new()),
            reported: Mutex::new(Reported::default()),
            current: watch::Sender::new(None),
            inputs: Mutex::new(Inputs::default()),
        }
    }

    fn inputs(&self) -> MutexGuard<'_, Inputs> {
        self.inputs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the inputs, for the API.
    pub fn inputs_view(&self) -> Inputs {
        self.inputs().clone()
    }

    /// Replaces the overrides: restored at start-up (before anything is published), or put back after an
    /// edit whose result did not compile.
    pub fn restore_overrides(&self, overrides: Overrides) {
        self.inputs().overrides = overrides;
    }

    /// Keeps `catalog` as `source`'s latest; the next [`Publisher::publish_inputs`] merges it.
    pub fn record(&self, source: SourceId, catalog: Catalog) {
        self.inputs().latest.insert(source, catalog);
    }

    /// The first service of a source other than `except` whose listen address `clashes` says is taken:
    /// its source, name and address.
    pub fn find_listener(
        &self,
        except: &SourceId,
        clashes: impl Fn(SocketAddr) -> bool,
    ) -> Option<(SourceId, String, SocketAddr)> {
        let inputs = self.inputs();
        inputs
            .latest
            .iter()
            .filter(|(id, _)| *id != except)
            .find_map(|(id, catalog)| {
                catalog
                    .services
                    .iter()
                    .find(|s| clashes(s.listen))
                    .map(|s| (id.clone(), s.name.clone(), s.listen))
            })
    }

    /// Whether any source has sent a catalog yet.
    pub fn has_any_source(&self) -> bool {
        !self.inputs().latest.is_empty()
    }

    /// The sources in `expected` that have not sent a catalog yet.
    pub fn missing_sources<'a>(&self, expected: &'a [SourceId]) -> Vec<&'a SourceId> {
        let inputs = self.inputs();
        expected
            .iter()
            .filter(|id| !inputs.latest.contains_key(*id))
            .collect()
    }

    /// Applies an override edit, checked against the merged catalog; publishing is the caller's next step.
    pub fn apply_edit(&self, edit: &Edit) -> Result<bool, OverrideError> {
        let mut inputs = self.inputs();
        let merged = inputs.merged().catalog;
        adopt_legacy(&mut inputs.overrides, &merged);
        inputs.overrides.edit(edit, &merged)
    }

    /// Merges the latest catalog of every source, applies the overrides, and publishes the result.
    pub fn publish_inputs(&self) -> Result<PublishOutcome, PublishError> {
        let effective = {
            let mut inputs = self.inputs();
            let merged = inputs.merged();
            let news = self.reported().merges.news(merged.notes.iter().cloned());
            for note in news {
                info!("{note}");
            }
            adopt_legacy(&mut inputs.overrides, &merged.catalog);
            inputs.overrides.apply(&merged.catalog)
        };
        let result = self.publish(&effective);
        if let Err(e) = &result {
            error!("merged catalog not published, previous snapshot stays: {e}");
        }
        result
    }

    fn reported(&self) -> MutexGuard<'_, Reported> {
        self.reported.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn settings(&self) -> &CompileSettings {
        &self.settings
    }

    /// A receiver that sees the current snapshot and every later one.
    pub fn subscribe(&self) -> SnapshotWatch {
        self.current.subscribe()
    }

    pub fn current(&self) -> Option<Arc<Published>> {
        self.current.borrow().clone()
    }

    /// Compiles `catalog` and, if its content differs from the current snapshot, publishes it under a new
    /// version. A service the compiler had to leave out is logged (once per change) and the rest published.
    /// On error nothing changes.
    pub fn publish(&self, catalog: &Catalog) -> Result<PublishOutcome, PublishError> {
        let mut clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        let compiled = compile(catalog, &self.settings)?;
        for dropped in self.reported().dropped.news(compiled.dropped) {
            warn!(
                service = dropped.service,
                listen = %dropped.listen,
                reason = dropped.reason,
                "service left out of the snapshot, the others are published: {}",
                dropped.reason
            );
        }
        for left_out in self.reported().left_out.news(compiled.left_out) {
            warn!(
                service = left_out.service,
                listen = %left_out.listen,
                reason = left_out.reason,
                "part of a service not served: {}",
                left_out.reason
            );
        }
        let mut snapshot = compiled.snapshot;
        if let Some(current) = self.current()
            && current.hash() == snapshot.hash
        {
            debug!(
                version = current.version(),
                "catalog unchanged; nothing published"
            );
            return Ok(PublishOutcome::Unchanged {
                version: current.version(),
            });
        }
        snapshot.version = clock.issue();
        let version = snapshot.version;
        self.send(Published::new(snapshot)?, "published snapshot");
        Ok(PublishOutcome::Published { version })
    }

    /// A dataplane reported `peer_version` with `peer_hash`. Every later version will be above it, and if
    /// that version is at or above the current one with different content, the current content is re-issued
    /// under a higher version so the dataplane accepts it. Returns the new version, if one was issued.
    pub fn resync_above(
        &self,
        peer_version: u64,
        peer_hash: u64,
    ) -> Result<Option<u64>, PublishError> {
        let mut clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        clock.observe(peer_version);
        let Some(current) = self.current() else {
            return Ok(None);
        };
        if current.version() > peer_version || current.hash() == peer_hash {
            return Ok(None);
        }
        let mut snapshot = current.snapshot.clone();
        snapshot.version = clock.issue();
        let version = snapshot.version;
        self.send(
            Published::new(snapshot)?,
            "re-published snapshot above a dataplane's version",
        );
        Ok(Some(version))
    }

    fn send(&self, published: Published, what: &'static str) {
        info!(
            version = published.version(),
            hash = %format_args!("{:016x}", published.hash()),
            services = published.snapshot.listeners.len(),
            backends = published.snapshot.backend_count(),
            bytes = published.frame.len(),
            "{what}"
        );
        self.current.send_replace(Some(Arc::new(published)));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Service;
    use ringway_shared::wire::decode_frame;
    use std::num::NonZeroU32;

    pub(crate) fn publisher() -> Publisher {
        Publisher::new(CompileSettings::new(
            NonZeroU32::MIN,
            NonZeroU32::new(100).unwrap(),
        ))
    }

    pub(crate) fn catalog(weight: u16) -> Catalog {
        let mut web = Service::for_test(
            "web",
            "127.0.0.1:18080".parse().unwrap(),
            None,
            ["127.0.0.1:19001".parse().unwrap()],
        );
        web.instances[0].weight = weight;
        Catalog {
            services: vec![web],
        }
    }

    pub(crate) fn published_version(outcome: PublishOutcome) -> u64 {
        match outcome {
            PublishOutcome::Published { version } => version,
            PublishOutcome::Unchanged { .. } => panic!("expected a publish, got {outcome:?}"),
        }
    }

    #[test]
    fn identical_content_is_not_republished() {
        let p = publisher();
        let mut rx = p.subscribe();
        assert!(p.current().is_none());
        let v1 = published_version(p.publish(&catalog(1)).unwrap());
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        assert_eq!(
            p.publish(&catalog(1)).unwrap(),
            PublishOutcome::Unchanged { version: v1 }
        );
        assert!(!rx.has_changed().unwrap());
        let v2 = published_version(p.publish(&catalog(2)).unwrap());
        assert!(v2 > v1);
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn the_frame_holds_the_snapshot() {
        let p = publisher();
        p.publish(&catalog(7)).unwrap();
        let current = p.current().unwrap();
        let ringway_shared::wire::Message::Snapshot(decoded) =
            decode_frame(&current.frame).unwrap()
        else {
            panic!("frame is not a snapshot");
        };
        assert_eq!(*decoded, current.snapshot);
        decoded.validate().unwrap();
    }

    #[test]
    fn a_failed_compile_keeps_the_current_snapshot() {
        let p = publisher();
        let v = published_version(p.publish(&catalog(1)).unwrap());
        let mut bad = catalog(1);
        bad.services.push(bad.services[0].clone());
        assert!(p.publish(&bad).is_err());
        assert_eq!(p.current().unwrap().version(), v);
    }

    #[test]
    fn a_bad_service_is_left_out_and_the_others_still_publish() {
        let p = publisher();
        let mut with_bad = catalog(1);
        let mut bad = with_bad.services[0].clone();
        bad.name = "bad".into();
        bad.listen = "127.0.0.1:18081".parse().unwrap();
        bad.instances[0].address = "127.0.0.1:0".parse().unwrap();
        with_bad.services.push(bad);
        published_version(p.publish(&with_bad).unwrap());
        let names: Vec<String> = p
            .current()
            .unwrap()
            .snapshot
            .listeners
            .iter()
            .map(|l| l.name.clone())
            .collect();
        assert_eq!(names, vec!["web"]);
        // The good service keeps updating while the bad one stays.
        with_bad.services[0].instances[0].weight = 2;
        published_version(p.publish(&with_bad).unwrap());
        assert_eq!(
            p.current().unwrap().snapshot.clusters[0].backends[0].weight,
            2
        );
    }

    #[test]
    fn resync_reissues_above_a_dataplane_that_is_ahead() {
        let p = publisher();
        assert_eq!(
            p.resync_above(5, 5).unwrap(),
            None,
            "nothing to re-issue yet"
        );
        let v = published_version(p.publish(&catalog(1)).unwrap());
        let hash = p.current().unwrap().hash();
        // Behind us, or ahead with our content: nothing to do.
        assert_eq!(p.resync_above(v - 1, 0xbad).unwrap(), None);
        assert_eq!(p.resync_above(v + 10, hash).unwrap(), None);
        // Ahead with other content: same content, higher version.
        let far = v + 1_000_000_000;
        let new = p.resync_above(far, 0xbad).unwrap().unwrap();
        assert!(new > far);
        let current = p.current().unwrap();
        assert_eq!((current.version(), current.hash()), (new, hash));
        // Later publishes stay above what dataplanes reported.
        assert!(published_version(p.publish(&catalog(2)).unwrap()) > new);
    }
}
