//! The rule for combining services into one catalog, used across apps of one source (Marathon apps sharing
//! a service port) and across sources ([`crate::pipeline::merge`], which decides the sources' ranks).
//!
//! Rules, chosen so the result depends only on the inputs and never on arrival order (same inputs, same
//! snapshot hash):
//! - **Same listen address → one service** (TCP), **same listen address and the same route → one
//!   service** (HTTP: HTTP services with different hosts or paths share the listener as separate routes).
//!   Its instances are the union of all of them, which is how canaries work: an app whose label moves it
//!   onto another app's service port joins that service. The settings (name, balance, limits, timeouts,
//!   mode, vhost, app id) come from the first contributor in `(origin rank, origin, name)` order (a later
//!   contributor's vhost is used when the first has none); an instance of a later contributor keeps its own
//!   service's `maxconn` as its per-instance limit. An address listed twice keeps its first entry. A TCP and
//!   an HTTP service on one address stay apart here: the compiler decides (and says) which one is served.
//! - **Same name, different listen addresses → renamed.** The one with the lowest listen address keeps the
//!   name; the others become `name-PORT` (or `name@IP:PORT` if that is taken too).
//!
//! Both are reported as [`MergeNote`]s, which the caller logs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;

use super::catalog::{Catalog, Service, ServiceMode};
use super::http::RouteMatch;

/// Where a service came from, for ordering: a lower rank contributes the settings of a merged service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    pub rank: usize,
    /// A source name, or an app id within a source.
    pub name: String,
}

/// Something the merge did that an operator may want to know.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum MergeNote {
    /// Several services shared `listen` (and, for HTTP, their route); they became `kept`.
    Merged {
        listen: SocketAddr,
        kept: String,
        from: Vec<String>,
    },
    /// `from` clashed with another service's name and is published as `to`.
    Renamed {
        listen: SocketAddr,
        from: String,
        to: String,
    },
}

impl fmt::Display for MergeNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeNote::Merged { listen, kept, from } => write!(
                f,
                "services {} share listen address {listen}: merged into {kept:?}",
                from.join(", ")
            ),
            MergeNote::Renamed { listen, from, to } => write!(
                f,
                "service name {from:?} is used by another listen address; the one on {listen} is published as {to:?}"
            ),
        }
    }
}

/// The merged catalog and what was done to get it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    pub catalog: Catalog,
    pub notes: Vec<MergeNote>,
}

/// Merges services by listen address, then makes names unique, as described in the module docs.
pub fn merge(services: impl IntoIterator<Item = (Origin, Service)>) -> Merged {
    type Key = (SocketAddr, ServiceMode, RouteMatch);
    let mut by_listen: BTreeMap<Key, Vec<(Origin, Service)>> = BTreeMap::new();
    for (origin, service) in services {
        let route = match service.mode {
            ServiceMode::Tcp => RouteMatch::default(),
            ServiceMode::Http => service.route.clone(),
        };
        by_listen
            .entry((service.listen, service.mode, route))
            .or_default()
            .push((origin, service));
    }
    let mut notes = Vec::new();
    let mut merged: Vec<Service> = Vec::with_capacity(by_listen.len());
    for ((listen, _, _), mut group) in by_listen {
        group.sort_by(|(oa, a), (ob, b)| (oa, &a.name).cmp(&(ob, &b.name)));
        let mut contributors = group.into_iter();
        let Some((_, mut first)) = contributors.next() else {
            continue;
        };
        let mut from = vec![first.name.clone()];
        let mut seen: BTreeSet<SocketAddr> = first.instances.iter().map(|i| i.address).collect();
        for (_, other) in contributors {
            from.push(other.name.clone());
            if first.vhost.is_none() {
                first.vhost = other.vhost.clone();
            }
            for mut instance in other.instances {
                if seen.insert(instance.address) {
                    instance.maxconn = instance.maxconn.or(other.maxconn);
                    first.instances.push(instance);
                }
            }
        }
        if from.len() > 1 {
            notes.push(MergeNote::Merged {
                listen,
                kept: first.name.clone(),
                from,
            });
        }
        merged.push(first);
    }
    unique_names(&mut merged, &mut notes);
    merged.sort_by(|a, b| a.name.cmp(&b.name));
    Merged {
        catalog: Catalog { services: merged },
        notes,
    }
}

/// Renames every service whose name an earlier one (by listen address, the order `merged` is in) took.
fn unique_names(services: &mut [Service], notes: &mut Vec<MergeNote>) {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut clashes = Vec::new();
    for (i, service) in services.iter().enumerate() {
        if !taken.insert(service.name.clone()) {
            clashes.push(i);
        }
    }
    for i in clashes {
        let service = &mut services[i];
        let by_port = format!("{}-{}", service.name, service.listen.port());
        let by_address = format!("{}@{}", service.name, service.listen);
        // HTTP services share a listen address, so even `name@IP:PORT` can be taken: then a number.
        let to = [by_port, by_address.clone()]
            .into_iter()
            .chain((2..).map(|n| format!("{by_address}#{n}")))
            .find(|candidate| !taken.contains(candidate))
            .expect("an unbounded sequence of names has a free one");
        taken.insert(to.clone());
        notes.push(MergeNote::Renamed {
            listen: service.listen,
            from: std::mem::replace(&mut service.name, to.clone()),
            to,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(rank: usize, name: &str) -> Origin {
        Origin {
            rank,
            name: name.into(),
        }
    }

    fn service(name: &str, listen: u16, maxconn: Option<u32>, backends: &[u16]) -> Service {
        Service::for_test(
            name,
            SocketAddr::from(([0, 0, 0, 0], listen)),
            maxconn,
            backends
                .iter()
                .map(|p| SocketAddr::from(([10, 0, 0, 1], *p))),
        )
    }

    #[test]
    fn the_same_listen_address_merges_instances_like_a_canary() {
        let main = service("webapp.demo", 1234, Some(150), &[1, 2]);
        let mut canary = service("webapp-canary.demo", 1234, Some(10), &[3, 2]);
        canary.instances[0].weight = 100;
        canary.vhost = Some(RouteMatch::new(
            ["canary.example".to_string()],
            [],
            crate::model::PathMatch::Prefix,
        ));
        let merged = merge([
            (origin(1, "/demo/webapp-canary"), canary),
            (origin(1, "/demo/webapp"), main),
        ]);
        let services = &merged.catalog.services;
        assert_eq!(services.len(), 1);
        let s = &services[0];
        assert_eq!(s.name, "webapp.demo", "settings from the first app by id");
        assert_eq!(s.maxconn, Some(150));
        let ports: Vec<(u16, u16, Option<u32>)> = s
            .instances
            .iter()
            .map(|i| (i.address.port(), i.weight, i.maxconn))
            .collect();
        assert_eq!(
            ports,
            vec![(1, 500, None), (2, 500, None), (3, 100, Some(10))],
            "the canary's own limit rides on its instance; the duplicate address keeps its first entry"
        );
        assert_eq!(
            s.vhost.as_ref().map(|v| v.hosts.clone()),
            Some(vec!["canary.example".to_string()]),
            "the first contributor has no vhost: the canary's is used"
        );
        assert!(matches!(&merged.notes[0], MergeNote::Merged { from, .. } if from.len() == 2));
    }

    #[test]
    fn lower_ranked_origins_give_the_settings() {
        let file = service("from-file", 80, None, &[1]);
        let marathon = service("from-marathon", 80, Some(5), &[2]);
        let merged = merge([
            (origin(1, "marathon"), marathon),
            (origin(0, "file:x"), file),
        ]);
        assert_eq!(merged.catalog.services[0].name, "from-file");
        assert_eq!(merged.catalog.services[0].instances.len(), 2);
    }

    #[test]
    fn name_clashes_are_renamed_deterministically() {
        let a = service("web", 8080, None, &[1]);
        let b = service("web", 9090, None, &[2]);
        let c = service("web-9090", 7070, None, &[3]);
        let merged = merge([
            (origin(2, "consul"), b.clone()),
            (origin(1, "marathon"), a.clone()),
            (origin(0, "x"), c.clone()),
        ]);
        let names: Vec<(&str, u16)> = merged
            .catalog
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.listen.port()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("web", 8080),
                ("web-9090", 7070),
                ("web@0.0.0.0:9090", 9090)
            ]
        );
        assert_eq!(merged.notes.len(), 1);
        assert!(
            merged.notes[0]
                .to_string()
                .contains("published as \"web@0.0.0.0:9090\"")
        );
    }

    fn http(mut s: Service, hosts: &[&str]) -> Service {
        s.mode = ServiceMode::Http;
        s.route = RouteMatch::new(
            hosts.iter().map(|h| h.to_string()),
            [],
            crate::model::PathMatch::Prefix,
        );
        s
    }

    #[test]
    fn http_services_on_one_address_merge_only_when_their_routes_are_equal() {
        let shop = http(service("shop", 80, None, &[1]), &["shop.example"]);
        let canary = http(service("shop-canary", 80, None, &[2]), &["shop.example"]);
        let blog = http(service("blog", 80, None, &[3]), &["blog.example"]);
        let tcp = service("raw", 80, None, &[4]);
        let merged = merge([
            (origin(1, "a"), shop),
            (origin(1, "b"), canary),
            (origin(1, "c"), blog),
            (origin(1, "d"), tcp),
        ]);
        let services: Vec<(&str, usize)> = merged
            .catalog
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.instances.len()))
            .collect();
        assert_eq!(services, vec![("blog", 1), ("raw", 1), ("shop", 2)]);
    }

    #[test]
    fn http_services_of_one_name_on_one_address_get_distinct_names() {
        let one = http(service("api", 80, None, &[1]), &["a.example"]);
        let two = http(service("api", 80, None, &[2]), &["b.example"]);
        let three = http(service("api", 80, None, &[3]), &["c.example"]);
        let merged = merge([
            (origin(1, "x"), one),
            (origin(1, "y"), two),
            (origin(1, "z"), three),
        ]);
        let names: Vec<&str> = merged
            .catalog
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, vec!["api", "api-80", "api@0.0.0.0:80"]);
    }

    #[test]
    fn the_result_does_not_depend_on_input_order() {
        let inputs = vec![
            (origin(1, "marathon"), service("a", 1, Some(3), &[5, 4])),
            (origin(4, "registrator"), service("b", 1, None, &[6, 4])),
            (origin(2, "consul"), service("a", 2, None, &[7])),
            (origin(3, "etcd-v3"), service("c", 3, None, &[8])),
        ];
        let forward = merge(inputs.clone());
        let mut reversed = inputs;
        reversed.reverse();
        assert_eq!(merge(reversed), forward);
    }
}
