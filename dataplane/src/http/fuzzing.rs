//! Entry points of the coverage-guided fuzz targets (`dataplane/fuzz/`, run by `tools/fuzz`), and the
//! replay test that runs every committed corpus and crash file through them on each `cargo test`.
//!
//! Each target checks more than "does not panic": its oracles are properties a smuggling bug would
//! break. A head delivered in pieces is found exactly where the whole buffer finds it; a request
//! (response) head the proxy rebuilds parses again to the same framing, host and path (status and
//! body), so the backend (client) cannot read a message differently from the proxy; the chunked
//! scanner finds the same data and the same end however its input is cut.
//!
//! The first input byte chooses how the rest is cut (and, for responses, what the request was), so the
//! fuzzer explores the incremental paths too. The `session` target reads its input as a script of
//! worker events and checks the driving contract (no byte to a backend it was not given, nothing after
//! the last action, splices within what was announced).

use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;

use bytes::BytesMut;

use super::chunked::{ChunkedDecoder, ChunkedError};
use super::framing::{self, RequestContext};
use super::head::{
    DEFAULT_MAX_HEADERS, HeadError, HeadScanner, MAX_RESPONSE_HEAD_BYTES, Method, RequestHead,
    ResponseHead, Version, parse_request, parse_response,
};
use super::rewrite::{self, ClientConnection, RewriteContext, Scheme};
use super::router::{PathMatch, RouteSpec, Router};
use super::session::{
    Action, Direction, Event, HttpSession, Read, SessionConfig, TimerKind, Unavailable,
};

/// The request-head limit the targets use (small, so the fuzzer reaches it).
const LIMIT: usize = 4096;

/// Scans `input` for a head end, feeding it `step` bytes at a time.
fn scan_in_steps(input: &[u8], step: usize, limit: usize) -> Result<Option<usize>, HeadError> {
    let mut scanner = HeadScanner::default();
    let mut fed = 0;
    while fed < input.len() {
        fed = (fed + step).min(input.len());
        if let Some(len) = scanner.find_end(&input[..fed], limit)? {
            return Ok(Some(len));
        }
    }
    Ok(None)
}

/// Finds the head in `input` both whole and in pieces, asserts they agree, and returns it.
fn find_head(input: &[u8], step: usize, limit: usize) -> Option<usize> {
    let whole = HeadScanner::default().find_end(input, limit);
    let pieces = scan_in_steps(input, step, limit);
    assert_eq!(
        whole, pieces,
        "a head cut in pieces is found where the whole one is"
    );
    whole.ok().flatten()
}

fn router() -> Router {
    let route = RouteSpec::new;
    Router::build(&[
        route("exact", &["a.example"], &["/api"], PathMatch::Prefix, 0),
        route("wild", &["*.example"], &["/x"], PathMatch::Exact, 1),
        route("regex", &[], &["^/r/[0-9]+$"], PathMatch::Regex, 2),
        route("any", &[], &[], PathMatch::Prefix, 3),
    ])
    .expect("the fuzz router builds")
}

/// Target `request_head`: scanning, parsing, the framing decision, routing and the rebuilt head.
pub fn request_head(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(selector % 32) + 1;
    let Some(len) = find_head(input, step, LIMIT) else {
        return;
    };
    let buf = &input[..len];
    let mut head = RequestHead::default();
    if parse_request(buf, DEFAULT_MAX_HEADERS, &mut head).is_err() {
        return;
    }
    assert_eq!(
        head.len, len,
        "the tokenizer ends the head at the blank line"
    );
    let Ok(framing) = framing::request(&head, buf) else {
        return;
    };
    let authority = framing.authority.map(|a| a.of(buf));
    let path = framing.path.of(buf);
    let _ = router().route(authority, path, |name| head.value(buf, name));

    let ctx = RewriteContext {
        client: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        listener_port: 80,
        scheme: Scheme::Http,
    };
    let mut out = BytesMut::new();
    rewrite::request_head(&head, &framing, buf, &ctx, &mut out);
    let mut again = RequestHead::default();
    let found = HeadScanner::default().find_end(&out, usize::MAX);
    assert_eq!(found, Ok(Some(out.len())), "the rebuilt head is one head");
    parse_request(&out, DEFAULT_MAX_HEADERS + 4, &mut again).expect("the rebuilt head parses");
    let reframed = framing::request(&again, &out).expect("the rebuilt head is accepted");
    assert_eq!(
        reframed.body, framing.body,
        "the backend sees the same body framing"
    );
    assert_eq!(reframed.upgrade, framing.upgrade);
    assert_eq!(reframed.expect_continue, framing.expect_continue);
    assert_eq!(
        reframed.authority.map(|a| a.of(&out)),
        authority,
        "same host"
    );
    assert_eq!(reframed.path.of(&out), path, "same path");
}

/// Target `response_head`: scanning, parsing, the framing decision for the request the first byte
/// describes, and the rebuilt head.
pub fn response_head(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let request = RequestContext {
        method: if selector & 1 == 0 {
            Method::Get
        } else {
            Method::Head
        },
        version: if selector & 2 == 0 {
            Version::Http11
        } else {
            Version::Http10
        },
        upgrade: selector & 4 != 0,
    };
    let step = usize::from(selector >> 3) + 1;
    let Some(len) = find_head(input, step, MAX_RESPONSE_HEAD_BYTES) else {
        return;
    };
    let buf = &input[..len];
    let mut head = ResponseHead::default();
    if parse_response(buf, &mut head).is_err() {
        return;
    }
    let Ok(framing) = framing::response(&head, buf, request) else {
        return;
    };
    let client = if framing.switching {
        ClientConnection::Upgrade
    } else if framing.informational {
        ClientConnection::Interim
    } else if selector & 8 == 0 {
        ClientConnection::Keep
    } else {
        ClientConnection::Close
    };
    let mut out = BytesMut::new();
    rewrite::response_head(&head, &framing, buf, client, &mut out);
    let found = HeadScanner::default().find_end(&out, usize::MAX);
    assert_eq!(found, Ok(Some(out.len())), "the rebuilt head is one head");
    let mut again = ResponseHead::default();
    parse_response(&out, &mut again).expect("the rebuilt head parses");
    assert_eq!(again.status, head.status);
    let reframed = framing::response(&again, &out, request).expect("the rebuilt head is accepted");
    assert_eq!(
        reframed.body, framing.body,
        "the client sees the same body framing"
    );
    assert_eq!(reframed.informational, framing.informational);
    assert_eq!(reframed.switching, framing.switching);
}

/// What decoding a chunked body found: data ranges (adjacent ones merged), bytes consumed, whether it
/// ended, or the error.
type Decoded = Result<(Vec<Range<usize>>, usize, bool), ChunkedError>;

fn decode_in_steps(input: &[u8], step: usize) -> Decoded {
    let mut decoder = ChunkedDecoder::new();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut at = 0;
    let mut available = 0;
    while available < input.len() {
        available = (available + step).min(input.len());
        while at < available {
            let found = decoder.step(&input[at..available])?;
            assert!(found.consumed <= available - at, "never past the input");
            if let Some(data) = found.data {
                assert!(data.end <= found.consumed && !data.is_empty());
                let data = at + data.start..at + data.end;
                match ranges.last_mut() {
                    Some(last) if last.end == data.start => last.end = data.end,
                    _ => ranges.push(data),
                }
            }
            at += found.consumed;
            if found.done {
                return Ok((ranges, at, true));
            }
            if found.consumed == 0 {
                break;
            }
        }
    }
    Ok((ranges, at, decoder.is_done()))
}

/// Target `chunked`: the decoder agrees with itself whatever the cuts, and `skip` agrees with `step`.
pub fn chunked(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let whole = decode_in_steps(input, input.len().max(1));
    let cut = decode_in_steps(input, usize::from(selector) + 1);
    let bytewise = decode_in_steps(input, 1);
    assert_eq!(whole, cut, "cuts change nothing");
    assert_eq!(whole, bytewise, "byte by byte changes nothing");
    let skipped = ChunkedDecoder::new().skip(input);
    match (&whole, skipped) {
        (Ok((_, consumed, done)), Ok(skip)) => assert_eq!((*consumed, *done), skip),
        (Err(e), Err(f)) => assert_eq!(*e, f),
        (w, s) => panic!("step and skip disagree: {w:?} / {s:?}"),
    }
}

/// What a worker driving the session knows, to feed only events a real worker could deliver and to
/// check the actions against the contract.
#[derive(Debug, Default)]
struct WorkerModel {
    /// A `ConnectBackend` is pending.
    connecting: bool,
    /// A backend connection is held.
    connected: bool,
    ended: bool,
    unsent_client: usize,
    unsent_backend: usize,
    timer: Option<TimerKind>,
}

impl WorkerModel {
    fn apply(&mut self, actions: &[Action]) {
        for action in actions {
            assert!(!self.ended, "an action after the last one: {action:?}");
            match action {
                Action::SendClient(b) => self.unsent_client += b.len(),
                Action::SendBackend(b) => {
                    assert!(
                        self.connected,
                        "bytes for a backend the worker was not asked for"
                    );
                    self.unsent_backend += b.len();
                }
                Action::ConnectBackend { .. } => {
                    assert!(!self.connecting && !self.connected, "one backend at a time");
                    self.connecting = true;
                }
                Action::ReleaseBackend | Action::CloseBackend => {
                    assert!(self.connecting || self.connected, "no backend to give up");
                    self.connecting = false;
                    self.connected = false;
                    self.unsent_backend = 0;
                }
                Action::SetTimer(t) => self.timer = *t,
                Action::RequestStarted | Action::ExchangeDone(_) => {}
                Action::Tunnel => {
                    assert!(self.connected, "a tunnel needs the backend connection");
                    self.ended = true;
                }
                Action::CloseClient { .. } => {
                    assert!(
                        !self.connected && !self.connecting,
                        "the backend is given up first"
                    );
                    self.ended = true;
                }
            }
        }
    }
}

/// Target `session`: the state machine driven by a script of worker events.
pub fn session(data: &[u8]) {
    let router = router();
    let mut session = HttpSession::new(SessionConfig {
        max_header_bytes: 2048,
        max_headers: 32,
        rewrite: RewriteContext {
            client: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            listener_port: 80,
            scheme: Scheme::Http,
        },
    });
    let mut worker = WorkerModel::default();
    let mut out = Vec::new();
    let mut script = data;
    while let Some((&op, rest)) = script.split_first() {
        script = rest;
        let take = |script: &mut &[u8]| -> Vec<u8> {
            let Some((&n, rest)) = script.split_first() else {
                return Vec::new();
            };
            let n = usize::from(n).min(rest.len());
            let (bytes, rest) = rest.split_at(n);
            *script = rest;
            bytes.to_vec()
        };
        let bytes;
        let event = match op % 12 {
            0 => {
                bytes = take(&mut script);
                Event::ClientData(&bytes)
            }
            1 if worker.connected => {
                bytes = take(&mut script);
                Event::BackendData(&bytes)
            }
            2 if worker.connecting => Event::BackendReady {
                reused: op & 0x10 != 0,
            },
            3 if worker.connecting => Event::BackendUnavailable(match op >> 4 & 3 {
                0 => Unavailable::NoBackend,
                1 => Unavailable::QueueTimeout,
                _ => Unavailable::ConnectFailed,
            }),
            4 => Event::ClientEof,
            5 if worker.connected => Event::BackendEof,
            6 if worker.connected => Event::BackendError,
            7 => Event::ClientError,
            8 if worker.unsent_client > 0 => {
                Event::ClientSent(std::mem::take(&mut worker.unsent_client))
            }
            9 if worker.unsent_backend > 0 => {
                Event::BackendSent(std::mem::take(&mut worker.unsent_backend))
            }
            10 => {
                let (direction, read) = if op & 0x10 == 0 {
                    (Direction::ClientToBackend, session.client_read())
                } else {
                    (Direction::BackendToClient, session.backend_read())
                };
                let Read::Splice(n) = read else { continue };
                assert!(n > 0, "a splice of nothing");
                Event::Spliced {
                    direction,
                    bytes: n.min(u64::from(op >> 5) * 40_000 + 1),
                }
            }
            11 => match worker.timer {
                Some(kind) => Event::Timeout(kind),
                None => continue,
            },
            _ => continue,
        };
        match event {
            Event::BackendReady { .. } => {
                worker.connecting = false;
                worker.connected = true;
            }
            Event::BackendUnavailable(_) => worker.connecting = false,
            Event::Spliced { direction, .. } => {
                assert!(
                    worker.connected,
                    "a splice needs the backend: {direction:?}"
                );
            }
            _ => {}
        }
        out.clear();
        session.handle(event, &router, &mut out);
        worker.apply(&out);
        if worker.ended {
            assert!(session.is_finished());
            assert_eq!(session.client_read(), Read::Paused);
            assert_eq!(session.backend_read(), Read::Paused);
            return;
        }
        if !worker.connected {
            assert_eq!(
                session.backend_read(),
                Read::Paused,
                "no reading a backend not held"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs every committed corpus and crash file through its target, so a crash found once stays
    /// fixed.
    #[test]
    fn replay_the_fuzz_corpora() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 4] = [
            ("request_head", super::request_head),
            ("response_head", super::response_head),
            ("chunked", super::chunked),
            ("session", super::session),
        ];
        let mut total = 0;
        for (name, target) in targets {
            let mut files = 0;
            for dir in ["corpus", "crashes"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.unwrap().path();
                    if path.extension().is_some_and(|e| e == "txt" || e == "md") {
                        continue;
                    }
                    let bytes = std::fs::read(&path).unwrap();
                    let result = std::panic::catch_unwind(|| target(&bytes));
                    assert!(result.is_ok(), "{} panics {name}", path.display());
                    files += 1;
                }
            }
            assert!(files > 0, "no corpus for {name} under {}", root.display());
            total += files;
        }
        assert!(total >= 3);
    }
}
