//! What the discovery sources (Marathon, registrator, etcd v3, Consul) share: the operator's options, the
//! HTTP client, retry backoff, host name resolution, and the one way a discovered port becomes a
//! [`Service`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringway_shared::Balance;
use tracing::{debug, warn};

use crate::model::{Instance, Service};
use crate::sources::labels::PortSettings;

/// Default `--listen-address`: discovered services listen on every interface, as proxymatic's did.
pub const DEFAULT_LISTEN_IP: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
/// Default `--refresh-interval` (proxymatic's `REFRESH_INTERVAL`).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// How long a TCP connect to a source may take before the next replica is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a host name lookup may take; an unresolvable task is skipped, not waited for.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// First retry delay after a failure; doubled per failure up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay, so a source that comes back is noticed within this time.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The operator's choices that apply to every discovery source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// The IP discovered services listen on (`--listen-address`).
    pub listen_ip: IpAddr,
    /// Route services whose instances use the service port itself (host networking) (`--expose-host`).
    pub expose_host: bool,
    /// marathon-lb groups this instance serves (`--group`); `*` takes every app.
    pub groups: Vec<String>,
    /// Full re-read of every source, events or not (`--refresh-interval`).
    pub refresh_interval: Duration,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self {
            listen_ip: DEFAULT_LISTEN_IP,
            expose_host: false,
            groups: vec![crate::sources::labels::ANY_GROUP.to_string()],
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
        }
    }
}

/// The HTTP client of one source: plain HTTP/1.1, no proxy from the environment (sources are on the
/// cluster's own network), a bounded connect, at most one redirect (Marathon standbys redirect
/// `/v2/events` to the leader once). Request timeouts are set per request, because watches and event
/// streams are long-lived.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(1))
        .tcp_nodelay(true)
        .build()
        .expect("a plain HTTP client always builds")
}

/// Capped exponential backoff with jitter (75–100 % of the step), so replicas restarted together are not
/// hit in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { step: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.step;
        self.step = (self.step * 2).min(BACKOFF_MAX);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        delay.mul_f64(0.75 + f64::from(nanos % 1_000) / 4_000.0)
    }

    pub fn reset(&mut self) {
        self.step = BACKOFF_MIN;
    }
}

/// Resolves every name in `hosts` that is not already an IP address; names that do not resolve in time are
/// left out (and logged), so their instances are skipped.
pub async fn resolve_hosts(hosts: BTreeSet<String>) -> BTreeMap<String, IpAddr> {
    let mut resolved = BTreeMap::new();
    for host in hosts {
        if let Ok(ip) = host.parse::<IpAddr>() {
            resolved.insert(host, ip);
            continue;
        }
        let lookup =
            tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.clone(), 0))).await;
        match lookup {
            Ok(Ok(mut addrs)) => match addrs.next() {
                Some(addr) => {
                    resolved.insert(host, addr.ip());
                }
                None => warn!(
                    host,
                    "host name resolves to nothing; its instances are skipped"
                ),
            },
            Ok(Err(e)) => warn!(
                host,
                "cannot resolve host name; its instances are skipped: {e}"
            ),
            Err(_) => warn!(
                host,
                "host name lookup timed out; its instances are skipped"
            ),
        }
    }
    resolved
}

/// Builds the service for one discovered port, or `None` when `--expose-host` is off and an instance uses
/// the service port itself: that is host networking (the instance's own port would clash with our
/// listener on a host running both), which proxymatic skipped unless `EXPOSE_HOST` was set.
///
/// Discovered services balance by least connections, as proxymatic's HAProxy did.
pub fn discovered_service(
    name: String,
    listen_port: u16,
    settings: &PortSettings,
    mut instances: Vec<Instance>,
    options: &DiscoveryOptions,
) -> Option<Service> {
    if !options.expose_host && instances.iter().any(|i| i.address.port() == listen_port) {
        debug!(
            service = name,
            listen_port, "host-networked service skipped (see --expose-host)"
        );
        return None;
    }
    instances.sort_by_key(|i| i.address);
    instances.dedup_by_key(|i| i.address);
    Some(Service {
        name,
        listen: SocketAddr::new(options.listen_ip, listen_port),
        balance: Balance::LeastConn,
        maxconn: settings.maxconn,
        max_connections: None,
        timeouts: settings.timeouts,
        mode: settings.mode,
        vhosts: settings.vhosts.clone(),
        instances,
    })
}

/// proxymatic's service name for a Marathon app id: the path reversed and joined with dots
/// (`/demo/webapp` → `webapp.demo`).
pub fn marathon_service_name(app_id: &str) -> String {
    let parts: Vec<&str> = app_id.split('/').filter(|p| !p.is_empty()).rev().collect();
    if parts.is_empty() {
        app_id.to_string()
    } else {
        parts.join(".")
    }
}

/// Splits proxymatic's `name@port` form (a listen port given in the service name); `None` when there is no
/// valid `@port` suffix.
pub fn split_port_suffix(name: &str) -> Option<(&str, u16)> {
    let (base, port) = name.rsplit_once('@')?;
    let port: u16 = port.parse().ok()?;
    (!base.is_empty() && port != 0).then_some((base, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::labels::{Labels, port_settings};
    use ringway_shared::BackendState;

    fn instance(port: u16) -> Instance {
        Instance {
            address: SocketAddr::from(([10, 0, 0, 1], port)),
            weight: 500,
            maxconn: None,
            state: BackendState::Active,
        }
    }

    #[test]
    fn host_networking_is_skipped_unless_exposed() {
        let settings = port_settings(&Labels::new(), 0).settings.unwrap();
        let mut options = DiscoveryOptions::default();
        assert!(
            discovered_service("a".into(), 80, &settings, vec![instance(80)], &options).is_none()
        );
        let s = discovered_service(
            "a".into(),
            80,
            &settings,
            vec![instance(31000), instance(31000)],
            &options,
        )
        .unwrap();
        assert_eq!(s.instances.len(), 1, "duplicates collapse");
        assert_eq!(s.listen, "0.0.0.0:80".parse().unwrap());
        options.expose_host = true;
        assert!(
            discovered_service("a".into(), 80, &settings, vec![instance(80)], &options).is_some()
        );
    }

    #[test]
    fn names_follow_proxymatic() {
        assert_eq!(marathon_service_name("/demo/webapp"), "webapp.demo");
        assert_eq!(
            marathon_service_name("/product/system/service"),
            "service.system.product"
        );
        assert_eq!(split_port_suffix("db@1234"), Some(("db", 1234)));
        assert_eq!(split_port_suffix("db"), None);
        assert_eq!(split_port_suffix("db@x"), None);
        assert_eq!(split_port_suffix("@80"), None);
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first <= BACKOFF_MIN && first >= BACKOFF_MIN.mul_f64(0.75));
        for _ in 0..20 {
            assert!(b.next_delay() <= BACKOFF_MAX);
        }
        assert!(b.next_delay() >= BACKOFF_MAX.mul_f64(0.75));
        b.reset();
        assert!(b.next_delay() <= BACKOFF_MIN);
    }
}
