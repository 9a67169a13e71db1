//! The services file as a source: read it at start, and again whenever it changes, and whenever every source
//! is asked to re-read (SIGHUP, `POST /v1/refresh`).
//!
//! Change detection watches the file's *directory* (inotify through `notify`) and filters on the file name:
//! editors that write a temporary file and rename it over the original, and `mv new services.toml`, replace
//! the inode, which a watch on the file itself would lose. A file renamed into place is complete, so it is
//! read at once; other events are debounced because one save is often several events (truncate, writes,
//! close) and a half-written file must not be read as the new configuration. A slow poll of the file's identity (device, inode, size, mtime, ctime) backs this up for
//! the cases inotify does not see (a symlink swapped in a parent directory, a watch that could not be set up,
//! an overflowed event queue).
//!
//! A file that does not parse or validate is logged with its `file:line:column: field` report and reported
//! as a failure through the [`SourceHandle`]: the last good catalog stays in force. Only at start-up is a bad
//! file fatal (see [`FileWatch::load`]). Like every source, the file is also re-read every
//! `--refresh-interval`, changed or not (an identical catalog publishes nothing).

pub mod services_file;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tracing::{error, info, warn};

use crate::model::Catalog;
use crate::model::SourceId;
use crate::sources::SourceHandle;
use crate::sources::discovery::DEFAULT_REFRESH_INTERVAL;
use services_file::ServicesFileError;

/// Quiet time after the last change event before the file is read, so one save is read once.
pub const DEBOUNCE: Duration = Duration::from_millis(30);
/// Longest a stream of events can delay a read: a file rewritten continuously is still picked up.
pub const DEBOUNCE_MAX: Duration = Duration::from_millis(500);
/// Period of the fallback identity poll.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(3);

/// Why watching could not run at all (the poll still works when only inotify fails).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("services file path {0} has no file name")]
    NoFileName(PathBuf),
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// Follows symlinks, so a swapped link target counts as a change.
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The services-file source.
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    handle: SourceHandle,
    reload: Arc<Notify>,
    poll_interval: Duration,
    refresh_interval: Duration,
    /// Identity of the file when it was last read, good or bad.
    last_read: Option<Stamp>,
    /// Change events about our file; the watch is set up in [`FileWatch::new`], before the first read, so
    /// no change between that read and [`FileWatch::run`] is missed.
    events: mpsc::UnboundedReceiver<Change>,
    /// Kept alive as long as we are; `None` when inotify could not be set up (the poll still runs).
    _watcher: Option<RecommendedWatcher>,
}

impl FileWatch {
    /// The source name of a services file at `path`.
    pub fn source_id(path: &Path) -> SourceId {
        SourceId(format!("file:{}", path.display()))
    }

    /// Starts watching `path`'s directory at once; works outside a tokio runtime too. `handle` should be
    /// registered under [`FileWatch::source_id`].
    pub fn new(path: PathBuf, handle: SourceHandle) -> Result<Self, WatchError> {
        let file_name = path
            .file_name()
            .ok_or_else(|| WatchError::NoFileName(path.clone()))?
            .to_os_string();
        let (events_tx, events) = mpsc::unbounded_channel();
        let watcher = watch_directory(&path, move |event: &Event| {
            if let Some(change) = classify(event, &file_name) {
                // The receiver is gone only when we are; nothing to do then.
                let _ = events_tx.send(change);
            }
        });
        Ok(Self {
            path,
            handle,
            reload: Arc::new(Notify::new()),
            poll_interval: DEFAULT_POLL_INTERVAL,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            last_read: None,
            events,
            _watcher: watcher,
        })
    }

    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// A full re-read this often, changed or not.
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    pub fn source(&self) -> &SourceId {
        self.handle.id()
    }

    /// The handle this source reports through (the start-up catalog is published through it).
    pub fn handle(&self) -> &SourceHandle {
        &self.handle
    }

    /// Notify this to re-read the file now (a refresh of every source, SIGHUP or `POST /v1/refresh`, does
    /// too).
    pub fn reload_handle(&self) -> Arc<Notify> {
        Arc::clone(&self.reload)
    }

    /// Reads the file once without reporting; at start-up, an error here is fatal to the caller, who then
    /// publishes the catalog through [`FileWatch::handle`].
    pub fn load(&mut self) -> Result<Catalog, ServicesFileError> {
        self.last_read = Stamp::of(&self.path);
        services_file::load(&self.path)
    }

    /// Re-reads the file on every change until the receiving end of the sink is gone.
    pub async fn run(mut self) {
        let mut poll = interval_at(Instant::now() + self.poll_interval, self.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut refresh = interval_at(
            Instant::now() + self.refresh_interval,
            self.refresh_interval,
        );
        refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let reload = Arc::clone(&self.reload);
        let handle = self.handle.clone();
        let mut refreshes = handle.refreshes();
        loop {
            tokio::select! {
                Some(change) = self.events.recv() => {
                    if change == Change::Replaced {
                        while self.events.try_recv().is_ok() {}
                        self.reread("file replaced").await;
                    } else {
                        settle(&mut self.events).await;
                        self.reread("file changed").await;
                    }
                }
                () = reload.notified() => self.reread("reload requested").await,
                Ok(()) = refreshes.changed() => self.reread("refresh requested").await,
                _ = poll.tick() => {
                    if Stamp::of(&self.path) != self.last_read {
                        self.reread("file changed (poll)").await;
                    }
                }
                _ = refresh.tick() => self.reread("refresh interval").await,
                () = handle.closed() => return,
            }
        }
    }

    async fn reread(&mut self, why: &str) {
        match self.load() {
            Ok(catalog) => {
                info!(
                    file = %self.path.display(),
                    why,
                    services = catalog.services.len(),
                    instances = catalog.instance_count(),
                    "services file read"
                );
                self.handle.publish(catalog).await;
            }
            Err(e) => {
                error!(
                    file = %self.path.display(),
                    why,
                    "services file rejected; the last good configuration stays in force"
                );
                for line in e.to_string().lines() {
                    error!("{line}");
                }
                self.handle.fail(&e);
            }
        }
    }
}

/// Watches the directory of `path`; on failure logs it and returns `None`, leaving the poll to do the work.
fn watch_directory(
    path: &Path,
    on_event: impl Fn(&Event) + Send + 'static,
) -> Option<RecommendedWatcher> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let handler = move |result: notify::Result<Event>| match result {
        Ok(event) => on_event(&event),
        Err(e) => warn!("file watch error (the poll still runs): {e}"),
    };
    let watching = notify::recommended_watcher(handler)
        .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    match watching {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            warn!(
                dir = %dir.display(),
                "cannot watch the services file directory, relying on the poll: {e}"
            );
            None
        }
    }
}

/// What an event says about our file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Another file was renamed over ours: its content is complete.
    Replaced,
    /// Written, created, removed, or its attributes changed: more events may follow.
    Changed,
}

/// Waits until events stop for [`DEBOUNCE`] (at most [`DEBOUNCE_MAX`]), consuming them; a replacement
/// ends the wait at once.
async fn settle(events: &mut mpsc::UnboundedReceiver<Change>) {
    let give_up = Instant::now() + DEBOUNCE_MAX;
    loop {
        let quiet_until = (Instant::now() + DEBOUNCE).min(give_up);
        match tokio::time::timeout_at(quiet_until, events.recv()).await {
            Ok(Some(Change::Changed)) if Instant::now() < give_up => continue,
            _ => break,
        }
    }
    while events.try_recv().is_ok() {}
}

/// Whether an event about our file name may mean new content. Opens and reads do not (our own reads cause
/// them); closing after a write does.
fn classify(event: &Event, file_name: &std::ffi::OsStr) -> Option<Change> {
    let ours = |p: &PathBuf| p.file_name() == Some(file_name);
    match event.kind {
        // inotify reports a rename within the directory as From, To, and Both (paths: from, to).
        EventKind::Modify(ModifyKind::Name(RenameMode::To))
            if event.paths.first().is_some_and(ours) =>
        {
            return Some(Change::Replaced);
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::Both))
            if event.paths.get(1).is_some_and(ours) =>
        {
            return Some(Change::Replaced);
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return None,
        _ => {}
    }
    event.paths.iter().any(ours).then_some(Change::Changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::CreateKind;

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn only_changes_to_our_file_count() {
        let name = std::ffi::OsStr::new("services.toml");
        let ours = "/etc/ringway/services.toml";
        let classified = |kind, path| classify(&event(kind, path), name);
        assert_eq!(
            classified(EventKind::Modify(ModifyKind::Name(RenameMode::To)), ours),
            Some(Change::Replaced)
        );
        assert_eq!(
            classified(EventKind::Create(CreateKind::File), ours),
            Some(Change::Changed)
        );
        assert_eq!(
            classified(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                ours
            ),
            Some(Change::Changed)
        );
        assert_eq!(
            classified(EventKind::Access(AccessKind::Open(AccessMode::Any)), ours),
            None
        );
        assert_eq!(
            classified(
                EventKind::Create(CreateKind::File),
                "/etc/ringway/services.toml.swp"
            ),
            None
        );
        // Renamed away from our name: the file is gone or about to be replaced, not complete.
        assert_eq!(
            classified(EventKind::Modify(ModifyKind::Name(RenameMode::From)), ours),
            Some(Change::Changed)
        );
    }

    #[test]
    fn a_rename_over_our_file_is_a_replacement() {
        let name = std::ffi::OsStr::new("services.toml");
        let both = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path(PathBuf::from("/etc/ringway/.services.toml.tmp"))
            .add_path(PathBuf::from("/etc/ringway/services.toml"));
        assert_eq!(classify(&both, name), Some(Change::Replaced));
        let away = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path(PathBuf::from("/etc/ringway/services.toml"))
            .add_path(PathBuf::from("/etc/ringway/services.toml.bak"));
        assert_eq!(classify(&away, name), Some(Change::Changed));
    }
}
