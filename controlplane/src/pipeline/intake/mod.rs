//! Everything that changes routing comes in here, in order: sources' catalogs and the API's override edits.
//!
//! One task ([`run`]) reads the channel, keeps the latest catalog of every source and the overrides in the
//! [`Publisher`]'s inputs, and publishes. Because the API goes through the same channel as the sources, an
//! API change follows every rule a source change does (merge, coalescing, dedupe, versions) and produces at
//! most one snapshot; it is told which one through its [`Reply`].
//!
//! This module owns the channel ([`catalog_channel`]): sources and the API hold its sending end, which is
//! all they know of the pipeline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::model::{Catalog, SourceId};
use crate::pipeline::overrides::{Edit, OverrideError};
use crate::pipeline::publisher::{PublishError, PublishOutcome, Publisher};

/// A source's new full view. Sources send these on a [`CatalogSender`]; [`run`] coalesces bursts (latest
/// wins) and publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogUpdate {
    pub source: SourceId,
    pub catalog: Catalog,
}

/// The seam every source (and the API's override edits) writes to.
pub type CatalogSender = mpsc::Sender<Input>;
/// The seam the intake reads from.
pub type CatalogReceiver = mpsc::Receiver<Input>;

/// Room for a burst of updates; a source that outruns the publisher waits, which is the back-pressure we want.
pub const CATALOG_CHANNEL_CAPACITY: usize = 16;

/// The channel between the sources (and the API) and the intake.
pub fn catalog_channel() -> (CatalogSender, CatalogReceiver) {
    mpsc::channel(CATALOG_CHANNEL_CAPACITY)
}

/// What goes into the publisher.
#[derive(Debug)]
pub enum Input {
    /// A source's new full catalog; `reply`, when given, learns which snapshot carried it.
    Catalog {
        update: CatalogUpdate,
        reply: Option<Reply>,
    },
    /// An operator's override edit from the API, checked against the merged catalog when it is applied.
    Edit { edit: Edit, reply: Reply },
}

/// What became of a change: the snapshot that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The current snapshot's version after the change; `None` while the first snapshot waits for the
    /// sources (the change will be in it).
    pub version: Option<u64>,
    /// Whether the change produced a new snapshot (`false`: the routing was already like that).
    pub changed: bool,
}

impl From<PublishOutcome> for Applied {
    fn from(outcome: PublishOutcome) -> Self {
        match outcome {
            PublishOutcome::Published { version } => Self {
                version: Some(version),
                changed: true,
            },
            PublishOutcome::Unchanged { version } => Self {
                version: Some(version),
                changed: false,
            },
        }
    }
}

/// Why a change was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Override(#[from] OverrideError),
    /// The merged catalog did not compile; the previous snapshot stays.
    #[error("not published, the previous snapshot stays: {0}")]
    Publish(String),
    /// The controlplane is shutting down.
    #[error("the publisher has stopped")]
    Stopped,
}

impl From<&PublishError> for ApplyError {
    fn from(e: &PublishError) -> Self {
        Self::Publish(e.to_string())
    }
}

/// Where the answer to a change goes.
pub type Reply = oneshot::Sender<Result<Applied, ApplyError>>;

/// Sends `input` (built around a fresh reply) and waits for the answer.
pub async fn submit(
    sink: &CatalogSender,
    input: impl FnOnce(Reply) -> Input,
) -> Result<Applied, ApplyError> {
    let (reply, answer) = oneshot::channel();
    sink.send(input(reply))
        .await
        .map_err(|_| ApplyError::Stopped)?;
    answer.await.map_err(|_| ApplyError::Stopped)?
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

/// Replies waiting for the next publish.
#[derive(Debug, Default)]
struct Waiting(Vec<Reply>);

impl Waiting {
    fn answer(&mut self, result: &Result<PublishOutcome, PublishError>) {
        for reply in self.0.drain(..) {
            let answer = match result {
                Ok(outcome) => Ok(Applied::from(*outcome)),
                Err(e) => Err(ApplyError::from(e)),
            };
            // The asker may have given up (its HTTP client went away); nothing to do then.
            let _ = reply.send(answer);
        }
    }
}

/// Publishes what the sources and the API send until every sender is gone.
///
/// The latest catalog of every source is kept in `publisher`'s inputs, and every publish merges all of them
/// ([`merge_sources`](crate::pipeline::merge::merge_sources)) and applies the overrides: a source that
/// fails sends nothing, so its last good catalog stays in the merge. Bursts coalesce. An update that finds
/// the publisher idle (nothing published for a [`Coalescing::window`]) is published at once: an isolated
/// change has nothing to wait for, and waiting would only add the window to every change's latency. An
/// update arriving within a window of the last publish is part of a burst: more are collected until none
/// came for a window (at most [`Coalescing::max_delay`]), and only then is one snapshot compiled.
///
/// Nothing is published until every source in `expected` has sent a catalog, or until
/// [`Coalescing::initial_sync`] has passed and at least one has: publishing a half-known world at start-up
/// would replace what a dataplane restored from its state file with less. Changes that asked for a reply
/// get it with the publish that carries them.
pub async fn run(
    publisher: Arc<Publisher>,
    mut updates: CatalogReceiver,
    expected: Vec<SourceId>,
    coalescing: Coalescing,
) {
    let grace_ends = Instant::now() + coalescing.initial_sync;
    let mut syncing = publisher.current().is_none();
    let mut last_publish: Option<Instant> = None;
    let mut waiting = Waiting::default();
    loop {
        let grace_timer = syncing && publisher.has_any_source();
        let received = tokio::select! {
            input = updates.recv() => match input {
                Some(input) => Some(input),
                None => return,
            },
            () = tokio::time::sleep_until(grace_ends), if grace_timer => None,
        };
        if let Some(input) = received {
            if !take(&publisher, input, &mut waiting) {
                continue;
            }
            let idle = last_publish.is_none_or(|at| at.elapsed() >= coalescing.window);
            if idle {
                // Whatever is already queued is part of the same change.
                while let Ok(input) = updates.try_recv() {
                    take(&publisher, input, &mut waiting);
                }
            } else if !collect_burst(&publisher, &mut updates, &mut waiting, &coalescing).await {
                // Every source is gone; publish what we have and stop.
                waiting.answer(&publisher.publish_inputs());
                return;
            }
        }
        if syncing {
            let missing = publisher.missing_sources(&expected);
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
        waiting.answer(&publisher.publish_inputs());
        last_publish = Some(Instant::now());
    }
}

/// Takes one input into the publisher's inputs. Returns `false` when it changed nothing that needs a
/// publish (a refused edit, which is answered at once).
fn take(publisher: &Publisher, input: Input, waiting: &mut Waiting) -> bool {
    match input {
        Input::Catalog { update, reply } => {
            publisher.record(update.source, update.catalog);
            waiting.0.extend(reply);
            true
        }
        Input::Edit { edit, reply } => match publisher.apply_edit(&edit) {
            Ok(changed) => {
                // The API logs the change with the version that carries it.
                debug!(service = %edit.service(), changed, edit = ?edit, "override edit accepted");
                waiting.0.push(reply);
                true
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                false
            }
        },
    }
}

/// Takes inputs until none arrived for a window (or the maximum delay passed). Returns `false` when every
/// sender is gone.
async fn collect_burst(
    publisher: &Publisher,
    updates: &mut CatalogReceiver,
    waiting: &mut Waiting,
    coalescing: &Coalescing,
) -> bool {
    let give_up = Instant::now() + coalescing.max_delay;
    loop {
        let quiet_until = (Instant::now() + coalescing.window).min(give_up);
        match tokio::time::timeout_at(quiet_until, updates.recv()).await {
            Ok(Some(input)) => {
                take(publisher, input, waiting);
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
mod tests;
