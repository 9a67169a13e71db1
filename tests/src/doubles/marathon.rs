//! A Marathon double, written from the documented wire formats in `shared/reference/discovery.md`:
//!
//! - `GET /v2/apps?embed=apps.tasks` answers `{"apps":[…]}` with embedded tasks (§1.1); the apps are
//!   whatever the test sets (the fixtures in `tests/fixtures/marathon/` have this shape).
//! - `GET /v2/events` is Jetty's EventSourceServlet as Marathon uses it (§1.3): the `Accept` header must be
//!   exactly `text/event-stream` (otherwise 405), the response is `200`, `Content-Type: text/event-stream`,
//!   `Connection: close`, no length and no chunking; frames are `event: <type>\r\n` `data: <json>\r\n`
//!   `\r\n`; the first event is `event_stream_attached` (with `remoteAddress`); a heartbeat is a bare `\r`
//!   and then `\n`, flushed separately.
//! - A standby (§1.2) proxies REST reads to the leader (here: serves the same state) and answers
//!   `/v2/events` with a `302` to the leader.
//!
//! - Secured (marathon-lb's `--auth-credentials`, Marathon's `--http_credentials`): with
//!   [`MarathonDouble::require_auth`] every request, on the leader and on its standbys, needs
//!   `Authorization: Basic …` with those credentials, else `401` with `WWW-Authenticate: Basic`; with
//!   [`MarathonDouble::leader_tls`] the leader and its standbys serve HTTPS only.
//!
//! Test knobs: replace the apps, emit events, drop every event stream and refuse new ones for a while,
//! answer malformed JSON.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::http::{Handler, HttpServer, Reply, Request, Stream};

/// Jetty's heartbeat is every 10 s; the double beats faster so every test sees some.
pub const HEARTBEAT: Duration = Duration::from_millis(300);

#[derive(Default)]
struct Shared {
    apps: Mutex<Value>,
    streams: Mutex<Vec<Stream>>,
    refuse_streams: AtomicBool,
    /// The `Authorization` value every request must carry, when set.
    auth: Mutex<Option<String>>,
    unauthorized: AtomicUsize,
    malformed: AtomicBool,
    app_reads: AtomicUsize,
    stream_connections: AtomicUsize,
}

/// A Marathon leader; [`MarathonDouble::standby`] makes standbys of it.
pub struct MarathonDouble {
    shared: Arc<Shared>,
    server: HttpServer,
    stop: Arc<AtomicBool>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl MarathonDouble {
    /// A leader serving `apps` (the content of the `apps` array).
    pub fn leader(apps: Value) -> Self {
        Self::leader_with(apps, HttpServer::start, None)
    }

    /// A leader on a given port (a replica that comes up where the controlplane already looks).
    pub fn leader_on(port: u16, apps: Value) -> Self {
        Self::leader_with(apps, |handler| HttpServer::start_on(port, handler), None)
    }

    /// A leader serving HTTPS with `tls`; its standbys do too.
    pub fn leader_tls(apps: Value, tls: Arc<rustls::ServerConfig>) -> Self {
        let serve = {
            let tls = Arc::clone(&tls);
            move |handler| HttpServer::start_tls(handler, tls)
        };
        Self::leader_with(apps, serve, Some(tls))
    }

    fn leader_with(
        apps: Value,
        serve: impl FnOnce(Handler) -> HttpServer,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        *shared.apps.lock().unwrap() = apps;
        let handler: Handler = {
            let shared = Arc::clone(&shared);
            Arc::new(move |r: &Request| leader(&shared, r))
        };
        let stop = Arc::new(AtomicBool::new(false));
        heartbeats(Arc::clone(&shared), Arc::clone(&stop));
        Self {
            shared,
            server: serve(handler),
            stop,
            tls,
        }
    }

    /// Every request must carry `Authorization: Basic base64(user:password)` from now on.
    pub fn require_auth(&self, user: &str, password: &str) {
        let value = format!("Basic {}", BASE64.encode(format!("{user}:{password}")));
        *self.shared.auth.lock().unwrap() = Some(value);
    }

    /// Requests refused for want of the right credentials, on the leader and its standbys.
    pub fn unauthorized(&self) -> usize {
        self.shared.unauthorized.load(Ordering::SeqCst)
    }

    /// A standby of this leader: same state (and credentials, and TLS), `/v2/events` redirected here.
    pub fn standby(&self) -> HttpServer {
        let shared = Arc::clone(&self.shared);
        let leader_url = self.url();
        let handler: Handler = Arc::new(move |r: &Request| {
            if let Some(refused) = check_auth(&shared, r) {
                return refused;
            }
            if r.path() == "/v2/events" {
                Reply::Full {
                    status: 302,
                    headers: vec![("Location".into(), format!("{leader_url}{}", r.target))],
                    body: Vec::new(),
                }
            } else {
                leader(&shared, r)
            }
        });
        match &self.tls {
            Some(tls) => HttpServer::start_tls(handler, Arc::clone(tls)),
            None => HttpServer::start(handler),
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn set_apps(&self, apps: Value) {
        *self.shared.apps.lock().unwrap() = apps;
    }

    /// Sends one event to every attached stream.
    pub fn emit(&self, event_type: &str, mut data: Value) {
        data["eventType"] = json!(event_type);
        data["timestamp"] = json!("2015-09-30T12:44:45.681Z");
        let frame = format!("event: {event_type}\r\ndata: {data}\r\n\r\n");
        self.shared.streams.lock().unwrap().retain_mut(|s| {
            s.write_all(frame.as_bytes())
                .and_then(|()| s.flush())
                .is_ok()
        });
    }

    /// Closes every event stream, and refuses (503) new ones while `refuse` is set.
    pub fn drop_streams(&self, refuse: bool) {
        self.shared.refuse_streams.store(refuse, Ordering::SeqCst);
        for s in self.shared.streams.lock().unwrap().drain(..) {
            s.shutdown();
        }
    }

    pub fn accept_streams(&self) {
        self.shared.refuse_streams.store(false, Ordering::SeqCst);
    }

    /// `/v2/apps` answers a truncated JSON body while set.
    pub fn malformed(&self, on: bool) {
        self.shared.malformed.store(on, Ordering::SeqCst);
    }

    pub fn app_reads(&self) -> usize {
        self.shared.app_reads.load(Ordering::SeqCst)
    }

    pub fn stream_connections(&self) -> usize {
        self.shared.stream_connections.load(Ordering::SeqCst)
    }

    /// Streams currently attached.
    pub fn attached(&self) -> usize {
        self.shared.streams.lock().unwrap().len()
    }
}

impl Drop for MarathonDouble {
    fn drop(&mut self) {
        // The server first: a client noticing the closed streams must not find it still answering.
        self.server.stop();
        self.stop.store(true, Ordering::SeqCst);
        self.drop_streams(true);
    }
}

/// `Some(401)` when credentials are required and `r` lacks them.
fn check_auth(shared: &Shared, r: &Request) -> Option<Reply> {
    let expected = shared.auth.lock().unwrap().clone()?;
    if r.header_values("Authorization")
        .contains(&expected.as_str())
    {
        return None;
    }
    shared.unauthorized.fetch_add(1, Ordering::SeqCst);
    Some(
        Reply::json(401, "{\"message\":\"Invalid username or password.\"}")
            .with_header("WWW-Authenticate", "Basic realm=\"Mesosphere\""),
    )
}

fn leader(shared: &Arc<Shared>, r: &Request) -> Reply {
    if let Some(refused) = check_auth(shared, r) {
        return refused;
    }
    match r.path() {
        "/v2/apps" => {
            shared.app_reads.fetch_add(1, Ordering::SeqCst);
            if shared.malformed.load(Ordering::SeqCst) {
                return Reply::json(200, "{\"apps\":[{\"id\":\"/trunc");
            }
            let apps = shared.apps.lock().unwrap().clone();
            Reply::json(200, json!({ "apps": apps }).to_string())
        }
        "/ping" => Reply::Full {
            status: 200,
            headers: vec![],
            body: b"pong".to_vec(),
        },
        "/v2/events" => events(shared, r),
        _ => Reply::json(404, "{\"message\":\"not found\"}"),
    }
}

fn events(shared: &Arc<Shared>, r: &Request) -> Reply {
    // Jetty needs one Accept value exactly equal to text/event-stream.
    if !r.header_values("Accept").contains(&"text/event-stream") {
        return Reply::json(405, "HTTP method GET is not supported by this URL");
    }
    if shared.refuse_streams.load(Ordering::SeqCst) {
        return Reply::json(503, "{\"message\":\"unavailable\"}");
    }
    shared.stream_connections.fetch_add(1, Ordering::SeqCst);
    let shared = Arc::clone(shared);
    Reply::Stream(Box::new(move |mut stream: Stream| {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream;charset=utf-8\r\nConnection: close\r\n\r\n";
        let attached = json!({
            "remoteAddress": "127.0.0.1",
            "eventType": "event_stream_attached",
            "timestamp": "2015-09-30T12:44:30.061Z"
        });
        let first = format!("event: event_stream_attached\r\ndata: {attached}\r\n\r\n");
        let written = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(first.as_bytes()))
            .and_then(|()| stream.flush());
        if written.is_ok() {
            shared.streams.lock().unwrap().push(stream);
        }
    }))
}

/// Writes `\r`, flushes, then `\n`, on every stream, every [`HEARTBEAT`].
fn heartbeats(shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            thread::sleep(HEARTBEAT / 2);
            for half in [b"\r", b"\n"] {
                shared
                    .streams
                    .lock()
                    .unwrap()
                    .retain_mut(|s| s.write_all(half).and_then(|()| s.flush()).is_ok());
                thread::sleep(Duration::from_millis(5));
            }
        }
    });
}

/// An app in the 1.5+ shape with host networking (`portDefinitions`), `tasks` running on 127.0.0.1.
pub fn host_app(id: &str, service_port: u16, task_ports: &[u16], labels: Value) -> Value {
    let tasks: Vec<Value> = task_ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            json!({
                "id": format!("{}.{i}", id.trim_start_matches('/')),
                "appId": id,
                "host": "127.0.0.1",
                "ports": [port],
                "state": "TASK_RUNNING",
                "startedAt": "2017-07-19T17:35:15.654Z",
                "version": "2017-07-19T17:34:41.967Z"
            })
        })
        .collect();
    json!({
        "id": id,
        "instances": task_ports.len(),
        "portDefinitions": [{"port": service_port, "protocol": "tcp", "labels": {}}],
        "labels": labels,
        "networks": [{"mode": "host"}],
        "tasks": tasks
    })
}
