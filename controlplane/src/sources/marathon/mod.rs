//! The Marathon source (`--marathon URLS`): a full `/v2/apps?embed=apps.tasks` read whenever something may
//! have changed, with the SSE event stream `/v2/events` as the trigger.
//!
//! Events are cache invalidations, as Marathon's own docs advise (they carry no ids, and their order is not
//! guaranteed): a relevant event wakes the fetcher, and events that arrive while a fetch runs fold into one
//! more fetch. The stream reconnects with capped backoff, moving round-robin over the replicas, and every
//! (re)connection triggers a full re-fetch, so a change made while the stream was down is picked up. A full
//! re-fetch also runs every `--refresh-interval`, events or not.
//!
//! REST reads fail over between replicas on connect errors, timeouts and 5xx; the replica that answered
//! is tried first next time. A malformed answer is a failed read: the last good catalog stays.

pub mod apps;
pub mod sse;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{StatusCode, header};
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior, interval};
use tracing::{debug, info, warn};

use crate::model::Catalog;
use crate::sources::SourceHandle;
use crate::sources::discovery::{Backoff, DiscoveryOptions, http_client, resolve_hosts};
use sse::SseParser;

/// How long one `/v2/apps` read may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Marathon's Jetty sends a heartbeat every 10 s; a stream silent for this long is dead.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(35);
/// Events that can change what is routed. Others (deployment plans, subscriptions) cannot on their own.
pub const RELEVANT_EVENTS: [&str; 9] = [
    "api_post_event",
    "status_update_event",
    "health_status_changed_event",
    "instance_health_changed_event",
    "instance_changed_event",
    "app_terminated_event",
    "deployment_success",
    "deployment_step_success",
    "unhealthy_instance_kill_event",
];
/// The exact `Accept` value Jetty's EventSourceServlet requires (anything else gets a 405).
pub const EVENT_STREAM: &str = "text/event-stream";
const APPS_PATH: &str = "/v2/apps?embed=apps.tasks";
const EVENTS_PATH: &str = "/v2/events";

/// Why a read of Marathon failed.
#[derive(Debug, thiserror::Error)]
pub enum MarathonError {
    #[error("no Marathon URL given")]
    NoReplica,
    #[error("{url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: {source}")]
    Apps {
        url: String,
        #[source]
        source: apps::AppsError,
    },
    #[error("every replica failed: {0}")]
    AllReplicasFailed(String),
    #[error("event stream of {url} ended")]
    StreamEnded { url: String },
    #[error("event stream of {url} silent for {STREAM_IDLE_TIMEOUT:?}")]
    StreamIdle { url: String },
}

/// The Marathon source.
#[derive(Debug)]
pub struct Marathon {
    replicas: Vec<String>,
    options: DiscoveryOptions,
    handle: SourceHandle,
    client: reqwest::Client,
    /// Index of the replica to try first.
    preferred: usize,
}

impl Marathon {
    /// `replicas` are base URLs (`http://marathon1:8080`), tried in order.
    pub fn new(replicas: Vec<String>, options: DiscoveryOptions, handle: SourceHandle) -> Self {
        Self {
            replicas: replicas
                .into_iter()
                .map(|r| r.trim_end_matches('/').to_string())
                .collect(),
            options,
            handle,
            client: http_client(),
            preferred: 0,
        }
    }

    /// Fetches on every trigger until the publisher is gone.
    pub async fn run(mut self) {
        let trigger = Arc::new(Notify::new());
        let events = tokio::spawn(follow_events(
            self.replicas.clone(),
            self.client.clone(),
            Arc::clone(&trigger),
        ));
        let mut refresh = interval(self.options.refresh_interval);
        refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut backoff = Backoff::default();
        let mut retry_at: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = refresh.tick() => {}
                () = trigger.notified() => {}
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
                () = self.handle.closed() => break,
            }
            match self.fetch().await {
                Ok(catalog) => {
                    backoff.reset();
                    retry_at = None;
                    if !self.handle.publish(catalog).await {
                        break;
                    }
                }
                Err(e) => {
                    self.handle.fail(&e);
                    retry_at = Some(Instant::now() + backoff.next_delay());
                }
            }
        }
        events.abort();
    }

    /// One full read, failing over between replicas.
    pub async fn fetch(&mut self) -> Result<Catalog, MarathonError> {
        if self.replicas.is_empty() {
            return Err(MarathonError::NoReplica);
        }
        let mut errors = Vec::new();
        for step in 0..self.replicas.len() {
            let i = (self.preferred + step) % self.replicas.len();
            let url = format!("{}{APPS_PATH}", self.replicas[i]);
            match self.fetch_from(&url).await {
                Ok(body) => {
                    if i != self.preferred {
                        info!(replica = %self.replicas[i], "Marathon replica answers; trying it first from now on");
                        self.preferred = i;
                    }
                    let apps = apps::parse_apps(&body)
                        .map_err(|source| MarathonError::Apps { url, source })?;
                    let hosts = resolve_hosts(apps::hosts_to_resolve(&apps)).await;
                    return Ok(apps::catalog(&apps, &self.options, &hosts));
                }
                Err(e) if fails_over(&e) => {
                    debug!("Marathon replica failed, trying the next: {e}");
                    errors.push(e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Err(MarathonError::AllReplicasFailed(errors.join("; ")))
    }

    async fn fetch_from(&self, url: &str) -> Result<Vec<u8>, MarathonError> {
        let request = |source| MarathonError::Request {
            url: url.to_string(),
            source,
        };
        let response = self
            .client
            .get(url)
            .header(header::ACCEPT, "application/json")
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(request)?;
        let status = response.status();
        if !status.is_success() {
            return Err(MarathonError::Status {
                url: url.to_string(),
                status,
            });
        }
        Ok(response.bytes().await.map_err(request)?.to_vec())
    }
}

/// Connect errors, timeouts and 5xx move on to the next replica; anything else is an answer.
fn fails_over(error: &MarathonError) -> bool {
    match error {
        MarathonError::Request { .. } => true,
        MarathonError::Status { status, .. } => status.is_server_error(),
        _ => false,
    }
}

/// Follows `/v2/events` forever, round-robin over the replicas, waking `trigger` on every connection and
/// every relevant event.
async fn follow_events(replicas: Vec<String>, client: reqwest::Client, trigger: Arc<Notify>) {
    if replicas.is_empty() {
        return;
    }
    let mut backoff = Backoff::default();
    for attempt in 0usize.. {
        let url = format!("{}{EVENTS_PATH}", replicas[attempt % replicas.len()]);
        let mut attached = false;
        let ended = stream_events(&client, &url, &trigger, &mut backoff, &mut attached).await;
        warn!("Marathon event stream: {ended}; reconnecting");
        if attached {
            // Changes may be missed until the stream is back, and Marathon may be gone: read now, so either
            // the catalog is current or the source is reported stale (the fetcher retries on its own).
            trigger.notify_one();
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One connection of the event stream, until it ends (which it only does with an error).
async fn stream_events(
    client: &reqwest::Client,
    url: &str,
    trigger: &Notify,
    backoff: &mut Backoff,
    attached: &mut bool,
) -> MarathonError {
    match follow_stream(client, url, trigger, backoff, attached).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn follow_stream(
    client: &reqwest::Client,
    url: &str,
    trigger: &Notify,
    backoff: &mut Backoff,
    attached: &mut bool,
) -> Result<std::convert::Infallible, MarathonError> {
    let request = |source| MarathonError::Request {
        url: url.to_string(),
        source,
    };
    let mut response = client
        .get(url)
        .header(header::ACCEPT, EVENT_STREAM)
        .header(header::CACHE_CONTROL, "no-cache")
        .send()
        .await
        .map_err(request)?;
    if !response.status().is_success() {
        return Err(MarathonError::Status {
            url: url.to_string(),
            status: response.status(),
        });
    }
    info!(url = %response.url(), "Marathon event stream attached; re-reading apps");
    backoff.reset();
    *attached = true;
    trigger.notify_one();
    let mut parser = SseParser::new();
    loop {
        let chunk = tokio::time::timeout(STREAM_IDLE_TIMEOUT, response.chunk())
            .await
            .map_err(|_| MarathonError::StreamIdle {
                url: url.to_string(),
            })?
            .map_err(request)?;
        let Some(chunk) = chunk else {
            return Err(MarathonError::StreamEnded {
                url: url.to_string(),
            });
        };
        for event in parser.feed(&chunk) {
            if RELEVANT_EVENTS.contains(&event.event.as_str()) {
                debug!(event = event.event, "Marathon event; re-reading apps");
                trigger.notify_one();
            }
        }
    }
}
