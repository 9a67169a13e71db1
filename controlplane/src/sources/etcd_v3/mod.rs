//! The etcd v3 source (`--etcd-v3 http://host:2379 --etcd-prefix /ringway/services`), spoken through etcd's
//! JSON gateway (discovery.md §6.1: base64 keys and values, int64 as strings, defaults omitted), so no
//! `protoc` and no gRPC stack are needed.
//!
//! The format Ringway accepts (also in docs/discovery.md):
//!
//! ```text
//! key:   <prefix>/<service>/<instance-id>        e.g. /ringway/services/web/host1-31000
//! value: {"address": "10.0.0.5:31000",           required: where the instance is reached (ip or host name)
//!         "port": 8080,                          listen port; or a `web@8080` service name, or a servicePort label
//!         "weight": 100,                         optional, 1..=1000; 0 drains (no new connections)
//!         "labels": {"ringway.maxconn": "50"}}   optional: the label reference applies (port index 0)
//! ```
//!
//! A value may also be a plain `ip:port` (registrator's style) when the service name carries `@port`.
//! `weight` is per instance; the service-wide settings (`maxconn`, mode, timeouts, groups) come from the
//! labels of the service's first key, in key order.
//!
//! Reading: a range over the prefix, then a watch from the range's `revision + 1`, so no change between the
//! two is missed. Watch events are applied to the kept key map and the catalog rebuilt at once (no extra
//! read per change). A watch that is canceled or compacted, a refresh interval, a refresh request (SIGHUP,
//! `POST /v1/refresh`) and every reconnection lead to a fresh range. Setting a watch up is bounded
//! ([`WATCH_SETUP_TIMEOUT`]: until etcd confirms it with `created`), so a member that accepts and never
//! answers cannot hold the source.
//!
//! Several members may be given (`--etcd-v3 https://e1:2379,https://e2:2379`): the range goes to the one
//! that answered last, the others are tried in turn when it fails, and the watch follows the member that
//! answered the range. TLS and client certificates come from `--etcd-ca`, `--etcd-cert`, `--etcd-key`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::warn;

use crate::model::Catalog;
use crate::model::merge::{Origin, merge};
use crate::sources::SourceHandle;
use crate::sources::checks::{EntryError, Notes, host_port};
use crate::sources::client::{ClientError, Redirects, TlsFiles, error_chain, http_client};
use crate::sources::discovery::{
    Backoff, Candidate, DiscoveryOptions, discovered_service, split_port_suffix,
};
use crate::sources::endpoints::{Endpoints, first_answer};
use crate::sources::labels::{Labels, group_accepts, port_settings};
use crate::sources::resolve::Resolver;

/// Default `--etcd-prefix`.
pub const DEFAULT_PREFIX: &str = "/ringway/services";
/// How long a range may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a watch to be confirmed (`created`): connect, TLS, response head, first line.
pub const WATCH_SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Names this source in logs.
const SOURCE: &str = "etcd-v3";

/// Why the prefix could not be read or watched.
#[derive(Debug, thiserror::Error)]
pub enum EtcdV3Error {
    #[error("{url}: {detail}")]
    Request { url: String, detail: String },
    #[error("every etcd endpoint failed: {0}")]
    AllEndpointsFailed(String),
    #[error("{url}: watch not confirmed within {WATCH_SETUP_TIMEOUT:?}")]
    WatchSetup { url: String },
    #[error("{url}: HTTP {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{url}: malformed response: {detail}")]
    Malformed { url: String, detail: String },
    #[error("{url}: watch error: {detail}")]
    Watch { url: String, detail: String },
    #[error("{url}: watch stream ended")]
    WatchEnded { url: String },
}

/// One instance as its value says.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Value3 {
    address: String,
    port: Option<u16>,
    weight: Option<Value>,
    labels: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Header {
    revision: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Kv {
    key: String,
    value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RangeResponse {
    header: Header,
    kvs: Vec<Kv>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    kv: Kv,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WatchResult {
    canceled: bool,
    compact_revision: String,
    cancel_reason: String,
    events: Vec<Event>,
}

/// How to reach etcd v3 (`--etcd-v3`, `--etcd-prefix`, `--etcd-ca`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdV3Config {
    /// Members' base URLs, `http(s)://host:port`.
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub tls: TlsFiles,
}

/// The source.
#[derive(Debug)]
pub struct EtcdV3 {
    endpoints: Mutex<Endpoints>,
    prefix: String,
    /// How long a watch may take to be confirmed.
    setup_timeout: Duration,
    options: DiscoveryOptions,
    handle: SourceHandle,
    client: reqwest::Client,
    /// Locked only while a catalog is built (no await inside).
    notes: Mutex<Notes>,
    resolver: Resolver,
}

/// What one watch connection ended with.
enum WatchEnd {
    /// Range again (canceled, compacted, refresh due).
    Resync,
    Closed,
}

impl EtcdV3 {
    pub fn new(
        config: EtcdV3Config,
        options: DiscoveryOptions,
        handle: SourceHandle,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            endpoints: Mutex::new(Endpoints::new("etcd", config.endpoints)),
            prefix: format!("{}/", config.prefix.trim_end_matches('/')),
            setup_timeout: WATCH_SETUP_TIMEOUT,
            options,
            handle,
            client: http_client(&config.tls, Redirects::One)?,
            notes: Mutex::new(Notes::new(SOURCE)),
            resolver: Resolver::new(SOURCE),
        })
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, Endpoints> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn key_range(&self) -> Value {
        let mut end = self.prefix.clone().into_bytes();
        if let Some(last) = end.last_mut() {
            *last += 1; // '/' + 1 = '0': every key under the prefix
        }
        json!({ "key": BASE64.encode(&self.prefix), "range_end": BASE64.encode(end) })
    }

    /// Ranges and watches until the publisher is gone.
    pub async fn run(self) {
        let mut backoff = Backoff::default();
        let mut refreshes = self.handle.refreshes();
        loop {
            let result = async {
                let (mut kvs, revision) = self.range().await?;
                backoff.reset();
                let (catalog, degraded) = self.catalog(&kvs).await;
                if !self.handle.publish_read(catalog, degraded).await {
                    return Ok(WatchEnd::Closed);
                }
                tokio::select! {
                    end = self.watch(&mut kvs, revision) => end,
                    Ok(()) = refreshes.changed() => Ok(WatchEnd::Resync),
                }
            }
            .await;
            match result {
                Ok(WatchEnd::Closed) => return,
                Ok(WatchEnd::Resync) => {}
                Err(e) => {
                    self.handle.fail(&e);
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        () = self.handle.closed() => return,
                    }
                }
            }
        }
    }

    fn request(url: &str) -> impl FnOnce(reqwest::Error) -> EtcdV3Error + '_ {
        move |e| EtcdV3Error::Request {
            url: url.to_string(),
            detail: error_chain(&e),
        }
    }

    fn malformed(&self, detail: impl ToString) -> EtcdV3Error {
        EtcdV3Error::Malformed {
            url: self.endpoints().preferred().to_string(),
            detail: detail.to_string(),
        }
    }

    /// A range over the prefix from the first member that answers.
    async fn range(&self) -> Result<(BTreeMap<String, String>, u64), EtcdV3Error> {
        let attempts = self.endpoints().attempts();
        let (i, range) = first_answer(
            attempts,
            |_, base| async move { self.range_from(&base).await },
            fails_over,
            EtcdV3Error::AllEndpointsFailed,
        )
        .await?;
        self.endpoints().answered(i);
        self.decode_range(&range)
    }

    async fn range_from(&self, base: &str) -> Result<Vec<u8>, EtcdV3Error> {
        let url = format!("{base}/v3/kv/range");
        let response = self
            .client
            .post(&url)
            .json(&self.key_range())
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(Self::request(&url))?;
        if !response.status().is_success() {
            return Err(EtcdV3Error::Status {
                url,
                status: response.status(),
            });
        }
        let body = response.bytes().await.map_err(Self::request(&url))?;
        Ok(body.to_vec())
    }

    fn decode_range(&self, body: &[u8]) -> Result<(BTreeMap<String, String>, u64), EtcdV3Error> {
        let range: RangeResponse = serde_json::from_slice(body).map_err(|e| self.malformed(e))?;
        let revision = range
            .header
            .revision
            .parse::<u64>()
            .map_err(|_| self.malformed("no header.revision"))?;
        let mut kvs = BTreeMap::new();
        for kv in range.kvs {
            let (key, value) = decode(&kv).map_err(|e| self.malformed(e))?;
            kvs.insert(key, value);
        }
        Ok((kvs, revision))
    }

    /// Follows changes from `revision + 1` on the member that answered the range, publishing after every
    /// batch of events.
    async fn watch(
        &self,
        kvs: &mut BTreeMap<String, String>,
        revision: u64,
    ) -> Result<WatchEnd, EtcdV3Error> {
        let url = format!("{}/v3/watch", self.endpoints().preferred());
        let mut request = self.key_range();
        request["start_revision"] = json!((revision + 1).to_string());
        let setup = async {
            let mut response = self
                .client
                .post(&url)
                .json(&json!({ "create_request": request }))
                .send()
                .await
                .map_err(Self::request(&url))?;
            if !response.status().is_success() {
                return Err(EtcdV3Error::Status {
                    url: url.clone(),
                    status: response.status(),
                });
            }
            // etcd confirms a watch with a first line (`created`); until then it is not set up.
            let mut pending: Vec<u8> = Vec::new();
            while !pending.contains(&b'\n') {
                match response.chunk().await.map_err(Self::request(&url))? {
                    Some(chunk) => pending.extend_from_slice(&chunk),
                    None => return Err(EtcdV3Error::WatchEnded { url: url.clone() }),
                }
            }
            Ok((response, pending))
        };
        let (mut response, mut pending) =
            tokio::time::timeout(self.setup_timeout, setup)
                .await
                .map_err(|_| EtcdV3Error::WatchSetup { url: url.clone() })??;
        let refresh_at = Instant::now() + self.options.refresh_interval;
        loop {
            let mut changed = false;
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match self.apply_line(&line, kvs)? {
                    Some(WatchEnd::Resync) => return Ok(WatchEnd::Resync),
                    Some(WatchEnd::Closed) => return Ok(WatchEnd::Closed),
                    None => changed = true,
                }
            }
            if changed {
                let (catalog, degraded) = self.catalog(kvs).await;
                if !self.handle.publish_read(catalog, degraded).await {
                    return Ok(WatchEnd::Closed);
                }
            }
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk.map_err(Self::request(&url))?,
                () = tokio::time::sleep_until(refresh_at) => return Ok(WatchEnd::Resync),
                () = self.handle.closed() => return Ok(WatchEnd::Closed),
            };
            let Some(chunk) = chunk else {
                return Err(EtcdV3Error::WatchEnded { url });
            };
            pending.extend_from_slice(&chunk);
        }
    }

    /// Applies one `{"result":…}` line; `Some` ends the watch.
    fn apply_line(
        &self,
        line: &[u8],
        kvs: &mut BTreeMap<String, String>,
    ) -> Result<Option<WatchEnd>, EtcdV3Error> {
        let message: Value = serde_json::from_slice(line).map_err(|e| self.malformed(e))?;
        if let Some(error) = message.get("error") {
            return Err(EtcdV3Error::Watch {
                url: self.endpoints().preferred().to_string(),
                detail: error.to_string(),
            });
        }
        let result: WatchResult =
            serde_json::from_value(message.get("result").cloned().unwrap_or_default())
                .map_err(|e| self.malformed(e))?;
        if result.canceled || !result.compact_revision.is_empty() {
            warn!(
                compact_revision = result.compact_revision,
                reason = result.cancel_reason,
                "etcd v3 watch canceled; ranging again"
            );
            return Ok(Some(WatchEnd::Resync));
        }
        for event in result.events {
            let key = BASE64
                .decode(&event.kv.key)
                .map_err(|e| self.malformed(e))?;
            let key = String::from_utf8_lossy(&key).into_owned();
            if event.kind == "DELETE" {
                kvs.remove(&key);
            } else {
                let (key, value) = decode(&event.kv).map_err(|e| self.malformed(e))?;
                kvs.insert(key, value);
            }
        }
        Ok(None)
    }

    /// The catalog of the current key map (every key is parsed, bad ones noted and skipped), and why part
    /// of it is last-known data, if it is.
    async fn catalog(&self, kvs: &BTreeMap<String, String>) -> (Catalog, Option<String>) {
        let parsed: Vec<(String, Result<Entry, BadField>)> = kvs
            .iter()
            .filter_map(|(key, value)| {
                let relative = key.strip_prefix(&self.prefix)?;
                Some((relative.to_string(), parse_entry(relative, value)))
            })
            .collect();
        let resolution = self
            .resolver
            .resolve(
                parsed
                    .iter()
                    .filter_map(|(_, e)| e.as_ref().ok().map(|e| e.host.clone()))
                    .collect::<BTreeSet<_>>(),
            )
            .await;
        let hosts = &resolution.hosts;
        let mut notes = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut services = Vec::new();
        for (key, entry) in parsed {
            let e = match entry {
                Ok(e) => e,
                Err((field, error)) => {
                    let service = key.split('/').next().unwrap_or_default();
                    notes.bad_entry(service, &key, field, error);
                    continue;
                }
            };
            let outcome = port_settings(&e.labels, 0);
            notes.bad_labels(&e.id, 0, &outcome.problems);
            let Some(settings) = outcome.settings else {
                continue;
            };
            if !group_accepts(&self.options.groups, &settings.groups) {
                continue;
            }
            let Some(port) = settings.service_port.or(e.listen_port) else {
                let error = EntryError {
                    value: String::new(),
                    reason: "no listen port: set port, name the service <name>@<port>, or give a \
                             servicePort label"
                        .into(),
                };
                notes.bad_entry(&e.service, &e.id, "port", error);
                continue;
            };
            let Some(ip) = hosts.get(&e.host) else {
                continue;
            };
            let (weight, drain) = match e.weight {
                Some(0) => (settings.weight, true),
                Some(w) => (w, settings.drain),
                None => (settings.weight, settings.drain),
            };
            let candidate = Candidate {
                entry: e.id.clone(),
                field: "address",
                address: SocketAddr::new(*ip, e.port),
                weight,
                drain,
            };
            let service = discovered_service(
                e.service.clone(),
                port,
                &settings,
                vec![candidate],
                &self.options,
                &mut notes,
            );
            if let Some(service) = service {
                let origin = Origin {
                    rank: 0,
                    name: e.id.clone(),
                };
                services.push((origin, service));
            }
        }
        let merged = merge(services);
        notes.merges(&merged.notes);
        notes.finish();
        (merged.catalog, resolution.degraded_reason())
    }
}

/// Connect errors, timeouts and 5xx move on to the next member; anything else is an answer.
fn fails_over(error: &EtcdV3Error) -> bool {
    match error {
        EtcdV3Error::Request { .. } => true,
        EtcdV3Error::Status { status, .. } => status.is_server_error(),
        _ => false,
    }
}

fn decode(kv: &Kv) -> Result<(String, String), base64::DecodeError> {
    let key = BASE64.decode(&kv.key)?;
    let value = BASE64.decode(&kv.value)?;
    Ok((
        String::from_utf8_lossy(&key).into_owned(),
        String::from_utf8_lossy(&value).into_owned(),
    ))
}

/// One instance from a key (relative to the prefix) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// The whole relative key, naming the instance in logs.
    id: String,
    service: String,
    listen_port: Option<u16>,
    host: String,
    port: u16,
    weight: Option<u16>,
    labels: Labels,
}

/// The field of an entry that is wrong, and why.
type BadField = (&'static str, EntryError);

/// One instance from a key (relative to the prefix) and its value; a bad one says which field is wrong.
fn parse_entry(relative_key: &str, value: &str) -> Result<Entry, BadField> {
    let bad = |field: &'static str, value: &str, reason: &str| {
        (
            field,
            EntryError {
                value: value.to_string(),
                reason: reason.to_string(),
            },
        )
    };
    let (service, _instance) = relative_key
        .split_once('/')
        .filter(|(s, i)| !s.is_empty() && !i.is_empty())
        .ok_or_else(|| bad("key", relative_key, "not <prefix>/<service>/<instance>"))?;
    let (name, name_port) = match split_port_suffix(service) {
        Some((name, port)) => (name, Some(port)),
        None => (service, None),
    };
    let parsed: Value3 = if value.trim_start().starts_with('{') {
        serde_json::from_str(value)
            .map_err(|e| bad("value", "", &format!("not the documented JSON: {e}")))?
    } else {
        Value3 {
            address: value.trim().to_string(),
            ..Value3::default()
        }
    };
    let (host, port) = host_port(&parsed.address).map_err(|e| ("address", e))?;
    let weight = match &parsed.weight {
        None => None,
        Some(w) => Some(
            w.as_u64()
                .and_then(|w| u16::try_from(w).ok())
                .filter(|w| *w <= ringway_shared::model::WEIGHT_MAX)
                .ok_or_else(|| bad("weight", &w.to_string(), "not in 1..=1000 (0 drains)"))?,
        ),
    };
    if parsed.port == Some(0) {
        return Err(bad("port", "0", "0 is not a port"));
    }
    let labels = parsed
        .labels
        .iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k.clone(), s.clone())),
            Value::Number(n) => Some((k.clone(), n.to_string())),
            _ => None,
        })
        .collect();
    Ok(Entry {
        id: relative_key.to_string(),
        service: name.to_string(),
        listen_port: parsed.port.or(name_port),
        host,
        port,
        weight,
        labels,
    })
}

#[cfg(test)]
mod tests;
