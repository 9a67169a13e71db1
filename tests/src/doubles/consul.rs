//! A Consul double, written from the documented HTTP API in `shared/reference/discovery.md` §5:
//!
//! - `GET /v1/catalog/services` → `{"<name>": [tags…]}` (§5.1).
//! - `GET /v1/health/service/<name>[?passing]` → `[{Node, Service, Checks}]` in the shape of the verbatim
//!   `health.mdx` sample (`tests/fixtures/consul/health_service_redis.json`); `?passing` keeps only entries
//!   whose checks, the node's `serfHealth` included, all pass (§5.2).
//! - `GET /v1/health/state/any` → every check in the cluster (`[{Node, CheckID, Name, Status, ServiceID,
//!   ServiceName, ServiceTags, …}]`, the service checks and one `serfHealth` per node), a blocking endpoint
//!   like the others: what a client watches to learn that some service's health moved.
//! - Blocking queries (§5.3): every answer carries `X-Consul-Index`; a request with `index=N` hangs until
//!   the index moves past `N` or `wait` elapses (capped by the double, see [`ConsulDouble::start`]), then
//!   answers the current state. There is one index for everything, as a small cluster's raft index.
//! - A snapshot restore ([`ConsulDouble::restore_snapshot`]) moves the index *backwards* and, like Consul's
//!   abandoned state store, wakes every blocked query at once.
//!
//! - ACLs: with [`ConsulDouble::require_token`] every request needs `X-Consul-Token` (else `403`
//!   `ACL not found`, as Consul answers).
//!
//! Knobs: add/remove instances (one at a time or a thousand at once), flip a check, answer malformed JSON.
//! The server counts connections, so a test can assert how many a client holds open at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::http::{Handler, HttpServer, Reply, Request};

/// One registered instance.
#[derive(Debug, Clone)]
pub struct ConsulInstance {
    pub id: String,
    pub node: String,
    pub node_address: String,
    /// Empty: clients must use the node address.
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    /// The service check's status: `passing`, `warning` or `critical`.
    pub check: String,
}

impl ConsulInstance {
    /// An instance on 127.0.0.1:`port` with its service address set and a passing check.
    pub fn new(id: &str, port: u16, tags: &[&str]) -> Self {
        Self {
            id: id.into(),
            node: "node1".into(),
            node_address: "127.0.0.1".into(),
            address: "127.0.0.1".into(),
            port,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            check: "passing".into(),
        }
    }
}

#[derive(Default)]
struct State {
    index: u64,
    /// Blocked queries answer at once while this generation moves (snapshot restore).
    abandoned: u64,
    services: BTreeMap<String, Vec<ConsulInstance>>,
    malformed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Blocking queries parked right now.
    parked: AtomicUsize,
    changed: Condvar,
    max_block: Duration,
    stop: AtomicBool,
    token: Mutex<Option<String>>,
    refused: AtomicUsize,
}

/// The double; stops serving when dropped.
pub struct ConsulDouble {
    shared: Arc<Shared>,
    server: HttpServer,
}

impl ConsulDouble {
    /// `max_block` caps how long a blocking query hangs (Consul's own cap is `wait`, default 5 min).
    pub fn start(max_block: Duration) -> Self {
        Self::start_with(max_block, None)
    }

    /// The same, serving HTTPS with `tls` (a certificate from the test's CA).
    pub fn start_tls(max_block: Duration, tls: Arc<rustls::ServerConfig>) -> Self {
        Self::start_with(max_block, Some(tls))
    }

    fn start_with(max_block: Duration, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                index: 10,
                ..State::default()
            }),
            changed: Condvar::new(),
            parked: AtomicUsize::new(0),
            max_block,
            stop: AtomicBool::new(false),
            token: Mutex::new(None),
            refused: AtomicUsize::new(0),
        });
        let handler: Handler = {
            let shared = Arc::clone(&shared);
            Arc::new(move |r: &Request| answer(&shared, r))
        };
        let server = match tls {
            Some(tls) => HttpServer::start_tls(handler, tls),
            None => HttpServer::start(handler),
        };
        Self { shared, server }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    fn change(&self, edit: impl FnOnce(&mut State)) {
        let mut state = self.shared.state.lock().unwrap();
        edit(&mut state);
        state.index += 1;
        self.shared.changed.notify_all();
    }

    /// Every request must carry `X-Consul-Token: token` from now on.
    pub fn require_token(&self, token: &str) {
        *self.shared.token.lock().unwrap() = Some(token.to_string());
    }

    /// Requests refused for want of the token.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// The most connections a client held open at the same time.
    pub fn max_open_connections(&self) -> usize {
        self.server.max_open_connections()
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.server.open_connections()
    }

    /// Registers many instances in one change (one index step), as a cluster that already runs them.
    pub fn register_all(&self, instances: impl IntoIterator<Item = (String, ConsulInstance)>) {
        self.change(|s| {
            for (service, instance) in instances {
                let list = s.services.entry(service).or_default();
                list.retain(|i| i.id != instance.id);
                list.push(instance);
            }
        });
    }

    /// Registers (or replaces, by id) an instance of `service`.
    pub fn register(&self, service: &str, instance: ConsulInstance) {
        self.change(|s| {
            let list = s.services.entry(service.to_string()).or_default();
            list.retain(|i| i.id != instance.id);
            list.push(instance);
        });
    }

    pub fn deregister(&self, service: &str, id: &str) {
        self.change(|s| {
            if let Some(list) = s.services.get_mut(service) {
                list.retain(|i| i.id != id);
                if list.is_empty() {
                    s.services.remove(service);
                }
            }
        });
    }

    /// Sets the service check of instance `id` of `service`.
    pub fn set_check(&self, service: &str, id: &str, status: &str) {
        self.change(|s| {
            for i in s.services.get_mut(service).into_iter().flatten() {
                if i.id == id {
                    i.check = status.to_string();
                }
            }
        });
    }

    pub fn malformed(&self, on: bool) {
        self.change(|s| s.malformed = on);
    }

    /// A snapshot restore: `edit` applies, the index becomes `index` (lower than before), and every blocked
    /// query answers at once.
    pub fn restore_snapshot(
        &self,
        index: u64,
        edit: impl FnOnce(&mut BTreeMap<String, Vec<ConsulInstance>>),
    ) {
        let mut state = self.shared.state.lock().unwrap();
        edit(&mut state.services);
        assert!(index < state.index, "a restore goes backwards");
        state.index = index;
        state.abandoned += 1;
        self.shared.changed.notify_all();
    }

    pub fn index(&self) -> u64 {
        self.shared.state.lock().unwrap().index
    }

    /// How many blocking queries are waiting for a change right now.
    pub fn parked(&self) -> usize {
        self.shared.parked.load(Ordering::SeqCst)
    }
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
    }
}

/// Consul's `wait` syntax: `30s`, `5m`, `100ms`.
fn parse_wait(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    if let Some(s) = text.strip_suffix('s') {
        return s.parse().ok().map(Duration::from_secs);
    }
    text.strip_suffix('m')?
        .parse::<u64>()
        .ok()
        .map(|m| Duration::from_secs(m * 60))
}

fn answer(shared: &Shared, r: &Request) -> Reply {
    if let Some(token) = shared.token.lock().unwrap().clone()
        && !r.header_values("X-Consul-Token").contains(&token.as_str())
    {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return Reply::Full {
            status: 403,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: b"ACL not found".to_vec(),
        };
    }
    let wanted: u64 = r.query("index").and_then(|i| i.parse().ok()).unwrap_or(0);
    let wait = r
        .query("wait")
        .and_then(|w| parse_wait(&w))
        .unwrap_or(Duration::from_secs(300))
        .min(shared.max_block);
    let deadline = Instant::now() + wait;
    let mut state = shared.state.lock().unwrap();
    let generation = state.abandoned;
    let parks = wanted > 0 && state.index <= wanted;
    if parks {
        shared.parked.fetch_add(1, Ordering::SeqCst);
    }
    while wanted > 0
        && state.index <= wanted
        && state.abandoned == generation
        && !shared.stop.load(Ordering::SeqCst)
    {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        state = shared.changed.wait_timeout(state, left).unwrap().0;
    }
    if parks {
        shared.parked.fetch_sub(1, Ordering::SeqCst);
    }
    let index = state.index;
    if state.malformed {
        return Reply::json(200, "[{\"Node\": {").with_header("X-Consul-Index", index);
    }
    let body = match r.path() {
        "/v1/catalog/services" => {
            let services: serde_json::Map<String, Value> = state
                .services
                .iter()
                .map(|(name, list)| {
                    let mut tags: Vec<&String> = list.iter().flat_map(|i| &i.tags).collect();
                    tags.sort();
                    tags.dedup();
                    (name.clone(), json!(tags))
                })
                .collect();
            Value::Object(services)
        }
        "/v1/health/state/any" => {
            let mut checks: Vec<Value> = Vec::new();
            let mut nodes = std::collections::BTreeSet::new();
            for (name, list) in &state.services {
                for i in list {
                    nodes.insert(i.node.clone());
                    checks.push(service_check(name, i));
                }
            }
            checks.extend(nodes.iter().map(|node| serf_check(node)));
            json!(checks)
        }
        path => match path.strip_prefix("/v1/health/service/") {
            Some(name) => {
                let passing_only = r.query("passing").is_some();
                let entries: Vec<Value> = state
                    .services
                    .get(name)
                    .into_iter()
                    .flatten()
                    .filter(|i| !passing_only || i.check == "passing")
                    .map(|i| entry(name, i))
                    .collect();
                json!(entries)
            }
            None => return Reply::json(404, "{}"),
        },
    };
    Reply::json(200, body.to_string())
        .with_header("X-Consul-Index", index)
        .with_header("X-Consul-KnownLeader", "true")
        .with_header("X-Consul-LastContact", 0)
}

/// One health entry in the documented shape.
fn entry(name: &str, i: &ConsulInstance) -> Value {
    json!({
        "Node": {
            "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
            "Node": i.node,
            "Address": i.node_address,
            "Datacenter": "dc1",
            "TaggedAddresses": {"lan": i.node_address, "wan": i.node_address},
            "Meta": {}
        },
        "Service": {
            "ID": i.id,
            "Service": name,
            "Tags": i.tags,
            "Address": i.address,
            "Meta": {},
            "Port": i.port,
            "Weights": {"Passing": 10, "Warning": 1},
            "Namespace": "default"
        },
        "Checks": [service_check(name, i), serf_check(&i.node)]
    })
}

/// The service check of instance `i`.
fn service_check(name: &str, i: &ConsulInstance) -> Value {
    json!({"Node": i.node, "CheckID": format!("service:{}", i.id), "Name": format!("Service '{name}' check"),
           "Status": i.check, "Notes": "", "Output": "", "ServiceID": i.id, "ServiceName": name,
           "ServiceTags": i.tags, "Namespace": "default"})
}

/// A node's `serfHealth` check (always passing here).
fn serf_check(node: &str) -> Value {
    json!({"Node": node, "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
           "Notes": "", "Output": "", "ServiceID": "", "ServiceName": "", "ServiceTags": [],
           "Namespace": "default"})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key path of a JSON value (`Service.Tags`, `Checks[].Status`, …).
    fn shape(value: &Value, at: &str, out: &mut std::collections::BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let path = format!("{at}.{k}");
                    out.insert(path.clone());
                    shape(v, &path, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    shape(item, &format!("{at}[]"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn entries_have_the_documented_shape() {
        let documented: Value = serde_json::from_str(include_str!(
            "../../fixtures/consul/health_service_redis.json"
        ))
        .unwrap();
        let ours = json!([entry(
            "redis",
            &ConsulInstance::new("redis", 8000, &["primary"])
        )]);
        let (mut a, mut b) = (Default::default(), Default::default());
        shape(&documented, "", &mut a);
        shape(&ours, "", &mut b);
        // Meta values and the lan/wan service addresses are free-form in the sample; the rest must match.
        let relevant =
            |s: &std::collections::BTreeSet<String>| -> std::collections::BTreeSet<String> {
                s.iter()
                    .filter(|p| !p.contains(".Meta.") && !p.contains(".Service.TaggedAddresses"))
                    .cloned()
                    .collect()
            };
        assert_eq!(relevant(&b), relevant(&a));
    }
}
