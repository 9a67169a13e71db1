//! What a docker-flow-proxy registration may ask for.
//!
//! A registration makes every dataplane open a listener and forward whatever arrives to the addresses
//! given. Unchecked, anyone who can call the API could forward a public port to the host's loopback
//! services or the cloud metadata endpoint, take a port Ringway itself or another program needs, or add
//! backends to a service a discovery source owns. So by default:
//!
//! - `srcPort` must be in `--api-port-range` (1024-65535) and not one of Ringway's own ports: the API's,
//!   the dataplane's status endpoint (`STATUS_ENDPOINT`), `--api-reserved-ports`;
//! - a backend must not be a loopback, link-local (which holds the metadata address 169.254.169.254),
//!   metadata (`fd00:ec2::254`), unspecified, broadcast or multicast address, unless it is inside
//!   `--api-allow-backends`;
//! - a listen address another source already serves is refused unless `--api-allow-merge`;
//! - at most `--api-max-registrations` service names are registered.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use super::dfp::{DfpError, Registration, indexed_name, names};

/// Default of `--api-port-range`: no privileged port.
pub const DEFAULT_PORT_RANGE: RangeInclusive<u16> = 1024..=65535;
/// Default of `--api-max-registrations`.
pub const DEFAULT_MAX_REGISTRATIONS: usize = 1000;
/// AWS's IMDS address over IPv6 (the IPv4 one, 169.254.169.254, is link-local).
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);
const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The limits on what the API may register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationPolicy {
    /// `--api-port-range`.
    pub ports: RangeInclusive<u16>,
    /// Ports never given out: the API's own (added when it binds), the status endpoint's,
    /// `--api-reserved-ports`.
    pub reserved: BTreeSet<u16>,
    /// `--api-allow-backends`: addresses allowed although their range is refused by default.
    pub allow_backends: Vec<Cidr>,
    /// `--api-allow-merge`.
    pub allow_merge: bool,
    /// `--api-max-registrations`.
    pub max_registrations: usize,
}

impl Default for RegistrationPolicy {
    fn default() -> Self {
        Self {
            ports: DEFAULT_PORT_RANGE,
            reserved: BTreeSet::new(),
            allow_backends: Vec::new(),
            allow_merge: false,
            max_registrations: DEFAULT_MAX_REGISTRATIONS,
        }
    }
}

impl RegistrationPolicy {
    /// Every destination's `srcPort` is in the range and not reserved.
    pub fn check_ports(&self, registration: &Registration) -> Result<(), DfpError> {
        for destination in &registration.destinations {
            let field = indexed_name("srcPort", destination.index);
            // Without srcPort: the operator's own --vhost-port.
            let Some(port) = destination.src_port else {
                continue;
            };
            if !self.ports.contains(&port) {
                return Err(DfpError::bad(
                    &field,
                    format!(
                        "{field}: {port} is outside --api-port-range {}-{}",
                        self.ports.start(),
                        self.ports.end()
                    ),
                ));
            }
            if self.reserved.contains(&port) {
                return Err(DfpError::bad(
                    &field,
                    format!(
                        "{field}: {port} is one of Ringway's own ports (the API, the dataplane's status \
                         endpoint, --api-reserved-ports)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether a registration read back from the state file is still allowed: the limits may have been
    /// tightened since it was made (an upgrade from a version without them, a flag removed), and a
    /// restart must not bring back what a new call would be refused. Its name, ports and backends are
    /// checked as a new call's; the merge rule is not, as the other sources have not answered yet.
    pub fn check_restored(&self, registration: &Registration) -> Result<(), DfpError> {
        names::check_service_name(&registration.service_name)
            .map_err(|e| DfpError::bad("serviceName", e))?;
        self.check_ports(registration)?;
        self.check_backends(registration, false)
    }

    /// No backend is in a refused range, unless `--api-allow-backends` allows it. `hosts_from_name`: the
    /// addresses came from resolving `serviceName` (so that is the field at fault).
    pub fn check_backends(
        &self,
        registration: &Registration,
        hosts_from_name: bool,
    ) -> Result<(), DfpError> {
        let field = if hosts_from_name {
            "serviceName"
        } else {
            "outboundHostname"
        };
        for destination in &registration.destinations {
            for backend in &destination.backends {
                let ip = canonical(backend.ip());
                let Some(kind) = refused_kind(ip) else {
                    continue;
                };
                if self.allow_backends.iter().any(|c| c.contains(ip)) {
                    continue;
                }
                let what = match destination.hosts.as_slice() {
                    [host] if host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() => {
                        format!("{host} is {kind}")
                    }
                    hosts => format!("{:?} resolves to {ip}, {kind}", hosts.join(",")),
                };
                return Err(DfpError::bad(
                    field,
                    format!(
                        "{field}: {what}; backends there are refused unless --api-allow-backends \
                         includes it"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why `ip` is refused as a backend by default, if it is.
fn refused_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4 == METADATA_V4 => Some("the cloud metadata address"),
        IpAddr::V4(v4) if v4.is_loopback() => Some("a loopback address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address"),
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Some("an unspecified (\"this network\") address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("a multicast address"),
        IpAddr::V6(v6) if v6 == METADATA_V6 => Some("the cloud metadata address"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("a loopback address"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("a link-local address"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("a multicast address"),
        _ => None,
    }
}

/// Whether two listen addresses would take the same port: the same address, or the same port where
/// either side listens on every address.
pub fn listens_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// An address range: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(ip).into(), self.prefix, 32) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(ip), self.prefix, 128) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits` (an address `width` bits wide) with everything after the first `prefix` bits cleared.
fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
    let host_bits = u32::from(width - prefix);
    if host_bits >= 128 {
        0
    } else {
        bits & !((1u128 << host_bits) - 1)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an address or a range like 10.0.0.0/8 or fd00::/8");
        let (ip, prefix) = match text.trim().split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (text.trim(), None),
        };
        let network = canonical(ip.parse::<IpAddr>().map_err(|_| bad())?);
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(bad)?,
            None => width,
        };
        let bits = match network {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        if masked(bits, prefix, width) != bits {
            return Err(format!(
                "{text:?} has host bits set; did you mean {}/{prefix}?",
                match network {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(masked(bits, prefix, 32) as u32)),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(masked(bits, prefix, 128))),
                }
            ));
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::dfp::Destination;
    use crate::model::ServiceMode;

    fn registration(src_port: u16, backends: &[&str]) -> Registration {
        Registration {
            service_name: "svc".into(),
            destinations: vec![Destination {
                index: 2,
                src_port: Some(src_port),
                port: 80,
                mode: ServiceMode::Tcp,
                hosts: vec!["db".into()],
                backends: backends
                    .iter()
                    .map(|b| SocketAddr::new(b.parse().unwrap(), 80))
                    .collect(),
                service_path: Vec::new(),
                service_domain: Vec::new(),
                path_match: Default::default(),
            }],
            timeout_server_s: None,
            timeout_tunnel_s: None,
        }
    }

    #[test]
    fn ports_outside_the_range_or_reserved_are_refused() {
        let policy = RegistrationPolicy {
            reserved: [9090].into(),
            ..RegistrationPolicy::default()
        };
        assert!(policy.check_ports(&registration(8080, &[])).is_ok());
        for (port, says) in [(80, "outside"), (1023, "outside"), (9090, "own ports")] {
            let err = policy.check_ports(&registration(port, &[])).unwrap_err();
            assert_eq!((err.status, err.field.as_str()), (400, "srcPort.2"));
            assert!(err.message.contains(says), "{err}");
        }
    }

    #[test]
    fn backends_in_refused_ranges_need_an_allowance() {
        let mut policy = RegistrationPolicy::default();
        for ok in ["10.0.0.5", "192.168.1.1", "2001:db8::1", "fd00::1"] {
            assert!(
                policy
                    .check_backends(&registration(8080, &[ok]), false)
                    .is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "127.0.0.1",
            "127.9.9.9",
            "169.254.169.254",
            "169.254.1.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "ff02::1",
        ] {
            let err = policy
                .check_backends(&registration(8080, &[bad]), false)
                .unwrap_err();
            assert_eq!(err.field, "outboundHostname", "{bad}");
            assert!(err.message.contains("--api-allow-backends"), "{err}");
        }
        let err = policy
            .check_backends(&registration(8080, &["127.0.0.1"]), true)
            .unwrap_err();
        assert_eq!(err.field, "serviceName");
        policy.allow_backends = vec!["127.0.0.0/8".parse().unwrap(), "fe80::/10".parse().unwrap()];
        for ok in ["127.0.0.1", "::ffff:127.0.0.2", "fe80::1"] {
            assert!(
                policy
                    .check_backends(&registration(8080, &[ok]), false)
                    .is_ok(),
                "{ok}"
            );
        }
        assert!(
            policy
                .check_backends(&registration(8080, &["169.254.169.254"]), false)
                .is_err()
        );
    }

    #[test]
    fn restored_registrations_are_checked_like_new_ones() {
        let policy = RegistrationPolicy::default();
        assert!(
            policy
                .check_restored(&registration(8080, &["10.0.0.5"]))
                .is_ok()
        );
        let field = |r: Registration| policy.check_restored(&r).unwrap_err().field;
        assert_eq!(field(registration(80, &["10.0.0.5"])), "srcPort.2");
        assert_eq!(
            field(registration(8080, &["127.0.0.1"])),
            "outboundHostname"
        );
        let mut bad_name = registration(8080, &["10.0.0.5"]);
        bad_name.service_name = "a/b".into();
        assert_eq!(field(bad_name), "serviceName");
    }

    #[test]
    fn ranges_parse_strictly_and_match() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let one: Cidr = "169.254.169.254".parse().unwrap();
        assert_eq!(one.to_string(), "169.254.169.254/32");
        assert!(one.contains("169.254.169.254".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(
            "::/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "fd00::/129",
            "example.com",
            "10.0.0.0/x",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overlapping_listens_share_a_port_on_the_same_or_every_address() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(listens_overlap(a("127.0.0.1:80"), a("127.0.0.1:80")));
        assert!(listens_overlap(a("0.0.0.0:80"), a("127.0.0.1:80")));
        assert!(listens_overlap(a("10.0.0.1:80"), a("[::]:80")));
        assert!(!listens_overlap(a("127.0.0.1:80"), a("127.0.0.2:80")));
        assert!(!listens_overlap(a("0.0.0.0:80"), a("0.0.0.0:81")));
    }
}
