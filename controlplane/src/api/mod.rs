//! The controlplane's HTTP API (`--api`, default `127.0.0.1:9091`): see and steer a running Ringway.
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
//! path; when `--api-token` is set every request needs `Authorization: Bearer <token>`.

pub mod dfp;
pub mod http;
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
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::pipeline::publisher::Publisher;
use crate::serve::registry::DataplaneRegistry;
use crate::sources::handle::SourceRegistry;
use http::{HttpResponse, authorized, json_response};
use state::ApiState;

/// Default `--api`: loopback only, so nothing off the host can steer the routing unless the operator
/// chooses an address (and, then, a token).
pub const DEFAULT_API: &str = "127.0.0.1:9091";
/// A client must send its request head within this time (a slow or stuck client holds no task for long).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// The bearer token every request must carry, if set.
    pub token: Option<String>,
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
    context: Arc<ApiContext>,
}

impl ApiServer {
    pub async fn bind(address: SocketAddr, context: ApiContext) -> Result<Self, ApiServeError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ApiServeError::Bind { address, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ApiServeError::Bind { address, source })?;
        if !bound.ip().is_loopback() && context.token.is_none() {
            warn!(
                address = %bound,
                "API listens beyond loopback without --api-token: whoever reaches it can change the routing"
            );
        }
        info!(address = %bound, token = context.token.is_some(), "API listening");
        Ok(Self {
            listener,
            context: Arc::new(context),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; open connections are closed then.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!("API accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let context = Arc::clone(&self.context);
            connections.spawn(async move {
                let service = service_fn(move |request| {
                    let context = Arc::clone(&context);
                    async move { Ok::<_, Infallible>(handle(&context, request).await) }
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

/// Checks the token, then routes.
async fn handle(context: &ApiContext, request: Request<Incoming>) -> HttpResponse {
    let dfp = request.uri().path().starts_with(DFP_PREFIX);
    debug!(method = %request.method(), path = request.uri().path(), "API request");
    if let Some(token) = &context.token
        && !authorized(request.headers(), token)
    {
        let message =
            "authorization: a valid bearer token is required (Authorization: Bearer <token>)";
        let mut response = if dfp {
            json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"Status": "NOK", "Message": message, "Field": "Authorization"}),
            )
        } else {
            json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": message, "field": "authorization"}),
            )
        };
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer realm=\"ringway\""),
        );
        return response;
    }
    routes::route(context, request)
        .await
        .unwrap_or_else(|e| e.response())
}
