//! The settings users already write on their apps, read the same way from every source: Marathon labels,
//! Consul tags and service meta, and the labels of Ringway's etcd v3 format.
//!
//! Per service port `N` (the index of the port in the app, as proxymatic counts):
//!
//! | label | meaning | a bad value |
//! |---|---|---|
//! | `ringway.port.N.servicePort`, `com.meltwater.proxymatic.port.N.servicePort` | listen port | port skipped |
//! | `….N.weight` | instance weight 1..=1000 (default 500); `0` drains: no new connections | default used |
//! | `….N.maxconn` | per-instance limit for the whole group; `0` is no limit (proxymatic's meaning) | port skipped |
//! | `….N.mode`, `HAPROXY_N_MODE` | `tcp` or `http` (default `http` when `HAPROXY_N_VHOST` is set, as marathon-lb) | default used |
//! | `….N.timeout.client`, `….N.timeout.server` | seconds of inactivity, ≥ 1; `timeout.server` is also the HTTP response timeout | default used |
//! | `HAPROXY_N_VHOST` | virtual hosts (comma list), served on `--vhost-port` | port skipped |
//! | `HAPROXY_N_PATH` | path prefixes (space or comma list) on the virtual hosts | port skipped |
//! | `HAPROXY_GROUP`, `HAPROXY_N_GROUP` | groups (comma list), matched against `--group` | — |
//!
//! `ringway.<setting>` (no port index, the short form Consul tags use: `ringway.maxconn=50`) sets a default
//! for every port of the app; the per-port forms override it, and `ringway.port.N.*` wins over proxymatic's
//! name when both are given.
//!
//! Keys match without regard to case (a key written exactly as documented wins over one that differs only
//! in case): registrator lowercases the attributes it stores in Consul's `Meta`, so
//! `SERVICE_HAPROXY_GROUP=external` arrives as `haproxy_group`, and `ringway.servicePort` as
//! `ringway.serviceport`.
//!
//! `weight=0` and `maxconn=0` mean what they meant to proxymatic's users: the instance takes no new
//! connections (it drains, keeping the ones it has), and no per-instance limit. The model itself never
//! carries a weight or a limit of 0: a drained instance keeps the default weight with the state
//! `draining`, and "no limit" is `None`.
//!
//! Why skip rather than default for `servicePort` and `maxconn`: the default listen port would expose the
//! instances where the operator said they should not be, and no limit where one was asked for could
//! overload a backend; both are worse than one port not routed, which the log explains. A bad weight, mode
//! or timeout has a safe default. Either way the rest of the app, and every other app, still route.
//!
//! Timeouts: Ringway has one inactivity timer per connection (no bytes in either direction), so
//! `timeout.client` and `timeout.server` both map onto it, and the larger wins: no connection is cut sooner
//! than either label asks. The connect timeout keeps its default.

use std::collections::BTreeMap;

use ringway_shared::model::{DEFAULT_WEIGHT, WEIGHT_MAX, WEIGHT_MIN};

use crate::model::http::{PathMatch, RouteMatch, route_match};
use crate::model::{ServiceMode, ServiceTimeouts};

/// Labels as key → value; sources turn numbers (Marathon allows `"…timeout.client": 100`) into strings.
pub type Labels = BTreeMap<String, String>;

/// Ringway's per-port prefix.
pub const RINGWAY_PORT_PREFIX: &str = "ringway.port.";
/// proxymatic's per-port prefix, read with the same meaning.
pub const PROXYMATIC_PORT_PREFIX: &str = "com.meltwater.proxymatic.port.";
/// The short, app-wide form: `ringway.maxconn=50`.
pub const RINGWAY_SHORT_PREFIX: &str = "ringway.";
/// marathon-lb's app groups.
pub const GROUP_LABEL: &str = "HAPROXY_GROUP";
/// The `--group` value that takes every app, grouped or not.
pub const ANY_GROUP: &str = "*";
/// Timeout labels are seconds; the model counts milliseconds.
const MS_PER_SECOND: u64 = 1_000;

/// The settings names after the port index.
const SERVICE_PORT: &str = "servicePort";
const WEIGHT: &str = "weight";
const MAXCONN: &str = "maxconn";
const MODE: &str = "mode";
const TIMEOUT_CLIENT: &str = "timeout.client";
const TIMEOUT_SERVER: &str = "timeout.server";

/// What one service port of an app asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSettings {
    /// Overrides the port the source gave, when set.
    pub service_port: Option<u16>,
    pub weight: u16,
    /// `weight=0`: the instances take no new connections.
    pub drain: bool,
    pub maxconn: Option<u32>,
    pub mode: ServiceMode,
    pub timeouts: ServiceTimeouts,
    /// Served on the shared virtual-host port with these hosts and paths (`HAPROXY_<N>_VHOST`, `_PATH`).
    pub vhost: Option<RouteMatch>,
    pub groups: Vec<String>,
}

/// What happened because of a bad label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Consequence {
    DefaultUsed,
    PortSkipped,
}

/// One bad label value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
#[error("label {label}={value:?}: {reason}; {}", match consequence {
    Consequence::DefaultUsed => "the default is used",
    Consequence::PortSkipped => "this port is not routed",
})]
pub struct LabelError {
    pub label: String,
    pub value: String,
    pub reason: String,
    pub consequence: Consequence,
}

/// A port's settings, or `None` when a bad label means the port must not be routed; with every problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortOutcome {
    pub settings: Option<PortSettings>,
    pub problems: Vec<LabelError>,
}

/// Reads the settings of service port `index` from `labels`.
pub fn port_settings(labels: &Labels, index: usize) -> PortOutcome {
    let mut reader = Reader {
        labels,
        index,
        problems: Vec::new(),
        skip: false,
    };
    let service_port = reader.integer(
        SERVICE_PORT,
        1,
        u64::from(u16::MAX),
        Consequence::PortSkipped,
    );
    // 0 is below WEIGHT_MIN on purpose: it is not a weight but "drain".
    let weight = reader.integer(
        WEIGHT,
        u64::from(WEIGHT_MIN) - 1,
        u64::from(WEIGHT_MAX),
        Consequence::DefaultUsed,
    );
    let drain = weight == Some(0);
    let weight = weight
        .filter(|w| *w != 0)
        .map_or(DEFAULT_WEIGHT, |w| w as u16);
    let maxconn = reader
        .integer(MAXCONN, 0, u64::from(u32::MAX), Consequence::PortSkipped)
        .filter(|m| *m != 0)
        .map(|m| m as u32);
    let vhosts = list(get(labels, &format!("HAPROXY_{index}_VHOST")), true);
    let vhost = reader.vhost(vhosts);
    let mode = reader.mode(vhost.is_some());
    let max_seconds = u64::from(u32::MAX) / MS_PER_SECOND;
    let client = reader.integer(TIMEOUT_CLIENT, 1, max_seconds, Consequence::DefaultUsed);
    let server = reader.integer(TIMEOUT_SERVER, 1, max_seconds, Consequence::DefaultUsed);
    let idle_ms = client
        .max(server)
        .map(|seconds| (seconds * MS_PER_SECOND) as u32);
    let settings = PortSettings {
        service_port: service_port.map(|p| p as u16),
        weight,
        drain,
        maxconn,
        mode,
        timeouts: ServiceTimeouts {
            idle_ms,
            server_ms: server.map(|seconds| (seconds * MS_PER_SECOND) as u32),
            ..ServiceTimeouts::default()
        },
        vhost,
        groups: groups(labels, index),
    };
    PortOutcome {
        settings: (!reader.skip).then_some(settings),
        problems: reader.problems,
    }
}

/// The value of `key`, matched exactly, else without regard to case (registrator lowercases Meta keys).
fn get<'a>(labels: &'a Labels, key: &str) -> Option<&'a String> {
    labels.get(key).or_else(|| {
        labels
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The port's groups: `HAPROXY_<N>_GROUP` if set, else `HAPROXY_GROUP`.
fn groups(labels: &Labels, index: usize) -> Vec<String> {
    let per_port = list(get(labels, &format!("HAPROXY_{index}_GROUP")), false);
    if per_port.is_empty() {
        list(get(labels, GROUP_LABEL), false)
    } else {
        per_port
    }
}

/// Whether a port with `groups` is served by a Ringway started with `--group wanted`: `*` takes everything;
/// otherwise the lists must share a group (so an app without a group is taken only by `*`, as in
/// marathon-lb).
pub fn group_accepts(wanted: &[String], groups: &[String]) -> bool {
    wanted.iter().any(|w| w == ANY_GROUP) || groups.iter().any(|g| wanted.contains(g))
}

/// A comma list, trimmed, empty entries dropped; sorted and deduplicated so the result is deterministic.
fn list(value: Option<&String>, lowercase: bool) -> Vec<String> {
    let mut items: Vec<String> = value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    if lowercase {
                        s.to_lowercase()
                    } else {
                        s.to_string()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    items.sort();
    items.dedup();
    items
}

/// Turns Consul-style tags (`key=value`; a tag without `=` is not a setting) into labels.
pub fn from_tags<'a>(tags: impl IntoIterator<Item = &'a String>) -> Labels {
    tags.into_iter()
        .filter_map(|tag| tag.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

struct Reader<'a> {
    labels: &'a Labels,
    index: usize,
    problems: Vec<LabelError>,
    skip: bool,
}

impl Reader<'_> {
    /// The label that sets `name` for this port, most specific first.
    fn find(&self, name: &str) -> Option<(String, &str)> {
        [
            format!("{RINGWAY_PORT_PREFIX}{}.{name}", self.index),
            format!("{PROXYMATIC_PORT_PREFIX}{}.{name}", self.index),
            format!("{RINGWAY_SHORT_PREFIX}{name}"),
        ]
        .into_iter()
        .find_map(|key| get(self.labels, &key).map(|v| (key, v.as_str())))
    }

    fn problem(&mut self, label: String, value: &str, reason: String, consequence: Consequence) {
        if consequence == Consequence::PortSkipped {
            self.skip = true;
        }
        self.problems.push(LabelError {
            label,
            value: value.to_string(),
            reason,
            consequence,
        });
    }

    /// An integer in `min..=max`, or a problem with `consequence`.
    fn integer(&mut self, name: &str, min: u64, max: u64, consequence: Consequence) -> Option<u64> {
        let (label, value) = self.find(name)?;
        let value = value.to_string();
        match value.trim().parse::<i64>() {
            Ok(n) if n >= 0 && (min..=max).contains(&(n as u64)) => Some(n as u64),
            Ok(n) if n < 0 => {
                self.problem(label, &value, "must not be negative".into(), consequence);
                None
            }
            Ok(_) => {
                self.problem(
                    label,
                    &value,
                    format!("must be in {min}..={max}"),
                    consequence,
                );
                None
            }
            Err(_) => {
                self.problem(label, &value, "is not an integer".into(), consequence);
                None
            }
        }
    }

    /// The port's virtual hosts and their paths; a bad host or path skips the port (routing it without
    /// them would send the requests meant for it elsewhere).
    fn vhost(&mut self, vhosts: Vec<String>) -> Option<RouteMatch> {
        let path_key = format!("HAPROXY_{}_PATH", self.index);
        let path_label = get(self.labels, &path_key).cloned();
        let paths: Vec<String> = path_label
            .iter()
            .flat_map(|v| v.split([' ', ',']))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        if vhosts.is_empty() {
            if let Some(value) = path_label.filter(|_| !paths.is_empty()) {
                self.problem(
                    path_key,
                    &value,
                    format!(
                        "routes only with HAPROXY_{}_VHOST (as in marathon-lb)",
                        self.index
                    ),
                    Consequence::DefaultUsed,
                );
            }
            return None;
        }
        match route_match(&vhosts, &paths, PathMatch::Prefix) {
            Ok(route) => Some(route),
            Err(reason) => {
                let (label, value) = if reason.starts_with("paths") {
                    (path_key, path_label.unwrap_or_default())
                } else {
                    (format!("HAPROXY_{}_VHOST", self.index), vhosts.join(","))
                };
                self.problem(label, &value, reason, Consequence::PortSkipped);
                None
            }
        }
    }

    /// The port's mode: Ringway's or proxymatic's label, else marathon-lb's `HAPROXY_<N>_MODE`, else `http`
    /// for a port with virtual hosts (marathon-lb's default), else `tcp`.
    fn mode(&mut self, has_vhost: bool) -> ServiceMode {
        let default = if has_vhost {
            ServiceMode::Http
        } else {
            ServiceMode::Tcp
        };
        let haproxy = format!("HAPROXY_{}_MODE", self.index);
        let Some((label, value)) = self
            .find(MODE)
            .or_else(|| get(self.labels, &haproxy).map(|v| (haproxy.clone(), v.as_str())))
        else {
            return default;
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "tcp" => ServiceMode::Tcp,
            "http" => ServiceMode::Http,
            _ => {
                let value = value.to_string();
                self.problem(
                    label,
                    &value,
                    "expected tcp or http".into(),
                    Consequence::DefaultUsed,
                );
                default
            }
        }
    }
}

#[cfg(test)]
mod tests;
