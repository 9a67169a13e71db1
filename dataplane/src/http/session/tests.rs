//! Whole exchanges driven with byte strings: client bytes in, backend bytes out, and back.

mod bodies;
mod failures;
mod smuggling;

use super::*;
use crate::http::head::DEFAULT_MAX_HEADERS;
use crate::http::rewrite::Scheme;
use crate::http::router::{PathMatch, RouteSpec};

/// A session with a router of two hosts (targets 1 and 2) and a catch-all path `/any` (target 3).
pub(super) struct Harness {
    pub session: HttpSession,
    pub router: Router,
}

pub(super) fn route(name: &str, hosts: &[&str], paths: &[&str], target: usize) -> RouteSpec {
    RouteSpec::new(name, hosts, paths, PathMatch::Prefix, target)
}

impl Harness {
    pub fn new() -> Self {
        Self::with_routes(&[
            route("one", &["one.example"], &[], 1),
            route("two", &["two.example"], &[], 2),
            route("any", &[], &["/any"], 3),
        ])
    }

    pub fn with_routes(routes: &[RouteSpec]) -> Self {
        let config = SessionConfig {
            max_header_bytes: 1024,
            max_headers: DEFAULT_MAX_HEADERS,
            rewrite: RewriteContext {
                client: "192.0.2.1".parse().unwrap(),
                listener_port: 80,
                scheme: Scheme::Http,
            },
        };
        Self {
            session: HttpSession::new(config),
            router: Router::build(routes).unwrap(),
        }
    }

    pub fn event(&mut self, event: Event<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        self.session.handle(event, &self.router, &mut out);
        out
    }

    pub fn client(&mut self, bytes: &[u8]) -> Vec<Action> {
        self.event(Event::ClientData(bytes))
    }

    pub fn backend(&mut self, bytes: &[u8]) -> Vec<Action> {
        self.event(Event::BackendData(bytes))
    }

    pub fn ready(&mut self, reused: bool) -> Vec<Action> {
        self.event(Event::BackendReady { reused })
    }
}

/// The bytes of every `SendBackend`.
pub(super) fn to_backend(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendBackend(b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The bytes of every `SendClient`.
pub(super) fn to_client_bytes(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendClient(b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The bytes of every `SendClient`, as text.
pub(super) fn to_client(actions: &[Action]) -> String {
    String::from_utf8_lossy(&to_client_bytes(actions)).into_owned()
}

pub(super) fn connects(actions: &[Action]) -> Vec<(usize, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ConnectBackend { route, fresh } => Some((route.target, *fresh)),
            _ => None,
        })
        .collect()
}

pub(super) fn summaries(actions: &[Action]) -> Vec<ExchangeSummary> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ExchangeDone(s) => Some((**s).clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn closed(actions: &[Action]) -> Option<(CloseReason, bool)> {
    actions.iter().find_map(|a| match a {
        Action::CloseClient { reason, linger } => Some((*reason, *linger)),
        _ => None,
    })
}

pub(super) fn has(actions: &[Action], wanted: &Action) -> bool {
    actions.contains(wanted)
}

const GET_ONE: &[u8] = b"GET /a HTTP/1.1\r\nHost: one.example\r\n\r\n";
const OK_HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn a_simple_exchange_and_its_actions() {
    let mut h = Harness::new();
    let first = h.event(Event::ClientData(b""));
    assert_eq!(first, [Action::SetTimer(Some(TimerKind::RequestHead))]);
    assert_eq!(h.session.client_read(), Read::Buffered);

    let actions = h.client(GET_ONE);
    assert_eq!(actions[0], Action::RequestStarted);
    assert_eq!(connects(&actions), [(1, false)]);
    assert!(
        has(&actions, &Action::SetTimer(None)),
        "no timer while the worker obtains a backend"
    );
    assert!(
        to_backend(&actions).is_empty(),
        "nothing is sent before the backend is ready"
    );
    assert_eq!(h.session.backend_read(), Read::Paused);

    let actions = h.ready(false);
    assert_eq!(
        String::from_utf8(to_backend(&actions)).unwrap(),
        "GET /a HTTP/1.1\r\nHost: one.example\r\nX-Forwarded-For: 192.0.2.1\r\n\
         X-Forwarded-Proto: http\r\nX-Forwarded-Port: 80\r\n\r\n"
    );
    assert!(has(&actions, &Action::SetTimer(Some(TimerKind::Response))));
    assert_eq!(h.session.backend_read(), Read::Buffered);

    let actions = h.backend(b"HTTP/1.1 200 OK\r\nContent-Len");
    assert!(to_client(&actions).is_empty());
    assert!(
        has(&actions, &Action::SetTimer(Some(TimerKind::Idle))),
        "a response byte arrived"
    );
    let actions = h.backend(b"gth: 5\r\n\r\nhel");
    assert_eq!(
        to_client(&actions),
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"
    );
    let actions = h.backend(b"lo");
    assert_eq!(to_client(&actions), "lo");
    assert!(has(&actions, &Action::ReleaseBackend));
    assert!(has(&actions, &Action::SetTimer(Some(TimerKind::KeepAlive))));
    let summary = &summaries(&actions)[0];
    assert_eq!(
        (summary.status, summary.error, summary.retried),
        (200, None, false)
    );
    assert_eq!(summary.response_bytes, OK_HELLO.len() as u64);
    assert_eq!(summary.request_bytes, GET_ONE.len() as u64);
    let line = summary.request.as_ref().unwrap();
    assert_eq!(
        (line.method(), line.target(), line.host()),
        (&b"GET"[..], &b"/a"[..], Some(&b"one.example"[..]))
    );
    assert_eq!(closed(&actions), None);
    assert_eq!(h.session.client_read(), Read::Buffered);
    assert_eq!(h.session.backend_read(), Read::Paused);

    let actions = h.event(Event::ClientEof);
    assert_eq!(closed(&actions), Some((CloseReason::ClientClosed, false)));
    assert!(h.session.is_finished());
    assert!(
        h.client(GET_ONE).is_empty(),
        "events after the end are ignored"
    );
}

#[test]
fn every_request_on_a_kept_connection_is_routed_again() {
    let mut h = Harness::new();
    let mut routed = Vec::new();
    for request in [
        &b"GET / HTTP/1.1\r\nHost: one.example\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: two.example:80\r\n\r\n",
        b"GET /any/thing HTTP/1.1\r\nHost: three.example\r\n\r\n",
    ] {
        routed.extend(connects(&h.client(request)));
        h.ready(true);
        let actions = h.backend(OK_HELLO);
        assert!(has(&actions, &Action::ReleaseBackend));
    }
    assert_eq!(routed, [(1, false), (2, false), (3, false)]);

    // A route change takes effect on the next request of the same connection.
    h.router = Router::build(&[route("moved", &["one.example"], &[], 9)]).unwrap();
    assert_eq!(connects(&h.client(GET_ONE)), [(9, false)]);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut h = Harness::new();
    let actions = h.client(
        b"GET /1 HTTP/1.1\r\nHost: one.example\r\n\r\nGET /2 HTTP/1.1\r\nHost: two.example\r\n\r\nGET /3 HT",
    );
    assert_eq!(connects(&actions), [(1, false)], "one request at a time");
    let sent = to_backend(&h.ready(false));
    assert!(sent.starts_with(b"GET /1 "));
    let actions = h.backend(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA");
    assert_eq!(
        to_client(&actions),
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA"
    );
    // The next request starts as soon as the first response is complete.
    assert_eq!(connects(&actions), [(2, false)]);
    assert!(to_backend(&h.ready(true)).starts_with(b"GET /2 "));
    let actions = h.backend(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert!(to_client(&actions).starts_with("HTTP/1.1 204"));
    assert!(
        connects(&actions).is_empty(),
        "the third request is not complete yet"
    );
    assert!(
        has(&actions, &Action::SetTimer(Some(TimerKind::RequestHead))),
        "its head is timed"
    );
    let actions = h.client(b"TP/1.1\r\nHost: one.example\r\n\r\n");
    assert_eq!(connects(&actions), [(1, false)]);
}

#[test]
fn empty_lines_before_a_request_are_ignored() {
    let mut h = Harness::new();
    let actions = h.client(b"\r\n\r\nGET / HTTP/1.1\r\nHost: one.example\r\n\r\n");
    assert_eq!(connects(&actions), [(1, false)]);
}

#[test]
fn unknown_hosts_get_404_and_keep_the_connection() {
    let mut h = Harness::new();
    let actions = h.client(b"GET / HTTP/1.1\r\nHost: nowhere.example\r\n\r\n");
    assert!(to_client(&actions).starts_with("HTTP/1.1 404 Not Found\r\n"));
    assert!(!to_client(&actions).contains("Connection: close"));
    assert!(connects(&actions).is_empty() && to_backend(&actions).is_empty());
    assert_eq!(closed(&actions), None);
    assert_eq!(summaries(&actions)[0].error, Some(ErrorStatus::NotFound));
    assert_eq!(
        connects(&h.client(GET_ONE)),
        [(1, false)],
        "the connection goes on"
    );

    // With a body, or to HEAD, or when the client closes: the answer differs.
    let mut h = Harness::new();
    let actions =
        h.client(b"POST / HTTP/1.1\r\nHost: nowhere.example\r\nContent-Length: 3\r\n\r\nabc");
    assert!(to_client(&actions).contains("Connection: close"));
    assert_eq!(
        closed(&actions),
        Some((CloseReason::Rejected(ErrorStatus::NotFound), true))
    );
    let mut h = Harness::new();
    let actions = h.client(b"HEAD / HTTP/1.1\r\nHost: nowhere.example\r\n\r\n");
    assert!(to_client(&actions).ends_with("\r\n\r\n"), "no body to HEAD");
}

#[test]
fn http10_clients() {
    // Without keep-alive: forwarded as HTTP/1.0 (asking the backend to keep its connection), the
    // response closes the client.
    let mut h = Harness::new();
    h.client(b"GET /any HTTP/1.0\r\n\r\n");
    let sent = String::from_utf8(to_backend(&h.ready(false))).unwrap();
    assert!(
        sent.starts_with("GET /any HTTP/1.0\r\n")
            && sent.ends_with("Connection: keep-alive\r\n\r\n"),
        "{sent}"
    );
    let actions =
        h.backend(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok");
    assert!(to_client(&actions).contains("Connection: close\r\n"));
    assert!(
        has(&actions, &Action::ReleaseBackend),
        "the backend said it keeps the connection"
    );
    assert_eq!(closed(&actions), Some((CloseReason::Done, false)));
    // A backend that does not say keep-alive to an HTTP/1.0 request is not reused (RFC 9112 §9.3).
    let mut h = Harness::new();
    h.client(b"GET /any HTTP/1.0\r\n\r\n");
    h.ready(false);
    let actions = h.backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert!(has(&actions, &Action::CloseBackend));

    // With keep-alive and a length: kept, and said so; a 1xx is not forwarded to it.
    let mut h = Harness::new();
    h.client(b"GET /any HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    h.ready(false);
    let actions = h.backend(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(
        to_client(&actions),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
    );
    assert_eq!(closed(&actions), None);

    // A body delimited by close cannot keep any client.
    h.client(b"GET /any HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    h.ready(true);
    let actions = h.backend(b"HTTP/1.0 200 OK\r\n\r\nstream");
    assert!(to_client(&actions).contains("Connection: close\r\n"));
    let actions = h.event(Event::BackendEof);
    assert!(has(&actions, &Action::CloseBackend));
    assert_eq!(closed(&actions), Some((CloseReason::Done, false)));
}

#[test]
fn upgrade_becomes_a_tunnel_only_after_101() {
    let upgrade =
        b"GET /any HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    // Refused: HTTP framing continues and the connection serves the next request.
    let mut h = Harness::new();
    h.client(upgrade);
    h.ready(false);
    let actions = h.backend(
        b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(!has(&actions, &Action::Tunnel));
    assert!(has(&actions, &Action::ReleaseBackend));
    assert_eq!(connects(&h.client(GET_ONE)), [(1, false)]);

    // Accepted: the 101, then the bytes each side sent after its head, then the tunnel.
    let mut h = Harness::new();
    h.client(upgrade);
    h.ready(false);
    h.client(b"early frame");
    let actions = h.backend(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nhello");
    assert_eq!(
        to_client(&actions),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nhello"
    );
    assert_eq!(to_backend(&actions), b"early frame");
    assert_eq!(actions.last(), Some(&Action::Tunnel));
    assert_eq!(summaries(&actions)[0].status, 101);
    assert!(h.session.is_finished());
    assert_eq!(
        (h.session.client_read(), h.session.backend_read()),
        (Read::Paused, Read::Paused)
    );

    // A 101 the client did not ask for is an invalid response.
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    let actions = h.backend(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    assert!(to_client(&actions).starts_with("HTTP/1.1 502 "));
    assert!(!has(&actions, &Action::Tunnel));
}

#[test]
fn head_responses_have_no_body() {
    let mut h = Harness::new();
    h.client(b"HEAD / HTTP/1.1\r\nHost: one.example\r\n\r\n");
    h.ready(false);
    let actions = h.backend(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n");
    assert_eq!(
        to_client(&actions),
        "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"
    );
    assert!(has(&actions, &Action::ReleaseBackend));
}

#[test]
fn client_half_close_after_a_complete_request_still_gets_the_response() {
    let mut h = Harness::new();
    h.client(GET_ONE);
    let actions = h.event(Event::ClientEof);
    assert_eq!(closed(&actions), None);
    h.ready(false);
    let actions = h.backend(OK_HELLO);
    assert!(to_client(&actions).ends_with("hello"));
    assert_eq!(closed(&actions), Some((CloseReason::ClientClosed, false)));
}

/// Found by fuzzing (`response_head`): an empty line before the status line made the proxy forward a
/// head without its status line.
#[test]
fn a_response_after_an_empty_line_keeps_its_status_line() {
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    let actions = h.backend(b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(
        to_client(&actions),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    );
}

/// httparse gives an obs-text reason phrase as a static empty string, not a slice of the head: the
/// status line is then forwarded without a reason (no panic, no stray span).
#[test]
fn an_obs_text_reason_phrase_is_dropped() {
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    let actions = h.backend(b"HTTP/1.1 200 \xc3\xa7a va\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(
        to_client(&actions),
        "HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok"
    );
}

#[test]
fn while_draining_the_response_in_progress_and_a_refusal_say_connection_close_and_end_the_connection()
 {
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    h.session.drain();
    let actions =
        h.backend(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello");
    let sent = to_client(&actions).to_ascii_lowercase();
    assert!(sent.contains("\r\nconnection: close\r\n"), "{sent:?}");
    assert!(!sent.contains("keep-alive"), "{sent:?}");
    assert!(sent.ends_with("hello"));
    assert_eq!(closed(&actions), Some((CloseReason::Done, false)));

    let mut h = Harness::new();
    h.session.drain();
    let actions = h.client(b"GET / HTTP/1.1\r\nHost: nowhere.example\r\n\r\n");
    let sent = to_client(&actions).to_ascii_lowercase();
    assert!(sent.starts_with("http/1.1 404"), "{sent:?}");
    assert!(sent.contains("\r\nconnection: close\r\n"), "{sent:?}");
    assert!(
        closed(&actions).is_some(),
        "a 404 keeps the connection open unless draining"
    );
}
