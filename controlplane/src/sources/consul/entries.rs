//! What Consul answers (discovery.md §5) and how it becomes a catalog: `/v1/health/service/<name>` entries
//! into services, and `/v1/health/state/any` checks into per-service and per-node fingerprints that say
//! which services a health change touched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::model::Catalog;
use crate::model::merge::{Origin, merge};
use crate::sources::checks::Notes;
use crate::sources::discovery::{
    Candidate, DiscoveryOptions, discovered_service, split_port_suffix,
};
use crate::sources::labels::{Labels, from_tags, group_accepts, port_settings};

/// The only check status that is routed.
pub const PASSING: &str = "passing";

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "PascalCase")]
pub struct Node {
    /// The node's name (what checks name it by).
    pub node: String,
    pub address: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "PascalCase")]
pub struct ServiceEntry {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub tags: Option<Vec<String>>,
    pub address: String,
    pub meta: Option<BTreeMap<String, String>>,
    pub port: u16,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "PascalCase")]
pub struct Check {
    pub status: String,
}

/// One element of `/v1/health/service/<name>`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "PascalCase")]
pub struct HealthEntry {
    pub node: Node,
    pub service: ServiceEntry,
    pub checks: Vec<Check>,
}

impl HealthEntry {
    /// `Service.Address`, or the node's when that is empty.
    pub fn address(&self) -> &str {
        if self.service.address.is_empty() {
            &self.node.address
        } else {
            &self.service.address
        }
    }

    fn passing(&self) -> bool {
        self.checks.iter().all(|c| c.status == PASSING)
    }
}

/// One element of `/v1/health/state/any`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "PascalCase")]
pub struct CheckRow {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub status: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
}

/// What the checks say, reduced to what can change a service's passing instances: per service, its
/// instances' check statuses; per node, the node's own checks (`serfHealth`), which count for every
/// service on it. Output text and indexes are left out, so a check that only updates its output (a TTL
/// check's heartbeat) touches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprints {
    services: BTreeMap<String, BTreeSet<(String, String, String, String)>>,
    nodes: BTreeMap<String, BTreeSet<(String, String)>>,
}

impl Fingerprints {
    pub fn of(rows: &[CheckRow]) -> Self {
        let mut prints = Self::default();
        for row in rows {
            if row.service_name.is_empty() {
                prints
                    .nodes
                    .entry(row.node.clone())
                    .or_default()
                    .insert((row.check_id.clone(), row.status.clone()));
            } else {
                prints
                    .services
                    .entry(row.service_name.clone())
                    .or_default()
                    .insert((
                        row.node.clone(),
                        row.service_id.clone(),
                        row.check_id.clone(),
                        row.status.clone(),
                    ));
            }
        }
        prints
    }

    /// The services whose own checks differ between `self` and `next`, and the nodes whose node checks
    /// do.
    pub fn changes(&self, next: &Self) -> (BTreeSet<String>, BTreeSet<String>) {
        fn differing<K: Ord + Clone, V: Eq>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> BTreeSet<K> {
            a.keys()
                .chain(b.keys())
                .filter(|k| a.get(*k) != b.get(*k))
                .cloned()
                .collect()
        }
        (
            differing(&self.services, &next.services),
            differing(&self.nodes, &next.nodes),
        )
    }
}

/// Meta first, then tags over it.
pub fn labels_of(service: &ServiceEntry) -> Labels {
    let mut labels: Labels = service.meta.clone().unwrap_or_default();
    labels.extend(from_tags(service.tags.iter().flatten()));
    labels
}

/// The catalog from every service's last good instances (entries that pass all their checks), `hosts`
/// resolving their addresses.
pub fn catalog<'a>(
    known: impl IntoIterator<Item = (&'a String, &'a Vec<HealthEntry>)>,
    hosts: &BTreeMap<String, IpAddr>,
    options: &DiscoveryOptions,
    notes: &mut Notes,
) -> Catalog {
    let mut services = Vec::new();
    for (name, entries) in known {
        for entry in entries.iter().filter(|e| e.passing()) {
            let labels = labels_of(&entry.service);
            let (base, name_port) = match split_port_suffix(name) {
                Some((base, port)) => (base, Some(port)),
                None => (name.as_str(), None),
            };
            let outcome = port_settings(&labels, 0);
            notes.bad_labels(&entry.service.id, 0, &outcome.problems);
            let Some(settings) = outcome.settings else {
                continue;
            };
            if !group_accepts(&options.groups, &settings.groups) {
                continue;
            }
            // Without a servicePort setting or an @port name the service is not for Ringway: no note.
            let Some(port) = settings.service_port.or(name_port) else {
                continue;
            };
            let Some(ip) = hosts.get(entry.address()) else {
                continue;
            };
            let candidate = Candidate {
                entry: entry.service.id.clone(),
                field: "Service.Port",
                address: SocketAddr::new(*ip, entry.service.port),
                weight: settings.weight,
                drain: settings.drain,
            };
            let service = discovered_service(
                base.to_string(),
                port,
                &settings,
                vec![candidate],
                options,
                notes,
            );
            if let Some(service) = service {
                let origin = Origin {
                    rank: 0,
                    name: format!("{name}/{}", entry.service.id),
                };
                services.push((origin, service));
            }
        }
    }
    let merged = merge(services);
    notes.merges(&merged.notes);
    notes.finish();
    merged.catalog
}

/// The addresses to resolve for `known`'s passing entries.
pub fn hosts<'a>(known: impl IntoIterator<Item = &'a Vec<HealthEntry>>) -> BTreeSet<String> {
    known
        .into_iter()
        .flatten()
        .filter(|e| e.passing())
        .map(|e| e.address().to_string())
        .collect()
}
