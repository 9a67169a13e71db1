//! The services file as a live source: rewritten in place, replaced by rename, broken, reloaded on request,
//! and changed behind a symlink where only the poll can see it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{DEADLINE, runtime, services_toml, settings, web_weight};
use ringway_controlplane::pipeline::intake::catalog_channel;
use ringway_controlplane::pipeline::intake::{self, Coalescing};
use ringway_controlplane::pipeline::publisher::{Publisher, SnapshotWatch};
use ringway_controlplane::sources::file::FileWatch;
use ringway_controlplane::sources::{SourceRegistry, SourceState, SourceStatus};
use tokio::sync::{Notify, watch};

/// A file watch feeding a publisher, as `run` wires them.
struct Live {
    rt: tokio::runtime::Runtime,
    publisher: Arc<Publisher>,
    snapshots: SnapshotWatch,
    status: watch::Receiver<SourceStatus>,
    reload: Arc<Notify>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Live {
    /// Watches `path` (created by `prepare` in a fresh directory) with the given poll interval.
    fn start(poll: Duration, prepare: impl FnOnce(&Path) -> PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = prepare(dir.path());
        let rt = runtime();
        let publisher = Arc::new(Publisher::new(settings()));
        let (sink, updates) = catalog_channel();
        let sources = SourceRegistry::new();
        let id = FileWatch::source_id(&path);
        let handle = sources.handle(id.clone(), sink);
        let mut file = FileWatch::new(path.clone(), handle)
            .unwrap()
            .with_poll_interval(poll);
        let catalog = file.load().unwrap();
        publisher.publish(&catalog).unwrap();
        // As `run` does: the start-up catalog goes through the handle too (the consumer sees it unchanged).
        assert!(rt.block_on(file.handle().publish(catalog)));
        let mut snapshots = publisher.subscribe();
        snapshots.borrow_and_update();
        let status = sources.subscribe(&id).unwrap();
        let reload = file.reload_handle();
        rt.spawn(intake::run(
            Arc::clone(&publisher),
            updates,
            vec![id],
            Coalescing::default(),
        ));
        rt.spawn(file.run());
        Self {
            rt,
            publisher,
            snapshots,
            status,
            reload,
            path,
            _dir: dir,
        }
    }

    fn with_file(weight: u16) -> Self {
        Self::start(Duration::from_secs(600), |dir| {
            let path = dir.join("services.toml");
            std::fs::write(&path, services_toml(weight)).unwrap();
            path
        })
    }

    fn version(&self) -> u64 {
        self.publisher.current().unwrap().version()
    }

    /// Waits for the next published snapshot and returns its backend weight.
    fn next_weight(&mut self) -> u16 {
        let snapshots = &mut self.snapshots;
        self.rt.block_on(async {
            tokio::time::timeout(DEADLINE, snapshots.changed())
                .await
                .expect("no snapshot published")
                .unwrap();
        });
        web_weight(
            &self
                .snapshots
                .borrow_and_update()
                .as_ref()
                .unwrap()
                .snapshot,
        )
    }

    /// Waits until the source has made more than `attempts` attempts; returns its status.
    fn status_after(&mut self, attempts: u64) -> SourceStatus {
        let status = &mut self.status;
        self.rt.block_on(async {
            tokio::time::timeout(DEADLINE, status.wait_for(|s| s.attempts > attempts))
                .await
                .expect("the file was not re-read")
                .unwrap()
                .clone()
        })
    }
}

#[test]
fn rewriting_in_place_publishes_a_new_snapshot() {
    let mut live = Live::with_file(10);
    let v1 = live.version();
    std::fs::write(&live.path, services_toml(20)).unwrap();
    assert_eq!(live.next_weight(), 20);
    assert!(live.version() > v1);
}

#[test]
fn replacing_by_rename_publishes_a_new_snapshot() {
    let mut live = Live::with_file(10);
    let v1 = live.version();
    // As editors and `mv` do: write elsewhere in the directory, then rename over the original.
    let temp = live.path.with_file_name(".services.toml.tmp");
    std::fs::write(&temp, services_toml(30)).unwrap();
    std::fs::rename(&temp, &live.path).unwrap();
    assert_eq!(live.next_weight(), 30);
    assert!(live.version() > v1);
    // And the watch survives the inode change.
    std::fs::write(&temp, services_toml(31)).unwrap();
    std::fs::rename(&temp, &live.path).unwrap();
    assert_eq!(live.next_weight(), 31);
}

#[test]
fn a_broken_file_publishes_nothing_and_keeps_the_last_good_snapshot() {
    let mut live = Live::with_file(10);
    let v1 = live.version();
    let attempts = live.status.borrow().attempts;
    std::fs::write(&live.path, services_toml(0)).unwrap();
    let status = live.status_after(attempts);
    assert_eq!(status.state, SourceState::Stale);
    let error = status.last_error.expect("the broken file was accepted");
    assert!(error.contains("services.toml:5:"), "{error}");
    assert!(error.contains("backends[0].weight"), "{error}");

    // The failed read published nothing: same version, and nothing pending for sessions.
    assert_eq!(live.version(), v1);
    assert!(!live.snapshots.has_changed().unwrap());
    assert_eq!(web_weight(&live.publisher.current().unwrap().snapshot), 10);

    // Fixing the file resumes publishing.
    std::fs::write(&live.path, services_toml(40)).unwrap();
    assert_eq!(live.next_weight(), 40);
    assert_eq!(live.status.borrow().state, SourceState::Ok);
}

#[test]
fn a_reload_request_rereads_the_file() {
    let mut live = Live::with_file(10);
    let attempts = live.status.borrow().attempts;
    live.reload.notify_one();
    let status = live.status_after(attempts);
    assert_eq!(status.state, SourceState::Ok);
    // Unchanged content: nothing new is published.
    assert!(!live.snapshots.has_changed().unwrap());
}

#[test]
fn the_poll_sees_changes_inotify_cannot() {
    // The watched directory holds only a symlink; the file it points to lives elsewhere, so editing it in
    // place raises no event in the watched directory.
    let mut live = Live::start(Duration::from_millis(50), |dir| {
        let real = dir.join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("services.toml"), services_toml(10)).unwrap();
        let watched = dir.join("etc");
        std::fs::create_dir(&watched).unwrap();
        let link = watched.join("services.toml");
        std::os::unix::fs::symlink(real.join("services.toml"), &link).unwrap();
        link
    });
    let real = live.path.canonicalize().unwrap();
    // A different size, so the change shows even within one tick of the file system's clock.
    std::fs::write(&real, services_toml(500)).unwrap();
    assert_eq!(live.next_weight(), 500);
}
