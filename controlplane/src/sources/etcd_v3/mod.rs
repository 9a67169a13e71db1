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
//!         "weight": 100,                         optional, 1..=1000
//!         "labels": {"ringway.maxconn": "50"}}   optional: the label reference applies (port index 0)
//! ```
//!
//! A value may also be a plain `ip:port` (registrator's style) when the service name carries `@port`.
//! `weight` is per instance; the service-wide settings (`maxconn`, mode, timeouts, groups) come from the
//! labels of the service's first key, in key order.
//!
//! Reading: a range over the prefix, then a watch from the range's `revision + 1`, so no change between the
//! two is missed. Watch events are applied to the kept key map and the catalog rebuilt at once (no extra
//! read per change). A watch that is canceled or compacted, a refresh interval, and every reconnection lead
//! to a fresh range.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ringway_shared::BackendState;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::warn;

use crate::model::merge::{Origin, merge};
use crate::model::{Catalog, Instance};
use crate::sources::SourceHandle;
use crate::sources::discovery::{
    Backoff, DiscoveryOptions, discovered_service, http_client, resolve_hosts, split_port_suffix,
};
use crate::sources::labels::{Labels, PortRef, group_accepts, log_problems, port_settings};

/// Default `--etcd-prefix`.
pub const DEFAULT_PREFIX: &str = "/ringway/services";
/// How long a range may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Names this source in label logs.
const SOURCE: &str = "etcd-v3";

/// Why the prefix could not be read or watched.
#[derive(Debug, thiserror::Error)]
pub enum EtcdV3Error {
    #[error("{url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
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

/// The source.
#[derive(Debug)]
pub struct EtcdV3 {
    url: String,
    prefix: String,
    options: DiscoveryOptions,
    handle: SourceHandle,
    client: reqwest::Client,
}

/// What one watch connection ended with.
enum WatchEnd {
    /// Range again (canceled, compacted, refresh due).
    Resync,
    Closed,
}

impl EtcdV3 {
    pub fn new(
        url: String,
        prefix: String,
        options: DiscoveryOptions,
        handle: SourceHandle,
    ) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            prefix: format!("{}/", prefix.trim_end_matches('/')),
            options,
            handle,
            client: http_client(),
        }
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
        loop {
            let result = async {
                let (mut kvs, revision) = self.range().await?;
                backoff.reset();
                if !self.handle.publish(self.catalog(&kvs).await).await {
                    return Ok(WatchEnd::Closed);
                }
                self.watch(&mut kvs, revision).await
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

    fn request(&self, path: &str) -> impl FnOnce(reqwest::Error) -> EtcdV3Error {
        let url = format!("{}{path}", self.url);
        move |source| EtcdV3Error::Request { url, source }
    }

    fn malformed(&self, detail: impl ToString) -> EtcdV3Error {
        EtcdV3Error::Malformed {
            url: self.url.clone(),
            detail: detail.to_string(),
        }
    }

    async fn range(&self) -> Result<(BTreeMap<String, String>, u64), EtcdV3Error> {
        const PATH: &str = "/v3/kv/range";
        let response = self
            .client
            .post(format!("{}{PATH}", self.url))
            .json(&self.key_range())
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(self.request(PATH))?;
        if !response.status().is_success() {
            return Err(EtcdV3Error::Status {
                url: format!("{}{PATH}", self.url),
                status: response.status(),
            });
        }
        let body = response.bytes().await.map_err(self.request(PATH))?;
        let range: RangeResponse = serde_json::from_slice(&body).map_err(|e| self.malformed(e))?;
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

    /// Follows changes from `revision + 1`, publishing after every batch of events.
    async fn watch(
        &self,
        kvs: &mut BTreeMap<String, String>,
        revision: u64,
    ) -> Result<WatchEnd, EtcdV3Error> {
        const PATH: &str = "/v3/watch";
        let mut request = self.key_range();
        request["start_revision"] = json!((revision + 1).to_string());
        let mut response = self
            .client
            .post(format!("{}{PATH}", self.url))
            .json(&json!({ "create_request": request }))
            .send()
            .await
            .map_err(self.request(PATH))?;
        if !response.status().is_success() {
            return Err(EtcdV3Error::Status {
                url: format!("{}{PATH}", self.url),
                status: response.status(),
            });
        }
        let refresh_at = Instant::now() + self.options.refresh_interval;
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk.map_err(self.request(PATH))?,
                () = tokio::time::sleep_until(refresh_at) => return Ok(WatchEnd::Resync),
                () = self.handle.closed() => return Ok(WatchEnd::Closed),
            };
            let Some(chunk) = chunk else {
                return Err(EtcdV3Error::WatchEnded {
                    url: format!("{}{PATH}", self.url),
                });
            };
            pending.extend_from_slice(&chunk);
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
            if changed && !self.handle.publish(self.catalog(kvs).await).await {
                return Ok(WatchEnd::Closed);
            }
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
                url: self.url.clone(),
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

    /// The catalog of the current key map: every key is parsed, bad ones logged and skipped.
    async fn catalog(&self, kvs: &BTreeMap<String, String>) -> Catalog {
        let entries: Vec<Entry> = kvs
            .iter()
            .filter_map(|(key, value)| {
                parse_entry(key.strip_prefix(&self.prefix)?, value)
                    .inspect_err(|why| warn!(key, "etcd v3 entry skipped: {why}"))
                    .ok()
            })
            .collect();
        let hosts = resolve_hosts(
            entries
                .iter()
                .map(|e| e.host.clone())
                .collect::<BTreeSet<_>>(),
        )
        .await;
        let services = entries.into_iter().filter_map(|e| {
            let at = PortRef {
                source: SOURCE,
                app: &e.id,
                index: 0,
            };
            let outcome = port_settings(&e.labels, 0);
            log_problems(at, &outcome.problems);
            let settings = outcome.settings?;
            if !group_accepts(&self.options.groups, &settings.groups) {
                return None;
            }
            let port = settings.service_port.or(e.listen_port)?;
            let ip = *hosts.get(&e.host)?;
            let instance = Instance {
                address: SocketAddr::new(ip, e.port),
                weight: e.weight.unwrap_or(settings.weight),
                maxconn: None,
                state: BackendState::Active,
            };
            discovered_service(
                e.service.clone(),
                port,
                &settings,
                vec![instance],
                &self.options,
            )
            .map(|s| {
                (
                    Origin {
                        rank: 0,
                        name: e.id.clone(),
                    },
                    s,
                )
            })
        });
        merge(services).catalog
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

fn parse_entry(relative_key: &str, value: &str) -> Result<Entry, String> {
    let (service, _instance) = relative_key
        .split_once('/')
        .filter(|(s, i)| !s.is_empty() && !i.is_empty())
        .ok_or("key is not <prefix>/<service>/<instance>")?;
    let (name, name_port) = match split_port_suffix(service) {
        Some((name, port)) => (name, Some(port)),
        None => (service, None),
    };
    let parsed: Value3 = if value.trim_start().starts_with('{') {
        serde_json::from_str(value).map_err(|e| format!("value is not the documented JSON: {e}"))?
    } else {
        Value3 {
            address: value.trim().to_string(),
            ..Value3::default()
        }
    };
    let (host, port) = match parsed.address.parse::<SocketAddr>() {
        Ok(a) => (a.ip().to_string(), a.port()),
        Err(_) => {
            let (h, p) = parsed
                .address
                .rsplit_once(':')
                .ok_or("address is not host:port")?;
            (
                h.to_string(),
                p.parse::<u16>().map_err(|_| "address port is not a port")?,
            )
        }
    };
    if host.is_empty() || port == 0 {
        return Err(format!("address {:?} is not host:port", parsed.address));
    }
    let weight = match &parsed.weight {
        None => None,
        Some(w) => Some(
            w.as_u64()
                .and_then(|w| u16::try_from(w).ok())
                .filter(|w| {
                    (ringway_shared::model::WEIGHT_MIN..=ringway_shared::model::WEIGHT_MAX)
                        .contains(w)
                })
                .ok_or_else(|| format!("weight {w} is not in 1..=1000"))?,
        ),
    };
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
        listen_port: parsed.port.or(name_port).filter(|p| *p != 0),
        host,
        port,
        weight,
        labels,
    })
}

#[cfg(test)]
mod tests;
