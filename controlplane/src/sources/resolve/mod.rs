//! Host names in what sources report (Marathon task hosts, Consul and etcd addresses), resolved so that a
//! DNS problem never drops instances silently:
//!
//! - **concurrently** ([`CONCURRENCY`] lookups at a time), each bounded by [`LOOKUP_TIMEOUT`], so one slow
//!   name cannot hold a read for (names × timeout);
//! - **cached**: an answer is used without a new lookup for [`FRESH_FOR`];
//! - **last known on failure**: a name that stops resolving keeps its last address, and the source is
//!   reported *degraded* (`GET /v1/sources` says which names); a name that never resolved has its
//!   instances skipped, and the source is degraded too;
//! - **logged once per change of state** (a name starts failing, resolves again), not on every read.
//!
//! Every address a source gives names **one instance** (a task's agent, a registered service), so one
//! address is used per name: the one used before if the name still resolves to it (a round-robin DNS
//! answer does not move the backend around), else the first the system resolver returns (its RFC 6724
//! order). Routing every address of a multi-homed host would make one instance several backends, each with
//! the instance's weight and limit.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

/// Lookups running at once, per source.
pub const CONCURRENCY: usize = 32;
/// Longest one lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an answer is used without looking again.
pub const FRESH_FOR: Duration = Duration::from_secs(30);

/// A lookup: the addresses of a name.
pub type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> + Send + Sync,
>;

/// The system resolver (`getaddrinfo`, through tokio's blocking pool).
pub fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addresses.map(|a| a.ip()).collect())
        })
    })
}

/// What a resolution gives a source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    pub hosts: BTreeMap<String, IpAddr>,
    /// Names that did not resolve this time, with what is done instead; empty when all did.
    pub degraded: Vec<String>,
    /// What was logged this time (a change of state); for tests.
    pub changes: Vec<String>,
}

impl Resolution {
    /// Why the source is degraded, if it is.
    pub fn degraded_reason(&self) -> Option<String> {
        (!self.degraded.is_empty()).then(|| format!("DNS: {}", self.degraded.join("; ")))
    }
}

#[derive(Debug, Clone)]
struct Known {
    ip: IpAddr,
    resolved_at: Instant,
    /// Failing since the last good answer, with why.
    failing: Option<String>,
}

#[derive(Debug, Default)]
struct Cache {
    known: BTreeMap<String, Known>,
    /// Names that never resolved, and why (so their warning is logged once).
    unresolved: BTreeMap<String, String>,
}

/// One source's resolver and cache.
pub struct Resolver {
    source: &'static str,
    lookup: Lookup,
    timeout: Duration,
    fresh_for: Duration,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// The system resolver for the source named `source` in logs.
    pub fn new(source: &'static str) -> Self {
        Self::with_lookup(source, system_lookup(), LOOKUP_TIMEOUT, FRESH_FOR)
    }

    pub fn with_lookup(
        source: &'static str,
        lookup: Lookup,
        timeout: Duration,
        fresh_for: Duration,
    ) -> Self {
        Self {
            source,
            lookup,
            timeout,
            fresh_for,
            cache: Mutex::default(),
        }
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves `hosts` (IP addresses pass through); forgets names no longer asked for.
    pub async fn resolve(&self, hosts: BTreeSet<String>) -> Resolution {
        let mut resolution = Resolution::default();
        let mut to_look_up = Vec::new();
        {
            let cache = self.cache();
            for host in &hosts {
                if let Ok(ip) = host.parse::<IpAddr>() {
                    resolution.hosts.insert(host.clone(), ip);
                    continue;
                }
                match cache.known.get(host) {
                    Some(k) if k.failing.is_none() && k.resolved_at.elapsed() < self.fresh_for => {
                        resolution.hosts.insert(host.clone(), k.ip);
                    }
                    _ => to_look_up.push(host.clone()),
                }
            }
        }
        let answers = self.look_up(to_look_up).await;
        let mut cache = self.cache();
        for (host, answer) in answers {
            self.take(&mut cache, host, answer, &mut resolution);
        }
        cache.known.retain(|h, _| hosts.contains(h));
        cache.unresolved.retain(|h, _| hosts.contains(h));
        resolution
    }

    /// Looks every name up, [`CONCURRENCY`] at a time, each bounded by the timeout.
    async fn look_up(&self, hosts: Vec<String>) -> Vec<(String, Result<Vec<IpAddr>, String>)> {
        let permits = Arc::new(Semaphore::new(CONCURRENCY));
        let mut lookups = JoinSet::new();
        for host in hosts {
            let (lookup, permits, timeout) =
                (Arc::clone(&self.lookup), Arc::clone(&permits), self.timeout);
            lookups.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let answer = match tokio::time::timeout(timeout, lookup(host.clone())).await {
                    Ok(Ok(ips)) if !ips.is_empty() => Ok(ips),
                    Ok(Ok(_)) => Err("resolves to nothing".to_string()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                };
                (host, answer)
            });
        }
        let mut answers = Vec::new();
        while let Some(joined) = lookups.join_next().await {
            if let Ok(answer) = joined {
                answers.push(answer);
            }
        }
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        answers
    }

    fn take(
        &self,
        cache: &mut Cache,
        host: String,
        answer: Result<Vec<IpAddr>, String>,
        resolution: &mut Resolution,
    ) {
        let source = self.source;
        match answer {
            Ok(ips) => {
                let previous = cache.known.get(&host);
                let ip = previous
                    .map(|k| k.ip)
                    .filter(|ip| ips.contains(ip))
                    .unwrap_or(ips[0]);
                let was_failing = previous.is_some_and(|k| k.failing.is_some());
                if was_failing || cache.unresolved.remove(&host).is_some() {
                    let change = format!("{host} resolves again, to {ip}");
                    info!(source, host, %ip, "host name resolves again");
                    resolution.changes.push(change);
                }
                cache.known.insert(
                    host.clone(),
                    Known {
                        ip,
                        resolved_at: Instant::now(),
                        failing: None,
                    },
                );
                resolution.hosts.insert(host, ip);
            }
            Err(why) => match cache.known.get_mut(&host) {
                Some(known) => {
                    if known.failing.is_none() {
                        warn!(source, host, last_known = %known.ip,
                              "cannot resolve host name; its instances keep the last known address: {why}");
                        resolution
                            .changes
                            .push(format!("{host} fails ({why}); keeping {}", known.ip));
                    }
                    known.failing = Some(why.clone());
                    resolution.hosts.insert(host.clone(), known.ip);
                    resolution.degraded.push(format!(
                        "{host} does not resolve ({why}), last known {} used",
                        known.ip
                    ));
                }
                None => {
                    if cache.unresolved.get(&host) != Some(&why) {
                        warn!(
                            source,
                            host, "cannot resolve host name; its instances are skipped: {why}"
                        );
                        resolution
                            .changes
                            .push(format!("{host} never resolved ({why})"));
                    }
                    cache.unresolved.insert(host.clone(), why.clone());
                    resolution.degraded.push(format!(
                        "{host} does not resolve ({why}), its instances are skipped"
                    ));
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
