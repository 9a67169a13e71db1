//! What the discovery sources (Marathon, registrator, etcd v3, Consul) share: the operator's options, retry
//! backoff, and the one way a discovered port becomes a [`Service`] (with the checks of
//! [`crate::sources::checks`] applied to every instance). Their HTTP client is in
//! [`crate::sources::client`], host name resolution in [`crate::sources::resolve`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringway_shared::{BackendState, Balance};

use crate::model::http::{PathMatch, RouteMatch, check_host};
use crate::model::{HttpListenerSettings, Instance, Service};
use crate::sources::checks::{EntryError, Notes, instance_address};
use crate::sources::labels::PortSettings;

/// Default `--listen-address`: discovered services listen on every interface, as proxymatic's did.
pub const DEFAULT_LISTEN_IP: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
/// Default `--refresh-interval` (proxymatic's `REFRESH_INTERVAL`).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// How long a TCP connect to a source may take before the next replica is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a host name lookup may take (the API's registrations use it too).
pub const RESOLVE_TIMEOUT: Duration = crate::sources::resolve::LOOKUP_TIMEOUT;
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
    /// Every discovered service is also a virtual host `<name>.<domain>` on the vhost port
    /// (`--vhost-domain`, proxymatic's `VHOST_DOMAIN`); lowercase, checked.
    pub vhost_domain: Option<String>,
    /// The shared HTTP port of virtual hosts (`--vhost-port`), on `listen_ip`.
    pub vhost_port: u16,
}

impl DiscoveryOptions {
    /// Where services with virtual hosts (and docker-flow-proxy's without `srcPort`) are served.
    pub fn vhost_listen(&self) -> SocketAddr {
        SocketAddr::new(self.listen_ip, self.vhost_port)
    }
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self {
            listen_ip: DEFAULT_LISTEN_IP,
            expose_host: false,
            groups: vec![crate::sources::labels::ANY_GROUP.to_string()],
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            vhost_domain: None,
            vhost_port: crate::model::http::DEFAULT_VHOST_PORT,
        }
    }
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

/// One instance a source found, before the shared checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Names the entry in logs: a task id, a Consul service ID, an etcd key.
    pub entry: String,
    /// The field the address came from, for logs (`Service.Port`, `tasks[].ports[0]`, `value`).
    pub field: &'static str,
    pub address: SocketAddr,
    pub weight: u16,
    /// `weight=0`: the instance takes no new connections (it drains).
    pub drain: bool,
}

/// Builds the service for one discovered port from the instances found for it.
///
/// Every candidate goes through [`instance_address`]; a bad one is left out and noted (source, service,
/// entry, field), the others stay. The service is `None` when `--expose-host` is off and an instance *on
/// this host* uses the service port itself: that is host networking, where the instance and our listener
/// would claim the same port (proxymatic skipped these unless `EXPOSE_HOST` was set). An instance on
/// another address with the same port number (registrator's `-internal` container address, a Consul entry
/// on another node) is not: it is routed.
///
/// Discovered services balance by least connections, as proxymatic's HAProxy did. With `--vhost-domain`
/// the service is also the virtual host `<name>.<domain>` (proxymatic's naming: `name` is already the
/// reversed Marathon id or registrator's name); a name that makes no host name is noted and gets none.
pub fn discovered_service(
    name: String,
    listen_port: u16,
    settings: &PortSettings,
    candidates: Vec<Candidate>,
    options: &DiscoveryOptions,
    notes: &mut Notes,
) -> Option<Service> {
    let mut instances = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        match instance_address(candidate.address) {
            Ok(address) => instances.push((address, candidate.weight, candidate.drain)),
            Err(error) => notes.bad_entry(&name, &candidate.entry, candidate.field, error),
        }
    }
    if !options.expose_host
        && let Some((local, _, _)) = instances
            .iter()
            .find(|(a, _, _)| a.port() == listen_port && is_on_this_host(a.ip()))
    {
        notes.host_network(&name, listen_port, *local);
        return None;
    }
    let mut instances: Vec<Instance> = instances
        .into_iter()
        .map(|(address, weight, drain)| Instance {
            address,
            weight,
            maxconn: None,
            state: if drain {
                BackendState::Draining
            } else {
                BackendState::Active
            },
        })
        .collect();
    instances.sort_by_key(|i| i.address);
    instances.dedup_by_key(|i| i.address);
    let vhost = with_domain_host(&name, settings.vhost.clone(), options, notes);
    Some(Service {
        name,
        listen: SocketAddr::new(options.listen_ip, listen_port),
        balance: Balance::LeastConn,
        maxconn: settings.maxconn,
        max_connections: None,
        timeouts: settings.timeouts,
        mode: settings.mode,
        route: RouteMatch::default(),
        vhost,
        app_id: None,
        http_listener: HttpListenerSettings::default(),
        instances,
    })
}

/// `vhost` plus the host `<name>.<domain>` when `--vhost-domain` is set.
fn with_domain_host(
    name: &str,
    vhost: Option<RouteMatch>,
    options: &DiscoveryOptions,
    notes: &mut Notes,
) -> Option<RouteMatch> {
    let Some(domain) = &options.vhost_domain else {
        return vhost;
    };
    let wanted = format!("{name}.{domain}");
    let host = match check_host(&wanted) {
        Ok(host) if !host.starts_with("*.") => host,
        _ => {
            let error = EntryError::new(
                &wanted,
                "is not a host name: no virtual host under --vhost-domain",
            );
            notes.bad_entry(name, name, "name", error);
            return vhost;
        }
    };
    Some(match vhost {
        // The domain's host takes the labels' paths too: they say what the app serves.
        Some(v) => RouteMatch::new(v.hosts.into_iter().chain([host]), v.paths, v.path_match),
        None => RouteMatch::new([host], [], PathMatch::Prefix),
    })
}

/// Whether `ip` is an address of this host (the controlplane runs beside its dataplane): loopback, or an
/// address a socket can be bound to, which the kernel allows only for its own addresses.
pub fn is_on_this_host(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
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

    fn candidate(address: &str) -> Candidate {
        Candidate {
            entry: format!("entry-{address}"),
            field: "Service.Port",
            address: address.parse().unwrap(),
            weight: 500,
            drain: false,
        }
    }

    fn build(
        candidates: &[&str],
        options: &DiscoveryOptions,
        notes: &mut Notes,
    ) -> Option<Service> {
        let settings = port_settings(&Labels::new(), 0).settings.unwrap();
        let candidates = candidates.iter().map(|a| candidate(a)).collect();
        discovered_service("a".into(), 80, &settings, candidates, options, notes)
    }

    #[test]
    fn host_networking_is_skipped_by_address_unless_exposed() {
        let mut options = DiscoveryOptions::default();
        let mut notes = Notes::new("test");
        // An instance on this host on the service port itself: host networking.
        assert!(build(&["127.0.0.1:80"], &options, &mut notes).is_none());
        assert!(build(&["203.0.113.9:31000", "127.0.0.2:80"], &options, &mut notes).is_none());
        // The same port number elsewhere (registrator -internal, a Consul entry on another node): routed.
        let s = build(&["203.0.113.9:80", "203.0.113.10:80"], &options, &mut notes).unwrap();
        assert_eq!(s.instances.len(), 2);
        assert_eq!(s.listen, "0.0.0.0:80".parse().unwrap());
        let s = build(
            &["127.0.0.1:31000", "127.0.0.1:31000"],
            &options,
            &mut notes,
        )
        .unwrap();
        assert_eq!(s.instances.len(), 1, "duplicates collapse");
        options.expose_host = true;
        assert!(build(&["127.0.0.1:80"], &options, &mut notes).is_some());
        assert!(is_on_this_host("127.9.9.9".parse().unwrap()));
        assert!(!is_on_this_host("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn bad_instances_are_left_out_and_the_rest_stays() {
        let options = DiscoveryOptions::default();
        let mut notes = Notes::new("test");
        let s = build(
            &["203.0.113.9:0", "0.0.0.0:31000", "203.0.113.9:31001"],
            &options,
            &mut notes,
        )
        .unwrap();
        let addresses: Vec<String> = s.instances.iter().map(|i| i.address.to_string()).collect();
        assert_eq!(addresses, vec!["203.0.113.9:31001"]);
        let noted: Vec<String> = notes.pending().iter().map(ToString::to_string).collect();
        assert_eq!(
            noted,
            vec![
                "service a entry entry-203.0.113.9:0: Service.Port=\"203.0.113.9:0\": 0 is not a port",
                "service a entry entry-0.0.0.0:31000: Service.Port=\"0.0.0.0:31000\": 0.0.0.0 does not name one host",
            ]
        );
    }

    #[test]
    fn a_drained_candidate_compiles_to_draining_with_a_valid_weight() {
        let settings = port_settings(&Labels::new(), 0).settings.unwrap();
        let mut drained = candidate("203.0.113.9:31000");
        drained.drain = true;
        let s = discovered_service(
            "a".into(),
            80,
            &settings,
            vec![drained],
            &DiscoveryOptions::default(),
            &mut Notes::new("test"),
        )
        .unwrap();
        assert_eq!(s.instances[0].state, BackendState::Draining);
        assert_eq!(s.instances[0].weight, 500);
    }

    #[test]
    fn vhost_domain_names_every_service_as_proxymatic_did() {
        let options = DiscoveryOptions {
            vhost_domain: Some("example.com".into()),
            ..DiscoveryOptions::default()
        };
        let mut notes = Notes::new("test");
        let settings = port_settings(&Labels::new(), 0).settings.unwrap();
        let name = marathon_service_name("/product/system/service");
        let s = discovered_service(
            name,
            31000,
            &settings,
            vec![candidate("203.0.113.9:31000")],
            &options,
            &mut notes,
        )
        .unwrap();
        assert_eq!(
            s.vhost.unwrap().hosts,
            vec!["service.system.product.example.com"]
        );
        assert_eq!(
            s.mode,
            crate::model::ServiceMode::Tcp,
            "its own port keeps its mode"
        );

        let mut labels = Labels::new();
        labels.insert("HAPROXY_0_VHOST".into(), "shop.example".into());
        labels.insert("HAPROXY_0_PATH".into(), "/api".into());
        let settings = port_settings(&labels, 0).settings.unwrap();
        let s = discovered_service(
            "web".into(),
            31000,
            &settings,
            Vec::new(),
            &options,
            &mut notes,
        )
        .unwrap();
        let vhost = s.vhost.unwrap();
        assert_eq!(vhost.hosts, vec!["shop.example", "web.example.com"]);
        assert_eq!(vhost.paths, vec!["/api"]);

        let bad = discovered_service(
            "a b".into(),
            31000,
            &settings,
            Vec::new(),
            &options,
            &mut notes,
        )
        .unwrap();
        assert_eq!(
            bad.vhost.unwrap().hosts,
            vec!["shop.example"],
            "the labels' vhost stays"
        );
        assert_eq!(notes.pending().len(), 1);
        assert_eq!(options.vhost_listen(), "0.0.0.0:80".parse().unwrap());
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
