//! Doubles of etcd's two HTTP APIs, only for what a real etcd cannot be made to do: answer malformed JSON.
//! Every other etcd test runs the real etcd ([`crate::etcd`]). Written from `shared/reference/discovery.md`:
//!
//! - **v2 keys API** (§4.4): `GET /v2/keys/<dir>?recursive=true` answers the tree with `X-Etcd-Index`; a
//!   watch (`?wait=true&recursive=true&waitIndex=N`) hangs until the index reaches `N`, then answers one
//!   `set` event, or ends with `200` and an empty body after a while, as etcd's long polls do.
//! - **v3 JSON gateway** (§6.1): `POST /v3/kv/range` answers `{"header":{"revision":"N"},"kvs":[…]}` with
//!   base64 keys and values and int64s as strings; `POST /v3/watch` streams one `{"result":…}` line per
//!   response (chunked), `created` first, PUT events without `type`.
//!
//! [`EtcdDouble::malformed`] makes every answer (and every watch line) truncated JSON;
//! [`EtcdDouble::empty_watches`] makes every v2 long poll end at once with `200` and an empty body (which
//! etcd, or a proxy in front of it, may do), and [`EtcdDouble::watch_requests`] counts them.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::http::{Handler, HttpServer, Reply, Request, Stream};

/// How long a v2 long poll hangs before it ends empty.
const LONG_POLL: Duration = Duration::from_secs(2);
const TRUNCATED: &str = "{\"action\":\"get\",\"node\":{\"key\":";

#[derive(Default)]
struct State {
    index: u64,
    /// Full key → value.
    keys: Vec<(String, String)>,
    malformed: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
    empty_watches: AtomicBool,
    watch_requests: AtomicUsize,
}

/// Serves both APIs on one port.
pub struct EtcdDouble {
    shared: Arc<Shared>,
    server: HttpServer,
}

impl EtcdDouble {
    pub fn start() -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                index: 1,
                ..State::default()
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            empty_watches: AtomicBool::new(false),
            watch_requests: AtomicUsize::new(0),
        });
        let handler: Handler = {
            let shared = Arc::clone(&shared);
            Arc::new(move |r: &Request| answer(&shared, r))
        };
        Self {
            shared,
            server: HttpServer::start(handler),
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port()
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

    /// Sets `key` (a full path such as `/services/web/h:c:80`) to `value`.
    pub fn set(&self, key: &str, value: &str) {
        self.change(|s| {
            s.keys.retain(|(k, _)| k != key);
            s.keys.push((key.to_string(), value.to_string()));
        });
    }

    /// While on, every v2 watch answers `200` with an empty body at once.
    pub fn empty_watches(&self, on: bool) {
        self.shared.empty_watches.store(on, Ordering::SeqCst);
    }

    /// v2 watch requests received so far.
    pub fn watch_requests(&self) -> usize {
        self.shared.watch_requests.load(Ordering::SeqCst)
    }

    /// Truncated JSON from now on (and a change, so watchers wake and read it).
    pub fn malformed(&self, on: bool) {
        self.change(|s| s.malformed = on);
    }
}

impl Drop for EtcdDouble {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
    }
}

fn answer(shared: &Arc<Shared>, r: &Request) -> Reply {
    if r.path() == "/v3/watch" {
        return watch_v3(shared);
    }
    if r.path() == "/v3/kv/range" {
        let state = shared.state.lock().unwrap();
        if state.malformed {
            return Reply::json(200, TRUNCATED);
        }
        let kvs: Vec<Value> = state
            .keys
            .iter()
            .map(|(k, v)| json!({"key": BASE64.encode(k), "value": BASE64.encode(v), "mod_revision": state.index.to_string()}))
            .collect();
        return Reply::json(
            200,
            json!({"header": {"revision": state.index.to_string()}, "kvs": kvs}).to_string(),
        );
    }
    let Some(dir) = r.path().strip_prefix("/v2/keys") else {
        return Reply::json(404, "{}");
    };
    let mut state = shared.state.lock().unwrap();
    if r.query("wait").is_some() {
        shared.watch_requests.fetch_add(1, Ordering::SeqCst);
        if shared.empty_watches.load(Ordering::SeqCst) {
            return Reply::json(200, "");
        }
        let wanted: u64 = r
            .query("waitIndex")
            .and_then(|i| i.parse().ok())
            .unwrap_or(0);
        let deadline = Instant::now() + LONG_POLL;
        while state.index < wanted && !shared.stop.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Reply::json(200, "");
            }
            state = shared.changed.wait_timeout(state, left).unwrap().0;
        }
        let index = state.index;
        return Reply::json(
            200,
            json!({"action": "set", "node": {"key": dir, "modifiedIndex": index}}).to_string(),
        )
        .with_header("X-Etcd-Index", index);
    }
    let index = state.index;
    if state.malformed {
        return Reply::json(200, TRUNCATED).with_header("X-Etcd-Index", index);
    }
    Reply::json(200, tree(dir, &state.keys).to_string()).with_header("X-Etcd-Index", index)
}

/// The recursive answer for `dir`: one level of service directories holding the keys.
fn tree(dir: &str, keys: &[(String, String)]) -> Value {
    let mut services: Vec<(String, Vec<Value>)> = Vec::new();
    for (key, value) in keys {
        let Some(rest) = key.strip_prefix(&format!("{dir}/")) else {
            continue;
        };
        let Some((service, _)) = rest.split_once('/') else {
            continue;
        };
        let service_key = format!("{dir}/{service}");
        let node = json!({"key": key, "value": value, "modifiedIndex": 2, "createdIndex": 2});
        match services.iter_mut().find(|(k, _)| *k == service_key) {
            Some((_, nodes)) => nodes.push(node),
            None => services.push((service_key, vec![node])),
        }
    }
    let nodes: Vec<Value> = services
        .into_iter()
        .map(|(key, nodes)| json!({"key": key, "dir": true, "nodes": nodes}))
        .collect();
    json!({"action": "get", "node": {"key": dir, "dir": true, "nodes": nodes}})
}

/// A v3 watch: `created`, then one line per change (an event, or truncated JSON while malformed).
fn watch_v3(shared: &Arc<Shared>) -> Reply {
    let shared = Arc::clone(shared);
    Reply::Stream(Box::new(move |mut stream: Stream| {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut seen = shared.state.lock().unwrap().index;
        let created =
            json!({"result": {"header": {"revision": seen.to_string()}, "created": true}})
                .to_string();
        if stream.write_all(head.as_bytes()).is_err() || write_chunk(&mut stream, &created).is_err()
        {
            return;
        }
        loop {
            let mut state = shared.state.lock().unwrap();
            while state.index == seen && !shared.stop.load(Ordering::SeqCst) {
                state = shared.changed.wait_timeout(state, LONG_POLL).unwrap().0;
            }
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            seen = state.index;
            let line = if state.malformed {
                TRUNCATED.to_string()
            } else {
                let events: Vec<Value> = state
                    .keys
                    .iter()
                    .map(|(k, v)| json!({"kv": {"key": BASE64.encode(k), "value": BASE64.encode(v)}}))
                    .collect();
                json!({"result": {"header": {"revision": seen.to_string()}, "events": events}})
                    .to_string()
            };
            drop(state);
            if write_chunk(&mut stream, &line).is_err() {
                return;
            }
        }
    }))
}

fn write_chunk(stream: &mut Stream, line: &str) -> std::io::Result<()> {
    let data = format!("{line}\n");
    stream.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())?;
    stream.flush()
}
