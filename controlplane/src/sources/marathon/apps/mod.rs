//! `/v2/apps?embed=apps.tasks` → [`Catalog`] (discovery.md §1.1, §2.3–2.4, §3.2).
//!
//! Service ports come from the app, never from embedded tasks (which carry none): the `servicePort` of
//! `container.docker.portMappings` (before Marathon 1.5) or `container.portMappings` (1.5+) in container
//! networking, else `portDefinitions[].port` (or the legacy `ports`). The networking mode and the task's
//! address and ports follow marathon-lb: host and bridge tasks are reached on `host:ports[i]`, IP-per-task
//! ones on `ipAddresses[0]` with the discovery ports or container ports.
//!
//! A task is routed only when it is running and, if the app defines health checks, every one of its health
//! results is alive (proxymatic's rule). Health results live only in the Marathon leader's memory, so after
//! a leader failover every task comes back with its checks defined and no results yet; reading that as
//! "not healthy" would empty every health-checked service at once (marathon-lb keeps a cache for exactly
//! this). So, for a task with checks defined:
//! - results present: routed when every one is alive, not routed when one is not;
//! - no results at all: routed if it was routed by the previous read ([`Routed`]), else not yet (a new
//!   task waits for its first passing result);
//! - a task that is gone, or no longer running, leaves at once.
//!
//! One app that does not deserialize is logged and skipped; a body that is not JSON at all fails the whole
//! read, so the last good catalog stays.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use serde_json::Value;

use crate::model::Catalog;
use crate::model::merge::{Origin, merge};
use crate::sources::checks::{EntryError, Notes, port};
use crate::sources::discovery::{
    Candidate, DiscoveryOptions, discovered_service, marathon_service_name,
};
use crate::sources::labels::{Labels, group_accepts, port_settings};

/// The only task state that is routed.
const TASK_RUNNING: &str = "TASK_RUNNING";

/// The tasks the last read routed, by task id: what keeps a task routed while its health results are
/// missing (module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed(BTreeSet<String>);

impl Routed {
    pub fn contains(&self, task_id: &str) -> bool {
        self.0.contains(task_id)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a response gave no catalog.
#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    #[error("malformed /v2/apps response: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Debug, Deserialize)]
struct AppsResponse {
    apps: Vec<Value>,
}

/// The parts of an app Ringway reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct App {
    pub id: String,
    labels: BTreeMap<String, Value>,
    port_definitions: Option<Vec<PortDefinition>>,
    ports: Option<Vec<u32>>,
    container: Option<Container>,
    ip_address: Option<IpAddressSpec>,
    networks: Option<Vec<Network>>,
    health_checks: Option<Vec<Value>>,
    pub tasks: Option<Vec<Task>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct PortDefinition {
    port: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Container {
    docker: Option<Docker>,
    port_mappings: Option<Vec<PortMapping>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Docker {
    network: Option<String>,
    port_mappings: Option<Vec<PortMapping>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PortMapping {
    container_port: Option<u32>,
    service_port: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct IpAddressSpec {
    discovery: Option<DiscoverySpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct DiscoverySpec {
    ports: Option<Vec<DiscoveryPort>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct DiscoveryPort {
    number: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Network {
    mode: Option<String>,
}

/// An embedded task.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Task {
    pub id: String,
    pub host: Option<String>,
    ip_addresses: Option<Vec<TaskIp>>,
    ports: Option<Vec<u32>>,
    pub state: Option<String>,
    started_at: Option<String>,
    health_check_results: Option<Vec<Health>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct TaskIp {
    ip_address: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Health {
    alive: Option<bool>,
}

/// marathon-lb's networking modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetMode {
    Host,
    Bridge,
    /// IP-per-task (`ipAddress`, `USER` networks, `container` networks).
    Container,
}

/// Parses the body into apps; apps that do not deserialize are noted and left out.
pub fn parse_apps(body: &[u8], notes: &mut Notes) -> Result<Vec<App>, AppsError> {
    let response: AppsResponse = serde_json::from_slice(body)?;
    Ok(response
        .apps
        .into_iter()
        .filter_map(|value| {
            let id = value
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            serde_json::from_value::<App>(value)
                .inspect_err(|e| {
                    let error = EntryError {
                        value: String::new(),
                        reason: format!("the app does not parse: {e}"),
                    };
                    notes.bad_entry(&marathon_service_name(&id), &id, "app", error);
                })
                .ok()
        })
        .collect())
}

/// Host names that must be resolved to build the catalog (tasks outside IP-per-task networking).
pub fn hosts_to_resolve(apps: &[App]) -> BTreeSet<String> {
    apps.iter()
        .filter(|app| app.net_mode() != NetMode::Container)
        .flat_map(|app| app.tasks.iter().flatten())
        .filter_map(|t| t.host.clone())
        .filter(|h| !h.is_empty())
        .collect()
}

/// Builds the catalog: one service per (app, service port), merged by listen address across apps.
/// `routed` is what the previous read routed, and becomes what this one does; `notes` gets this read's
/// problems and merges, and logs what is new.
pub fn catalog(
    apps: &[App],
    options: &DiscoveryOptions,
    hosts: &BTreeMap<String, IpAddr>,
    routed: &mut Routed,
    notes: &mut Notes,
) -> Catalog {
    let mut now_routed = Routed::default();
    let mut services = Vec::new();
    for app in apps {
        let tasks: Vec<&Task> = app
            .tasks
            .iter()
            .flatten()
            .filter(|t| app.routable(t, routed))
            .collect();
        now_routed.0.extend(tasks.iter().map(|t| t.id.clone()));
        let origin = Origin {
            rank: 0,
            name: app.id.clone(),
        };
        services.extend(
            app_services(app, &tasks, options, hosts, notes)
                .into_iter()
                .map(|s| (origin.clone(), s)),
        );
    }
    *routed = now_routed;
    let merged = merge(services);
    notes.merges(&merged.notes);
    notes.finish();
    merged.catalog
}

fn app_services(
    app: &App,
    routed: &[&Task],
    options: &DiscoveryOptions,
    hosts: &BTreeMap<String, IpAddr>,
    notes: &mut Notes,
) -> Vec<crate::model::Service> {
    let labels = app.labels();
    let name = marathon_service_name(&app.id);
    let mut service_ports = app.service_ports();
    // IP-per-task apps may have ports but no service ports: labels can still give them one.
    service_ports.resize(service_ports.len().max(app.discovery_ports().len()), None);
    let mut used_ports = BTreeSet::new();
    let mut services = Vec::new();
    for (index, default_port) in service_ports.iter().enumerate() {
        let outcome = port_settings(&labels, index);
        notes.bad_labels(&app.id, index, &outcome.problems);
        let Some(settings) = outcome.settings else {
            continue;
        };
        if !group_accepts(&options.groups, &settings.groups) {
            continue;
        }
        let listen = settings
            .service_port
            .map(u32::from)
            .or(*default_port)
            .unwrap_or(0);
        let listen = match port(u64::from(listen)) {
            Ok(listen) => listen,
            Err(error) => {
                // Marathon assigns service ports; 0 means it has not (yet).
                notes.bad_entry(&name, &app.id, &format!("service port {index}"), error);
                continue;
            }
        };
        if !used_ports.insert(listen) {
            continue; // tcp and udp on one number: one listener, as proxymatic
        }
        let candidates = routed
            .iter()
            .filter_map(|task| match app.task_address(task, index, hosts) {
                Ok(address) => address.map(|address| Candidate {
                    entry: task.id.clone(),
                    field: "tasks[].ports",
                    address,
                    weight: settings.weight,
                    drain: settings.drain,
                }),
                Err(error) => {
                    notes.bad_entry(&name, &task.id, "tasks[].ipAddresses", error);
                    None
                }
            })
            .collect();
        if let Some(mut service) =
            discovered_service(name.clone(), listen, &settings, candidates, options, notes)
        {
            // marathon-lb's app-id routing (`--app-id-listen`) finds the app by its id.
            service.app_id = Some(app.id.clone());
            services.push(service);
        }
    }
    services
}

impl App {
    /// Labels as strings; Marathon allows only strings, but proxymatic's fixtures hold numbers.
    fn labels(&self) -> Labels {
        self.labels
            .iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k.clone(), s.clone())),
                Value::Number(n) => Some((k.clone(), n.to_string())),
                Value::Bool(b) => Some((k.clone(), b.to_string())),
                _ => None,
            })
            .collect()
    }

    fn port_mappings(&self) -> Option<&Vec<PortMapping>> {
        let container = self.container.as_ref()?;
        container
            .docker
            .as_ref()
            .and_then(|d| d.port_mappings.as_ref())
            .or(container.port_mappings.as_ref())
    }

    fn net_mode(&self) -> NetMode {
        let mut mode = if self.ip_address.is_some() {
            NetMode::Container
        } else {
            NetMode::Host
        };
        match self
            .container
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .and_then(|d| d.network.as_deref())
        {
            Some("USER") => mode = NetMode::Container,
            Some("BRIDGE") => mode = NetMode::Bridge,
            _ => {}
        }
        for network in self.networks.iter().flatten() {
            mode = match network.mode.as_deref().unwrap_or("container") {
                "container/bridge" => NetMode::Bridge,
                "host" => NetMode::Host,
                _ => NetMode::Container,
            };
        }
        mode
    }

    fn definition_ports(&self) -> Option<Vec<Option<u32>>> {
        self.port_definitions
            .as_ref()
            .map(|defs| defs.iter().map(|d| d.port).collect())
            .or_else(|| {
                self.ports
                    .as_ref()
                    .map(|p| p.iter().copied().map(Some).collect())
            })
    }

    /// The app's service ports, by port index.
    fn service_ports(&self) -> Vec<Option<u32>> {
        let from_mappings = match self.net_mode() {
            NetMode::Host => None,
            _ => self
                .port_mappings()
                .filter(|m| !m.is_empty())
                .map(|m| m.iter().map(|pm| pm.service_port).collect()),
        };
        from_mappings
            .or_else(|| self.definition_ports())
            .unwrap_or_default()
    }

    /// The legacy IP-per-task `ipAddress.discovery.ports` numbers.
    fn discovery_ports(&self) -> Vec<u32> {
        self.ip_address
            .as_ref()
            .and_then(|a| a.discovery.as_ref())
            .and_then(|d| d.ports.as_ref())
            .map(|ps| ps.iter().filter_map(|p| p.number).collect())
            .unwrap_or_default()
    }

    /// Running, and healthy when health checks are defined (with the failover rule of the module docs).
    fn routable(&self, task: &Task, routed: &Routed) -> bool {
        let running = match task.state.as_deref() {
            Some(state) => state == TASK_RUNNING,
            // Embedded tasks of older Marathons carry no state; a started task is running.
            None => task.started_at.is_some(),
        };
        if !running {
            return false;
        }
        let checks_defined = self.health_checks.as_ref().is_some_and(|c| !c.is_empty());
        if !checks_defined {
            return true;
        }
        match task.health_check_results.as_deref().unwrap_or_default() {
            // A new leader has no results yet: what was routed stays, what was not waits.
            [] => routed.contains(&task.id),
            results => results.iter().all(|r| r.alive == Some(true)),
        }
    }

    /// Where port `index` of `task` is reached: `None` when the task says nothing about it (no host, no
    /// port for that index, a host name that does not resolve); an error for what it says wrong. The port
    /// itself is checked with every other source's instances ([`discovered_service`]).
    fn task_address(
        &self,
        task: &Task,
        index: usize,
        hosts: &BTreeMap<String, IpAddr>,
    ) -> Result<Option<SocketAddr>, EntryError> {
        match self.task_ip(task, hosts)? {
            Some(ip) => Ok(self.task_port(task, index).map(|p| SocketAddr::new(ip, p))),
            None => Ok(None),
        }
    }

    fn task_ip(
        &self,
        task: &Task,
        hosts: &BTreeMap<String, IpAddr>,
    ) -> Result<Option<IpAddr>, EntryError> {
        if self.net_mode() != NetMode::Container {
            return Ok(task.host.as_deref().and_then(|h| hosts.get(h)).copied());
        }
        let Some(text) = task
            .ip_addresses
            .as_ref()
            .and_then(|a| a.first())
            .and_then(|a| a.ip_address.as_deref())
        else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(|_| EntryError {
            value: text.to_string(),
            reason: "not an IP address".into(),
        })
    }

    /// The port of `task` for port `index` (0 stays 0, for the shared check to report).
    fn task_port(&self, task: &Task, index: usize) -> Option<u16> {
        let mode = self.net_mode();
        let container_ports = || -> Option<Vec<u32>> {
            Some(
                self.port_mappings()?
                    .iter()
                    .filter_map(|m| m.container_port)
                    .collect(),
            )
        };
        let ports: Vec<u32> = match mode {
            NetMode::Host => task.ports.clone().unwrap_or_default(),
            NetMode::Bridge => task
                .ports
                .clone()
                .filter(|p| !p.is_empty())
                .or_else(container_ports)
                .unwrap_or_default(),
            NetMode::Container => Some(self.discovery_ports())
                .filter(|p| !p.is_empty())
                .or_else(container_ports)
                .unwrap_or_default(),
        };
        // A number beyond u16 is as wrong as 0: both fail the shared port check.
        Some(u16::try_from(*ports.get(index)?).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests;
