//! What `GET /v1/sources` and `GET /v1/services` show: built on demand from the source registry, the
//! publisher's inputs and current snapshot, and the dataplane registry; nothing here is kept.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use ringway_shared::{BackendState, Balance};
use serde::Serialize;

use crate::model::SourceId;
use crate::model::{Catalog, RouteMatch, ServiceMode};
use crate::pipeline::overrides::BackendOverride;
use crate::pipeline::publisher::{Inputs, Published};
use crate::serve::registry::DataplaneInfo;
use crate::sources::SourceView;

/// `GET /v1/sources`.
#[derive(Debug, Serialize)]
pub struct SourcesView {
    pub sources: Vec<SourceView>,
}

/// `GET /v1/services`.
#[derive(Debug, Serialize)]
pub struct ServicesView {
    /// The current snapshot; `null` until the first one is published.
    pub snapshot: Option<SnapshotRef>,
    pub services: Vec<ServiceView>,
    /// Overrides and switches whose service or backend no source has now; they apply when it is back.
    pub dormant_overrides: Vec<DormantView>,
    pub dataplanes: Vec<DataplaneView>,
}

#[derive(Debug, Serialize)]
pub struct SnapshotRef {
    pub version: u64,
    pub hash: String,
}

#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub listen: SocketAddr,
    pub mode: ServiceMode,
    pub balance: &'static str,
    /// HTTP services: which requests on `listen` reach the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteMatch>,
    /// Served on the shared virtual-host port with this match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vhost: Option<RouteMatch>,
    /// Marathon app id (`--app-id-listen`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The backends a switch moved the service to, if one is in force.
    pub switch: Option<BTreeSet<SocketAddr>>,
    pub instances: Vec<InstanceView>,
}

#[derive(Debug, Serialize)]
pub struct InstanceView {
    pub address: SocketAddr,
    /// The sources that reported this instance.
    pub sources: Vec<SourceId>,
    /// What the sources say.
    pub weight: u16,
    pub state: &'static str,
    /// The operator's override, if any.
    #[serde(rename = "override")]
    pub override_: Option<BackendOverride>,
    /// What the snapshot gets after the switch and overrides: `removed` for a backend in maintenance.
    pub effective: Effective,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Effective {
    pub weight: Option<u16>,
    pub state: &'static str,
}

#[derive(Debug, Serialize)]
pub struct DormantView {
    /// The listen address it is kept under; `null` for a name-keyed one from an older state file.
    pub listen: Option<SocketAddr>,
    /// The service on `listen` now, if any (or the old file's name).
    pub service: Option<String>,
    /// `null` for a switch.
    pub backend: Option<SocketAddr>,
}

#[derive(Debug, Serialize)]
pub struct DataplaneView {
    #[serde(flatten)]
    pub info: DataplaneInfo,
    /// Whether its last ACK is the current snapshot.
    pub in_sync: bool,
}

fn state_word(state: BackendState) -> &'static str {
    match state {
        BackendState::Active => "active",
        BackendState::Draining => "draining",
    }
}

fn balance_word(balance: Balance) -> &'static str {
    match balance {
        Balance::RoundRobin => "round-robin",
        Balance::LeastConn => "least-conn",
    }
}

/// Which sources reported each `(listen address, instance address)`: the merge joins services by listen
/// address, so that pair finds an instance's sources in the merged catalog.
fn origins(inputs: &Inputs) -> BTreeMap<(SocketAddr, SocketAddr), Vec<SourceId>> {
    let mut origins: BTreeMap<(SocketAddr, SocketAddr), Vec<SourceId>> = BTreeMap::new();
    for (id, catalog) in &inputs.latest {
        for service in &catalog.services {
            for instance in &service.instances {
                let ids = origins
                    .entry((service.listen, instance.address))
                    .or_default();
                if !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
        }
    }
    origins
}

impl ServicesView {
    pub fn build(
        inputs: &Inputs,
        current: Option<&Published>,
        dataplanes: Vec<DataplaneInfo>,
    ) -> Self {
        let merged: Catalog = inputs.merged().catalog;
        let effective = inputs.overrides.apply(&merged);
        let origins = origins(inputs);
        let services = merged
            .services
            .iter()
            .map(|service| {
                let applied = effective.services.iter().find(|s| s.name == service.name);
                let instances = service
                    .instances
                    .iter()
                    .map(|instance| {
                        let after = applied.and_then(|s| {
                            s.instances.iter().find(|i| i.address == instance.address)
                        });
                        InstanceView {
                            address: instance.address,
                            sources: origins
                                .get(&(service.listen, instance.address))
                                .cloned()
                                .unwrap_or_default(),
                            weight: instance.weight,
                            state: state_word(instance.state),
                            override_: inputs
                                .overrides
                                .backend(service.listen, instance.address)
                                .copied(),
                            effective: match after {
                                Some(i) => Effective {
                                    weight: Some(i.weight),
                                    state: state_word(i.state),
                                },
                                None => Effective {
                                    weight: None,
                                    state: "removed",
                                },
                            },
                        }
                    })
                    .collect();
                ServiceView {
                    name: service.name.clone(),
                    listen: service.listen,
                    mode: service.mode,
                    balance: balance_word(service.balance),
                    route: (service.mode == ServiceMode::Http).then(|| service.route.clone()),
                    vhost: service.vhost.clone(),
                    app_id: service.app_id.clone(),
                    switch: inputs.overrides.switch(service.listen).cloned(),
                    instances,
                }
            })
            .collect();
        let current_version = current.map(Published::version);
        Self {
            snapshot: current.map(|p| SnapshotRef {
                version: p.version(),
                hash: format!("{:016x}", p.hash()),
            }),
            services,
            dormant_overrides: inputs
                .overrides
                .dormant(&merged)
                .into_iter()
                .map(|d| DormantView {
                    listen: d.listen,
                    service: d.service,
                    backend: d.backend,
                })
                .collect(),
            dataplanes: dataplanes
                .into_iter()
                .map(|info| DataplaneView {
                    in_sync: current_version.is_some() && info.last_ack == current_version,
                    info,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Service;
    use crate::pipeline::overrides::{AdminState, Edit, ServiceRef};

    fn service(backends: &[u16]) -> Service {
        Service::for_test(
            "web",
            SocketAddr::from(([127, 0, 0, 1], 80)),
            None,
            backends
                .iter()
                .map(|p| SocketAddr::from(([127, 0, 0, 1], *p))),
        )
    }

    #[test]
    fn instances_show_their_sources_overrides_and_effective_values() {
        let mut inputs = Inputs::default();
        inputs.latest.insert(
            SourceId::new("file:/s.toml"),
            Catalog {
                services: vec![service(&[1, 2])],
            },
        );
        let mut api = service(&[2]);
        api.name = "from-api".into();
        inputs.latest.insert(
            SourceId::new("api"),
            Catalog {
                services: vec![api],
            },
        );
        let merged = inputs.merged().catalog;
        let set = |port, state, weight| Edit::Set {
            service: ServiceRef::Name("web".into()),
            backend: SocketAddr::from(([127, 0, 0, 1], port)),
            value: BackendOverride { state, weight },
        };
        inputs
            .overrides
            .edit(&set(1, Some(AdminState::Maint), None), &merged)
            .unwrap();
        inputs
            .overrides
            .edit(&set(2, Some(AdminState::Drain), Some(100)), &merged)
            .unwrap();
        inputs
            .overrides
            .backends
            .entry("127.0.0.1:81".parse().unwrap())
            .or_default()
            .insert("127.0.0.1:9".parse().unwrap(), BackendOverride::default());

        let view = ServicesView::build(&inputs, None, Vec::new());
        let json = serde_json::to_value(&view).unwrap();
        assert!(json["snapshot"].is_null());
        let instances = &json["services"][0]["instances"];
        assert_eq!(json["services"][0]["balance"], "round-robin");
        assert_eq!(instances[0]["sources"], serde_json::json!(["file:/s.toml"]));
        assert_eq!(instances[0]["override"]["state"], "maint");
        assert_eq!(
            instances[0]["effective"],
            serde_json::json!({"weight": null, "state": "removed"})
        );
        assert_eq!(
            instances[1]["sources"],
            serde_json::json!(["api", "file:/s.toml"])
        );
        assert_eq!(instances[1]["weight"], 500);
        assert_eq!(instances[1]["state"], "active");
        assert_eq!(
            instances[1]["effective"],
            serde_json::json!({"weight": 100, "state": "draining"})
        );
        assert_eq!(
            json["dormant_overrides"],
            serde_json::json!([{"listen": "127.0.0.1:81", "service": null, "backend": "127.0.0.1:9"}])
        );
    }
}
