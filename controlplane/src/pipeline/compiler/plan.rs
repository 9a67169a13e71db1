//! Which listeners and routes the services get: the TCP listeners, the HTTP listeners that HTTP services
//! share, the routes on them, and every conflict decided the same way whatever the input order.
//!
//! Rules (services are taken in name order, so "lower name wins" everywhere):
//! - An address belongs to the protocol of the first service whose own `listen` it is. A service of the
//!   other protocol there, or a second TCP service, loses that listener (merged catalogs never have two TCP
//!   services on one address: the merge made them one). The `--app-id-listen` address is HTTP and only for
//!   app-id routes: a service listening there loses that listener.
//! - An HTTP service is a route on its own address, matching its hosts and paths.
//! - A service with a vhost is also a route on the vhost port (`--vhost-port`), unless that address is a TCP
//!   listener or the service's own HTTP route is there already.
//! - With `--app-id-listen`, every HTTP-mode service with a Marathon app id is a route on that address that
//!   matches `X-Marathon-App-Id: <id>`; of the services of one app, the one on the lowest listen address
//!   (marathon-lb took the app's first port).
//! - On one HTTP listener, a route that claims a (host, path, match, header) an earlier route claimed is left
//!   out whole (it would be ambiguous which service answers).
//! - An HTTP listener's limits come from the services listening there; the first that sets a limit gives
//!   it, a later one that disagrees is told so (the services file refuses that before it gets here).
//!
//! What a service loses is reported; a service that ends up with no listener and no route at all is left
//! out of the snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use ringway_shared::{HeaderMatch, HttpListener, Listener, Route};

use super::{CompileSettings, DroppedService};
use crate::model::http::{Claim, PathMatch, RouteMatch};
use crate::model::{HttpListenerSettings, Service, ServiceMode};

/// marathon-lb's app-id header, lowercase as the snapshot wants header names.
pub const APP_ID_HEADER: &str = "x-marathon-app-id";

/// The listeners and routes of a set of services.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub listeners: Vec<Listener>,
    pub routes: Vec<Route>,
    /// Services with at least one route: their clusters serve HTTP.
    pub http_services: BTreeSet<String>,
    /// Services with neither a listener nor a route.
    pub dropped: Vec<DroppedService>,
    /// What the served services lost: a listener, a route, a listener limit.
    pub left_out: Vec<DroppedService>,
}

/// Who an address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner<'a> {
    Tcp(&'a str),
    Http,
    AppId,
}

/// A route before conflicts are decided.
struct Candidate<'a> {
    listener: SocketAddr,
    service: &'a Service,
    route: &'a RouteMatch,
    header: Option<HeaderMatch>,
}

/// The match of an app-id route: every request (its header decides).
static ANY_REQUEST: RouteMatch = RouteMatch {
    hosts: Vec::new(),
    paths: Vec::new(),
    path_match: PathMatch::Prefix,
};

/// Plans `services` (sorted by name).
pub(super) fn plan(services: &[&Service], settings: &CompileSettings) -> Plan {
    let mut plan = Plan::default();
    let mut problems: BTreeMap<&str, Vec<(SocketAddr, String)>> = BTreeMap::new();
    let mut owners: HashMap<SocketAddr, Owner<'_>> = HashMap::new();
    if let Some(address) = settings.app_id_listen {
        owners.insert(address, Owner::AppId);
    }
    let mut served: BTreeSet<&str> = BTreeSet::new();
    let mut candidates = Vec::new();
    for &service in services {
        let owner = *owners.entry(service.listen).or_insert(match service.mode {
            ServiceMode::Tcp => Owner::Tcp(&service.name),
            ServiceMode::Http => Owner::Http,
        });
        match (service.mode, owner) {
            (ServiceMode::Tcp, Owner::Tcp(name)) if name == service.name => {
                plan.listeners.push(Listener::tcp(
                    service.name.clone(),
                    service.listen,
                    service.name.clone(),
                ));
                served.insert(&service.name);
            }
            (ServiceMode::Http, Owner::Http) => candidates.push(Candidate {
                listener: service.listen,
                service,
                route: &service.route,
                header: None,
            }),
            (_, owner) => problems.entry(&service.name).or_default().push((
                service.listen,
                owner_reason(service.listen, owner, service.mode),
            )),
        }
    }
    for &service in services {
        let Some(vhost) = &service.vhost else {
            continue;
        };
        let at = settings.vhost_listen;
        // A service whose own HTTP listener is the vhost port has its route there already (discovered
        // services take every request on their own port), and one route name per listener is the rule.
        let own_route_covers = service.mode == ServiceMode::Http && service.listen == at;
        match owners.get(&at).copied() {
            _ if own_route_covers => {}
            Some(owner @ (Owner::Tcp(_) | Owner::AppId)) => {
                let reason = format!(
                    "virtual hosts: {}",
                    owner_reason(at, owner, ServiceMode::Http)
                );
                problems
                    .entry(&service.name)
                    .or_default()
                    .push((at, reason));
            }
            Some(Owner::Http) | None => {
                owners.insert(at, Owner::Http);
                candidates.push(Candidate {
                    listener: at,
                    service,
                    route: vhost,
                    header: None,
                });
            }
        }
    }
    if let Some(at) = settings.app_id_listen {
        candidates.extend(app_id_candidates(services, at));
    }
    candidates.sort_by(|a, b| (a.listener, &a.service.name).cmp(&(b.listener, &b.service.name)));
    let mut claims: HashMap<(SocketAddr, Option<&HeaderMatch>, Claim<'_>), &str> = HashMap::new();
    let mut limits: BTreeMap<SocketAddr, HttpListenerSettings> = BTreeMap::new();
    for candidate in &candidates {
        let service = candidate.service;
        let key = |claim| (candidate.listener, candidate.header.as_ref(), claim);
        if let Some((claim, other)) = candidate
            .route
            .claims()
            .find_map(|c| claims.get(&key(c)).map(|other| (c, *other)))
        {
            let reason = format!(
                "route left out: service {other:?} already routes {claim} on {} (the lower name wins)",
                candidate.listener
            );
            problems
                .entry(&service.name)
                .or_default()
                .push((candidate.listener, reason));
            continue;
        }
        for claim in candidate.route.claims() {
            claims.insert(key(claim), &service.name);
        }
        if candidate.header.is_none() && candidate.listener == service.listen {
            let limit = limits.entry(candidate.listener).or_default();
            match limit.combine(service.http_listener) {
                Ok(combined) => *limit = combined,
                Err(key) => problems.entry(&service.name).or_default().push((
                    candidate.listener,
                    format!(
                        "{key} differs from an earlier service's on this listener: not applied"
                    ),
                )),
            }
        }
        served.insert(&service.name);
        plan.http_services.insert(service.name.clone());
        plan.routes.push(Route {
            listener: candidate.listener,
            name: service.name.clone(),
            hosts: candidate.route.hosts.clone(),
            paths: candidate.route.paths.clone(),
            path_match: path_match(candidate.route.path_match),
            header: candidate.header.clone(),
            cluster: service.name.clone(),
        });
    }
    let http_addresses: BTreeSet<SocketAddr> = plan.routes.iter().map(|r| r.listener).collect();
    for address in http_addresses {
        let limit = limits.get(&address).copied().unwrap_or_default();
        let app_id = owners.get(&address) == Some(&Owner::AppId);
        plan.listeners.push(Listener::http(
            format!("{}:{address}", if app_id { "app-id" } else { "http" }),
            address,
            http_listener(limit, app_id),
        ));
    }
    for (service, found) in problems {
        let list = if served.contains(service) {
            &mut plan.left_out
        } else {
            &mut plan.dropped
        };
        list.extend(found.into_iter().map(|(listen, reason)| DroppedService {
            service: service.to_string(),
            listen,
            reason,
        }));
    }
    plan
}

/// The app-id routes on `at`: one per app id, from its HTTP service on the lowest listen address.
fn app_id_candidates<'a>(services: &[&'a Service], at: SocketAddr) -> Vec<Candidate<'a>> {
    let mut by_app: BTreeMap<&str, &Service> = BTreeMap::new();
    for &service in services.iter().filter(|s| s.mode == ServiceMode::Http) {
        let Some(app) = service.app_id.as_deref() else {
            continue;
        };
        let first = by_app.entry(app).or_insert(service);
        if (service.listen, &service.name) < (first.listen, &first.name) {
            *first = service;
        }
    }
    by_app
        .into_iter()
        .map(|(app, service)| Candidate {
            listener: at,
            service,
            route: &ANY_REQUEST,
            header: Some(HeaderMatch {
                name: APP_ID_HEADER.into(),
                value: app.to_string(),
            }),
        })
        .collect()
}

/// Why a `mode` listener on `at` is not to be had.
fn owner_reason(at: SocketAddr, owner: Owner<'_>, mode: ServiceMode) -> String {
    match owner {
        Owner::Tcp(name) if mode == ServiceMode::Tcp => {
            format!("{at} is already the listener of service {name:?} (the lower name wins)")
        }
        Owner::Tcp(name) => format!(
            "{at} is the TCP listener of service {name:?} (the lower name wins; TCP and HTTP cannot share an address)"
        ),
        Owner::Http => format!(
            "{at} is an HTTP listener (the lower name wins; TCP and HTTP cannot share an address)"
        ),
        Owner::AppId => format!("{at} is the --app-id-listen address"),
    }
}

fn path_match(kind: PathMatch) -> ringway_shared::PathMatch {
    match kind {
        PathMatch::Prefix => ringway_shared::PathMatch::Prefix,
        PathMatch::Exact => ringway_shared::PathMatch::Exact,
        PathMatch::Regex => ringway_shared::PathMatch::Regex,
    }
}

fn http_listener(limit: HttpListenerSettings, app_id_routing: bool) -> HttpListener {
    let defaults = HttpListener::default();
    HttpListener {
        max_header_bytes: limit.max_header_bytes.unwrap_or(defaults.max_header_bytes),
        max_headers: limit.max_headers.unwrap_or(defaults.max_headers),
        request_head_ms: limit.request_head_ms.unwrap_or(defaults.request_head_ms),
        keepalive_ms: limit.keepalive_ms.unwrap_or(defaults.keepalive_ms),
        app_id_routing,
    }
}
