//! What every discovery source checks about an entry, and how it reports what it found: one
//! implementation, so a port 0 or an address that does not parse is handled the same whether it came from
//! Marathon, Consul, etcd or registrator.
//!
//! The rule: **one bad entry drops that entry and nothing else**. The rest of its service, and every other
//! service, still route. The log line names the source, the service, the entry (a task id, a Consul
//! service ID, an etcd key) and the field, so an operator can find and fix it:
//!
//! ```text
//! WARN bad entry skipped source="consul" service="web" entry="web-7" field="Service.Port" value="0" reason="0 is not a port"
//! ```
//!
//! Sources re-read their whole view on every change, so everything worth telling an operator about a read
//! (bad entries, bad labels, services sharing a port, host-networked services skipped) goes through
//! [`Notes`], which logs each note once per change rather than on every read.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use tracing::{info, warn};

use crate::model::merge::MergeNote;
use crate::model::notes::OncePerChange;
use crate::sources::labels::LabelError;

/// Why an entry's field is not usable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
#[error("{reason}")]
pub struct EntryError {
    /// The offending value as the source gave it.
    pub value: String,
    pub reason: String,
}

impl EntryError {
    pub fn new(value: impl ToString, reason: impl Into<String>) -> Self {
        Self {
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// A port an instance or a listener can use: 1..=65535.
pub fn port(value: u64) -> Result<u16, EntryError> {
    match u16::try_from(value) {
        Ok(0) => Err(EntryError::new(value, "0 is not a port")),
        Ok(port) => Ok(port),
        Err(_) => Err(EntryError::new(value, "a port must be at most 65535")),
    }
}

/// An address an instance can be reached at: a port in range and an IP that names one host (not
/// `0.0.0.0`, `::`, multicast or broadcast, which would connect somewhere else or nowhere).
pub fn instance_address(address: SocketAddr) -> Result<SocketAddr, EntryError> {
    port(u64::from(address.port())).map_err(|e| EntryError::new(address, e.reason))?;
    let ip = address.ip();
    let unroutable = ip.is_unspecified()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if unroutable {
        return Err(EntryError::new(
            address,
            format!("{ip} does not name one host"),
        ));
    }
    Ok(address)
}

/// Splits `ip:port`, `[v6]:port` or `host:port` into a host (an IP or a name to resolve) and a port.
pub fn host_port(text: &str) -> Result<(String, u16), EntryError> {
    let text = text.trim();
    if let Ok(address) = text.parse::<SocketAddr>() {
        let port = port(u64::from(address.port())).map_err(|e| EntryError::new(text, e.reason))?;
        return Ok((address.ip().to_string(), port));
    }
    let not_host_port = || EntryError::new(text, "not host:port");
    let (host, port_text) = text.rsplit_once(':').ok_or_else(not_host_port)?;
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !valid_host {
        return Err(not_host_port());
    }
    let number: u64 = port_text.parse().map_err(|_| not_host_port())?;
    let port = port(number).map_err(|e| EntryError::new(text, e.reason))?;
    Ok((host.to_string(), port))
}

/// One thing worth telling an operator about a read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Note {
    /// An entry left out.
    BadEntry {
        service: String,
        entry: String,
        field: String,
        error: EntryError,
    },
    /// A label value not used: the default applies, or the port is not routed.
    BadLabel {
        app: String,
        port_index: usize,
        error: LabelError,
    },
    /// Services of this source sharing a listen address, or renamed.
    Merge(MergeNote),
    /// A service not routed because an instance on this host uses its port (host networking).
    HostNetwork {
        service: String,
        port: u16,
        instance: SocketAddr,
    },
}

/// What one source noted in its reads, logged once per change.
#[derive(Debug)]
pub struct Notes {
    source: &'static str,
    round: Vec<Note>,
    reported: OncePerChange<Note>,
}

impl Notes {
    /// Notes of the source named `source` in logs.
    pub fn new(source: &'static str) -> Self {
        Self {
            source,
            round: Vec::new(),
            reported: OncePerChange::default(),
        }
    }

    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Entry `entry` of `service` is left out because its `field` is bad.
    pub fn bad_entry(&mut self, service: &str, entry: &str, field: &str, error: EntryError) {
        self.round.push(Note::BadEntry {
            service: service.to_string(),
            entry: entry.to_string(),
            field: field.to_string(),
            error,
        });
    }

    /// The label problems of port `port_index` of `app`.
    pub fn bad_labels(&mut self, app: &str, port_index: usize, errors: &[LabelError]) {
        self.round
            .extend(errors.iter().cloned().map(|error| Note::BadLabel {
                app: app.to_string(),
                port_index,
                error,
            }));
    }

    /// What merging this source's own services did. Entries of one service that all carry its name (a
    /// Consul service's instances, an etcd service's keys) are its instances, not a merge: no note.
    pub fn merges(&mut self, notes: &[MergeNote]) {
        let instances_of_one = |note: &MergeNote| matches!(note, MergeNote::Merged { kept, from, .. } if from.iter().all(|f| f == kept));
        self.round.extend(
            notes
                .iter()
                .filter(|n| !instances_of_one(n))
                .cloned()
                .map(Note::Merge),
        );
    }

    pub fn host_network(&mut self, service: &str, port: u16, instance: SocketAddr) {
        self.round.push(Note::HostNetwork {
            service: service.to_string(),
            port,
            instance,
        });
    }

    /// The notes of the last finished read, in order.
    pub fn reported(&self) -> impl Iterator<Item = &Note> {
        self.reported.last()
    }

    /// This read's notes so far.
    pub fn pending(&self) -> &[Note] {
        &self.round
    }

    /// Ends a read: logs the notes the previous read did not have.
    pub fn finish(&mut self) {
        let round = std::mem::take(&mut self.round);
        for note in self.reported.news(round) {
            self.log(&note);
        }
    }

    fn log(&self, note: &Note) {
        let source = self.source;
        match note {
            Note::BadEntry {
                service,
                entry,
                field,
                error,
            } => warn!(
                source,
                service,
                entry,
                field,
                value = error.value,
                reason = error.reason,
                "bad entry skipped"
            ),
            Note::BadLabel {
                app,
                port_index,
                error,
            } => warn!(
                source,
                app,
                port_index,
                label = %error.label,
                value = %error.value,
                "bad label on {source} app {app} port {port_index}: {error}"
            ),
            Note::Merge(merge) => info!(source, "{merge}"),
            Note::HostNetwork {
                service,
                port,
                instance,
            } => info!(
                source,
                service,
                port,
                %instance,
                "host-networked service not routed: an instance on this host uses its port {port} \
                 (see --expose-host)"
            ),
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::BadEntry {
                service,
                entry,
                field,
                error,
            } => write!(
                f,
                "service {service} entry {entry}: {field}={:?}: {error}",
                error.value
            ),
            Note::BadLabel {
                app,
                port_index,
                error,
            } => write!(f, "app {app} port {port_index}: {error}"),
            Note::Merge(merge) => merge.fmt(f),
            Note::HostNetwork {
                service,
                port,
                instance,
            } => write!(
                f,
                "service {service} port {port}: {instance} is on this host"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_addresses_are_checked_once_for_every_source() {
        assert_eq!(port(80), Ok(80));
        assert_eq!(port(0).unwrap_err().reason, "0 is not a port");
        assert!(port(70_000).is_err());
        let ok: SocketAddr = "10.0.0.1:31000".parse().unwrap();
        assert_eq!(instance_address(ok), Ok(ok));
        for bad in [
            "10.0.0.1:0",
            "0.0.0.0:80",
            "[::]:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
        ] {
            let error = instance_address(bad.parse().unwrap()).unwrap_err();
            assert_eq!(error.value, bad, "{error}");
        }
    }

    #[test]
    fn host_port_reads_ips_v6_and_names() {
        assert_eq!(host_port("10.0.0.5:31000"), Ok(("10.0.0.5".into(), 31000)));
        assert_eq!(host_port("[::1]:8080"), Ok(("::1".into(), 8080)));
        assert_eq!(
            host_port(" node-1.example:80 "),
            Ok(("node-1.example".into(), 80))
        );
        for bad in [
            "",
            "10.0.0.5",
            "10.0.0.5:0",
            "h:99999",
            ":80",
            "h:x",
            "a b:80",
            "h:-1",
        ] {
            assert!(host_port(bad).is_err(), "{bad:?}");
        }
        assert_eq!(host_port("h:0").unwrap_err().value, "h:0");
    }

    #[test]
    fn a_note_is_logged_once_per_change() {
        let mut notes = Notes::new("consul");
        let error = port(0).unwrap_err();
        for _ in 0..3 {
            notes.bad_entry("web", "web-7", "Service.Port", error.clone());
            assert_eq!(notes.round.len(), 1);
            notes.finish();
            assert!(notes.round.is_empty());
        }
        // The same note again is not news; a new one is.
        notes.bad_entry("web", "web-7", "Service.Port", error.clone());
        notes.bad_entry("web", "web-8", "Service.Port", error.clone());
        let news = notes.reported.news(notes.round.clone());
        assert_eq!(news.len(), 1, "{news:?}");
        assert!(news[0].to_string().contains("web-8"));
    }
}
