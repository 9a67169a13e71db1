//! [`HttpSession`]: one client connection's HTTP/1.1 exchanges, as a sans-IO state machine.
//!
//! # Driving contract (for the worker)
//!
//! The worker owns the sockets, the ring, the backend pool and the clock; the session owns the HTTP
//! state and the bytes received but not yet forwarded. The worker calls
//! [`handle`](HttpSession::handle) with one [`Event`], the router of the routing table it holds now,
//! and a reusable `Vec<Action>`; the session appends the [`Action`]s to perform, **in order**. Then the
//! worker reconciles each socket's reading with [`client_read`](HttpSession::client_read) and
//! [`backend_read`](HttpSession::backend_read). Nothing else is needed to drive it.
//!
//! **Bytes in.** Received bytes are passed as [`Event::ClientData`]/[`Event::BackendData`] (the
//! session copies them into its own buffer, so a provided buffer can be recycled at once). Bytes
//! already received are always passed in, even when the read mode says pause.
//!
//! **Reading.** [`Read::Buffered`]: keep a receive armed on that socket. [`Read::Paused`]: arm none
//! (the session has enough buffered, is waiting for the other side, or is done with that socket).
//! [`Read::Splice`]`(n)`: move up to `n` more bytes from that socket straight to the other one with
//! splice, reporting each move with [`Event::Spliced`]; the session switches a body to splice when a
//! `Content-Length` body still has more than [`SPLICE_THRESHOLD`] bytes to come and nothing of it is
//! buffered. A splice into a socket starts only after every send to that socket emitted before it has
//! completed. Bytes a receive delivered after the switch are still passed in as data: the session
//! forwards them with a send and lowers `n`.
//!
//! **Bytes out.** [`Action::SendClient`]/[`Action::SendBackend`] carry [`Bytes`] the worker owns
//! until the send completes (they are cheap reference-counted slices: head bytes are built once, body
//! bytes are split off the receive buffer without a copy). Sends to one socket go out in the order
//! emitted; each completion is reported with [`Event::ClientSent`]/[`Event::BackendSent`] (the session
//! pauses reading while too much is unsent: [`BUFFER_LIMIT`]).
//!
//! **Backends.** [`Action::ConnectBackend`] asks for a backend of cluster `route.target` (an index into
//! the routing table whose router was passed to the `handle` call that emitted it): take a lease
//! (`maxconn`, queue), reuse a pooled connection unless `fresh`, or connect; answer with
//! [`Event::BackendReady`] (`reused` says whether it came from the pool) or
//! [`Event::BackendUnavailable`] (the worker bounds the queue and connect time itself). One backend
//! connection at a time. [`Action::ReleaseBackend`]: the response is complete and the connection clean:
//! release the lease and pool the connection (or close it if the pool is full; a send to it still in
//! flight must complete first, and a failed one means close).
//! [`Action::CloseBackend`]: release the lease and close the connection; while a `ConnectBackend` is
//! still pending it means cancel it (leave the queue, abandon the connect). After either, no more
//! backend events for that connection (drop its pending completions).
//!
//! **Timers.** [`Action::SetTimer`] replaces the session's single timer (`None` cancels it); the
//! worker maps the [`TimerKind`] to the listener's or cluster's duration, re-arms
//! [`TimerKind::Idle`] on every byte moved, never re-arms the others on activity, and reports expiry
//! with [`Event::Timeout`]. While a backend is being obtained no timer runs: the worker's queue and
//! connect timeouts apply.
//!
//! **Ending.** [`Action::Tunnel`]: a `101` was forwarded, and then whatever either side had sent past
//! its head; after those sends complete, splice both ways with the tunnel timeout; the backend connection (and its lease) now belongs to the tunnel and
//! the session is finished. [`Action::CloseClient`]: after the sends already emitted complete, close
//! the client connection (with `linger`, shut down the write side first and drain what the client
//! still sends for a moment, so it reads the response before a reset). Either is the session's last
//! action; later events are ignored.
//!
//! **Accounting.** [`Action::RequestStarted`] marks the first byte of each request (for durations);
//! [`Action::ExchangeDone`] closes each exchange with its status, route and byte counts.

mod events;
mod request;
mod response;

pub use events::{
    Action, CloseReason, Direction, Event, ExchangeSummary, Read, RequestLine, TimerKind,
    Unavailable,
};

use bytes::{Bytes, BytesMut};

use super::chunked::{ChunkedDecoder, ChunkedError};
use super::framing::{BodyKind, RequestFraming};
use super::head::{HeadScanner, Method, RequestHead, ResponseHead, Version};
use super::rewrite::RewriteContext;
use super::router::{RouteMatch, Router};
use super::status::ErrorStatus;

/// A `Content-Length` body with more than this many bytes still to come moves with splice.
pub const SPLICE_THRESHOLD: u64 = 64 * 1024;
/// Most bytes buffered per direction (received and not yet forwarded, plus sent and not yet
/// completed) before the session pauses reading; also how far a client may read ahead (pipelining).
pub const BUFFER_LIMIT: usize = 64 * 1024;
/// Most request bytes kept for a retry on a fresh connection; a longer request is not retried.
pub const RETRY_BUFFER: usize = 16 * 1024;

/// What the session needs to know about its listener and client.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Largest request head (listener `max_header_bytes`, default
    /// [`DEFAULT_MAX_HEADER_BYTES`](super::head::DEFAULT_MAX_HEADER_BYTES)): beyond it, 431.
    pub max_header_bytes: usize,
    /// Most request header fields (listener `max_headers`, default
    /// [`DEFAULT_MAX_HEADERS`](super::head::DEFAULT_MAX_HEADERS), capped at
    /// [`MAX_HEADERS_LIMIT`](super::head::MAX_HEADERS_LIMIT)): beyond it, 431.
    pub max_headers: usize,
    pub rewrite: RewriteContext,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between exchanges: reading (or waiting for) a request head.
    Idle,
    Exchange,
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendState {
    None,
    Connecting,
    Ready { reused: bool },
}

/// A body in transit.
#[derive(Debug, Clone)]
enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Splice(u64),
    Done,
    /// The rest of a request body is not read (the response came first).
    Abandoned,
}

impl Body {
    fn of(kind: BodyKind) -> Self {
        match kind {
            BodyKind::None => Self::Done,
            BodyKind::Length(n) => Self::Length(n),
            BodyKind::Chunked => Self::Chunked(ChunkedDecoder::new()),
            BodyKind::UntilClose => Self::UntilClose,
        }
    }

    /// Takes the bytes of this body that `input` holds (the request's and the response's body alike):
    /// moves to `Done` at its end, and to `Splice` once more than [`SPLICE_THRESHOLD`] bytes of a
    /// `Content-Length` body are still to come (all of it buffered went into the returned chunk).
    fn take(&mut self, input: &mut BytesMut) -> Result<Bytes, ChunkedError> {
        Ok(match self {
            Self::Length(remaining) | Self::Splice(remaining) => {
                let n = (*remaining).min(input.len() as u64);
                *remaining -= n;
                let left = *remaining;
                let chunk = input.split_to(n as usize).freeze();
                if left == 0 {
                    *self = Self::Done;
                } else if left > SPLICE_THRESHOLD && matches!(self, Self::Length(_)) {
                    *self = Self::Splice(left);
                }
                chunk
            }
            Self::Chunked(decoder) => {
                let (n, done) = decoder.skip(input)?;
                if done {
                    *self = Self::Done;
                }
                input.split_to(n).freeze()
            }
            Self::UntilClose => input.split().freeze(),
            Self::Done | Self::Abandoned => Bytes::new(),
        })
    }
}

/// The response side of an exchange.
#[derive(Debug, Clone)]
enum ResponseState {
    /// Waiting for (more of) a response head.
    Head,
    Body(Body),
    Done,
}

/// The exchange in progress.
#[derive(Debug)]
struct Exchange {
    method: Method,
    version: Version,
    framing: RequestFraming,
    route: RouteMatch,
    line: RequestLine,
    request: Body,
    response: ResponseState,
    /// Any response byte (informational or final) came from the backend.
    response_seen: bool,
    /// The status of the final response head sent to the client; 0 before one was.
    status: u16,
    close_client: bool,
    backend_reusable: bool,
    /// Request bytes sent to the backend, kept for a retry while they fit [`RETRY_BUFFER`].
    retained: Vec<Bytes>,
    retained_len: usize,
    retry_possible: bool,
    retried: bool,
    request_bytes: u64,
    response_bytes: u64,
}

/// One client connection's HTTP state. See the module documentation for how to drive it.
#[derive(Debug)]
pub struct HttpSession {
    config: SessionConfig,
    phase: Phase,
    client_in: BytesMut,
    backend_in: BytesMut,
    request_scanner: HeadScanner,
    request_head: RequestHead,
    response_scanner: HeadScanner,
    response_head: ResponseHead,
    exchange: Option<Exchange>,
    backend: BackendState,
    /// Bytes emitted to each socket and not yet reported sent.
    unsent_client: usize,
    unsent_backend: usize,
    client_eof: bool,
    /// The current request's first byte has arrived.
    request_begun: bool,
    /// Exchanges started on this connection (also tells timer periods apart).
    exchanges: u64,
    timer: Option<(TimerKind, u64)>,
    /// The process is draining: every response from now on says `Connection: close`, and the
    /// connection closes after it.
    draining: bool,
}

impl HttpSession {
    pub fn new(config: SessionConfig) -> Self {
        Self {
            config,
            phase: Phase::Idle,
            client_in: BytesMut::new(),
            backend_in: BytesMut::new(),
            request_scanner: HeadScanner::default(),
            request_head: RequestHead::default(),
            response_scanner: HeadScanner::default(),
            response_head: ResponseHead::default(),
            exchange: None,
            backend: BackendState::None,
            unsent_client: 0,
            unsent_backend: 0,
            client_eof: false,
            request_begun: false,
            exchanges: 0,
            timer: None,
            draining: false,
        }
    }

    /// The process began to drain: the response in progress (or the next one) is the connection's
    /// last. It says `Connection: close`, so the client sends no further request into a connection
    /// about to close. (A response head already sent cannot be changed; the worker closes such a
    /// connection once it is idle.)
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// The session ended (closed or tunnelled): drop it.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Applies one event; appends the actions to perform, in order, to `out`. Call once at the start
    /// with [`Event::ClientData`] of nothing, or any event, to get the first timer.
    pub fn handle(&mut self, event: Event<'_>, router: &Router, out: &mut Vec<Action>) {
        if self.phase == Phase::Finished {
            return;
        }
        match event {
            Event::ClientData(data) => self.client_in.extend_from_slice(data),
            Event::ClientEof => self.client_eof = true,
            Event::ClientError => return self.abort(CloseReason::ClientAborted, out),
            Event::ClientSent(n) => self.unsent_client = self.unsent_client.saturating_sub(n),
            Event::BackendSent(n) => self.unsent_backend = self.unsent_backend.saturating_sub(n),
            Event::BackendReady { reused } => self.backend_ready(reused, out),
            Event::BackendUnavailable(why) => self.backend_unavailable(why, out),
            Event::BackendData(data) => {
                if self.backend_ready_now() {
                    self.backend_in.extend_from_slice(data);
                }
            }
            Event::BackendEof => self.backend_closed(false, out),
            Event::BackendError => self.backend_closed(true, out),
            Event::Spliced { direction, bytes } => self.spliced(direction, bytes),
            Event::Timeout(kind) => self.timeout(kind, out),
        }
        self.advance(router, out);
        if self.phase != Phase::Finished {
            self.update_timer(out);
        }
    }

    /// How the worker should read the client socket now.
    pub fn client_read(&self) -> Read {
        match (self.phase, &self.exchange) {
            (Phase::Finished, _) => Read::Paused,
            // A client that pipelines requests without reading the answers waits for them.
            (Phase::Idle, _) if self.client_eof || self.unsent_client >= BUFFER_LIMIT => {
                Read::Paused
            }
            (Phase::Idle, _) => Read::Buffered,
            (Phase::Exchange, Some(ex)) => match ex.request {
                Body::Splice(n) if self.backend_ready_now() => Read::Splice(n),
                Body::Abandoned => Read::Paused,
                _ if self.client_eof => Read::Paused,
                _ if self.client_in.len() >= BUFFER_LIMIT
                    || self.unsent_backend >= BUFFER_LIMIT =>
                {
                    Read::Paused
                }
                _ => Read::Buffered,
            },
            (Phase::Exchange, None) => Read::Paused,
        }
    }

    /// How the worker should read the backend socket now.
    pub fn backend_read(&self) -> Read {
        let Some(ex) = &self.exchange else {
            return Read::Paused;
        };
        if self.phase != Phase::Exchange || !self.backend_ready_now() {
            return Read::Paused;
        }
        match &ex.response {
            ResponseState::Body(Body::Splice(n)) => Read::Splice(*n),
            ResponseState::Done => Read::Paused,
            _ if self.backend_in.len()
                >= BUFFER_LIMIT.max(super::head::MAX_RESPONSE_HEAD_BYTES)
                || self.unsent_client >= BUFFER_LIMIT =>
            {
                Read::Paused
            }
            _ => Read::Buffered,
        }
    }

    fn backend_ready_now(&self) -> bool {
        matches!(self.backend, BackendState::Ready { .. })
    }

    /// Makes as much progress as the buffered bytes allow.
    fn advance(&mut self, router: &Router, out: &mut Vec<Action>) {
        loop {
            let before = (self.phase, self.exchanges);
            let progressed = match self.phase {
                Phase::Idle if self.unsent_client >= BUFFER_LIMIT => false,
                Phase::Idle => self.start_request(router, out),
                Phase::Exchange => {
                    self.pump_request(out);
                    self.pump_response(out) || self.finish_if_done(out)
                }
                Phase::Finished => false,
            };
            if !progressed && (self.phase, self.exchanges) == before {
                return;
            }
        }
    }

    fn send_client(&mut self, bytes: Bytes, out: &mut Vec<Action>) {
        self.unsent_client += bytes.len();
        if let Some(ex) = &mut self.exchange {
            ex.response_bytes += bytes.len() as u64;
        }
        out.push(Action::SendClient(bytes));
    }

    fn send_backend(&mut self, bytes: Bytes, out: &mut Vec<Action>) {
        self.unsent_backend += bytes.len();
        out.push(Action::SendBackend(bytes));
    }

    fn spliced(&mut self, direction: Direction, bytes: u64) {
        let Some(ex) = &mut self.exchange else {
            return;
        };
        let body = match direction {
            Direction::ClientToBackend => {
                ex.request_bytes += bytes;
                &mut ex.request
            }
            Direction::BackendToClient => {
                ex.response_bytes += bytes;
                match &mut ex.response {
                    ResponseState::Body(body) => body,
                    _ => return,
                }
            }
        };
        if let Body::Splice(n) = body {
            *n = n.saturating_sub(bytes);
            if *n == 0 {
                *body = Body::Done;
            }
        }
    }

    /// The timer the current state calls for.
    fn wanted_timer(&self) -> Option<TimerKind> {
        match self.phase {
            Phase::Finished => None,
            Phase::Idle if self.request_begun || self.exchanges == 0 => {
                Some(TimerKind::RequestHead)
            }
            Phase::Idle => Some(TimerKind::KeepAlive),
            Phase::Exchange => {
                let ex = self.exchange.as_ref()?;
                if !self.backend_ready_now() {
                    None
                } else if matches!(ex.response, ResponseState::Head)
                    && !ex.response_seen
                    && matches!(ex.request, Body::Done)
                {
                    Some(TimerKind::Response)
                } else {
                    Some(TimerKind::Idle)
                }
            }
        }
    }

    fn update_timer(&mut self, out: &mut Vec<Action>) {
        let wanted = self.wanted_timer().map(|kind| (kind, self.exchanges));
        if wanted != self.timer {
            self.timer = wanted;
            out.push(Action::SetTimer(wanted.map(|(kind, _)| kind)));
        }
    }

    fn timeout(&mut self, kind: TimerKind, out: &mut Vec<Action>) {
        if self.timer.map(|(k, _)| k) != Some(kind) {
            return; // stale
        }
        self.timer = None;
        match kind {
            TimerKind::RequestHead if self.request_begun => {
                self.reject(ErrorStatus::RequestTimeout, None, out);
            }
            TimerKind::RequestHead => self.close(CloseReason::RequestHeadTimeout, false, out),
            TimerKind::KeepAlive => self.close(CloseReason::KeepAliveTimeout, false, out),
            TimerKind::Response => self.fail_exchange(ErrorStatus::GatewayTimeout, out),
            TimerKind::Idle => {
                let request_pending = self
                    .exchange
                    .as_ref()
                    .is_some_and(|ex| !matches!(ex.request, Body::Done | Body::Abandoned));
                if request_pending {
                    self.fail_exchange(ErrorStatus::RequestTimeout, out);
                } else {
                    self.fail_exchange(ErrorStatus::GatewayTimeout, out);
                }
            }
        }
    }

    /// Ends the session: closes the backend connection if any, then the client.
    fn abort(&mut self, reason: CloseReason, out: &mut Vec<Action>) {
        if let Some(ex) = self.exchange.take() {
            out.push(Action::ExchangeDone(Box::new(ex.summary(None))));
        }
        self.close(reason, false, out);
    }

    fn close(&mut self, reason: CloseReason, linger: bool, out: &mut Vec<Action>) {
        self.drop_backend(false, out);
        self.phase = Phase::Finished;
        if self.timer.take().is_some() {
            out.push(Action::SetTimer(None));
        }
        out.push(Action::CloseClient { reason, linger });
    }

    /// Gives up the backend connection: back to the pool when `clean`, else closed.
    fn drop_backend(&mut self, clean: bool, out: &mut Vec<Action>) {
        if self.backend != BackendState::None {
            out.push(if clean {
                Action::ReleaseBackend
            } else {
                Action::CloseBackend
            });
        }
        self.backend = BackendState::None;
        self.backend_in.clear();
        self.response_scanner.reset();
        self.unsent_backend = 0;
    }
}

impl Exchange {
    fn summary(self, error: Option<ErrorStatus>) -> ExchangeSummary {
        ExchangeSummary {
            status: error.map_or(self.status, ErrorStatus::code),
            error,
            route: Some(self.route),
            request: Some(self.line),
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            retried: self.retried,
        }
    }
}

#[cfg(test)]
mod tests;
