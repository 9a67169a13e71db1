//! The registrator source (`--registrator etcd://host:port/path`): the tree registrator writes into etcd's
//! v2 keys API, read as proxymatic did (discovery.md §3.3, §4.2, §4.4).
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
//! (registrator creates it with the first container). A failed read keeps the last good catalog.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::StatusCode;
use ringway_shared::BackendState;
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::model::merge::{Origin, merge};
use crate::model::{Catalog, Instance};
use crate::sources::SourceHandle;
use crate::sources::discovery::{
    Backoff, DiscoveryOptions, discovered_service, http_client, resolve_hosts, split_port_suffix,
};
use crate::sources::labels::{Labels, port_settings};

/// The URL scheme registrator uses for etcd.
pub const SCHEME: &str = "etcd://";
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
    #[error("registrator URL {0:?} must look like etcd://host:port/path")]
    Url(String),
    #[error("{url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
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

/// `etcd://host:port/path`, split into the HTTP base and the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistratorUrl {
    /// `http://host:port`
    pub base: String,
    /// `/path`, without a trailing slash (empty for the root).
    pub path: String,
}

impl RegistratorUrl {
    pub fn parse(url: &str) -> Result<Self, RegistratorError> {
        let rest = url
            .strip_prefix(SCHEME)
            .ok_or_else(|| RegistratorError::Url(url.into()))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(RegistratorError::Url(url.into()));
        }
        Ok(Self {
            base: format!("http://{authority}"),
            path: format!("/{}", path.trim_matches('/'))
                .trim_end_matches('/')
                .to_string(),
        })
    }

    fn keys_url(&self) -> String {
        format!("{}/v2/keys{}", self.base, self.path)
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
    name: String,
    listen_port: u16,
    host: String,
    port: u16,
}

fn last_segment(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The entries of a recursive read of the registrator directory; malformed keys are logged and skipped.
fn entries(root: &Node) -> Vec<Entry> {
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
                Err(why) => warn!(key = backend.key, "registrator entry skipped: {why}"),
            }
        }
    }
    out
}

/// proxymatic's reading of one key: the exposed port is the third `:` field of the ID.
fn entry(name: &str, port_override: Option<u16>, node: &Node) -> Result<Option<Entry>, String> {
    let id = last_segment(&node.key);
    let parts: Vec<&str> = id.split(':').collect();
    if parts.len() < 3 {
        return Err(format!("ID {id:?} is not host:container:port"));
    }
    if parts.get(3) == Some(&"udp") {
        return Ok(None);
    }
    let exposed: u16 = parts[2]
        .parse()
        .map_err(|_| format!("exposed port {:?} is not a port", parts[2]))?;
    let value = node.value.as_deref().unwrap_or_default();
    let (host, port) = match value.parse::<SocketAddr>() {
        Ok(addr) => (addr.ip().to_string(), addr.port()),
        Err(_) => {
            let (host, port) = value
                .rsplit_once(':')
                .ok_or_else(|| format!("value {value:?} is not ip:port"))?;
            (
                host.to_string(),
                port.parse()
                    .map_err(|_| format!("value {value:?} is not ip:port"))?,
            )
        }
    };
    if port == 0 {
        return Err(format!("value {value:?} has port 0"));
    }
    Ok(Some(Entry {
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
) -> Catalog {
    let settings = port_settings(&Labels::new(), 0)
        .settings
        .expect("no labels, no problems");
    let mut grouped: BTreeMap<(String, u16), Vec<Instance>> = BTreeMap::new();
    for e in entries {
        let Some(ip) = hosts.get(&e.host) else {
            continue;
        };
        grouped
            .entry((e.name.clone(), e.listen_port))
            .or_default()
            .push(Instance {
                address: SocketAddr::new(*ip, e.port),
                weight: settings.weight,
                maxconn: None,
                state: BackendState::Active,
            });
    }
    let services = grouped.into_iter().filter_map(|((name, port), instances)| {
        let origin = Origin {
            rank: 0,
            name: name.clone(),
        };
        discovered_service(name, port, &settings, instances, options).map(|s| (origin, s))
    });
    merge(services).catalog
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
}

impl Registrator {
    pub fn new(url: RegistratorUrl, options: DiscoveryOptions, handle: SourceHandle) -> Self {
        Self {
            url,
            options,
            handle,
            client: http_client(),
        }
    }

    /// Reads and watches until the publisher is gone.
    pub async fn run(self) {
        let mut backoff = Backoff::default();
        loop {
            let index = match self.read().await {
                Ok((catalog, index)) => {
                    backoff.reset();
                    if !self.handle.publish(catalog).await {
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
                tokio::select! {
                    watched = self.watch(wait_index) => match watched {
                        Ok(Watched::Changed) => break,
                        Ok(Watched::Nothing) => {}
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
                    () = self.handle.closed() => return,
                }
            }
        }
    }

    fn request(url: &str) -> impl FnOnce(reqwest::Error) -> RegistratorError + '_ {
        move |source| RegistratorError::Request {
            url: url.to_string(),
            source,
        }
    }

    /// A recursive read: the catalog and the index it reflects.
    async fn read(&self) -> Result<(Catalog, u64), RegistratorError> {
        let url = format!("{}?recursive=true", self.url.keys_url());
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
            return Ok((Catalog::default(), index));
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
        let entries = entries(&response.node);
        let hosts = resolve_hosts(
            entries
                .iter()
                .map(|e| e.host.clone())
                .collect::<BTreeSet<_>>(),
        )
        .await;
        Ok((build(&entries, &hosts, &self.options), index))
    }

    /// Waits for the next change under the directory at or after `index`.
    async fn watch(&self, index: u64) -> Result<Watched, RegistratorError> {
        let url = format!(
            "{}?wait=true&recursive=true&waitIndex={index}",
            self.url.keys_url()
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
mod tests {
    use super::*;

    const GET: &str = include_str!("../../../tests/fixtures/etcd/registrator_get.json");

    fn catalog_of(body: &str, options: &DiscoveryOptions) -> Catalog {
        let response: Response = serde_json::from_str(body).unwrap();
        let entries = entries(&response.node);
        let hosts = entries
            .iter()
            .filter_map(|e| e.host.parse().ok().map(|ip| (e.host.clone(), ip)))
            .collect();
        build(&entries, &hosts, options)
    }

    #[test]
    fn the_documented_tree_gives_db_on_the_exposed_port() {
        let catalog = catalog_of(GET, &DiscoveryOptions::default());
        assert_eq!(catalog.services.len(), 1);
        let s = &catalog.services[0];
        assert_eq!((s.name.as_str(), s.listen.port()), ("db", 6379));
        assert_eq!(
            s.instances[0].address,
            "192.168.1.102:10000".parse().unwrap()
        );
    }

    #[test]
    fn name_port_suffix_udp_ipv6_host_networking_and_bad_keys() {
        let body = r#"{"node":{"key":"/services","dir":true,"nodes":[
          {"key":"/services/web@8080","dir":true,"nodes":[
            {"key":"/services/web@8080/h1:web.0:80","value":"10.0.0.1:31000"},
            {"key":"/services/web@8080/h1:web.1:80","value":"[::1]:31001"},
            {"key":"/services/web@8080/h1:web.2:80:udp","value":"10.0.0.1:31002"},
            {"key":"/services/web@8080/customid","value":"10.0.0.1:31003"},
            {"key":"/services/web@8080/h1:web.3:80","value":"garbage"}]},
          {"key":"/services/hostnet","dir":true,"nodes":[
            {"key":"/services/hostnet/h1:h.0:9000","value":"10.0.0.2:9000"}]},
          {"key":"/services/empty","dir":true}]}}"#;
        let mut options = DiscoveryOptions::default();
        let catalog = catalog_of(body, &options);
        assert_eq!(catalog.services.len(), 1, "{catalog:?}");
        let web = &catalog.services[0];
        assert_eq!((web.name.as_str(), web.listen.port()), ("web", 8080));
        let addrs: Vec<String> = web
            .instances
            .iter()
            .map(|i| i.address.to_string())
            .collect();
        assert_eq!(addrs, vec!["10.0.0.1:31000", "[::1]:31001"]);
        options.expose_host = true;
        assert_eq!(
            catalog_of(body, &options).services.len(),
            2,
            "host networking exposed"
        );
    }

    #[test]
    fn urls_parse_like_registrators() {
        let u = RegistratorUrl::parse("etcd://127.0.0.1:2379/services").unwrap();
        assert_eq!(
            (u.base.as_str(), u.path.as_str()),
            ("http://127.0.0.1:2379", "/services")
        );
        assert_eq!(u.keys_url(), "http://127.0.0.1:2379/v2/keys/services");
        let root = RegistratorUrl::parse("etcd://h:1").unwrap();
        assert_eq!(root.keys_url(), "http://h:1/v2/keys");
        assert!(RegistratorUrl::parse("http://h:1/x").is_err());
        assert!(RegistratorUrl::parse("etcd:///x").is_err());
    }

    #[test]
    fn error_bodies_are_recognised() {
        let cleared = br#"{"errorCode":401,"message":"The event in requested index is outdated and cleared","cause":"the requested history has been cleared [1008/8]","index":2007}"#;
        assert_eq!(error_code(cleared), Some(EVENT_INDEX_CLEARED));
        let missing = br#"{"cause":"/foo","errorCode":100,"index":6,"message":"Key not found"}"#;
        assert_eq!(error_code(missing), Some(KEY_NOT_FOUND));
        assert_eq!(error_code(b""), None);
        assert_eq!(error_code(br#"{"action":"set"}"#), None);
    }
}
