//! The session's contract with the worker: the events it takes, the actions it asks for, how to read
//! each socket, its timers, and what it reports.

use bytes::Bytes;

use crate::http::head::Span;
use crate::http::router::RouteMatch;
use crate::http::status::ErrorStatus;

/// Something that happened to the session's sockets or timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    ClientData(&'a [u8]),
    /// The client shut down its sending side (a read returned 0).
    ClientEof,
    /// The client connection failed (reset, send error).
    ClientError,
    /// A send to the client completed with this many bytes.
    ClientSent(usize),
    BackendReady {
        reused: bool,
    },
    BackendUnavailable(Unavailable),
    BackendData(&'a [u8]),
    BackendEof,
    /// The backend connection failed (reset, send error).
    BackendError,
    BackendSent(usize),
    Spliced {
        direction: Direction,
        bytes: u64,
    },
    Timeout(TimerKind),
}

/// Why no backend connection could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No backend is up, or every one is full and the queue is full: 503.
    NoBackend,
    /// Waited in the queue for the queue timeout: 503.
    QueueTimeout,
    /// Every connect attempt failed (refused, reset, timed out): 502.
    ConnectFailed,
}

/// The two ways bytes move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToBackend,
    BackendToClient,
}

/// What the worker should do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SendClient(Bytes),
    SendBackend(Bytes),
    ConnectBackend { route: RouteMatch, fresh: bool },
    ReleaseBackend,
    CloseBackend,
    SetTimer(Option<TimerKind>),
    RequestStarted,
    ExchangeDone(Box<ExchangeSummary>),
    Tunnel,
    CloseClient { reason: CloseReason, linger: bool },
}

/// How to read one socket now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Buffered,
    Paused,
    Splice(u64),
}

/// The session's timer; the worker maps each kind to a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// From the connection's start or a request's first byte to its complete head (listener
    /// `request_head_ms`): 408, or a silent close if nothing arrived.
    RequestHead,
    /// Between requests (listener `keepalive_ms`): silent close.
    KeepAlive,
    /// From the complete request to the first response byte (cluster `server_ms`): 504.
    Response,
    /// Inactivity while a body moves (cluster `idle_ms`); re-armed on every byte moved.
    Idle,
}

impl TimerKind {
    /// Whether the worker re-arms this timer when bytes move.
    pub fn refreshed_by_activity(self) -> bool {
        self == Self::Idle
    }
}

/// Why the session closed the client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed between requests.
    ClientClosed,
    /// The client closed or failed in the middle of an exchange.
    ClientAborted,
    /// No request arrived in time after the previous one.
    KeepAliveTimeout,
    /// The request head did not arrive in time (with a 408 if any of it had).
    RequestHeadTimeout,
    /// The proxy answered with this error and closed.
    Rejected(ErrorStatus),
    /// The exchange asked for it: `Connection: close`, HTTP/1.0, a body delimited by close.
    Done,
    /// The backend failed after the response had started; the client sees a truncated response.
    BackendAborted,
    /// The response completed before the request body; the rest of the body is not read.
    EarlyResponse,
}

/// The end of one exchange, for counters and the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSummary {
    /// The final status sent to the client; 0 if none was (aborted).
    pub status: u16,
    /// Set when the proxy answered by itself.
    pub error: Option<ErrorStatus>,
    pub route: Option<RouteMatch>,
    /// The request line and `Host`, when the head was parsed.
    pub request: Option<RequestLine>,
    /// Bytes of the request read from the client (head and body).
    pub request_bytes: u64,
    /// Bytes of the response sent to the client (heads and body).
    pub response_bytes: u64,
    /// The request was sent again on a fresh connection after a pooled one failed.
    pub retried: bool,
}

/// The client's request head, kept without a copy, with spans of what an access log shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    pub head: Bytes,
    pub method: Span,
    pub target: Span,
    pub host: Option<Span>,
}

impl RequestLine {
    pub fn method(&self) -> &[u8] {
        self.method.of(&self.head)
    }
    pub fn target(&self) -> &[u8] {
        self.target.of(&self.head)
    }
    pub fn host(&self) -> Option<&[u8]> {
        self.host.map(|h| h.of(&self.head))
    }
}
