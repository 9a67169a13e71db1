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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ringway_shared::Snapshot;
use ringway_shared::wire::{WireError, encode_snapshot_frame};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::catalog::{Catalog, CatalogReceiver};
use crate::compiler::{CompileError, CompileSettings, compile};
use crate::merge::{Origin, merge_catalogs};
use crate::source::SourceId;
use crate::versions::VersionClock;

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

/// The single writer of the current snapshot.
#[derive(Debug)]
pub struct Publisher {
    settings: CompileSettings,
    /// Also serialises publishes, so versions reach the channel in increasing order.
    clock: Mutex<VersionClock>,
    current: watch::Sender<Option<Arc<Published>>>,
}

impl Publisher {
    pub fn new(settings: CompileSettings) -> Self {
        Self {
            settings,
            clock: Mutex::new(VersionClock::new()),
            current: watch::Sender::new(None),
        }
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
    /// version. On error nothing changes.
    pub fn publish(&self, catalog: &Catalog) -> Result<PublishOutcome, PublishError> {
        let mut clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut snapshot = compile(catalog, &self.settings)?;
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

    /// Publishes what the sources send until every sender is gone.
    ///
    /// The latest catalog of every source is kept, and every publish merges all of them
    /// ([`merge_catalogs`]): a source that fails sends nothing, so its last good catalog stays in the merge.
    /// Bursts coalesce. An update that finds the publisher idle (nothing published for a
    /// [`Coalescing::window`]) is published at once: an isolated change has nothing to wait for, and waiting
    /// would only add the window to every change's latency. An update arriving within a window of the last
    /// publish is part of a burst: more are collected until none came for a window (at most
    /// [`Coalescing::max_delay`]), and only then is one snapshot compiled.
    ///
    /// Nothing is published until every source in `expected` has sent a catalog, or until
    /// [`Coalescing::initial_sync`] has passed and at least one has: publishing a half-known world at
    /// start-up would replace what a dataplane restored from its state file with less.
    pub async fn consume(
        self: Arc<Self>,
        mut updates: CatalogReceiver,
        expected: Vec<SourceId>,
        coalescing: Coalescing,
    ) {
        let mut latest: BTreeMap<SourceId, Catalog> = BTreeMap::new();
        let grace_ends = Instant::now() + coalescing.initial_sync;
        let mut syncing = self.current().is_none();
        let mut last_publish: Option<Instant> = None;
        loop {
            let grace_timer = syncing && !latest.is_empty();
            let received = tokio::select! {
                update = updates.recv() => match update {
                    Some(update) => Some(update),
                    None => return,
                },
                () = tokio::time::sleep_until(grace_ends), if grace_timer => None,
            };
            if let Some(update) = received {
                latest.insert(update.source, update.catalog);
                let idle = last_publish.is_none_or(|at| at.elapsed() >= coalescing.window);
                if idle {
                    // Whatever is already queued is part of the same change.
                    while let Ok(update) = updates.try_recv() {
                        latest.insert(update.source, update.catalog);
                    }
                } else if !collect_burst(&mut updates, &mut latest, &coalescing).await {
                    // Every source is gone; publish what we have and stop.
                    self.publish_merged(&latest);
                    return;
                }
            }
            if syncing {
                let missing: Vec<&SourceId> = expected
                    .iter()
                    .filter(|id| !latest.contains_key(*id))
                    .collect();
                if !missing.is_empty() {
                    if Instant::now() < grace_ends {
                        debug!(
                            ?missing,
                            "waiting for every source before the first snapshot"
                        );
                        continue;
                    }
                    warn!(
                        ?missing,
                        "publishing the first snapshot without sources that have not answered yet"
                    );
                }
                syncing = false;
            }
            self.publish_merged(&latest);
            last_publish = Some(Instant::now());
        }
    }

    /// Merges the latest catalog of every source and publishes the result.
    fn publish_merged(&self, latest: &BTreeMap<SourceId, Catalog>) {
        let merged = merge_catalogs(latest.iter().map(|(id, catalog)| {
            (
                Origin {
                    rank: id.rank(),
                    name: id.0.clone(),
                },
                catalog,
            )
        }));
        for note in &merged.notes {
            info!("{note}");
        }
        if let Err(e) = self.publish(&merged.catalog) {
            error!("merged catalog not published, previous snapshot stays: {e}");
        }
    }
}

/// How the publisher turns a stream of catalogs into snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalescing {
    /// Quiet time after an update before publishing (`--coalesce-ms`).
    pub window: Duration,
    /// Longest a continuous stream of updates can hold a publish back.
    pub max_delay: Duration,
    /// Longest the first snapshot waits for every source (`--initial-sync-timeout`).
    pub initial_sync: Duration,
}

/// Default `--coalesce-ms`: short, because the target is p99 < 20 ms from a source change to a routed
/// connection, yet long enough to fold the several reads one change often causes into one snapshot.
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(5);
/// A burst holds a publish back at most this many windows, so a source that never goes quiet still
/// reaches the dataplanes.
pub const COALESCE_MAX_WINDOWS: u32 = 20;
/// Default `--initial-sync-timeout`.
pub const DEFAULT_INITIAL_SYNC: Duration = Duration::from_secs(10);

impl Coalescing {
    /// `window` with the derived maximum delay.
    pub fn new(window: Duration, initial_sync: Duration) -> Self {
        Self {
            window,
            max_delay: window * COALESCE_MAX_WINDOWS,
            initial_sync,
        }
    }
}

impl Default for Coalescing {
    fn default() -> Self {
        Self::new(DEFAULT_COALESCE, DEFAULT_INITIAL_SYNC)
    }
}

/// Takes updates into `latest` until none arrived for a window (or the maximum delay passed). Returns
/// `false` when every sender is gone.
async fn collect_burst(
    updates: &mut CatalogReceiver,
    latest: &mut BTreeMap<SourceId, Catalog>,
    coalescing: &Coalescing,
) -> bool {
    let give_up = Instant::now() + coalescing.max_delay;
    loop {
        let quiet_until = (Instant::now() + coalescing.window).min(give_up);
        match tokio::time::timeout_at(quiet_until, updates.recv()).await {
            Ok(Some(update)) => {
                latest.insert(update.source, update.catalog);
                if Instant::now() >= give_up {
                    return true;
                }
            }
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{
        CatalogUpdate, Instance, Service, ServiceMode, ServiceTimeouts, catalog_channel,
    };
    use ringway_shared::wire::decode_frame;
    use ringway_shared::{BackendState, Balance};
    use std::num::NonZeroU32;

    fn publisher() -> Publisher {
        Publisher::new(CompileSettings {
            group_size: NonZeroU32::MIN,
            default_max_connections: NonZeroU32::new(100).unwrap(),
        })
    }

    fn catalog(weight: u16) -> Catalog {
        Catalog {
            services: vec![Service {
                name: "web".into(),
                listen: "127.0.0.1:18080".parse().unwrap(),
                balance: Balance::RoundRobin,
                maxconn: None,
                max_connections: None,
                timeouts: ServiceTimeouts::default(),
                mode: ServiceMode::Tcp,
                vhosts: Vec::new(),
                instances: vec![Instance {
                    address: "127.0.0.1:19001".parse().unwrap(),
                    weight,
                    maxconn: None,
                    state: BackendState::Active,
                }],
            }],
        }
    }

    fn published_version(outcome: PublishOutcome) -> u64 {
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

    fn update(source: &str, catalog: Catalog) -> CatalogUpdate {
        CatalogUpdate {
            source: SourceId::new(source),
            catalog,
        }
    }

    fn on_port(mut c: Catalog, name: &str, port: u16) -> Catalog {
        c.services[0].name = name.into();
        c.services[0].listen.set_port(port);
        c
    }

    #[tokio::test(start_paused = true)]
    async fn sources_merge_bursts_coalesce_and_a_silent_source_keeps_its_catalog() {
        let p = Arc::new(publisher());
        let (tx, rx) = catalog_channel();
        let expected = vec![SourceId::new("consul"), SourceId::new("marathon")];
        let task = tokio::spawn(Arc::clone(&p).consume(rx, expected, Coalescing::default()));

        // One source alone does not publish while the other may still answer.
        tx.send(update("marathon", on_port(catalog(1), "m", 1001)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(p.current().is_none(), "waiting for consul");

        // A burst: only the last of marathon's catalogs counts, and one snapshot comes out.
        tx.send(update("consul", on_port(catalog(1), "c", 1002)))
            .await
            .unwrap();
        for w in 2..=50 {
            tx.send(update("marathon", on_port(catalog(w), "m", 1001)))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let first = p.current().expect("published once both answered");
        assert_eq!(first.snapshot.listeners.len(), 2);
        assert_eq!(web_weight(&first.snapshot, "m"), 50);

        // Consul goes silent (a failing source sends nothing): its services stay.
        tx.send(update("marathon", on_port(catalog(60), "m", 1001)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = p.current().unwrap();
        assert!(second.version() > first.version());
        assert_eq!(web_weight(&second.snapshot, "c"), 1);
        assert_eq!(web_weight(&second.snapshot, "m"), 60);

        // The same content again publishes nothing.
        tx.send(update("marathon", on_port(catalog(60), "m", 1001)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(p.current().unwrap().version(), second.version());
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_initial_sync_timeout_what_answered_is_published() {
        let p = Arc::new(publisher());
        let (tx, rx) = catalog_channel();
        let expected = vec![SourceId::new("consul"), SourceId::new("marathon")];
        let coalescing = Coalescing::new(Duration::from_millis(5), Duration::from_secs(3));
        tokio::spawn(Arc::clone(&p).consume(rx, expected, coalescing));
        tx.send(update("marathon", catalog(1))).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(p.current().is_none());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(p.current().unwrap().snapshot.listeners.len(), 1);
    }

    fn web_weight(snapshot: &Snapshot, name: &str) -> u16 {
        snapshot.cluster(name).unwrap().backends[0].weight
    }
}
