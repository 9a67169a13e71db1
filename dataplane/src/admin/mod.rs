//! The admin endpoint (`--status-endpoint`): what an upstream balancer, Prometheus and an operator ask.
//!
//! | path | answer |
//! |---|---|
//! | `/status` | `503 INITIALIZING` until the first snapshot is applied, `200 OK` while serving, `503 DRAINING` from SIGTERM |
//! | `/stats` | JSON: listeners, services and backends with counters, workers, snapshot version and time |
//! | `/metrics` | the same figures in the Prometheus (OpenMetrics) text format |
//! | `/config` | the applied snapshot as JSON |
//! | `/` | an HTML status page |
//!
//! It runs on its own threads, off the worker rings, and reads only shared counters and the published
//! table: it answers even when every worker is saturated, and it cannot slow the data path down.
//!
//! - [`http`]: the minimal HTTP/1.1 it speaks; [`view`]: the figures; [`metrics`] and [`page`]: renderings.

pub mod http;
pub mod metrics;
mod metrics_http;
pub mod page;
pub mod view;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::limits::Limits;
use crate::routing::{Published, Serving};
use crate::worker::stats::WorkerStats;

use http::{Request, Response};
use view::StatsView;

/// Requests served at the same time; more wait in the listen backlog.
const MAX_CONCURRENT: usize = 16;

/// What the endpoint reads.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub published: Arc<Published>,
    pub workers: Vec<Arc<WorkerStats>>,
    pub limits: Limits,
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("status endpoint {address}: cannot listen: {source}")]
pub struct AdminError {
    pub address: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// How often an idle endpoint checks whether it was handed over to a successor.
const HANDOVER_CHECK_MS: i32 = 100;

/// Serves `address` on a background thread: on `inherited` if a predecessor handed over its socket for
/// that address, else on a new socket. Returns the bound address and a duplicate of the listening socket
/// (for a successor); the endpoint stops serving once this dataplane has handed over.
pub fn start(
    address: SocketAddr,
    inherited: Option<(SocketAddr, OwnedFd)>,
    state: AdminState,
) -> Result<(SocketAddr, OwnedFd), AdminError> {
    let err = |source| AdminError { address, source };
    let listener = match inherited {
        Some((from, fd)) if from == address => TcpListener::from(fd),
        _ => TcpListener::bind(address).map_err(err)?,
    };
    let bound = listener.local_addr().map_err(err)?;
    let handover = OwnedFd::from(listener.try_clone().map_err(err)?);
    listener.set_nonblocking(true).map_err(err)?;
    let state = Arc::new(state);
    std::thread::Builder::new()
        .name("ringway-admin".into())
        .spawn(move || serve(listener, state))
        .map_err(err)?;
    tracing::info!(address = %bound, "status endpoint listening");
    Ok((bound, handover))
}

fn serve(listener: TcpListener, state: Arc<AdminState>) {
    let busy = Arc::new(AtomicUsize::new(0));
    loop {
        // Once a successor shares this socket, stop taking its requests, without closing the socket.
        if state.published.is_handed_over() {
            return;
        }
        match crate::sys::wait_readable(listener.as_fd(), HANDOVER_CHECK_MS) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::error!(error = %e, "status endpoint stopped");
                return;
            }
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        let _ = stream.set_nonblocking(false);
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONCURRENT {
            busy.fetch_sub(1, Ordering::AcqRel);
            let mut stream = stream;
            let _ =
                Response::text(503, "Service Unavailable", "busy\n").write_to(&mut stream, false);
            continue;
        }
        let (state, busy) = (Arc::clone(&state), Arc::clone(&busy));
        let spawned = std::thread::Builder::new()
            .name("ringway-admin-req".into())
            .spawn(move || {
                handle(stream, &state);
                busy.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            tracing::warn!("cannot start a thread for a status request");
        }
    }
}

fn handle(mut stream: TcpStream, state: &AdminState) {
    let request = match http::read_request(&mut stream) {
        Ok(request) => request,
        Err(e) => {
            let _ =
                Response::text(400, "Bad Request", format!("{e}\n")).write_to(&mut stream, false);
            return;
        }
    };
    let response = respond(&request, state);
    let _ = response.write_to(&mut stream, request.method == "HEAD");
}

/// The answer to one request.
pub fn respond(request: &Request, state: &AdminState) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::text(405, "Method Not Allowed", "only GET and HEAD\n");
    }
    match request.path.as_str() {
        "/status" => match state.published.serving() {
            Serving::Serving => Response::text(200, "OK", "OK\n"),
            Serving::Initializing => Response::text(503, "Service Unavailable", "INITIALIZING\n"),
            Serving::Draining => Response::text(503, "Service Unavailable", "DRAINING\n"),
        },
        "/stats" => json(&StatsView::collect(state)),
        "/metrics" => Response::new(
            200,
            "OK",
            metrics::CONTENT_TYPE,
            metrics::render(&StatsView::collect(state)),
        ),
        "/config" => json(&*state.published.load().snapshot),
        "/" => Response::new(
            200,
            "OK",
            "text/html; charset=utf-8",
            page::render(&StatsView::collect(state)),
        ),
        _ => Response::text(
            404,
            "Not Found",
            "try /status, /stats, /metrics, /config or /\n",
        ),
    }
}

fn json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            Response::json(body)
        }
        Err(e) => Response::text(500, "Internal Server Error", format!("{e}\n")),
    }
}
