//! Consul's blocking queries (discovery.md §5.3), and its plain reads.
//!
//! A blocking loop sends the `X-Consul-Index` of the last answer back; an index that goes backwards (a
//! snapshot restore) starts over from 0, an index is never below 1 otherwise, and a short pause between
//! returns keeps a misbehaving server from turning the loop into a storm. A return is no proof of change,
//! so the loop reports an answer only when its index moved or its body changed (or a full refresh is due),
//! and says which.

use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::sources::discovery::Backoff;

/// How long one blocking query may hang on the server.
pub const WAIT: Duration = Duration::from_secs(30);
/// Least time between two requests of one blocking loop.
pub const PAUSE: Duration = Duration::from_millis(20);
/// How long a plain (non-blocking) read may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The header carrying the blocking index.
const CONSUL_INDEX: &str = "x-consul-index";
/// The header carrying an ACL token.
pub const TOKEN_HEADER: &str = "x-consul-token";

/// Why a Consul read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsulError {
    #[error("{url}: {detail}")]
    Request { url: String, detail: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: malformed response: {detail}")]
    Malformed { url: String, detail: String },
}

/// The index to send next, given the one sent and the one received.
pub fn next_index(sent: u64, received: u64) -> u64 {
    if received < sent { 0 } else { received.max(1) }
}

/// The client read timeout for a blocking query: Consul adds up to `wait / 16` of jitter.
pub fn blocking_timeout() -> Duration {
    WAIT + WAIT / 16 + Duration::from_secs(5)
}

/// How Consul is reached: the client (TLS settings inside), the base URL, the ACL token.
#[derive(Debug, Clone)]
pub struct Agent {
    pub client: reqwest::Client,
    /// `http(s)://host:port`, no trailing slash.
    pub url: String,
    pub token: Option<crate::sources::secret::Secret>,
}

/// One answer of a blocking loop that is worth looking at.
#[derive(Debug)]
pub struct Answer<T> {
    pub value: T,
    /// The index moved since the last answer (something changed somewhere, maybe not in the body).
    pub index_moved: bool,
    /// The body differs from the last one reported.
    pub body_changed: bool,
    /// The refresh interval passed: whoever reads this should re-read everything.
    pub refresh: bool,
}

/// Follows one blocking endpoint (`path` under the agent) until `reports` closes. Every answer whose index
/// moved, whose body changed, or that comes after `refresh`, is parsed (JSON) and sent; a failure is sent
/// too, after a backoff, and starts the loop over from index 0.
pub async fn blocking_loop<T: DeserializeOwned, R>(
    agent: Agent,
    path: &'static str,
    refresh: Duration,
    wrap: impl Fn(Result<Answer<T>, ConsulError>) -> R,
    reports: mpsc::Sender<R>,
) {
    let url = format!("{}{path}", agent.url);
    let separator = if url.contains('?') { '&' } else { '?' };
    let mut index = 0u64;
    let mut last_body: Option<Vec<u8>> = None;
    let mut refresh_at = Instant::now() + refresh;
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        let request = format!("{url}{separator}index={index}&wait={}s", WAIT.as_secs());
        let report = match get(&agent, &request, blocking_timeout()).await {
            Ok((body, received)) => {
                backoff.reset();
                let index_moved = received != index;
                index = next_index(index, received);
                let refresh_due = Instant::now() >= refresh_at;
                let body_changed = last_body.as_deref() != Some(&body[..]);
                if !index_moved && !body_changed && !refresh_due {
                    None
                } else {
                    if refresh_due {
                        refresh_at = Instant::now() + refresh;
                    }
                    match serde_json::from_slice(&body) {
                        Ok(value) => {
                            last_body = Some(body);
                            Some(wrap(Ok(Answer {
                                value,
                                index_moved,
                                body_changed,
                                refresh: refresh_due,
                            })))
                        }
                        Err(e) => {
                            last_body = None;
                            Some(wrap(Err(ConsulError::Malformed {
                                url: url.clone(),
                                detail: e.to_string(),
                            })))
                        }
                    }
                }
            }
            Err(e) => {
                index = 0;
                last_body = None;
                tokio::time::sleep(backoff.next_delay()).await;
                Some(wrap(Err(e)))
            }
        };
        if let Some(report) = report
            && reports.send(report).await.is_err()
        {
            return;
        }
        tokio::time::sleep_until(started + PAUSE).await;
    }
}

/// One request: the body and the `X-Consul-Index` (0 when absent).
pub async fn get(
    agent: &Agent,
    url: &str,
    timeout: Duration,
) -> Result<(Vec<u8>, u64), ConsulError> {
    let failed = |e: reqwest::Error| ConsulError::Request {
        url: url.to_string(),
        detail: crate::sources::client::error_chain(&e),
    };
    let mut request = agent.client.get(url).timeout(timeout);
    if let Some(token) = &agent.token {
        request = request.header(TOKEN_HEADER, token.header());
    }
    let response = request.send().await.map_err(failed)?;
    if !response.status().is_success() {
        return Err(ConsulError::Status {
            url: url.to_string(),
            status: response.status(),
        });
    }
    let index = response
        .headers()
        .get(CONSUL_INDEX)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((response.bytes().await.map_err(failed)?.to_vec(), index))
}
