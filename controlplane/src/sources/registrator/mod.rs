//! The registrator source (`--registrator etcd://host:port/path`): the tree registrator writes into etcd's
//! v2 keys API, read as proxymatic did (discovery.md §3.3, §4.2, §4.4).
//!
//! Several etcd members may be given (`etcd://h1:2379,h2:2379/services`): reads go to the one that
//! answered last, the others are tried in turn when it fails. `etcd+https://` speaks TLS, with the etcd
//! TLS flags (`--etcd-ca`, `--etcd-cert`, `--etcd-key`).
//!
//! Layout: `/<path>/<name>/<host>:<container>:<exposed-port>[:udp]` = `ip:port`. Each key is one instance
//! of service `<name>`, listening on the *exposed* port from the key (or on the port of a `name@port`
//! service name), forwarding to the published `ip:port`. UDP entries are skipped: the dataplane forwards
//! TCP. registrator's etcd backend stores no attributes, so these services carry no label settings and are
//! not filtered by `--group`.
//!
//! Level-triggered, like proxymatic: a recursive read, then a long-poll watch from `X-Etcd-Index + 1`; any
//! change, and an "event index cleared" error (the watch fell more than 1000 events behind), leads to a full
//! re-read and a new watch from the new index. A missing directory is an empty catalog, not an error
//! (registrator creates it with the first container). A failed read keeps the last good catalog. A long
//! poll that comes back empty at once (etcd, or a proxy in front of it, ending it early) is followed by a
//! growing pause, so a misbehaving server cannot turn the watch into a busy loop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use tokio::time::Instant;
use tracing::debug;

use crate::model::Catalog;
use crate::model::merge::{Origin, merge};
use crate::sources::SourceHandle;
use crate::sources::checks::{EntryError, Notes, host_port, port};
use crate::sources::client::{ClientError, Redirects, TlsFiles, error_chain, http_client};
use crate::sources::discovery::{
    Backoff, Candidate, DiscoveryOptions, discovered_service, split_port_suffix,
};
use crate::sources::endpoints::{Endpoints, first_answer};
use crate::sources::labels::{Labels, port_settings};
use crate::sources::resolve::Resolver;
use crate::sources::secret::without_userinfo;

/// The URL scheme registrator uses for etcd.
pub const SCHEME: &str = "etcd://";
/// The same over TLS.
pub const TLS_SCHEME: &str = "etcd+https://";
/// A long poll that comes back empty sooner than this was ended early: the next one waits a little.
const MIN_LONG_POLL: Duration = Duration::from_secs(1);
/// How long a plain read may take (watches are bounded by the refresh interval instead).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// etcd's v2 error code for a key that does not exist.
const KEY_NOT_FOUND: u64 = 100;
/// etcd's v2 error code for a `waitIndex` older than the 1000 events it keeps.
const EVENT_INDEX_CLEARED: u64 = 401;
/// The header carrying the store index a read reflects.
const ETCD_INDEX: &str = "x-etcd-index";

/// Why the registrator tree could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RegistratorError {
    #[error(
        "registrator URL {0:?} must look like etcd://host:port[,host:port…]/path (etcd+https:// for TLS)"
    )]
    Url(String),
    #[error("{url}: {detail}")]
    Request { url: String, detail: String },
    #[error("every etcd endpoint failed: {0}")]
    AllEndpointsFailed(String),
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: malformed etcd response: {source}")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url}: no X-Etcd-Index header")]
    NoIndex { url: String },
}

/// `etcd://host:port[,host:port…]/path`, split into the HTTP bases and the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistratorUrl {
    /// `http://host:port` (`https://` for `etcd+https://`), one per etcd member given.
    pub bases: Vec<String>,
    /// `/path`, without a trailing slash (empty for the root).
    pub path: String,
}

impl RegistratorUrl {
    pub fn parse(url: &str) -> Result<Self, RegistratorError> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix(SCHEME) {
            ("http", rest)
        } else if let Some(rest) = url.strip_prefix(TLS_SCHEME) {
            ("https", rest)
        } else {
            return Err(RegistratorError::Url(without_userinfo(url)));
        };
        let (authorities, path) = rest.split_once('/').unwrap_or((rest, ""));
        let bases: Vec<String> = authorities
            .split(',')
            .map(str::trim)
            .map(|a| format!("{scheme}://{a}"))
            .collect();
        let valid = |authority: &str| {
            let authority = authority.split_once("://").map_or("", |(_, a)| a);
            !authority.is_empty() && !authority.contains('@')
        };
        if !bases.iter().all(|b| valid(b)) {
            return Err(RegistratorError::Url(without_userinfo(url)));
        }
        Ok(Self {
            bases,
            path: format!("/{}", path.trim_matches('/'))
                .trim_end_matches('/')
                .to_string(),
        })
    }

    fn keys_url(&self, base: &str) -> String {
        format!("{base}/v2/keys{}", self.path)
    }
}

/// An etcd v2 node.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Node {
    pub key: String,
    pub value: Option<String>,
    pub dir: bool,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Deserialize)]
struct Response {
    node: Node,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ErrorBody {
    error_code: u64,
}

/// One registrator entry, before host resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// The key, naming the entry in logs.
    id: String,
    name: String,
    listen_port: u16,
    host: String,
    port: u16,
}

fn last_segment(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The entries of a recursive read of the registrator directory; malformed keys are noted and skipped.
fn entries(root: &Node, notes: &mut Notes) -> Vec<Entry> {
    let mut out = Vec::new();
    for service in root.nodes.iter().filter(|n| n.dir) {
        let dir_name = last_segment(&service.key);
        let (name, port_override) = match split_port_suffix(dir_name) {
            Some((name, port)) => (name, Some(port)),
            None => (dir_name, None),
        };
        for backend in service.nodes.iter().filter(|n| !n.dir) {
            match entry(name, port_override, backend) {
                Ok(Some(e)) => out.push(e),
                Ok(None) => {}
                Err((field, error)) => notes.bad_entry(name, &backend.key, field, error),
            }
        }
    }
    out
}

/// proxymatic's reading of one key: the exposed port is the third `:` field of the ID. A bad key or value
/// says which of the two is wrong.
fn entry(
    name: &str,
    port_override: Option<u16>,
    node: &Node,
) -> Result<Option<Entry>, (&'static str, EntryError)> {
    let id = last_segment(&node.key);
    let parts: Vec<&str> = id.split(':').collect();
    let bad_key = |reason: &str| {
        (
            "key",
            EntryError {
                value: id.to_string(),
                reason: reason.to_string(),
            },
        )
    };
    if parts.len() < 3 {
        return Err(bad_key("the ID is not host:container:port"));
    }
    if parts.get(3) == Some(&"udp") {
        return Ok(None);
    }
    let exposed: u64 = parts[2]
        .parse()
        .map_err(|_| bad_key("the exposed port is not a number"))?;
    let exposed = port(exposed).map_err(|e| ("key", e))?;
    let value = node.value.as_deref().unwrap_or_default();
    let (host, port) = host_port(value).map_err(|e| ("value", e))?;
    Ok(Some(Entry {
        id: node.key.clone(),
        name: name.to_string(),
        listen_port: port_override.unwrap_or(exposed),
        host,
        port,
    }))
}

/// Builds the catalog from entries and resolved hosts.
fn build(
    entries: &[Entry],
    hosts: &BTreeMap<String, IpAddr>,
    options: &DiscoveryOptions,
    notes: &mut Notes,
) -> Catalog {
    let settings = port_settings(&Labels::new(), 0)
        .settings
        .expect("no labels, no problems");
    let mut grouped: BTreeMap<(String, u16), Vec<Candidate>> = BTreeMap::new();
    for e in entries {
        let Some(ip) = hosts.get(&e.host) else {
            continue;
        };
        grouped
            .entry((e.name.clone(), e.listen_port))
            .or_default()
            .push(Candidate {
                entry: e.id.clone(),
                field: "value",
                address: SocketAddr::new(*ip, e.port),
                weight: settings.weight,
                drain: false,
            });
    }
    let mut services = Vec::new();
    for ((name, port), candidates) in grouped {
        let origin = Origin {
            rank: 0,
            name: name.clone(),
        };
        if let Some(s) = discovered_service(name, port, &settings, candidates, options, notes) {
            services.push((origin, s));
        }
    }
    let merged = merge(services);
    notes.merges(&merged.notes);
    notes.finish();
    merged.catalog
}

/// What a watch ended with.
enum Watched {
    Changed,
    /// The long poll ended without an event (an empty body).
    Nothing,
    /// The index fell out of etcd's history: read everything again.
    Cleared,
}

/// The registrator source.
#[derive(Debug)]
pub struct Registrator {
    url: RegistratorUrl,
    options: DiscoveryOptions,
    handle: SourceHandle,
    client: reqwest::Client,
    /// Locked only while a catalog is built or an endpoint chosen (no await inside).
    notes: std::sync::Mutex<Notes>,
    endpoints: std::sync::Mutex<Endpoints>,
    resolver: Resolver,
}

/// A read: the catalog, the index it reflects, and why part of it is last-known data, if it is.
type Read = (Catalog, u64, Option<String>);

impl Registrator {
    /// `tls`: the etcd TLS flags, used for `etcd+https://`.
    pub fn new(
        url: RegistratorUrl,
        tls: &TlsFiles,
        options: DiscoveryOptions,
        handle: SourceHandle,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            endpoints: std::sync::Mutex::new(Endpoints::new("etcd", url.bases.clone())),
            url,
            options,
            handle,
            client: http_client(tls, Redirects::One)?,
            notes: std::sync::Mutex::new(Notes::new("registrator")),
            resolver: Resolver::new("registrator"),
        })
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, Endpoints> {
        self.endpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads and watches until the publisher is gone.
    pub async fn run(self) {
        let mut backoff = Backoff::default();
        let mut quiet = Backoff::default();
        let mut refreshes = self.handle.refreshes();
        loop {
            let index = match self.read().await {
                Ok((catalog, index, degraded)) => {
                    backoff.reset();
                    if !self.handle.publish_read(catalog, degraded).await {
                        return;
                    }
                    index
                }
                Err(e) => {
                    self.handle.fail(&e);
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => continue,
                        () = self.handle.closed() => return,
                    }
                }
            };
            let refresh_at = Instant::now() + self.options.refresh_interval;
            let wait_index = index + 1;
            loop {
                let started = Instant::now();
                tokio::select! {
                    watched = self.watch(wait_index) => match watched {
                        Ok(Watched::Changed) => {
                            quiet.reset();
                            break;
                        }
                        Ok(Watched::Nothing) => {
                            if started.elapsed() < MIN_LONG_POLL {
                                tokio::time::sleep(quiet.next_delay()).await;
                            } else {
                                quiet.reset();
                            }
                        }
                        Ok(Watched::Cleared) => {
                            debug!("etcd event index cleared; re-reading");
                            break;
                        }
                        Err(e) => {
                            self.handle.fail(&e);
                            tokio::time::sleep(backoff.next_delay()).await;
                            break;
                        }
                    },
                    () = tokio::time::sleep_until(refresh_at) => break,
                    Ok(()) = refreshes.changed() => break,
                    () = self.handle.closed() => return,
                }
            }
        }
    }

    fn notes(&self) -> std::sync::MutexGuard<'_, Notes> {
        self.notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn request(url: &str) -> impl FnOnce(reqwest::Error) -> RegistratorError + '_ {
        move |e| RegistratorError::Request {
            url: url.to_string(),
            detail: error_chain(&e),
        }
    }

    /// A recursive read from the first endpoint that answers: the catalog and the index it reflects.
    async fn read(&self) -> Result<Read, RegistratorError> {
        let attempts = self.endpoints().attempts();
        let (i, read) = first_answer(
            attempts,
            |_, base| async move { self.read_from(&base).await },
            fails_over,
            RegistratorError::AllEndpointsFailed,
        )
        .await?;
        self.endpoints().answered(i);
        Ok(read)
    }

    async fn read_from(&self, base: &str) -> Result<Read, RegistratorError> {
        let url = format!("{}?recursive=true", self.url.keys_url(base));
        let response = self
            .client
            .get(&url)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(Self::request(&url))?;
        let status = response.status();
        let index = response
            .headers()
            .get(ETCD_INDEX)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = response.bytes().await.map_err(Self::request(&url))?;
        let index = index.ok_or_else(|| RegistratorError::NoIndex { url: url.clone() })?;
        if status == StatusCode::NOT_FOUND && error_code(&body) == Some(KEY_NOT_FOUND) {
            return Ok((Catalog::default(), index, None));
        }
        if !status.is_success() {
            return Err(RegistratorError::Status {
                url,
                status,
                body: lossy(&body),
            });
        }
        let response: Response =
            serde_json::from_slice(&body).map_err(|source| RegistratorError::Json {
                url: url.clone(),
                source,
            })?;
        let entries = entries(&response.node, &mut self.notes());
        let resolution = self
            .resolver
            .resolve(
                entries
                    .iter()
                    .map(|e| e.host.clone())
                    .collect::<BTreeSet<_>>(),
            )
            .await;
        let catalog = build(
            &entries,
            &resolution.hosts,
            &self.options,
            &mut self.notes(),
        );
        Ok((catalog, index, resolution.degraded_reason()))
    }

    /// Waits for the next change under the directory at or after `index`, on the endpoint that answered
    /// the read.
    async fn watch(&self, index: u64) -> Result<Watched, RegistratorError> {
        let base = self.endpoints().preferred().to_string();
        let url = format!(
            "{}?wait=true&recursive=true&waitIndex={index}",
            self.url.keys_url(&base)
        );
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(Self::request(&url))?;
        let status = response.status();
        let body = response.bytes().await.map_err(Self::request(&url))?;
        if error_code(&body) == Some(EVENT_INDEX_CLEARED) {
            return Ok(Watched::Cleared);
        }
        if status == StatusCode::NOT_FOUND && error_code(&body) == Some(KEY_NOT_FOUND) {
            // Watching a directory that does not exist yet: etcd waits for it; some versions refuse.
            tokio::time::sleep(REQUEST_TIMEOUT.min(self.options.refresh_interval)).await;
            return Ok(Watched::Changed);
        }
        if !status.is_success() {
            return Err(RegistratorError::Status {
                url,
                status,
                body: lossy(&body),
            });
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Watched::Nothing);
        }
        Ok(Watched::Changed)
    }
}

/// Connect errors, timeouts and 5xx move on to the next endpoint; anything else is an answer.
fn fails_over(error: &RegistratorError) -> bool {
    match error {
        RegistratorError::Request { .. } => true,
        RegistratorError::Status { status, .. } => status.is_server_error(),
        _ => false,
    }
}

fn error_code(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|e| e.error_code)
        .filter(|c| *c != 0)
}

fn lossy(body: &[u8]) -> String {
    const SHOWN: usize = 200;
    String::from_utf8_lossy(&body[..body.len().min(SHOWN)]).into_owned()
}

#[cfg(test)]
mod tests;
