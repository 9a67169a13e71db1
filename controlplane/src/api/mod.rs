//! The controlplane's HTTP API (`--api`, default `127.0.0.1:9095`): see and steer a running Ringway.
//!
//! - `GET /v1/sources`, `GET /v1/services`: what the sources say, what was merged and overridden, which
//!   snapshot is current and what every dataplane ACKed ([`views`]).
//! - `PUT`/`DELETE /v1/services/<name>/backends/<ip:port>`, `POST`/`DELETE /v1/services/<name>/switch`:
//!   runtime overrides, as HAProxy's runtime API and wunderproxy's switch ([`crate::pipeline::overrides`]).
//! - `/v1/docker-flow-proxy/reconfigure|remove|ping`: docker-flow-proxy's calls ([`dfp`]), whose services
//!   form the `api` source ([`state`]).
//!
//! Every change goes through the publisher like a source's, produces at most one snapshot and answers
//! with its version. Served with hyper's HTTP/1 server on the controlplane's runtime, off the snapshot
//! path. Safe by default: every request passes the [`guard`] (no cross-site browser requests, the token
//! when one is set, JSON bodies), and docker-flow-proxy registrations the [`policy`] (ports, backends,
//! other sources' services, a cap). At most [`MAX_CONNECTIONS`] connections are served at once; each must
//! send its request head within [`HEADER_READ_TIMEOUT`] and its body within
//! [`http::BODY_READ_TIMEOUT`].

pub mod dfp;
pub mod guard;
pub mod http;
pub mod policy;
mod routes;
pub mod state;
pub mod views;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::pipeline::publisher::Publisher;
use crate::serve::registry::DataplaneRegistry;
use crate::sources::handle::SourceRegistry;
use guard::{Access, Guard, RequestHead};
use http::{HttpResponse, json_response};
use policy::RegistrationPolicy;
use state::ApiState;

/// Default `--api`: loopback only, so nothing off the host can steer the routing unless the operator
/// chooses an address (and, then, a token).
pub const DEFAULT_API: &str = "127.0.0.1:9095";
/// A client must send its request head within this time (a slow or stuck client holds no task for long);
/// it also closes a keep-alive connection idle for that long.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog until one ends. With the timeouts above, a
/// client holding connections open without using them frees each within seconds.
pub const MAX_CONNECTIONS: usize = 64;
/// Pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Where docker-flow-proxy's calls live.
const DFP_PREFIX: &str = "/v1/docker-flow-proxy/";

/// What the handlers read and change.
#[derive(Debug)]
pub struct ApiContext {
    pub sources: SourceRegistry,
    pub publisher: Arc<Publisher>,
    pub dataplanes: DataplaneRegistry,
    pub state: Arc<ApiState>,
    /// Who may call (the token, allowed origins).
    pub access: Access,
    /// What docker-flow-proxy registrations may ask for; [`ApiServer::bind`] adds the API's own port.
    pub policy: RegistrationPolicy,
}

/// The context with the checks bound to the address the API listens on.
#[derive(Debug)]
struct Served {
    context: ApiContext,
    guard: Guard,
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiServeError {
    #[error("cannot listen on {address} (--api): {source}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
}

/// A bound API, ready to [`serve`](ApiServer::serve).
#[derive(Debug)]
pub struct ApiServer {
    listener: TcpListener,
    served: Arc<Served>,
}

impl ApiServer {
    pub async fn bind(address: SocketAddr, mut context: ApiContext) -> Result<Self, ApiServeError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ApiServeError::Bind { address, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ApiServeError::Bind { address, source })?;
        let token = context.access.token.is_some();
        if !bound.ip().is_loopback() && !token {
            warn!(
                address = %bound,
                "API listens beyond loopback without --api-token: whoever reaches it can change the routing"
            );
        }
        context.policy.reserved.insert(bound.port());
        info!(
            address = %bound,
            token,
            allowed_origins = ?context.access.allowed_origins,
            port_range = ?context.policy.ports,
            reserved_ports = ?context.policy.reserved,
            allow_backends = ?context.policy.allow_backends.iter().map(ToString::to_string).collect::<Vec<_>>(),
            allow_merge = context.policy.allow_merge,
            max_registrations = context.policy.max_registrations,
            "API listening"
        );
        let guard = Guard::new(context.access.clone(), bound);
        Ok(Self {
            listener,
            served: Arc::new(Served { context, guard }),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; open connections are closed then.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let mut connections = JoinSet::new();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            // A slot first: at the cap, new connections wait in the backlog instead of being served.
            let slot = tokio::select! {
                () = &mut shutdown => break,
                slot = Arc::clone(&slots).acquire_owned() => slot,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let Ok(slot) = slot else { break };
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!("API accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let served = Arc::clone(&self.served);
            connections.spawn(async move {
                let _slot = slot;
                let service = service_fn(move |request| {
                    let served = Arc::clone(&served);
                    async move { Ok::<_, Infallible>(handle(&served, request).await) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    debug!(%peer, "API connection ended: {e}");
                }
            });
        }
        connections.shutdown().await;
    }
}

/// Checks who is calling ([`guard`]), then routes.
async fn handle(served: &Served, request: Request<Incoming>) -> HttpResponse {
    let dfp = request.uri().path().starts_with(DFP_PREFIX);
    debug!(method = %request.method(), path = request.uri().path(), "API request");
    let head = RequestHead {
        method: request.method(),
        headers: request.headers(),
        query: request.uri().query(),
        dfp,
    };
    if let Err(refused) = served.guard.check(head) {
        debug!(method = %request.method(), path = request.uri().path(), "API request refused: {refused}");
        let mut response = if dfp {
            // docker-flow-proxy's callers read its shape.
            json_response(
                refused.status,
                &json!({"Status": "NOK", "Message": refused.message, "Field": dfp_field(&refused.field)}),
            )
        } else {
            refused.response()
        };
        if refused.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer realm=\"ringway\""),
            );
        }
        return response;
    }
    routes::route(&served.context, request)
        .await
        .unwrap_or_else(|e| e.response())
}

/// docker-flow-proxy's answers name header fields as headers are written (`Authorization`,
/// `Content-Type`).
fn dfp_field(field: &str) -> String {
    field
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}
