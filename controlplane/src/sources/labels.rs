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
//! | `….N.mode` | `tcp` or `http` | default (`tcp`) used |
//! | `….N.timeout.client`, `….N.timeout.server` | seconds of inactivity, ≥ 1 | default used |
//! | `HAPROXY_N_VHOST` | virtual hosts (comma list) | — |
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
    pub vhosts: Vec<String>,
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
    let mode = reader.mode();
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
            ..ServiceTimeouts::default()
        },
        vhosts: list(get(labels, &format!("HAPROXY_{index}_VHOST")), true),
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

    fn mode(&mut self) -> ServiceMode {
        let Some((label, value)) = self.find(MODE) else {
            return ServiceMode::Tcp;
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
                ServiceMode::Tcp
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn proxymatics_labels_from_its_fixture() {
        // The labels of proxymatic's testLoadBalancerOptions fixture (numbers given as strings by the parser).
        let l = labels(&[
            ("com.meltwater.proxymatic.port.0.weight", "100"),
            ("com.meltwater.proxymatic.port.0.maxconn", "150"),
            ("com.meltwater.proxymatic.port.0.mode", "http"),
            ("com.meltwater.proxymatic.port.0.timeout.client", "100"),
            ("com.meltwater.proxymatic.port.0.timeout.server", "200"),
        ]);
        let out = port_settings(&l, 0);
        assert!(out.problems.is_empty());
        let s = out.settings.unwrap();
        assert_eq!(
            (s.weight, s.maxconn, s.mode),
            (100, Some(150), ServiceMode::Http)
        );
        assert_eq!(
            s.timeouts.idle_ms,
            Some(200_000),
            "the larger of client and server"
        );
        assert_eq!(s.timeouts.connect_ms, None);
        // Port 1 has no labels: defaults.
        let other = port_settings(&l, 1).settings.unwrap();
        assert_eq!(
            (other.weight, other.maxconn, other.mode),
            (DEFAULT_WEIGHT, None, ServiceMode::Tcp)
        );
    }

    #[test]
    fn ringway_port_labels_win_over_proxymatic_and_the_short_form_is_a_default() {
        let l = labels(&[
            ("ringway.port.1.weight", "7"),
            ("com.meltwater.proxymatic.port.1.weight", "9"),
            ("ringway.weight", "3"),
            ("ringway.maxconn", "50"),
            ("ringway.port.0.servicePort", "1234"),
        ]);
        let p0 = port_settings(&l, 0).settings.unwrap();
        let p1 = port_settings(&l, 1).settings.unwrap();
        assert_eq!(
            (p0.weight, p0.maxconn, p0.service_port),
            (3, Some(50), Some(1234))
        );
        assert_eq!(
            (p1.weight, p1.maxconn, p1.service_port),
            (7, Some(50), None)
        );
    }

    #[test]
    fn bad_values_use_the_default_or_skip_the_port() {
        let cases = [
            (
                "weight",
                "abc",
                Consequence::DefaultUsed,
                "is not an integer",
            ),
            (
                "weight",
                "1001",
                Consequence::DefaultUsed,
                "must be in 0..=1000",
            ),
            (
                "weight",
                "2.5",
                Consequence::DefaultUsed,
                "is not an integer",
            ),
            (
                "mode",
                "udp",
                Consequence::DefaultUsed,
                "expected tcp or http",
            ),
            (
                "timeout.client",
                "-1",
                Consequence::DefaultUsed,
                "must not be negative",
            ),
            (
                "maxconn",
                "-3",
                Consequence::PortSkipped,
                "must not be negative",
            ),
            (
                "maxconn",
                "lots",
                Consequence::PortSkipped,
                "is not an integer",
            ),
            (
                "servicePort",
                "70000",
                Consequence::PortSkipped,
                "must be in 1..=65535",
            ),
        ];
        for (name, value, consequence, reason) in cases {
            let key = format!("com.meltwater.proxymatic.port.0.{name}");
            let out = port_settings(&labels(&[(&key, value)]), 0);
            assert_eq!(out.problems.len(), 1, "{name}={value}");
            let p = &out.problems[0];
            assert_eq!((p.label.as_str(), p.value.as_str()), (key.as_str(), value));
            assert_eq!(p.consequence, consequence, "{name}={value}");
            assert!(p.reason.contains(reason), "{name}={value}: {}", p.reason);
            match consequence {
                Consequence::PortSkipped => assert!(out.settings.is_none(), "{name}={value}"),
                Consequence::DefaultUsed => {
                    let s = out.settings.unwrap();
                    assert_eq!(
                        (s.weight, s.mode, s.timeouts.idle_ms),
                        (DEFAULT_WEIGHT, ServiceMode::Tcp, None)
                    );
                }
            }
        }
    }

    #[test]
    fn weight_0_drains_and_maxconn_0_is_unlimited_as_in_proxymatic() {
        let l = labels(&[
            ("com.meltwater.proxymatic.port.0.weight", "0"),
            ("com.meltwater.proxymatic.port.0.maxconn", "0"),
        ]);
        let out = port_settings(&l, 0);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let s = out.settings.unwrap();
        assert!(s.drain, "weight 0: no new connections");
        assert_eq!(
            s.weight, DEFAULT_WEIGHT,
            "the model never carries a weight of 0"
        );
        assert_eq!(s.maxconn, None, "maxconn 0: no limit, never Some(0)");
        let normal = port_settings(&labels(&[("ringway.weight", "1")]), 0)
            .settings
            .unwrap();
        assert!(!normal.drain);
        assert_eq!(normal.weight, 1);
    }

    #[test]
    fn keys_match_without_regard_to_case_as_registrator_lowercases_meta() {
        // registrator: -e SERVICE_ringway.servicePort=8080 -e SERVICE_HAPROXY_GROUP=external
        let l = labels(&[
            ("ringway.serviceport", "8080"),
            ("haproxy_group", "external"),
            ("haproxy_0_vhost", "Web.Example"),
        ]);
        let s = port_settings(&l, 0).settings.unwrap();
        assert_eq!(s.service_port, Some(8080));
        assert_eq!(s.groups, vec!["external"]);
        assert_eq!(s.vhosts, vec!["web.example"]);
        // The documented spelling wins over one that differs only in case.
        let both = labels(&[("HAPROXY_GROUP", "a"), ("haproxy_group", "b")]);
        assert_eq!(port_settings(&both, 0).settings.unwrap().groups, vec!["a"]);
    }

    #[test]
    fn vhosts_and_groups_follow_marathon_lb() {
        let l = labels(&[
            ("HAPROXY_GROUP", "external, internal"),
            ("HAPROXY_1_GROUP", "special"),
            ("HAPROXY_0_VHOST", "MyVhost.com,other.example"),
        ]);
        let p0 = port_settings(&l, 0).settings.unwrap();
        let p1 = port_settings(&l, 1).settings.unwrap();
        assert_eq!(p0.vhosts, vec!["myvhost.com", "other.example"]);
        assert_eq!(p0.groups, vec!["external", "internal"]);
        assert_eq!(
            p1.groups,
            vec!["special"],
            "a per-port group overrides the app's"
        );

        let wanted = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(group_accepts(&wanted(&["external"]), &p0.groups));
        assert!(!group_accepts(&wanted(&["external"]), &p1.groups));
        assert!(
            group_accepts(&wanted(&["*"]), &[]),
            "* takes apps without a group"
        );
        assert!(!group_accepts(&wanted(&["external"]), &[]));
        assert!(group_accepts(&wanted(&["a", "special"]), &p1.groups));
    }

    #[test]
    fn tags_become_labels() {
        let tags = vec![
            "primary".to_string(),
            "ringway.maxconn=50".into(),
            "HAPROXY_GROUP = ext".into(),
        ];
        let l = from_tags(&tags);
        assert_eq!(l.len(), 2);
        assert_eq!(l["ringway.maxconn"], "50");
        assert_eq!(l["HAPROXY_GROUP"], "ext");
    }
}
