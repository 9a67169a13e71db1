//! docker-flow-proxy's `reconfigure` and `remove` calls, mapped onto Ringway's TCP and HTTP services.
//!
//! The parameters are read the way docker-flow-proxy reads them (`proxy/types.go` at f117870): indexed
//! destinations `.1` … `.10`, stopping at the first index with none of `servicePath`, `port`,
//! `serviceDomain`; an unindexed value is the fallback for every index; without indexed destinations the
//! unindexed parameters make the one destination. Validation follows its `IsValidReconf`, with its
//! messages and status codes (400, and 409 for an HTTP destination with neither path nor domain).
//!
//! The mapping (docs/api.md has the table):
//! - `srcPort` → the listen port, on `--listen-address`. A TCP destination needs one; an HTTP destination
//!   without one joins the shared HTTP port (`--vhost-port`, default 80), as docker-flow-proxy's HTTP
//!   destinations shared its port 80.
//! - `port` → the backend port; the backend host is `outboundHostname` (comma-separated, IPs or names)
//!   or else `serviceName` itself, resolved now, as docker-flow-proxy relied on Swarm's DNS for it. Every
//!   address a name resolves to is a backend.
//! - `reqMode` `tcp` or `http` (the default, as in docker-flow-proxy). An HTTP destination is a route:
//!   `serviceDomain` its hosts (a `*.` wildcard as docker-flow-proxy's leading `*`), `servicePath` its
//!   paths, `pathType` how they match (`path_beg`, the default: prefix; `path`: exact; `path_reg`: regex).
//! - `timeoutServer` (seconds) → the response timeout and the idle timeout; `timeoutTunnel` (seconds) →
//!   an upgraded connection's inactivity. Other parameters are accepted and ignored, as docker-flow-proxy
//!   ignores unknown ones.

pub mod names;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ringway_shared::Balance;
use ringway_shared::model::DEFAULT_WEIGHT;
use serde::{Deserialize, Serialize};

use crate::model::http::{PathMatch, RouteMatch, check_path};
use crate::model::{
    Catalog, HttpListenerSettings, Instance, Service, ServiceMode, ServiceTimeouts,
};
use crate::sources::discovery::RESOLVE_TIMEOUT;

/// docker-flow-proxy reads destinations `.1` to `.10`.
pub const MAX_DESTINATIONS: usize = 10;
/// What docker-flow-proxy answers when `serviceName` is missing from `reconfigure`.
pub const NO_SERVICE_NAME: &str = "serviceName parameter is mandatory.";
/// … and from `remove`.
pub const NO_SERVICE_NAME_REMOVE: &str = "The serviceName query is mandatory";
/// docker-flow-proxy's answer for an HTTP destination without path or domain (409).
pub const HTTP_NEEDS_PATH: &str =
    "When using reqMode http, servicePath or serviceDomain are mandatory";
/// docker-flow-proxy's answer for a TCP destination without its ports.
pub const TCP_NEEDS_PORTS: &str =
    "When NOT using reqMode http (e.g. tcp), srcPort and port parameters are mandatory.";
/// docker-flow-proxy's answer when `port` is missing.
pub const NO_PORT: &str =
    "When MODE is set to \"service\" or \"swarm\", the port query is mandatory";
/// Milliseconds per second, for `timeoutServer`.
const MS_PER_S: u32 = 1_000;

/// A refused call: docker-flow-proxy's status and message, and the parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DfpError {
    pub status: u16,
    pub field: String,
    pub message: String,
}

impl DfpError {
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One destination as registered: where Ringway listens and which backends it forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// 0 for the unindexed destination, else its `.N`.
    pub index: usize,
    /// `None`: an HTTP destination on the shared HTTP port (`--vhost-port`).
    pub src_port: Option<u16>,
    pub port: u16,
    pub mode: ServiceMode,
    /// The hosts asked for (`outboundHostname`, or the service name).
    pub hosts: Vec<String>,
    /// What they resolved to, with `port`.
    pub backends: Vec<SocketAddr>,
    #[serde(default)]
    pub service_path: Vec<String>,
    #[serde(default)]
    pub service_domain: Vec<String>,
    /// `pathType`.
    #[serde(default)]
    pub path_match: PathMatch,
}

/// A service registered through `reconfigure`: what the API source publishes, and what it persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub service_name: String,
    pub destinations: Vec<Destination>,
    #[serde(default)]
    pub timeout_server_s: Option<u32>,
    #[serde(default)]
    pub timeout_tunnel_s: Option<u32>,
}

/// A parsed `reconfigure` call whose hosts are not resolved yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconfigure {
    pub registration: Registration,
    /// Whether the hosts defaulted to the service name (an unresolvable one is then `serviceName`'s fault).
    pub hosts_from_name: bool,
}

/// Query parameters by name; a repeated name keeps its first value (as Go's `Form.Get`).
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            map.entry(k).or_insert(v);
        }
        Self(map)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// docker-flow-proxy's `getFromString`: the indexed value, else the unindexed one. Returns the name it
    /// came from, for error messages.
    fn indexed(&self, name: &str, index: usize) -> Option<(String, &str)> {
        if index > 0 {
            let key = indexed_name(name, index);
            if let Some(v) = self.get(&key) {
                return Some((key, v));
            }
        }
        self.get(name).map(|v| (name.to_string(), v))
    }

    fn list(&self, name: &str, index: usize) -> Vec<String> {
        self.indexed(name, index)
            .map(|(_, v)| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// docker-flow-proxy's `isServiceDestValid`: the exact key of the index only.
    fn has_destination(&self, index: usize) -> bool {
        ["servicePath", "port", "serviceDomain"]
            .iter()
            .any(|p| self.get(&indexed_name(p, index)).is_some())
    }

    pub fn service_name(&self) -> Option<&str> {
        self.get("serviceName")
    }
}

/// docker-flow-proxy's name of a parameter of destination `index`: `name` for the unindexed destination,
/// `name.N` for destination N.
pub fn indexed_name(name: &str, index: usize) -> String {
    if index == 0 {
        name.to_string()
    } else {
        format!("{name}.{index}")
    }
}

/// Parses a `reconfigure` call.
pub fn parse_reconfigure(params: &Params) -> Result<Reconfigure, DfpError> {
    let name = params
        .service_name()
        .ok_or_else(|| DfpError::bad("serviceName", NO_SERVICE_NAME))?;
    names::check_service_name(name).map_err(|e| DfpError::bad("serviceName", e))?;
    let mut indexes: Vec<usize> = (1..=MAX_DESTINATIONS)
        .take_while(|i| params.has_destination(*i))
        .collect();
    if indexes.is_empty() {
        indexes.push(0);
    }
    let outbound = params.get("outboundHostname").is_some()
        || (1..=MAX_DESTINATIONS).any(|i| params.get(&format!("outboundHostname.{i}")).is_some());
    let destinations = indexes
        .into_iter()
        .map(|i| destination(params, name, i))
        .collect::<Result<Vec<_>, _>>()?;
    let seconds = |key: &str| {
        params
            .get(key)
            .map(|v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|s| (1..=u32::MAX / MS_PER_S).contains(s))
                    .ok_or_else(|| {
                        DfpError::bad(key, format!("{key}: {v:?} is not a number of seconds"))
                    })
            })
            .transpose()
    };
    Ok(Reconfigure {
        registration: Registration {
            service_name: name.to_string(),
            destinations,
            timeout_server_s: seconds("timeoutServer")?,
            timeout_tunnel_s: seconds("timeoutTunnel")?,
        },
        hosts_from_name: !outbound,
    })
}

fn destination(params: &Params, name: &str, index: usize) -> Result<Destination, DfpError> {
    let mode = match params.indexed("reqMode", index) {
        None => ServiceMode::Http,
        Some((_, m)) if m.eq_ignore_ascii_case("http") => ServiceMode::Http,
        Some((_, m)) if m.eq_ignore_ascii_case("tcp") => ServiceMode::Tcp,
        Some((key, m)) => {
            return Err(DfpError::bad(
                key.clone(),
                format!("{key}: {m:?} is not supported: Ringway routes tcp and http"),
            ));
        }
    };
    let service_path = params.list("servicePath", index);
    let service_domain: Vec<String> = params
        .list("serviceDomain", index)
        .into_iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    if let Some((key, _)) = params.indexed("serviceDomain", index) {
        for domain in &service_domain {
            names::check_domain(&key, domain).map_err(|e| DfpError::bad(key.clone(), e))?;
        }
    }
    let port = params.indexed("port", index);
    let src_port = params.indexed("srcPort", index);
    match mode {
        ServiceMode::Http if service_path.is_empty() && service_domain.is_empty() => {
            return Err(DfpError {
                status: 409,
                field: "servicePath".into(),
                message: HTTP_NEEDS_PATH.into(),
            });
        }
        ServiceMode::Tcp if port.is_none() || src_port.is_none() => {
            let field = if src_port.is_none() {
                "srcPort"
            } else {
                "port"
            };
            return Err(DfpError::bad(field, TCP_NEEDS_PORTS));
        }
        _ => {}
    }
    let port = port.ok_or_else(|| DfpError::bad("port", NO_PORT))?;
    let path_match = match params.indexed("pathType", index) {
        None => PathMatch::Prefix,
        Some((key, value)) => PathMatch::parse_dfp(value).ok_or_else(|| {
            DfpError::bad(
                key.clone(),
                format!("{key}: {value:?} is not supported: path_beg, path or path_reg"),
            )
        })?,
    };
    if mode == ServiceMode::Http
        && let Some((key, _)) = params.indexed("servicePath", index)
    {
        for path in &service_path {
            check_path(path, path_match)
                .map_err(|e| DfpError::bad(key.clone(), format!("{key}: {e}")))?;
        }
    }
    let mut hosts = params.list("outboundHostname", index);
    if hosts.is_empty() {
        hosts.push(name.to_string());
    }
    Ok(Destination {
        index,
        src_port: src_port.map(parse_port).transpose()?,
        port: parse_port(port)?,
        mode,
        hosts,
        backends: Vec::new(),
        service_path,
        service_domain,
        path_match,
    })
}

fn parse_port((key, value): (String, &str)) -> Result<u16, DfpError> {
    value
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| DfpError::bad(key.clone(), format!("{key}: {value:?} is not a port")))
}

/// Resolves every destination's hosts into its backends (all addresses of a name, each with the port).
pub async fn resolve(request: Reconfigure) -> Result<Registration, DfpError> {
    let mut registration = request.registration;
    for destination in &mut registration.destinations {
        let mut backends = Vec::new();
        for host in &destination.hosts {
            let ips = lookup(host).await.map_err(|reason| {
                let field = if request.hosts_from_name {
                    "serviceName"
                } else {
                    "outboundHostname"
                };
                DfpError::bad(field, format!("{field}: cannot resolve {host:?}: {reason}"))
            })?;
            backends.extend(
                ips.into_iter()
                    .map(|ip| SocketAddr::new(ip, destination.port)),
            );
        }
        backends.sort();
        backends.dedup();
        destination.backends = backends;
    }
    Ok(registration)
}

async fn lookup(host: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0))).await {
        Ok(Ok(addrs)) => {
            let ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            if ips.is_empty() {
                Err("no addresses".into())
            } else {
                Ok(ips)
            }
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {RESOLVE_TIMEOUT:?}")),
    }
}

/// The API source's catalog: one service per destination, named after the registration. Destinations on
/// one listen port merge (their backends together) when they are TCP or HTTP with the same route, as every
/// source's services do; others under one name are told apart by the merge's renaming. An HTTP
/// destination without `srcPort` is served on `vhost_port`.
pub fn catalog<'a>(
    registrations: impl IntoIterator<Item = &'a Registration>,
    listen: IpAddr,
    vhost_port: u16,
) -> Catalog {
    let mut services = Vec::new();
    for registration in registrations {
        for destination in &registration.destinations {
            let route = match destination.mode {
                ServiceMode::Tcp => RouteMatch::default(),
                ServiceMode::Http => RouteMatch::new(
                    destination.service_domain.iter().cloned(),
                    destination.service_path.iter().cloned(),
                    destination.path_match,
                ),
            };
            services.push(Service {
                name: registration.service_name.clone(),
                listen: SocketAddr::new(listen, destination.src_port.unwrap_or(vhost_port)),
                // HAProxy's default, which docker-flow-proxy's backends used.
                balance: Balance::RoundRobin,
                maxconn: None,
                max_connections: None,
                timeouts: ServiceTimeouts {
                    idle_ms: registration.timeout_server_s.map(|s| s * MS_PER_S),
                    server_ms: registration.timeout_server_s.map(|s| s * MS_PER_S),
                    tunnel_ms: registration.timeout_tunnel_s.map(|s| s * MS_PER_S),
                    ..ServiceTimeouts::default()
                },
                mode: destination.mode,
                route,
                vhost: None,
                app_id: None,
                http_listener: HttpListenerSettings::default(),
                instances: destination
                    .backends
                    .iter()
                    .map(|address| Instance {
                        address: *address,
                        weight: DEFAULT_WEIGHT,
                        maxconn: None,
                        state: ringway_shared::BackendState::Active,
                    })
                    .collect(),
            });
        }
    }
    Catalog { services }
}

/// docker-flow-proxy's answer: `Status` `OK` or `NOK`, `Message`, `ServiceName`, the service's fields
/// (those Ringway uses), plus Ringway's: the snapshot version and whether anything changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DfpResponse {
    pub status: &'static str,
    pub message: String,
    pub service_name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_dest: Vec<DfpServiceDest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_server: Option<String>,
    /// The parameter at fault (Ringway's addition, on errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The snapshot version after the call (Ringway's addition; absent before the first snapshot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ringway_version: Option<u64>,
    /// Whether the call changed the routing (Ringway's addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ringway_changed: Option<bool>,
}

/// One `ServiceDest` of docker-flow-proxy's answer, with the backends Ringway resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DfpServiceDest {
    /// A string, as in docker-flow-proxy.
    pub port: String,
    /// 0 when the destination is on the shared HTTP port (docker-flow-proxy's value for "not given").
    pub src_port: u16,
    pub req_mode: ServiceMode,
    pub service_path: Vec<String>,
    /// docker-flow-proxy's spelling: `path_beg`, `path`, `path_reg`.
    pub path_type: &'static str,
    pub service_domain: Vec<String>,
    pub outbound_hostname: String,
    pub index: usize,
    pub backends: Vec<String>,
}

impl DfpResponse {
    pub fn ok(service_name: &str) -> Self {
        Self {
            status: "OK",
            service_name: service_name.to_string(),
            ..Self::default()
        }
    }

    pub fn error(service_name: &str, error: &DfpError) -> Self {
        Self {
            status: "NOK",
            message: error.message.clone(),
            service_name: service_name.to_string(),
            field: Some(error.field.clone()),
            ..Self::default()
        }
    }

    /// Echoes what was registered.
    pub fn with_registration(mut self, registration: &Registration) -> Self {
        self.timeout_server = registration.timeout_server_s.map(|s| s.to_string());
        self.service_dest = registration
            .destinations
            .iter()
            .map(|d| DfpServiceDest {
                port: d.port.to_string(),
                src_port: d.src_port.unwrap_or(0),
                req_mode: d.mode,
                service_path: d.service_path.clone(),
                path_type: match d.path_match {
                    PathMatch::Prefix => "path_beg",
                    PathMatch::Exact => "path",
                    PathMatch::Regex => "path_reg",
                },
                service_domain: d.service_domain.clone(),
                outbound_hostname: d.hosts.join(","),
                index: d.index,
                backends: d.backends.iter().map(ToString::to_string).collect(),
            })
            .collect();
        self
    }
}

#[cfg(test)]
mod tests;
