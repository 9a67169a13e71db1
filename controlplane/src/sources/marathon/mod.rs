//! The Marathon source (`--marathon URLS`): a full `/v2/apps?embed=apps.tasks` read whenever something may
//! have changed, with the SSE event stream `/v2/events` as the trigger ([`events`]).
//!
//! Events are cache invalidations, as Marathon's own docs advise (they carry no ids, and their order is not
//! guaranteed): a relevant event wakes the fetcher, and events that arrive while a fetch runs fold into one
//! more fetch. The stream reconnects with capped backoff, moving round-robin over the replicas, and every
//! (re)connection triggers a full re-fetch, so a change made while the stream was down is picked up. A full
//! re-fetch also runs every `--refresh-interval`, events or not, and whenever every source is asked to
//! (SIGHUP, `POST /v1/refresh`).
//!
//! REST reads fail over between replicas on connect errors, timeouts and 5xx; the replica that answered
//! is tried first next time. A malformed answer is a failed read: the last good catalog stays.
//!
//! Secured Marathons: `https://` with the system's roots or `--marathon-ca`; HTTP Basic credentials from
//! `--marathon-auth`/`--marathon-auth-file`, or from a replica URL's `user:password@` (which wins for that
//! replica), sent to every replica. A standby answers `/v2/events` with a redirect to the leader; Ringway
//! follows that one redirect itself and sends the same credentials there (an HTTP client would drop them on
//! a redirect to another host), but never from `https://` down to plain `http://`.

pub mod apps;
mod events;
pub mod sse;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode, Url};
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior, interval};
use tracing::debug;

use crate::model::Catalog;
use crate::sources::SourceHandle;
use crate::sources::checks::Notes;
use crate::sources::client::{ClientError, Redirects, TlsFiles, error_chain, http_client};
use crate::sources::discovery::{Backoff, DiscoveryOptions};
use crate::sources::endpoints::{Endpoints, first_answer};
use crate::sources::resolve::Resolver;
use crate::sources::secret::{Credentials, SecretError, split_credentials};

/// How long one `/v2/apps` read may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
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
pub use events::{EVENT_STREAM, STREAM_IDLE_TIMEOUT, STREAM_SETUP_TIMEOUT};
const APPS_PATH: &str = "/v2/apps?embed=apps.tasks";
/// Names this source in logs.
const SOURCE: &str = "marathon";

/// Why a read of Marathon failed. URLs in it never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum MarathonError {
    #[error("no Marathon URL given")]
    NoReplica,
    #[error("{url}: {detail}")]
    Request { url: String, detail: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: {source}")]
    Apps {
        url: String,
        #[source]
        source: apps::AppsError,
    },
    #[error("{url}: redirect to {location:?}, which {reason}")]
    Redirect {
        url: String,
        location: String,
        reason: &'static str,
    },
    #[error("every replica failed: {0}")]
    AllReplicasFailed(String),
    #[error("event stream of {url} ended")]
    StreamEnded { url: String },
    #[error("event stream of {url} silent for {STREAM_IDLE_TIMEOUT:?}")]
    StreamIdle { url: String },
    #[error("event stream of {url}: no answer within {STREAM_SETUP_TIMEOUT:?}")]
    StreamSetup { url: String },
}

/// How to reach Marathon (`--marathon`, `--marathon-auth[-file]`, `--marathon-ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarathonConfig {
    /// Base URLs without credentials, in the operator's order.
    pub replicas: Vec<String>,
    /// Each replica's credentials: its URL's own, else the flag's.
    pub credentials: Vec<Option<Credentials>>,
    pub tls: TlsFiles,
}

impl MarathonConfig {
    /// Replica URLs as given (credentials in them are taken out), with `auth` for those that carry none.
    pub fn new(
        urls: &[String],
        auth: Option<Credentials>,
        tls: TlsFiles,
    ) -> Result<Self, SecretError> {
        let mut replicas = Vec::with_capacity(urls.len());
        let mut credentials = Vec::with_capacity(urls.len());
        for url in urls.iter().filter(|u| !u.trim().is_empty()) {
            let (url, own) = split_credentials(url)?;
            replicas.push(url);
            credentials.push(own.or_else(|| auth.clone()));
        }
        Ok(Self {
            replicas,
            credentials,
            tls,
        })
    }

    /// Plain replica URLs, no credentials, no TLS settings.
    pub fn plain(urls: &[String]) -> Result<Self, SecretError> {
        Self::new(urls, None, TlsFiles::none(SOURCE))
    }
}

/// One replica as a request needs it.
#[derive(Debug, Clone)]
struct Replica {
    url: String,
    credentials: Option<Credentials>,
}

/// The Marathon source.
#[derive(Debug)]
pub struct Marathon {
    replicas: Vec<Replica>,
    endpoints: Endpoints,
    options: DiscoveryOptions,
    handle: SourceHandle,
    client: reqwest::Client,
    /// The tasks the last good read routed (the failover rule, see [`apps`]).
    routed: apps::Routed,
    notes: Notes,
    resolver: Resolver,
}

/// A read's catalog, and why part of it is last-known data, if it is.
type Read = (Catalog, Option<String>);

impl Marathon {
    pub fn new(
        config: MarathonConfig,
        options: DiscoveryOptions,
        handle: SourceHandle,
    ) -> Result<Self, ClientError> {
        let endpoints = Endpoints::new(SOURCE, config.replicas.clone());
        let replicas = endpoints
            .urls()
            .iter()
            .cloned()
            .zip(config.credentials)
            .map(|(url, credentials)| Replica { url, credentials })
            .collect();
        Ok(Self {
            replicas,
            endpoints,
            options,
            handle,
            client: http_client(&config.tls, Redirects::None)?,
            routed: apps::Routed::default(),
            notes: Notes::new(SOURCE),
            resolver: Resolver::new(SOURCE),
        })
    }

    /// Fetches on every trigger until the publisher is gone.
    pub async fn run(mut self) {
        let trigger = Arc::new(Notify::new());
        let events = tokio::spawn(events::follow(
            self.replicas.clone(),
            self.client.clone(),
            Arc::clone(&trigger),
        ));
        let mut refresh = interval(self.options.refresh_interval);
        refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut refreshes = self.handle.refreshes();
        let mut backoff = Backoff::default();
        let mut retry_at: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = refresh.tick() => {}
                () = trigger.notified() => {}
                Ok(()) = refreshes.changed() => {}
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
                () = self.handle.closed() => break,
            }
            match self.fetch().await {
                Ok((catalog, degraded)) => {
                    backoff.reset();
                    retry_at = None;
                    if !self.handle.publish_read(catalog, degraded).await {
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
    pub async fn fetch(&mut self) -> Result<Read, MarathonError> {
        if self.replicas.is_empty() {
            return Err(MarathonError::NoReplica);
        }
        let (i, body) = first_answer(
            self.endpoints.attempts(),
            |i, _| self.fetch_from(&self.replicas[i]),
            fails_over,
            MarathonError::AllReplicasFailed,
        )
        .await?;
        self.endpoints.answered(i);
        let apps =
            apps::parse_apps(&body, &mut self.notes).map_err(|source| MarathonError::Apps {
                url: apps_url(&self.replicas[i]),
                source,
            })?;
        let resolution = self.resolver.resolve(apps::hosts_to_resolve(&apps)).await;
        let catalog = apps::catalog(
            &apps,
            &self.options,
            &resolution.hosts,
            &mut self.routed,
            &mut self.notes,
        );
        Ok((catalog, resolution.degraded_reason()))
    }

    async fn fetch_from(&self, replica: &Replica) -> Result<Vec<u8>, MarathonError> {
        let url = apps_url(replica);
        let response = get(
            &self.client,
            replica,
            &url,
            "application/json",
            Some(REQUEST_TIMEOUT),
        )
        .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(MarathonError::Status { url, status });
        }
        let body = response.bytes().await.map_err(|e| MarathonError::Request {
            url,
            detail: error_chain(&e),
        })?;
        Ok(body.to_vec())
    }
}

fn apps_url(replica: &Replica) -> String {
    format!("{}{APPS_PATH}", replica.url)
}

/// Connect errors, timeouts and 5xx move on to the next replica; anything else is an answer.
fn fails_over(error: &MarathonError) -> bool {
    match error {
        MarathonError::Request { .. } => true,
        MarathonError::Status { status, .. } => status.is_server_error(),
        _ => false,
    }
}

/// `GET url` from `replica` with its credentials and `accept`, following at most one redirect (a standby
/// sends `/v2/events` to the leader) with the same credentials, never from `https` to plain `http`.
/// `timeout` bounds each request, body included (none for the event stream, whose caller bounds the
/// set-up).
async fn get(
    client: &reqwest::Client,
    replica: &Replica,
    url: &str,
    accept: &'static str,
    timeout: Option<Duration>,
) -> Result<Response, MarathonError> {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
    if accept == events::EVENT_STREAM {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    if let Some(credentials) = &replica.credentials {
        headers.insert(header::AUTHORIZATION, credentials.header());
    }
    let mut target = Url::parse(url).map_err(|e| MarathonError::Request {
        url: url.to_string(),
        detail: e.to_string(),
    })?;
    for hop in 0..2 {
        let mut request = client.get(target.clone()).headers(headers.clone());
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(|e| MarathonError::Request {
            url: target.to_string(),
            detail: error_chain(&e),
        })?;
        if hop > 0 || !response.status().is_redirection() {
            return Ok(response);
        }
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default();
        target = redirect_target(&target, location, replica.credentials.is_some())?;
        debug!(from = url, to = %target, "following Marathon's redirect");
    }
    unreachable!("the second hop returns")
}

/// Where a redirect from `from` leads, checked: credentials never go from `https` down to `http`, and a
/// `Location` carrying credentials of its own loses them.
fn redirect_target(
    from: &Url,
    location: &str,
    sends_credentials: bool,
) -> Result<Url, MarathonError> {
    let refused = |reason| MarathonError::Redirect {
        url: from.to_string(),
        location: crate::sources::secret::without_userinfo(location),
        reason,
    };
    let mut target = from.join(location).map_err(|_| refused("is not a URL"))?;
    if sends_credentials && from.scheme() == "https" && target.scheme() != "https" {
        return Err(refused("would send the credentials unencrypted"));
    }
    if !matches!(target.scheme(), "http" | "https") {
        return Err(refused("is not http(s)"));
    }
    let _ = target.set_username("");
    let _ = target.set_password(None);
    Ok(target)
}

#[cfg(test)]
mod tests;
