//! The static services file: TOML in, [`Catalog`] out, or a report of everything wrong with it.
//!
//! ```toml
//! [[service]]
//! name = "web"
//! listen = "127.0.0.1:18080"      # address the dataplane accepts on
//! balance = "round-robin"         # or "least-conn"; default round-robin
//! maxconn = 100                   # per backend, before division by the group size; absent = no limit
//! max_connections = 8192          # total for the service; absent = --max-connections
//! timeout_connect_ms = 2000       # absent = the model's defaults
//! timeout_idle_ms = 60000
//! timeout_queue_ms = 5000
//! backends = [ { address = "127.0.0.1:19001", weight = 500 }, { address = "127.0.0.1:19002", state = "draining" } ]
//!
//! [[service]]
//! name = "shop"
//! mode = "http"                   # default "tcp"; HTTP services may share one listen address
//! listen = "0.0.0.0:80"
//! hosts = ["shop.example.com"]    # also paths, path_match, timeout_server_ms, … (docs/configuration.md)
//! backends = [ { address = "10.0.0.5:8080" } ]
//! ```
//!
//! The HTTP keys and the checks between services that share an address are in [`http`].
//!
//! An operator fixing a file needs to know *where* each mistake is, so every problem carries the file, line,
//! column and field (`services.toml:7:10: service "web" backends[0].weight: 0 is outside 1..=1000`), and all
//! problems are reported at once rather than one per reload.
//!
//! How: the document is first parsed into toml's spanned tree ([`DeTable`]), so syntax errors stop early with
//! a position. Each `[[service]]` is then deserialized on its own (so one bad service does not hide the
//! problems of the next) into structs whose validated fields are [`Spanned`]; type errors from serde are
//! mapped back to a field path by looking up their span in the tree. Numbers are read as `i64` so that `0`,
//! negative and too-large values reach our own range checks and messages.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;

use ringway_shared::model::{DEFAULT_WEIGHT, WEIGHT_MAX, WEIGHT_MIN};
use ringway_shared::{BackendState, Balance};
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::model::http::Claim;
use crate::model::{
    Catalog, HttpListenerSettings, Instance, RouteMatch, Service, ServiceMode, ServiceTimeouts,
};

mod http;

/// The only top-level key: an array of service tables.
const SERVICE_KEY: &str = "service";

/// One thing wrong with the file, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Where in the document, e.g. `service "web" backends[0].weight`.
    pub field: String,
    pub message: String,
}

/// Why a services file gave no catalog.
#[derive(Debug, thiserror::Error)]
pub enum ServicesFileError {
    #[error("cannot read services file {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// One line per problem, each `FILE:LINE:COLUMN: FIELD: MESSAGE`.
    #[error("{}", render(file, problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl ServicesFileError {
    /// The problems found, empty for a read error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ServicesFileError::Invalid { problems, .. } => problems,
            ServicesFileError::Read { .. } => &[],
        }
    }
}

fn render(file: &str, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{file}:{}:{}: {}: {}", p.line, p.column, p.field, p.message))
        .collect();
    lines.join("\n")
}

/// Reads and parses the file at `path`; messages name the file as `path` is spelled.
pub fn load(path: &Path) -> Result<Catalog, ServicesFileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ServicesFileError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&text, &file)
}

/// Parses services-file text; `file` is the name used in messages.
pub fn parse(text: &str, file: &str) -> Result<Catalog, ServicesFileError> {
    let mut checker = Checker {
        text,
        problems: Vec::new(),
    };
    if text.trim().is_empty() {
        // Most likely a file caught between truncate and write; publishing "no services" would take every
        // listener down. A file meant to be empty says so with a comment.
        checker.report(
            0..0,
            "document",
            "file is empty (a partial write?); a file with no services needs at least a comment",
        );
        return Err(ServicesFileError::Invalid {
            file: file.to_string(),
            problems: checker.problems,
        });
    }
    let catalog = match DeTable::parse(text) {
        Ok(doc) => checker.document(doc.get_ref()),
        Err(e) => {
            checker.syntax(&e);
            Catalog::default()
        }
    };
    if checker.problems.is_empty() {
        Ok(catalog)
    } else {
        Err(ServicesFileError::Invalid {
            file: file.to_string(),
            problems: checker.problems,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    listen: Spanned<String>,
    balance: Option<Spanned<String>>,
    maxconn: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    timeout_connect_ms: Option<Spanned<i64>>,
    timeout_idle_ms: Option<Spanned<i64>>,
    timeout_queue_ms: Option<Spanned<i64>>,
    mode: Option<Spanned<String>>,
    hosts: Option<Spanned<Vec<Spanned<String>>>>,
    paths: Option<Spanned<Vec<Spanned<String>>>>,
    path_match: Option<Spanned<String>>,
    timeout_server_ms: Option<Spanned<i64>>,
    timeout_tunnel_ms: Option<Spanned<i64>>,
    http_max_header_bytes: Option<Spanned<i64>>,
    http_max_headers: Option<Spanned<i64>>,
    timeout_request_head_ms: Option<Spanned<i64>>,
    timeout_keepalive_ms: Option<Spanned<i64>>,
    #[serde(default)]
    backends: Vec<Spanned<RawBackend>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: Spanned<String>,
    weight: Option<Spanned<i64>>,
    state: Option<Spanned<String>>,
}

/// What the cross-service checks need of every service that deserialized, valid or not, so that a
/// duplicate is reported even next to other mistakes.
struct Identity {
    name: String,
    name_span: Range<usize>,
    listen: Option<SocketAddr>,
    listen_span: Range<usize>,
    mode: ServiceMode,
    /// HTTP: the route, when its hosts and paths are valid (`None` leaves the overlap check out).
    route: Option<RouteMatch>,
    listener: HttpListenerSettings,
}

/// A deserialized service: its identity, and the service itself if it passed its own checks.
struct Checked {
    identity: Identity,
    service: Option<Service>,
}

struct Checker<'t> {
    text: &'t str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let (line, column) = position(self.text, span.start);
        self.problems.push(Problem {
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        position(self.text, span.start).0
    }

    fn syntax(&mut self, error: &toml::de::Error) {
        let offset = error.span().map_or(0, |s| s.start);
        let field = key_on_line(self.text, offset).unwrap_or_else(|| "document".to_string());
        self.report(
            offset..offset,
            field,
            format!("invalid TOML: {}", error.message()),
        );
    }

    fn document(&mut self, doc: &DeTable<'_>) -> Catalog {
        let mut checked = Vec::new();
        for (key, value) in doc.iter() {
            if key.get_ref() != SERVICE_KEY {
                self.report(
                    key.span(),
                    key.get_ref().to_string(),
                    format!("unknown key, expected `{SERVICE_KEY}` ([[service]] tables)"),
                );
                continue;
            }
            let DeValue::Array(items) = value.get_ref() else {
                self.report(
                    value.span(),
                    SERVICE_KEY,
                    format!(
                        "expected [[service]] tables, found {}",
                        value.get_ref().type_str()
                    ),
                );
                continue;
            };
            for (index, item) in items.iter().enumerate() {
                if let Some(c) = self.service(index, item) {
                    checked.push(c);
                }
            }
        }
        self.cross_check(checked.iter().map(|c| &c.identity));
        self.problems.sort_by_key(|p| (p.line, p.column));
        Catalog {
            services: checked.into_iter().filter_map(|c| c.service).collect(),
        }
    }

    fn service(&mut self, index: usize, item: &Spanned<DeValue<'_>>) -> Option<Checked> {
        let fallback_label = service_label(item.get_ref(), index);
        let raw = match RawService::deserialize(ValueDeserializer::from(item.clone())) {
            Ok(raw) => raw,
            Err(e) => {
                let span = e.span().unwrap_or_else(|| item.span());
                let field = match path_at(item.get_ref(), &span) {
                    Some(path) => format!("{fallback_label} {path}"),
                    None => fallback_label,
                };
                self.report(span, field, tidy_serde_message(e.message()));
                return None;
            }
        };
        let label = if raw.name.get_ref().is_empty() {
            format!("service[{index}]")
        } else {
            format!("service {:?}", raw.name.get_ref())
        };
        let before = self.problems.len();

        if raw.name.get_ref().trim().is_empty() {
            self.report(
                raw.name.span(),
                format!("{label} name"),
                "must not be empty",
            );
        }
        let listen = self.address(&raw.listen, &format!("{label} listen"));
        let balance = match &raw.balance {
            None => Balance::RoundRobin,
            Some(b) => match b.get_ref().as_str() {
                "round-robin" | "roundrobin" => Balance::RoundRobin,
                "least-conn" | "leastconn" => Balance::LeastConn,
                other => {
                    self.report(
                        b.span(),
                        format!("{label} balance"),
                        format!("expected \"round-robin\" or \"least-conn\", got {other:?}"),
                    );
                    Balance::RoundRobin
                }
            },
        };
        let maxconn = raw.maxconn.as_ref().and_then(|m| {
            self.at_least_one(
                m,
                &format!("{label} maxconn"),
                " (0 never means unlimited: omit maxconn for no per-backend limit)",
            )
        });
        let max_connections = raw
            .max_connections
            .as_ref()
            .and_then(|m| self.at_least_one(m, &format!("{label} max_connections"), ""));
        let mut timeout = |value: &Option<Spanned<i64>>, name: &str| {
            value
                .as_ref()
                .and_then(|t| self.at_least_one(t, &format!("{label} {name}"), ""))
        };
        let mut timeouts = ServiceTimeouts {
            connect_ms: timeout(&raw.timeout_connect_ms, "timeout_connect_ms"),
            idle_ms: timeout(&raw.timeout_idle_ms, "timeout_idle_ms"),
            queue_ms: timeout(&raw.timeout_queue_ms, "timeout_queue_ms"),
            ..ServiceTimeouts::default()
        };
        let http = self.http(&label, &raw);
        timeouts.server_ms = http.server_ms;
        timeouts.tunnel_ms = http.tunnel_ms;
        let instances = self.backends(&label, &raw.backends);

        let identity = Identity {
            name: raw.name.get_ref().clone(),
            name_span: raw.name.span(),
            listen,
            listen_span: raw.listen.span(),
            mode: http.mode,
            route: http.route.clone(),
            listener: http.listener,
        };
        let service = match listen {
            Some(listen) if self.problems.len() == before => Some(Service {
                name: identity.name.clone(),
                listen,
                balance,
                maxconn,
                max_connections,
                timeouts,
                mode: http.mode,
                route: http.route.unwrap_or_default(),
                vhost: None,
                app_id: None,
                http_listener: http.listener,
                instances,
            }),
            _ => None,
        };
        Some(Checked { identity, service })
    }

    fn backends(&mut self, label: &str, raw: &[Spanned<RawBackend>]) -> Vec<Instance> {
        let mut instances = Vec::with_capacity(raw.len());
        let mut first_index: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, backend) in raw.iter().enumerate() {
            let at = format!("{label} backends[{i}]");
            let backend = backend.get_ref();
            let address = self.address(&backend.address, &format!("{at}.address"));
            let weight = match &backend.weight {
                None => Some(DEFAULT_WEIGHT),
                Some(w) => self.weight(w, &format!("{at}.weight")),
            };
            let state = match &backend.state {
                None => Some(BackendState::Active),
                Some(s) => match s.get_ref().as_str() {
                    "active" => Some(BackendState::Active),
                    "draining" => Some(BackendState::Draining),
                    other => {
                        self.report(
                            s.span(),
                            format!("{at}.state"),
                            format!("expected \"active\" or \"draining\", got {other:?}"),
                        );
                        None
                    }
                },
            };
            if let Some(address) = address {
                if let Some(first) = first_index.get(&address) {
                    self.report(
                        backend.address.span(),
                        format!("{at}.address"),
                        format!("{address} is already backends[{first}] of this service"),
                    );
                    continue;
                }
                first_index.insert(address, i);
            }
            if let (Some(address), Some(weight), Some(state)) = (address, weight, state) {
                instances.push(Instance {
                    address,
                    weight,
                    maxconn: None,
                    state,
                });
            }
        }
        instances
    }

    /// Names must be unique over the whole file; a listen address belongs to one TCP service, or to HTTP
    /// services whose routes do not overlap and whose listener settings agree.
    fn cross_check<'a>(&mut self, services: impl Iterator<Item = &'a Identity>) {
        let mut names: HashMap<&str, &Identity> = HashMap::new();
        let mut listens: HashMap<SocketAddr, Vec<&Identity>> = HashMap::new();
        // Every host and path already routed on an address, and by whom: one lookup per claim, so a
        // listener with thousands of virtual hosts is checked in linear time.
        let mut claimed: HashMap<(SocketAddr, Claim<'a>), &'a Identity> = HashMap::new();
        for s in services {
            let label = format!("service {:?}", s.name);
            if s.name.is_empty() {
                // Already reported as empty.
            } else if let Some(first) = names.get(s.name.as_str()) {
                let line = self.line_of(&first.name_span);
                self.report(
                    s.name_span.clone(),
                    format!("{label} name"),
                    format!("duplicate service name, first defined at line {line}"),
                );
            } else {
                names.insert(&s.name, s);
            }
            let Some(listen) = s.listen else { continue };
            let sharing = listens.entry(listen).or_default();
            let claims = || s.route.iter().flat_map(|r| r.claims());
            let clash = sharing
                .iter()
                .find_map(|first| http::listen_clash(first, s).map(|c| (*first, c)))
                .or_else(|| {
                    claims().find_map(|c| {
                        let first = *claimed.get(&(listen, c))?;
                        Some((first, http::Clash::Claimed(c)))
                    })
                });
            match clash {
                Some((first, clash)) => {
                    let line = position(self.text, first.listen_span.start).0;
                    let other = format!("service {:?} (line {line})", first.name);
                    self.report(
                        s.listen_span.clone(),
                        format!("{label} listen"),
                        clash.message(listen, &other),
                    )
                }
                None => {
                    sharing.push(s);
                    for c in claims() {
                        claimed.entry((listen, c)).or_insert(s);
                    }
                }
            }
        }
    }

    /// An `IP:port` with a non-zero port. Host names are not resolved: a static file that depends on DNS at
    /// reload time would change meaning without being edited.
    fn address(&mut self, value: &Spanned<String>, field: &str) -> Option<SocketAddr> {
        match value.get_ref().parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                self.report(value.span(), field, format!("port must not be 0 in {addr}"));
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                self.report(
                    value.span(),
                    field,
                    format!("expected IP:port, got {:?}", value.get_ref()),
                );
                None
            }
        }
    }

    fn weight(&mut self, value: &Spanned<i64>, field: &str) -> Option<u16> {
        let w = *value.get_ref();
        match u16::try_from(w) {
            Ok(w) if (WEIGHT_MIN..=WEIGHT_MAX).contains(&w) => Some(w),
            _ => {
                self.report(
                    value.span(),
                    field,
                    format!("{w} is outside {WEIGHT_MIN}..={WEIGHT_MAX}"),
                );
                None
            }
        }
    }

    fn at_least_one(&mut self, value: &Spanned<i64>, field: &str, hint: &str) -> Option<u32> {
        let v = *value.get_ref();
        if v < 1 {
            self.report(
                value.span(),
                field,
                format!("must be at least 1, got {v}{hint}"),
            );
            return None;
        }
        match u32::try_from(v) {
            Ok(v) => Some(v),
            Err(_) => {
                self.report(
                    value.span(),
                    field,
                    format!("{v} is larger than {}", u32::MAX),
                );
                None
            }
        }
    }
}

/// `service "web"` when the table has a usable name, `service[3]` otherwise.
fn service_label(item: &DeValue<'_>, index: usize) -> String {
    match item.get("name").and_then(|n| n.get_ref().as_str()) {
        Some(name) if !name.is_empty() => format!("service {name:?}"),
        _ => format!("service[{index}]"),
    }
}

/// The deepest key path (`backends[1].weight`) whose key or value span holds `target`.
///
/// Tables introduced by a `[[header]]` span only their header, so children are searched before the parent
/// is taken as the answer.
fn path_at(value: &DeValue<'_>, target: &Range<usize>) -> Option<String> {
    let holds = |span: Range<usize>| span.start <= target.start && target.end <= span.end;
    match value {
        DeValue::Table(table) => table.iter().find_map(|(key, child)| {
            let name = key.get_ref();
            match path_at(child.get_ref(), target) {
                Some(sub) if sub.starts_with('[') => Some(format!("{name}{sub}")),
                Some(sub) => Some(format!("{name}.{sub}")),
                None if holds(key.span()) || holds(child.span()) => Some(name.to_string()),
                None => None,
            }
        }),
        DeValue::Array(items) => {
            items
                .iter()
                .enumerate()
                .find_map(|(i, child)| match path_at(child.get_ref(), target) {
                    Some(sub) if sub.starts_with('[') => Some(format!("[{i}]{sub}")),
                    Some(sub) => Some(format!("[{i}].{sub}")),
                    None if holds(child.span()) => Some(format!("[{i}]")),
                    None => None,
                })
        }
        _ => None,
    }
}

/// serde says `expected i64`; an operator reads `expected an integer`.
fn tidy_serde_message(message: &str) -> String {
    message.replace("expected i64", "expected an integer")
}

/// For a syntax error, the key being assigned on the error's line, if any: the best field name there is.
fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let offset = clamp_to_char_boundary(text, offset);
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[start..end].trim();
    if line.starts_with('[') {
        return Some(line.to_string());
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty()).then(|| key.to_string())
}

/// 1-based line and character column of byte `offset`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = clamp_to_char_boundary(text, offset);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

fn clamp_to_char_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.line, self.column, self.field, self.message
        )
    }
}

#[cfg(test)]
mod tests;
