//! The Consul source (`--consul http://host:8500`): `/v1/catalog/services` says which services exist, and one
//! `/v1/health/service/<name>?passing` per service says which instances pass all their checks (node checks
//! such as `serfHealth` included). Both are followed with blocking queries (discovery.md §5.3): the next
//! request sends the `X-Consul-Index` of the last answer; an index that goes backwards resets to 0 (a
//! snapshot restore, say) and an index is never below 1 otherwise; a short pause between returns keeps a
//! misbehaving server from turning the loop into a storm. A return is no proof of change, so results are
//! compared before anything is published.
//!
//! An instance is reached at `Service.Address`, or at `Node.Address` when that is empty. Settings come from
//! the service's tags written as `key=value` (`ringway.maxconn=50`, `ringway.servicePort=8080`,
//! `HAPROXY_GROUP=external`, the proxymatic per-port forms) and from its `Meta` (registrator's attributes);
//! tags win. The listen port is the `servicePort` setting, or the `@port` suffix of the service name; a
//! service with neither is not routed.
//!
//! A failed read of one service keeps that service's last good instances and marks the source stale.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use ringway_shared::BackendState;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use crate::model::merge::{Origin, merge};
use crate::model::{Catalog, Instance};
use crate::sources::SourceHandle;
use crate::sources::discovery::{
    Backoff, DiscoveryOptions, discovered_service, http_client, resolve_hosts, split_port_suffix,
};
use crate::sources::labels::{
    Labels, PortRef, from_tags, group_accepts, log_problems, port_settings,
};

/// How long one blocking query may hang on the server.
pub const WAIT: Duration = Duration::from_secs(30);
/// Least time between two requests of one blocking loop.
pub const PAUSE: Duration = Duration::from_millis(20);
/// The header carrying the blocking index.
const CONSUL_INDEX: &str = "x-consul-index";
/// Names this source in label logs.
const SOURCE: &str = "consul";
/// The only check status that is routed.
const PASSING: &str = "passing";
/// Room for reports from the watchers.
const REPORTS: usize = 64;

/// Why a Consul read failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsulError {
    #[error("{url}: {detail}")]
    Request { url: String, detail: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: malformed response: {detail}")]
    Malformed { url: String, detail: String },
}

/// The index to send next, given the one sent and the one received.
pub fn next_index(sent: u64, received: u64) -> u64 {
    if received < sent { 0 } else { received.max(1) }
}

/// The client read timeout for a blocking query: Consul adds up to `wait / 16` of jitter.
fn read_timeout() -> Duration {
    WAIT + WAIT / 16 + Duration::from_secs(5)
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "PascalCase")]
struct Node {
    address: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "PascalCase")]
struct ServiceEntry {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    tags: Option<Vec<String>>,
    address: String,
    meta: Option<BTreeMap<String, String>>,
    port: u16,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "PascalCase")]
struct Check {
    status: String,
}

/// One element of `/v1/health/service/<name>`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "PascalCase")]
struct HealthEntry {
    node: Node,
    service: ServiceEntry,
    checks: Vec<Check>,
}

/// What the watchers tell the source.
enum Report {
    Services(Result<BTreeSet<String>, ConsulError>),
    Health(String, Result<Vec<HealthEntry>, ConsulError>),
}

/// What is known about one service.
#[derive(Debug, Default)]
struct Known {
    entries: Option<Vec<HealthEntry>>,
    error: Option<ConsulError>,
}

/// The Consul source.
#[derive(Debug)]
pub struct Consul {
    url: String,
    options: DiscoveryOptions,
    handle: SourceHandle,
    client: reqwest::Client,
}

impl Consul {
    pub fn new(url: String, options: DiscoveryOptions, handle: SourceHandle) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            options,
            handle,
            client: http_client(),
        }
    }

    /// Watches the catalog and every service until the publisher is gone.
    pub async fn run(self) {
        let (reports, mut inbox) = mpsc::channel(REPORTS);
        let catalog_watch = {
            let (client, url, refresh, reports) = (
                self.client.clone(),
                self.url.clone(),
                self.options.refresh_interval,
                reports.clone(),
            );
            tokio::spawn(async move {
                blocking_loop(
                    client,
                    format!("{url}/v1/catalog/services"),
                    refresh,
                    move |body| {
                        let services: BTreeMap<String, Value> = serde_json::from_slice(body)?;
                        Ok(Report::Services(Ok(services.into_keys().collect())))
                    },
                    |e| Report::Services(Err(e)),
                    reports,
                )
                .await
            })
        };
        let mut services_error: Option<ConsulError> = None;
        let mut listed = false;
        let mut known: BTreeMap<String, Known> = BTreeMap::new();
        let mut watchers: BTreeMap<String, JoinHandle<()>> = BTreeMap::new();
        loop {
            let report = tokio::select! {
                report = inbox.recv() => report,
                () = self.handle.closed() => None,
            };
            let Some(report) = report else { break };
            match report {
                Report::Services(Ok(names)) => {
                    listed = true;
                    services_error = None;
                    watchers.retain(|name, task| {
                        let keep = names.contains(name);
                        if !keep {
                            task.abort();
                        }
                        keep
                    });
                    known.retain(|name, _| names.contains(name));
                    for name in names {
                        watchers
                            .entry(name.clone())
                            .or_insert_with(|| self.watch_service(name.clone(), reports.clone()));
                        known.entry(name).or_default();
                    }
                }
                Report::Services(Err(e)) => services_error = Some(e),
                Report::Health(name, result) => {
                    let Some(k) = known.get_mut(&name) else {
                        continue;
                    };
                    match result {
                        Ok(entries) => {
                            k.entries = Some(entries);
                            k.error = None;
                        }
                        Err(e) => k.error = Some(e),
                    }
                }
            }
            // Do not publish a catalog while some service has not answered at all (and not failed) yet.
            if known
                .values()
                .any(|k| k.entries.is_none() && k.error.is_none())
            {
                continue;
            }
            let errors: Vec<String> = services_error
                .iter()
                .chain(known.values().filter_map(|k| k.error.as_ref()))
                .map(ToString::to_string)
                .collect();
            if !listed {
                if let Some(e) = &services_error {
                    self.handle.fail(e);
                }
                continue;
            }
            let catalog = self.catalog(&known).await;
            let alive = if errors.is_empty() {
                self.handle.publish(catalog).await
            } else {
                self.handle
                    .publish_degraded(catalog, &errors.join("; "))
                    .await
            };
            if !alive {
                break;
            }
        }
        catalog_watch.abort();
        for task in watchers.into_values() {
            task.abort();
        }
    }

    fn watch_service(&self, name: String, reports: mpsc::Sender<Report>) -> JoinHandle<()> {
        let url = format!("{}/v1/health/service/{name}?passing", self.url);
        let (client, refresh) = (self.client.clone(), self.options.refresh_interval);
        let on_error = {
            let name = name.clone();
            move |e| Report::Health(name.clone(), Err(e))
        };
        tokio::spawn(blocking_loop(
            client,
            url,
            refresh,
            move |body| {
                let entries: Vec<HealthEntry> = serde_json::from_slice(body)?;
                Ok(Report::Health(name.clone(), Ok(entries)))
            },
            on_error,
            reports,
        ))
    }

    /// The catalog from every service's last good instances.
    async fn catalog(&self, known: &BTreeMap<String, Known>) -> Catalog {
        let entries: Vec<(&String, &HealthEntry)> = known
            .iter()
            .flat_map(|(name, k)| k.entries.iter().flatten().map(move |e| (name, e)))
            .filter(|(_, e)| e.checks.iter().all(|c| c.status == PASSING))
            .collect();
        let hosts = resolve_hosts(
            entries
                .iter()
                .map(|(_, e)| address_of(e).to_string())
                .collect(),
        )
        .await;
        let services = entries.into_iter().filter_map(|(name, entry)| {
            let labels = labels_of(&entry.service);
            let (base, name_port) = match split_port_suffix(name) {
                Some((base, port)) => (base, Some(port)),
                None => (name.as_str(), None),
            };
            let at = PortRef {
                source: SOURCE,
                app: &entry.service.id,
                index: 0,
            };
            let outcome = port_settings(&labels, 0);
            log_problems(at, &outcome.problems);
            let settings = outcome.settings?;
            if !group_accepts(&self.options.groups, &settings.groups) {
                return None;
            }
            let Some(port) = settings.service_port.or(name_port) else {
                debug!(
                    service = name,
                    "Consul service without a servicePort tag or @port name: not routed"
                );
                return None;
            };
            let ip = *hosts.get(address_of(entry))?;
            let instance = Instance {
                address: SocketAddr::new(ip, entry.service.port),
                weight: settings.weight,
                maxconn: None,
                state: BackendState::Active,
            };
            discovered_service(
                base.to_string(),
                port,
                &settings,
                vec![instance],
                &self.options,
            )
            .map(|s| {
                (
                    Origin {
                        rank: 0,
                        name: format!("{name}/{}", entry.service.id),
                    },
                    s,
                )
            })
        });
        merge(services).catalog
    }
}

/// `Service.Address`, or the node's when that is empty.
fn address_of(entry: &HealthEntry) -> &str {
    if entry.service.address.is_empty() {
        &entry.node.address
    } else {
        &entry.service.address
    }
}

/// Meta first, then tags over it.
fn labels_of(service: &ServiceEntry) -> Labels {
    let mut labels: Labels = service.meta.clone().unwrap_or_default();
    labels.extend(from_tags(service.tags.iter().flatten()));
    labels
}

/// Follows one blocking endpoint forever, sending a report on every answer whose body changed (and on every
/// failure). `parse` turns a body into a report; `on_error` wraps a failure.
async fn blocking_loop(
    client: reqwest::Client,
    url: String,
    refresh: Duration,
    parse: impl Fn(&[u8]) -> Result<Report, serde_json::Error>,
    on_error: impl Fn(ConsulError) -> Report,
    reports: mpsc::Sender<Report>,
) {
    let mut index = 0u64;
    let mut last_body: Option<Vec<u8>> = None;
    let mut refresh_at = Instant::now() + refresh;
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        let separator = if url.contains('?') { '&' } else { '?' };
        let request_url = format!("{url}{separator}index={index}&wait={}s", WAIT.as_secs());
        let report = match get(&client, &request_url).await {
            Ok((body, received)) => {
                backoff.reset();
                index = next_index(index, received);
                let refresh_due = Instant::now() >= refresh_at;
                if last_body.as_deref() == Some(&body[..]) && !refresh_due {
                    None
                } else {
                    refresh_at = Instant::now() + refresh;
                    match parse(&body) {
                        Ok(report) => {
                            last_body = Some(body);
                            Some(report)
                        }
                        Err(e) => {
                            last_body = None;
                            Some(on_error(ConsulError::Malformed {
                                url: url.clone(),
                                detail: e.to_string(),
                            }))
                        }
                    }
                }
            }
            Err(e) => {
                index = 0;
                last_body = None;
                tokio::time::sleep(backoff.next_delay()).await;
                Some(on_error(e))
            }
        };
        if let Some(report) = report
            && reports.send(report).await.is_err()
        {
            return;
        }
        tokio::time::sleep_until(started + PAUSE).await;
    }
}

/// One request: the body and the `X-Consul-Index` (0 when absent).
async fn get(client: &reqwest::Client, url: &str) -> Result<(Vec<u8>, u64), ConsulError> {
    let failed = |e: reqwest::Error| ConsulError::Request {
        url: url.to_string(),
        detail: e.to_string(),
    };
    let response = client
        .get(url)
        .timeout(read_timeout())
        .send()
        .await
        .map_err(failed)?;
    if !response.status().is_success() {
        return Err(ConsulError::Status {
            url: url.to_string(),
            status: response.status(),
        });
    }
    let index = response
        .headers()
        .get(CONSUL_INDEX)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((response.bytes().await.map_err(failed)?.to_vec(), index))
}

#[cfg(test)]
mod tests;
