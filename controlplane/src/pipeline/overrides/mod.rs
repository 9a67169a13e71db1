//! Runtime overrides: an operator's word on a backend (state, weight) or on a whole service (a blue/green
//! switch), applied after the sources are merged, and kept until cleared.
//!
//! This is HAProxy's runtime API (`set server <b>/<s> state ready|drain|maint`, `set server … weight`)
//! and wunderproxy's `switch`, on top of discovery: sources say what exists, overrides say how the
//! operator wants it used. They are keyed by the service's *listen address* and the backend address, the
//! two things that identify what a connection reaches, so they survive every new catalog a source sends;
//! one for a backend that is gone (or not back yet) stays dormant until it returns or is cleared.
//!
//! Not by the service's name: a merged name can change hands (a service goes away and another one, on
//! another port, is renamed into its name by the merge or by its source), and an operator's "drain this"
//! must not follow the name to a service it was never said about. The API accepts a name and turns it into
//! the listen address the name has at the time of the call ([`ServiceRef`]).
//!
//! State files written before this rule keyed overrides by name; those are read into [`LegacyOverrides`]
//! and each moves, once, to the listen address of the first merged catalog that has a service of that
//! name ([`Overrides::adopt_legacy`]), which is the service it was set on when the file was written.
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
    /// Service listen address → backend address → override.
    #[serde(default)]
    pub backends: BTreeMap<SocketAddr, BTreeMap<SocketAddr, BackendOverride>>,
    /// Service listen address → the backends a switch moved its traffic to.
    #[serde(default)]
    pub switches: BTreeMap<SocketAddr, BTreeSet<SocketAddr>>,
    /// Name-keyed overrides of an older state file, not yet seen in a merged catalog.
    #[serde(default, skip_serializing_if = "LegacyOverrides::is_empty")]
    pub by_name: LegacyOverrides,
}

/// Overrides keyed by service name, as state files of format 1 hold them (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyOverrides {
    #[serde(default)]
    pub backends: BTreeMap<String, BTreeMap<SocketAddr, BackendOverride>>,
    #[serde(default)]
    pub switches: BTreeMap<String, BTreeSet<SocketAddr>>,
}

impl LegacyOverrides {
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty() && self.switches.is_empty()
    }
}

/// How a request names a service: by its listen address, or by its merged name, which is looked up in the
/// merged catalog when the edit is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceRef {
    Listen(SocketAddr),
    Name(String),
}

impl ServiceRef {
    /// An address (`127.0.0.1:80`, `[::1]:80`) names a listen address; anything else a service name.
    pub fn parse(text: &str) -> Self {
        match text.parse() {
            Ok(listen) => Self::Listen(listen),
            Err(_) => Self::Name(text.to_string()),
        }
    }

    /// The listen address this names in `merged`, if a service is there.
    pub fn resolve(&self, merged: &Catalog) -> Option<SocketAddr> {
        match self {
            Self::Listen(listen) => merged
                .services
                .iter()
                .any(|s| s.listen == *listen)
                .then_some(*listen),
            Self::Name(name) => merged
                .services
                .iter()
                .find(|s| s.name == *name)
                .map(|s| s.listen),
        }
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Listen(listen) => write!(f, "the service on {listen}"),
            Self::Name(name) => write!(f, "{name:?}"),
        }
    }
}

/// A change to the overrides, as the API asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Sets the backend's override to exactly `value` (a PUT: omitted fields follow the source again).
    Set {
        service: ServiceRef,
        backend: SocketAddr,
        value: BackendOverride,
    },
    /// Removes the backend's override.
    Clear {
        service: ServiceRef,
        backend: SocketAddr,
    },
    /// Moves the service's new connections to `backends`; every other backend of it drains.
    Switch {
        service: ServiceRef,
        backends: BTreeSet<SocketAddr>,
    },
    /// Ends the service's switch: every backend is as its source (and own override) says.
    ClearSwitch { service: ServiceRef },
}

impl Edit {
    pub fn service(&self) -> &ServiceRef {
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
    #[error("service: no service {}", describe(.0))]
    UnknownService(ServiceRef),
    #[error("backend: {backend} is not a backend of {service}")]
    UnknownBackend {
        service: ServiceRef,
        backend: SocketAddr,
    },
    #[error("backends[{index}]: {backend} is not a backend of {service}")]
    UnknownSwitchBackend {
        service: ServiceRef,
        index: usize,
        backend: SocketAddr,
    },
    #[error("backends: name at least one backend to switch to")]
    EmptySwitch,
    #[error("state: give state, weight or both (to remove the override, DELETE it)")]
    Nothing,
    #[error("weight: {0} is outside {WEIGHT_MIN}..={WEIGHT_MAX}")]
    Weight(i64),
    #[error("backend: {backend} of {service} has no override")]
    NoOverride {
        service: ServiceRef,
        backend: SocketAddr,
    },
    #[error("service: {0} has no switch")]
    NoSwitch(ServiceRef),
}

fn describe(service: &ServiceRef) -> String {
    match service {
        ServiceRef::Listen(listen) => format!("listens on {listen}"),
        ServiceRef::Name(name) => format!(
            "named {name:?} (an override whose service is gone is cleared by its listen address, as \
             dormant_overrides shows it)"
        ),
    }
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

/// An override or switch that does nothing now: its service or backend is not in the merged catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dormant {
    /// `None` for a name-keyed override of an older state file.
    pub listen: Option<SocketAddr>,
    /// The name of the service at `listen` now (if any), or the legacy key.
    pub service: Option<String>,
    /// `None` for a switch.
    pub backend: Option<SocketAddr>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty() && self.switches.is_empty() && self.by_name.is_empty()
    }

    /// How many backend overrides there are (for logs).
    pub fn backend_count(&self) -> usize {
        self.backends.values().map(BTreeMap::len).sum::<usize>()
            + self
                .by_name
                .backends
                .values()
                .map(BTreeMap::len)
                .sum::<usize>()
    }

    /// The override of one backend of the service listening on `listen`, if any.
    pub fn backend(&self, listen: SocketAddr, backend: SocketAddr) -> Option<&BackendOverride> {
        self.backends.get(&listen)?.get(&backend)
    }

    pub fn switch(&self, listen: SocketAddr) -> Option<&BTreeSet<SocketAddr>> {
        self.switches.get(&listen)
    }

    /// Applies `edit`, checked against `merged` (the catalog before overrides): setting needs the service
    /// and backend to exist now; clearing only needs something to clear (by listen address, or by a name
    /// the merged catalog or an older state file's overrides know). Returns whether anything changed.
    pub fn edit(&mut self, edit: &Edit, merged: &Catalog) -> Result<bool, OverrideError> {
        let find = |service: &ServiceRef| {
            service
                .resolve(merged)
                .and_then(|listen| merged.services.iter().find(|s| s.listen == listen))
                .ok_or_else(|| OverrideError::UnknownService(service.clone()))
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
                let found = find(service)?;
                if !has_instance(found, *backend) {
                    return Err(OverrideError::UnknownBackend {
                        service: service.clone(),
                        backend: *backend,
                    });
                }
                let previous = self
                    .backends
                    .entry(found.listen)
                    .or_default()
                    .insert(*backend, *value);
                Ok(previous != Some(*value))
            }
            Edit::Clear { service, backend } => {
                let removed = match self.listen_of(service, merged) {
                    Some(listen) => remove_nested(&mut self.backends, &listen, backend),
                    None => match service {
                        ServiceRef::Name(name) => {
                            remove_nested(&mut self.by_name.backends, name, backend)
                        }
                        ServiceRef::Listen(_) => false,
                    },
                };
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
                let previous = self.switches.insert(found.listen, backends.clone());
                Ok(previous.as_ref() != Some(backends))
            }
            Edit::ClearSwitch { service } => {
                let removed = match (self.listen_of(service, merged), service) {
                    (Some(listen), _) => self.switches.remove(&listen).is_some(),
                    (None, ServiceRef::Name(name)) => self.by_name.switches.remove(name).is_some(),
                    (None, ServiceRef::Listen(_)) => false,
                };
                if removed {
                    Ok(true)
                } else {
                    Err(OverrideError::NoSwitch(service.clone()))
                }
            }
        }
    }

    /// The listen address `service` stands for when clearing: a listen address as given (its service may
    /// be gone), a name as the merged catalog has it now.
    fn listen_of(&self, service: &ServiceRef, merged: &Catalog) -> Option<SocketAddr> {
        match service {
            ServiceRef::Listen(listen) => Some(*listen),
            ServiceRef::Name(_) => service.resolve(merged),
        }
    }

    /// Moves every name-keyed override of an older state file whose name `merged` now has to that
    /// service's listen address (where nothing is set for that backend yet). Returns the names moved.
    pub fn adopt_legacy(&mut self, merged: &Catalog) -> Vec<(String, SocketAddr)> {
        if self.by_name.is_empty() {
            return Vec::new();
        }
        let mut adopted = Vec::new();
        for service in &merged.services {
            let mut moved = false;
            if let Some(backends) = self.by_name.backends.remove(&service.name) {
                let target = self.backends.entry(service.listen).or_default();
                for (backend, value) in backends {
                    target.entry(backend).or_insert(value);
                }
                moved = true;
            }
            if let Some(set) = self.by_name.switches.remove(&service.name) {
                self.switches.entry(service.listen).or_insert(set);
                moved = true;
            }
            if moved {
                adopted.push((service.name.clone(), service.listen));
            }
        }
        adopted
    }

    /// What `merged` becomes under the overrides (see the module docs for the order).
    pub fn apply(&self, merged: &Catalog) -> Catalog {
        if self.backends.is_empty() && self.switches.is_empty() {
            return merged.clone();
        }
        let services = merged
            .services
            .iter()
            .map(|service| {
                let mut service = service.clone();
                let switch = self.switches.get(&service.listen);
                let overrides = self.backends.get(&service.listen);
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
    pub fn dormant(&self, merged: &Catalog) -> Vec<Dormant> {
        let at = |listen: &SocketAddr| merged.services.iter().find(|s| s.listen == *listen);
        let mut out = Vec::new();
        for (listen, backends) in &self.backends {
            let service = at(listen);
            for backend in backends.keys() {
                if !service.is_some_and(|s| has_instance(s, *backend)) {
                    out.push(Dormant {
                        listen: Some(*listen),
                        service: service.map(|s| s.name.clone()),
                        backend: Some(*backend),
                    });
                }
            }
        }
        for listen in self.switches.keys() {
            if at(listen).is_none() {
                out.push(Dormant {
                    listen: Some(*listen),
                    service: None,
                    backend: None,
                });
            }
        }
        for (name, backends) in &self.by_name.backends {
            out.extend(backends.keys().map(|backend| Dormant {
                listen: None,
                service: Some(name.clone()),
                backend: Some(*backend),
            }));
        }
        out.extend(self.by_name.switches.keys().map(|name| Dormant {
            listen: None,
            service: Some(name.clone()),
            backend: None,
        }));
        out
    }
}

/// Removes `map[key][backend]`, and `map[key]` once empty; returns whether something was removed.
fn remove_nested<K: Ord + ?Sized, Q: Ord + std::borrow::Borrow<K>>(
    map: &mut BTreeMap<Q, BTreeMap<SocketAddr, BackendOverride>>,
    key: &K,
    backend: &SocketAddr,
) -> bool {
    let Some(per_service) = map.get_mut(key) else {
        return false;
    };
    let removed = per_service.remove(backend).is_some();
    if per_service.is_empty() {
        map.remove(key);
    }
    removed
}

fn has_instance(service: &Service, backend: SocketAddr) -> bool {
    service.instances.iter().any(|i| i.address == backend)
}

#[cfg(test)]
mod tests;
