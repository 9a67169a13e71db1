//! Runtime overrides: an operator's word on a backend (state, weight) or on a whole service (a blue/green
//! switch), applied after the sources are merged, and kept until cleared.
//!
//! This is HAProxy's runtime API (`set server <b>/<s> state ready|drain|maint`, `set server … weight`)
//! and wunderproxy's `switch`, on top of discovery: sources say what exists, overrides say how the
//! operator wants it used. They are keyed by the *merged* service name and the backend address, so they
//! survive every new catalog a source sends; one for a backend that is gone (or not back yet) stays
//! dormant until it returns or is cleared.
//!
//! Order of application, per instance: the source's state, then the service's switch (backends outside the
//! switched-to set drain), then the backend's own override (the most specific word wins).
//!
//! What the states mean in Ringway:
//! - `ready`: takes new connections (HAProxy's ready), even against a switch or a source that drains it.
//! - `drain`: the snapshot's `Draining`: no new connections, open ones continue. The backend stays in the
//!   snapshot, so the dataplane keeps showing it (state `draining`) with its weight and limit.
//! - `maint`: out of the snapshot altogether, as if no source knew it. The dataplane treats it like any
//!   removed backend: no new connections, open ones continue until they close (Ringway never cuts an
//!   established connection on a change, so HAProxy's optional `shutdown sessions` has no counterpart),
//!   and it disappears from the dataplane's `/stats` once its last connection ends. Anything the dataplane
//!   does per backend (limits today, health checks later) stops for it, as HAProxy's maint stops checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;

use ringway_shared::BackendState;
use ringway_shared::model::{WEIGHT_MAX, WEIGHT_MIN};
use serde::{Deserialize, Serialize};

use crate::model::{Catalog, Service};

/// The administrative states an operator can set (HAProxy's `set server … state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    Ready,
    Drain,
    Maint,
}

impl AdminState {
    /// Parses `ready`, `drain` or `maint` (HAProxy's words).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ready" => Some(Self::Ready),
            "drain" => Some(Self::Drain),
            "maint" => Some(Self::Maint),
            _ => None,
        }
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ready => "ready",
            Self::Drain => "drain",
            Self::Maint => "maint",
        })
    }
}

/// A weight the snapshot accepts: [`WEIGHT_MIN`]..=[`WEIGHT_MAX`].
pub fn check_weight(weight: i64) -> Result<u16, OverrideError> {
    u16::try_from(weight)
        .ok()
        .filter(|w| (WEIGHT_MIN..=WEIGHT_MAX).contains(w))
        .ok_or(OverrideError::Weight(weight))
}

/// One backend's override; a `None` field follows the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AdminState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
}

/// Every override in force, serializable so the API can show and persist it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    /// Service name → backend address → override.
    #[serde(default)]
    pub backends: BTreeMap<String, BTreeMap<SocketAddr, BackendOverride>>,
    /// Service name → the backends a switch moved its traffic to.
    #[serde(default)]
    pub switches: BTreeMap<String, BTreeSet<SocketAddr>>,
}

/// A change to the overrides, as the API asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Sets the backend's override to exactly `value` (a PUT: omitted fields follow the source again).
    Set {
        service: String,
        backend: SocketAddr,
        value: BackendOverride,
    },
    /// Removes the backend's override.
    Clear {
        service: String,
        backend: SocketAddr,
    },
    /// Moves the service's new connections to `backends`; every other backend of it drains.
    Switch {
        service: String,
        backends: BTreeSet<SocketAddr>,
    },
    /// Ends the service's switch: every backend is as its source (and own override) says.
    ClearSwitch { service: String },
}

impl Edit {
    pub fn service(&self) -> &str {
        match self {
            Edit::Set { service, .. }
            | Edit::Clear { service, .. }
            | Edit::Switch { service, .. }
            | Edit::ClearSwitch { service } => service,
        }
    }
}

/// Why an edit was refused; [`OverrideError::field`] names the part of the request at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    #[error("service: no service named {0:?}")]
    UnknownService(String),
    #[error("backend: {backend} is not a backend of {service:?}")]
    UnknownBackend {
        service: String,
        backend: SocketAddr,
    },
    #[error("backends[{index}]: {backend} is not a backend of {service:?}")]
    UnknownSwitchBackend {
        service: String,
        index: usize,
        backend: SocketAddr,
    },
    #[error("backends: name at least one backend to switch to")]
    EmptySwitch,
    #[error("state: give state, weight or both (to remove the override, DELETE it)")]
    Nothing,
    #[error("weight: {0} is outside {WEIGHT_MIN}..={WEIGHT_MAX}")]
    Weight(i64),
    #[error("backend: {backend} of {service:?} has no override")]
    NoOverride {
        service: String,
        backend: SocketAddr,
    },
    #[error("service: {0:?} has no switch")]
    NoSwitch(String),
}

impl OverrideError {
    /// The request field the error is about.
    pub fn field(&self) -> String {
        match self {
            Self::UnknownService(_) | Self::NoSwitch(_) => "service".into(),
            Self::UnknownBackend { .. } | Self::NoOverride { .. } => "backend".into(),
            Self::UnknownSwitchBackend { index, .. } => format!("backends[{index}]"),
            Self::EmptySwitch => "backends".into(),
            Self::Nothing => "state".into(),
            Self::Weight(_) => "weight".into(),
        }
    }

    /// Whether the error is about something named in the path that does not exist (404) rather than a bad
    /// value in the request (400). A switch to a backend the service lacks is a bad value in its body.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::UnknownService(_)
                | Self::UnknownBackend { .. }
                | Self::NoOverride { .. }
                | Self::NoSwitch(_)
        )
    }
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty() && self.switches.is_empty()
    }

    /// The override of one backend, if any.
    pub fn backend(&self, service: &str, backend: SocketAddr) -> Option<&BackendOverride> {
        self.backends.get(service)?.get(&backend)
    }

    pub fn switch(&self, service: &str) -> Option<&BTreeSet<SocketAddr>> {
        self.switches.get(service)
    }

    /// Applies `edit`, checked against `merged` (the catalog before overrides): setting needs the service
    /// and backend to exist now; clearing only needs something to clear. Returns whether anything changed.
    pub fn edit(&mut self, edit: &Edit, merged: &Catalog) -> Result<bool, OverrideError> {
        let find = |name: &str| {
            merged
                .services
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| OverrideError::UnknownService(name.to_string()))
        };
        match edit {
            Edit::Set {
                service,
                backend,
                value,
            } => {
                if value.state.is_none() && value.weight.is_none() {
                    return Err(OverrideError::Nothing);
                }
                if let Some(weight) = value.weight {
                    check_weight(i64::from(weight))?;
                }
                if !has_instance(find(service)?, *backend) {
                    return Err(OverrideError::UnknownBackend {
                        service: service.clone(),
                        backend: *backend,
                    });
                }
                let previous = self
                    .backends
                    .entry(service.clone())
                    .or_default()
                    .insert(*backend, *value);
                Ok(previous != Some(*value))
            }
            Edit::Clear { service, backend } => {
                let per_service = self.backends.get_mut(service);
                let removed = per_service.and_then(|m| m.remove(backend)).is_some();
                if self.backends.get(service).is_some_and(BTreeMap::is_empty) {
                    self.backends.remove(service);
                }
                if removed {
                    Ok(true)
                } else {
                    Err(OverrideError::NoOverride {
                        service: service.clone(),
                        backend: *backend,
                    })
                }
            }
            Edit::Switch { service, backends } => {
                if backends.is_empty() {
                    return Err(OverrideError::EmptySwitch);
                }
                let found = find(service)?;
                if let Some((index, backend)) = backends
                    .iter()
                    .enumerate()
                    .find(|(_, b)| !has_instance(found, **b))
                {
                    return Err(OverrideError::UnknownSwitchBackend {
                        service: service.clone(),
                        index,
                        backend: *backend,
                    });
                }
                let previous = self.switches.insert(service.clone(), backends.clone());
                Ok(previous.as_ref() != Some(backends))
            }
            Edit::ClearSwitch { service } => match self.switches.remove(service) {
                Some(_) => Ok(true),
                None => Err(OverrideError::NoSwitch(service.clone())),
            },
        }
    }

    /// What `merged` becomes under the overrides (see the module docs for the order).
    pub fn apply(&self, merged: &Catalog) -> Catalog {
        if self.is_empty() {
            return merged.clone();
        }
        let services = merged
            .services
            .iter()
            .map(|service| {
                let mut service = service.clone();
                let switch = self.switches.get(&service.name);
                let overrides = self.backends.get(&service.name);
                service.instances.retain_mut(|instance| {
                    if switch.is_some_and(|set| !set.contains(&instance.address)) {
                        instance.state = BackendState::Draining;
                    }
                    let Some(o) = overrides.and_then(|m| m.get(&instance.address)) else {
                        return true;
                    };
                    if let Some(weight) = o.weight {
                        instance.weight = weight;
                    }
                    match o.state {
                        Some(AdminState::Ready) => instance.state = BackendState::Active,
                        Some(AdminState::Drain) => instance.state = BackendState::Draining,
                        Some(AdminState::Maint) => return false,
                        None => {}
                    }
                    true
                });
                service
            })
            .collect();
        Catalog { services }
    }

    /// Overrides and switches whose service or backend is not in `merged` (kept, but doing nothing).
    pub fn dormant(&self, merged: &Catalog) -> Vec<(String, Option<SocketAddr>)> {
        let find = |name: &str| merged.services.iter().find(|s| s.name == name);
        let mut out = Vec::new();
        for (service, backends) in &self.backends {
            for backend in backends.keys() {
                if !find(service).is_some_and(|s| has_instance(s, *backend)) {
                    out.push((service.clone(), Some(*backend)));
                }
            }
        }
        for service in self.switches.keys() {
            if find(service).is_none() {
                out.push((service.clone(), None));
            }
        }
        out
    }
}

fn has_instance(service: &Service, backend: SocketAddr) -> bool {
    service.instances.iter().any(|i| i.address == backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Instance, ServiceMode, ServiceTimeouts};
    use ringway_shared::Balance;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn catalog() -> Catalog {
        let instance = |port, state| Instance {
            address: addr(port),
            weight: 500,
            maxconn: None,
            state,
        };
        Catalog {
            services: vec![Service {
                name: "web".into(),
                listen: addr(80),
                balance: Balance::RoundRobin,
                maxconn: None,
                max_connections: None,
                timeouts: ServiceTimeouts::default(),
                mode: ServiceMode::Tcp,
                vhosts: Vec::new(),
                instances: vec![
                    instance(1, BackendState::Active),
                    instance(2, BackendState::Active),
                    instance(3, BackendState::Draining),
                ],
            }],
        }
    }

    fn set(port: u16, state: Option<AdminState>, weight: Option<u16>) -> Edit {
        Edit::Set {
            service: "web".into(),
            backend: addr(port),
            value: BackendOverride { state, weight },
        }
    }

    fn states(catalog: &Catalog) -> Vec<(u16, u16, BackendState)> {
        catalog.services[0]
            .instances
            .iter()
            .map(|i| (i.address.port(), i.weight, i.state))
            .collect()
    }

    use BackendState::{Active, Draining};

    #[test]
    fn states_and_weights_apply_after_the_merge() {
        let merged = catalog();
        let mut o = Overrides::default();
        assert!(
            o.edit(&set(1, Some(AdminState::Drain), Some(7)), &merged)
                .unwrap()
        );
        assert!(
            o.edit(&set(2, Some(AdminState::Maint), None), &merged)
                .unwrap()
        );
        assert!(
            o.edit(&set(3, Some(AdminState::Ready), None), &merged)
                .unwrap()
        );
        assert_eq!(
            states(&o.apply(&merged)),
            vec![(1, 7, Draining), (3, 500, Active)],
            "drain keeps the backend, maint takes it out, ready overrules the source"
        );
        assert!(
            !o.edit(&set(3, Some(AdminState::Ready), None), &merged)
                .unwrap(),
            "the same override again changes nothing"
        );
        // A PUT replaces: the weight alone now, the state follows the source again.
        o.edit(&set(1, None, Some(9)), &merged).unwrap();
        assert_eq!(states(&o.apply(&merged))[0], (1, 9, Active));
    }

    #[test]
    fn overrides_survive_new_catalogs_and_wait_for_their_backend() {
        let merged = catalog();
        let mut o = Overrides::default();
        o.edit(&set(2, Some(AdminState::Drain), None), &merged)
            .unwrap();
        let mut without = merged.clone();
        without.services[0].instances.remove(1);
        assert_eq!(states(&o.apply(&without)).len(), 2);
        assert_eq!(
            o.dormant(&without),
            vec![("web".to_string(), Some(addr(2)))]
        );
        assert_eq!(
            states(&o.apply(&merged))[1],
            (2, 500, Draining),
            "back in the catalog, still drained"
        );
        assert!(o.dormant(&merged).is_empty());
    }

    #[test]
    fn a_switch_drains_everything_else_and_a_backend_override_wins() {
        let merged = catalog();
        let mut o = Overrides::default();
        let switch = Edit::Switch {
            service: "web".into(),
            backends: [addr(2)].into(),
        };
        assert!(o.edit(&switch, &merged).unwrap());
        assert_eq!(
            states(&o.apply(&merged)),
            vec![(1, 500, Draining), (2, 500, Active), (3, 500, Draining)]
        );
        // New instances outside the set drain as they appear.
        let mut grown = merged.clone();
        let mut extra = grown.services[0].instances[0].clone();
        extra.address = addr(4);
        grown.services[0].instances.push(extra);
        assert_eq!(states(&o.apply(&grown))[3], (4, 500, Draining));
        o.edit(&set(1, Some(AdminState::Ready), None), &merged)
            .unwrap();
        assert_eq!(states(&o.apply(&merged))[0], (1, 500, Active));
        assert!(!o.edit(&switch, &merged).unwrap(), "same set, no change");
        o.edit(
            &Edit::ClearSwitch {
                service: "web".into(),
            },
            &merged,
        )
        .unwrap();
        assert_eq!(states(&o.apply(&merged))[1], (2, 500, Active));
        assert_eq!(states(&o.apply(&merged))[2], (3, 500, Draining));
    }

    #[test]
    fn bad_edits_name_their_field() {
        let merged = catalog();
        let mut o = Overrides::default();
        let cases = [
            (
                Edit::Set {
                    service: "nope".into(),
                    backend: addr(1),
                    value: BackendOverride {
                        state: Some(AdminState::Drain),
                        weight: None,
                    },
                },
                "service",
                true,
            ),
            (set(9, Some(AdminState::Drain), None), "backend", true),
            (set(1, None, None), "state", false),
            (set(1, None, Some(1001)), "weight", false),
            (
                Edit::Clear {
                    service: "web".into(),
                    backend: addr(1),
                },
                "backend",
                true,
            ),
            (
                Edit::Switch {
                    service: "web".into(),
                    backends: [addr(1), addr(9)].into(),
                },
                "backends[1]",
                false,
            ),
            (
                Edit::Switch {
                    service: "web".into(),
                    backends: BTreeSet::new(),
                },
                "backends",
                false,
            ),
            (
                Edit::ClearSwitch {
                    service: "web".into(),
                },
                "service",
                true,
            ),
        ];
        for (edit, field, not_found) in cases {
            let err = o.edit(&edit, &merged).unwrap_err();
            assert_eq!(err.field(), field, "{edit:?}: {err}");
            assert!(err.to_string().starts_with(field), "{err}");
            assert_eq!(err.is_not_found(), not_found, "{err}");
        }
        assert!(o.is_empty(), "refused edits leave nothing behind");
    }

    #[test]
    fn weights_are_checked_like_the_snapshot() {
        assert_eq!(check_weight(1), Ok(1));
        assert_eq!(check_weight(1000), Ok(1000));
        for bad in [0, 1001, -1, 70_000] {
            let err = check_weight(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("weight: {bad} is outside 1..=1000")
            );
        }
    }

    #[test]
    fn clearing_the_last_override_forgets_the_service() {
        let merged = catalog();
        let mut o = Overrides::default();
        o.edit(&set(1, Some(AdminState::Drain), None), &merged)
            .unwrap();
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["backends"]["web"]["127.0.0.1:1"]["state"], "drain");
        let back: Overrides = serde_json::from_value(json).unwrap();
        assert_eq!(back, o);
        o.edit(
            &Edit::Clear {
                service: "web".into(),
                backend: addr(1),
            },
            &merged,
        )
        .unwrap();
        assert!(o.is_empty());
    }
}
