//! Marathon's event stream (`GET /v2/events`, Server-Sent Events, discovery.md §1.3) as a trigger for
//! re-reads: followed forever, round-robin over the replicas, with capped backoff between connections.
//!
//! Every stage of a connection is bounded: the connect (the client's timeout), the set-up until the
//! response head arrives (a replica that accepts and never answers must not hold the stream forever,
//! [`STREAM_SETUP_TIMEOUT`]), and the silence between reads once attached (Jetty's heartbeat comes every
//! 10 s, [`STREAM_IDLE_TIMEOUT`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::sse::SseParser;
use super::{MarathonError, RELEVANT_EVENTS, Replica, get};
use crate::sources::client::error_chain;
use crate::sources::discovery::Backoff;

/// The exact `Accept` value Jetty's EventSourceServlet requires (anything else gets a 405).
pub const EVENT_STREAM: &str = "text/event-stream";
/// Longest wait for a replica's answer to a stream request (through a standby's redirect): connect, TLS,
/// response head.
pub const STREAM_SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Marathon's Jetty sends a heartbeat every 10 s; a stream silent for this long is dead.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(35);
const EVENTS_PATH: &str = "/v2/events";

/// Follows `/v2/events` forever, round-robin over the replicas, waking `trigger` on every connection and
/// every relevant event.
pub(super) async fn follow(replicas: Vec<Replica>, client: reqwest::Client, trigger: Arc<Notify>) {
    if replicas.is_empty() {
        return;
    }
    let mut backoff = Backoff::default();
    for attempt in 0usize.. {
        let replica = &replicas[attempt % replicas.len()];
        let mut attached = false;
        let ended = connection(
            &client,
            replica,
            &trigger,
            &mut backoff,
            &mut attached,
            STREAM_SETUP_TIMEOUT,
        )
        .await;
        warn!("Marathon event stream: {ended}; reconnecting");
        if attached {
            // Changes may be missed until the stream is back, and Marathon may be gone: read now, so either
            // the catalog is current or the source is reported stale (the fetcher retries on its own).
            trigger.notify_one();
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One connection of the event stream, until it ends (which it only does with an error).
pub(super) async fn connection(
    client: &reqwest::Client,
    replica: &Replica,
    trigger: &Notify,
    backoff: &mut Backoff,
    attached: &mut bool,
    setup_timeout: Duration,
) -> MarathonError {
    let url = format!("{}{EVENTS_PATH}", replica.url);
    let setup = get(client, replica, &url, EVENT_STREAM, None);
    let mut response = match tokio::time::timeout(setup_timeout, setup).await {
        Err(_) => return MarathonError::StreamSetup { url },
        Ok(Err(e)) => return e,
        Ok(Ok(response)) => response,
    };
    if !response.status().is_success() {
        return MarathonError::Status {
            url,
            status: response.status(),
        };
    }
    info!(url = %response.url(), "Marathon event stream attached; re-reading apps");
    backoff.reset();
    *attached = true;
    trigger.notify_one();
    let mut parser = SseParser::new();
    loop {
        let chunk = match tokio::time::timeout(STREAM_IDLE_TIMEOUT, response.chunk()).await {
            Err(_) => return MarathonError::StreamIdle { url },
            Ok(Err(e)) => {
                return MarathonError::Request {
                    url,
                    detail: error_chain(&e),
                };
            }
            Ok(Ok(None)) => return MarathonError::StreamEnded { url },
            Ok(Ok(Some(chunk))) => chunk,
        };
        for event in parser.feed(&chunk) {
            if RELEVANT_EVENTS.contains(&event.event.as_str()) {
                debug!(event = event.event, "Marathon event; re-reading apps");
                trigger.notify_one();
            }
        }
    }
}
