//! The Consul source (`--consul http://host:8500`), over a bounded number of connections whatever the size
//! of the catalog (Consul allows 200 per client address by default, `limits.http_max_conns_per_client`):
//!
//! - one blocking query on `/v1/catalog/services` says which services exist (and their tags);
//! - one blocking query on `/v1/health/state/any` says how every check stands;
//! - at most [`READERS`] plain reads of `/v1/health/service/<name>?passing` at a time fetch the services
//!   whose data may have changed: a service that appeared or whose tags changed, a service whose checks
//!   changed, every service on a node whose node checks (`serfHealth`) changed. A registration change that
//!   none of this explains (the catalog's index moved, its body did not: an instance without checks came
//!   or went) re-reads every service, [`READERS`] at a time, and so does every `--refresh-interval`.
//!
//! So Ringway sends at most [`MAX_REQUESTS`] requests to the agent at once: 2 watches + 4 readers. Each is
//! on a kept-alive connection; one going back to the pool can overlap with the next request opening a new
//! one, so at most [`MAX_CONNECTIONS`] (twice that) are open at any moment, whatever the catalog size, far
//! below Consul's 200.
//!
//! Only instances whose checks all pass (the node's `serfHealth` included) are routed. An instance is
//! reached at `Service.Address`, or at `Node.Address` when that is empty. Settings come from the service's
//! tags written as `key=value` (`ringway.maxconn=50`, `ringway.servicePort=8080`, `HAPROXY_GROUP=external`,
//! the proxymatic per-port forms) and from its `Meta` (registrator's attributes, keys lowercased); tags win.
//! The listen port is the `servicePort` setting, or the `@port` suffix of the service name; a service with
//! neither is not for Ringway.
//!
//! A failed read of one service (or of the checks) keeps that service's last good instances, marks the
//! source degraded, and is retried with backoff; a failed read of the service list marks it stale (its
//! last good catalog stays in force). With `--consul-token` every request carries `X-Consul-Token`.

mod entries;
mod watch;

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::sources::SourceHandle;
use crate::sources::checks::Notes;
use crate::sources::client::{ClientError, Redirects, TlsFiles, http_client};
use crate::sources::discovery::{Backoff, DiscoveryOptions};
use crate::sources::resolve::Resolver;
use crate::sources::secret::Secret;
use entries::{CheckRow, Fingerprints, HealthEntry};
pub use watch::{Agent, ConsulError, PAUSE, WAIT, next_index};
use watch::{Answer, READ_TIMEOUT, blocking_loop, get};

/// Plain reads of single services at once.
pub const READERS: usize = 4;
/// The most requests Ringway has in flight to the agent: the catalog watch, the health watch, the readers.
pub const MAX_REQUESTS: usize = 2 + READERS;
/// The most connections open to the agent: each request's, and as many again still going back to the
/// pool when the next request opens one.
pub const MAX_CONNECTIONS: usize = 2 * MAX_REQUESTS;
/// Room for reports from the watchers.
const REPORTS: usize = 64;
/// Names this source in logs.
const SOURCE: &str = "consul";

/// How to reach Consul (`--consul`, `--consul-token`, `--consul-ca`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulConfig {
    /// `http(s)://host:port`.
    pub url: String,
    pub token: Option<Secret>,
    pub tls: TlsFiles,
}

impl ConsulConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            tls: TlsFiles::none(SOURCE),
        }
    }
}

/// What the watchers tell the source.
enum Report {
    Services(Result<Answer<BTreeMap<String, Vec<String>>>, ConsulError>),
    Checks(Result<Answer<Vec<CheckRow>>, ConsulError>),
}

/// What is known about one service.
#[derive(Debug, Default)]
struct Known {
    entries: Option<Vec<HealthEntry>>,
    error: Option<ConsulError>,
}

/// Which services exist, what each last said, and which must be read.
#[derive(Debug, Default)]
struct State {
    /// Service name → tags, from the catalog watch; `None` until it first answered.
    listed: Option<BTreeMap<String, Vec<String>>>,
    services_error: Option<ConsulError>,
    checks_error: Option<ConsulError>,
    prints: Option<Fingerprints>,
    known: BTreeMap<String, Known>,
    /// To read, not started yet.
    queue: BTreeSet<String>,
    in_flight: BTreeSet<String>,
    /// Changed while its read was in flight: read again after.
    again: BTreeSet<String>,
    /// Something changed since the last publish.
    changed: bool,
}

impl State {
    fn want(&mut self, name: &str) {
        if self.in_flight.contains(name) {
            self.again.insert(name.to_string());
        } else {
            self.queue.insert(name.to_string());
        }
    }

    fn want_all(&mut self) {
        let names: Vec<String> = self.known.keys().cloned().collect();
        for name in names {
            self.want(&name);
        }
    }

    fn on_services(&mut self, answer: Answer<BTreeMap<String, Vec<String>>>) {
        if self.services_error.take().is_some() {
            self.changed = true;
        }
        let listed = answer.value;
        match &self.listed {
            None => self.changed = true,
            Some(old) => {
                let gone: Vec<String> = old
                    .keys()
                    .filter(|n| !listed.contains_key(*n))
                    .cloned()
                    .collect();
                for name in gone {
                    self.known.remove(&name);
                    self.queue.remove(&name);
                    self.again.remove(&name);
                    self.changed = true;
                }
                // The index moved and the list did not: a registration changed somewhere we cannot see.
                if answer.refresh || (answer.index_moved && !answer.body_changed) {
                    self.want_all();
                }
            }
        }
        for (name, tags) in &listed {
            let seen = self.listed.as_ref().and_then(|old| old.get(name));
            if seen != Some(tags) {
                self.want(name);
            }
            self.known.entry(name.clone()).or_default();
        }
        self.listed = Some(listed);
    }

    fn on_checks(&mut self, answer: Answer<Vec<CheckRow>>) {
        if self.checks_error.take().is_some() {
            self.changed = true;
        }
        let prints = Fingerprints::of(&answer.value);
        if let Some(old) = &self.prints {
            let (services, nodes) = old.changes(&prints);
            let mut touched: BTreeSet<String> = services
                .into_iter()
                .filter(|s| self.known.contains_key(s))
                .collect();
            for (name, known) in &self.known {
                let on_node = |e: &HealthEntry| nodes.contains(&e.node.node);
                if known.entries.iter().flatten().any(on_node) {
                    touched.insert(name.clone());
                }
            }
            for name in touched {
                self.want(&name);
            }
        }
        self.prints = Some(prints);
    }

    fn on_read(&mut self, name: String, result: Result<Vec<HealthEntry>, ConsulError>) {
        self.in_flight.remove(&name);
        let again = self.again.remove(&name);
        let Some(known) = self.known.get_mut(&name) else {
            return; // gone from the catalog meanwhile
        };
        match result {
            Ok(entries) => {
                if known.entries.as_ref() != Some(&entries) || known.error.is_some() {
                    self.changed = true;
                }
                known.entries = Some(entries);
                known.error = None;
            }
            Err(e) => {
                known.error = Some(e);
                self.changed = true;
            }
        }
        if again {
            self.queue.insert(name);
        }
    }

    fn retry_failed(&mut self) {
        let failed: Vec<String> = self
            .known
            .iter()
            .filter(|(_, k)| k.error.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in failed {
            self.want(&name);
        }
    }

    fn has_failed_reads(&self) -> bool {
        self.known.values().any(|k| k.error.is_some())
    }

    /// Every listed service answered (or failed) and nothing is left to read.
    fn settled(&self) -> bool {
        self.listed.is_some()
            && self.queue.is_empty()
            && self.in_flight.is_empty()
            && self
                .known
                .values()
                .all(|k| k.entries.is_some() || k.error.is_some())
    }

    /// What is wrong right now, for the source's status.
    fn errors(&self) -> Vec<String> {
        self.services_error
            .iter()
            .chain(&self.checks_error)
            .chain(self.known.values().filter_map(|k| k.error.as_ref()))
            .map(ToString::to_string)
            .collect()
    }

    /// Every service's last good entries.
    fn entries(&self) -> impl Iterator<Item = (&String, &Vec<HealthEntry>)> {
        self.known
            .iter()
            .filter_map(|(name, k)| k.entries.as_ref().map(|e| (name, e)))
    }
}

/// The Consul source.
#[derive(Debug)]
pub struct Consul {
    agent: Agent,
    options: DiscoveryOptions,
    handle: SourceHandle,
    notes: Notes,
    resolver: Resolver,
}

impl Consul {
    pub fn new(
        config: ConsulConfig,
        options: DiscoveryOptions,
        handle: SourceHandle,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            agent: Agent {
                client: http_client(&config.tls, Redirects::One)?,
                url: config.url.trim_end_matches('/').to_string(),
                token: config.token,
            },
            options,
            handle,
            notes: Notes::new(SOURCE),
            resolver: Resolver::new(SOURCE),
        })
    }

    /// Watches the catalog and the checks, reads what changed, until the publisher is gone.
    pub async fn run(mut self) {
        let (reports, mut inbox) = mpsc::channel(REPORTS);
        let refresh = self.options.refresh_interval;
        let watches = [
            tokio::spawn(blocking_loop(
                self.agent.clone(),
                "/v1/catalog/services",
                refresh,
                Report::Services,
                reports.clone(),
            )),
            tokio::spawn(blocking_loop(
                self.agent.clone(),
                "/v1/health/state/any",
                refresh,
                Report::Checks,
                reports,
            )),
        ];
        let mut refreshes = self.handle.refreshes();
        let mut state = State::default();
        let mut reads = JoinSet::new();
        let mut retry_at: Option<Instant> = None;
        let mut backoff = Backoff::default();
        loop {
            while reads.len() < READERS
                && let Some(name) = state.queue.pop_first()
            {
                state.in_flight.insert(name.clone());
                reads.spawn(read_service(self.agent.clone(), name));
            }
            tokio::select! {
                report = inbox.recv() => match report {
                    Some(Report::Services(Ok(answer))) => state.on_services(answer),
                    Some(Report::Services(Err(e))) => {
                        if state.listed.is_none() {
                            self.handle.fail(&e);
                        }
                        state.services_error = Some(e);
                        state.changed = true;
                    }
                    Some(Report::Checks(Ok(answer))) => state.on_checks(answer),
                    Some(Report::Checks(Err(e))) => {
                        state.checks_error = Some(e);
                        state.changed = true;
                    }
                    None => break,
                },
                Some(joined) = reads.join_next(), if !reads.is_empty() => {
                    if let Ok((name, result)) = joined {
                        state.on_read(name, result);
                    }
                }
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    retry_at = None;
                    state.retry_failed();
                }
                Ok(()) = refreshes.changed() => state.want_all(),
                () = self.handle.closed() => break,
            }
            if !state.has_failed_reads() {
                backoff.reset();
            } else if retry_at.is_none() {
                retry_at = Some(Instant::now() + backoff.next_delay());
            }
            if state.settled() && state.changed {
                state.changed = false;
                if !self.publish(&state).await {
                    break;
                }
            }
        }
        for watch in watches {
            watch.abort();
        }
        reads.shutdown().await;
    }

    /// Builds the catalog from what is known and reports it; `false` when the publisher is gone.
    async fn publish(&mut self, state: &State) -> bool {
        // Without the list of services nothing here is fresh: the source is stale, its last good catalog
        // stays as it was.
        if let Some(e) = &state.services_error {
            self.handle.fail(e);
            return true;
        }
        let resolution = self
            .resolver
            .resolve(entries::hosts(state.entries().map(|(_, e)| e)))
            .await;
        let catalog = entries::catalog(
            state.entries(),
            &resolution.hosts,
            &self.options,
            &mut self.notes,
        );
        let mut errors = state.errors();
        errors.extend(resolution.degraded_reason());
        if errors.is_empty() {
            self.handle.publish(catalog).await
        } else {
            self.handle
                .publish_degraded(catalog, &errors.join("; "))
                .await
        }
    }
}

/// One plain read of a service's passing instances.
async fn read_service(
    agent: Agent,
    name: String,
) -> (String, Result<Vec<HealthEntry>, ConsulError>) {
    let url = format!(
        "{}/v1/health/service/{}?passing",
        agent.url,
        path_segment(&name)
    );
    let result = match get(&agent, &url, READ_TIMEOUT).await {
        Ok((body, _)) => serde_json::from_slice(&body).map_err(|e| ConsulError::Malformed {
            url,
            detail: e.to_string(),
        }),
        Err(e) => Err(e),
    };
    (name, result)
}

/// A service name as one path segment: percent-encodes what is not unreserved (`@` stays, for
/// `name@port`).
fn path_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests;
