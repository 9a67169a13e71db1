//! The compiler's TCP rules: limits, defaults, order, services left out.

use super::*;
use ringway_shared::model::DEFAULT_IDLE_TIMEOUT_MS;
use std::net::SocketAddr;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn settings(group: u32) -> CompileSettings {
    CompileSettings::new(nz(group), nz(8192))
}

fn service(name: &str, port: u16, maxconn: Option<u32>, backends: &[u16]) -> Service {
    Service::for_test(
        name,
        SocketAddr::from(([127, 0, 0, 1], port)),
        maxconn,
        backends
            .iter()
            .map(|p| SocketAddr::from(([10, 0, 0, 1], *p))),
    )
}

#[test]
fn per_backend_limit_divides_and_never_reaches_zero() {
    assert_eq!(per_backend_limit(Some(4), nz(2)), Some(2));
    assert_eq!(per_backend_limit(Some(5), nz(2)), Some(2));
    assert_eq!(per_backend_limit(Some(1), nz(3)), Some(1));
    assert_eq!(per_backend_limit(Some(100), nz(1)), Some(100));
    assert_eq!(per_backend_limit(None, nz(3)), None);
}

#[test]
fn compiled_backends_carry_the_divided_limit() {
    let catalog = Catalog {
        services: vec![
            service("a", 18080, Some(4), &[1, 2]),
            service("b", 18081, Some(1), &[1]),
            service("c", 18082, None, &[1]),
        ],
    };
    let snapshot = compile(&catalog, &settings(2)).unwrap().snapshot;
    let limits = |name: &str| -> Vec<Option<u32>> {
        snapshot
            .cluster(name)
            .unwrap()
            .backends
            .iter()
            .map(|b| b.max_connections)
            .collect()
    };
    assert_eq!(limits("a"), vec![Some(2), Some(2)]);
    assert_eq!(limits("b"), vec![Some(1)]);
    assert_eq!(limits("c"), vec![None]);
}

#[test]
fn an_instance_limit_overrides_the_service_limit() {
    let mut svc = service("a", 18080, Some(10), &[1, 2]);
    svc.instances[1].maxconn = Some(4);
    let snapshot = compile(
        &Catalog {
            services: vec![svc],
        },
        &settings(2),
    )
    .unwrap()
    .snapshot;
    let limits: Vec<Option<u32>> = snapshot.clusters[0]
        .backends
        .iter()
        .map(|b| b.max_connections)
        .collect();
    assert_eq!(limits, vec![Some(5), Some(2)]);
}

#[test]
fn defaults_fill_what_the_catalog_leaves_open() {
    let mut svc = service("a", 18080, None, &[1]);
    svc.timeouts.connect_ms = Some(7);
    let snapshot = compile(
        &Catalog {
            services: vec![svc.clone()],
        },
        &settings(1),
    )
    .unwrap()
    .snapshot;
    let cluster = snapshot.cluster("a").unwrap();
    assert_eq!(cluster.max_connections, 8192);
    assert_eq!(cluster.timeouts.connect_ms, 7);
    assert_eq!(cluster.timeouts.idle_ms, DEFAULT_IDLE_TIMEOUT_MS);
    assert_eq!(snapshot.listeners[0].cluster.as_deref(), Some("a"));

    svc.max_connections = Some(3);
    let snapshot = compile(
        &Catalog {
            services: vec![svc],
        },
        &settings(1),
    )
    .unwrap()
    .snapshot;
    assert_eq!(snapshot.cluster("a").unwrap().max_connections, 3);
}

#[test]
fn order_of_the_catalog_does_not_change_the_snapshot() {
    let forward = Catalog {
        services: vec![
            service("a", 18080, Some(10), &[3, 1, 2]),
            service("b", 18081, None, &[9, 8]),
        ],
    };
    let mut backward = forward.clone();
    backward.services.reverse();
    for s in &mut backward.services {
        s.instances.reverse();
    }
    let x = compile(&forward, &settings(1)).unwrap().snapshot;
    let y = compile(&backward, &settings(1)).unwrap().snapshot;
    assert_eq!(x, y);
    assert_eq!(x.hash, y.hash);
    assert_eq!(x.clusters[0].name, "a");
    let ports: Vec<u16> = x.clusters[0]
        .backends
        .iter()
        .map(|b| b.address.port())
        .collect();
    assert_eq!(ports, vec![1, 2, 3]);

    let mut changed = forward.clone();
    changed.services[0].instances[0].weight = 1;
    assert_ne!(
        compile(&changed, &settings(1)).unwrap().snapshot.hash,
        x.hash
    );
}

#[test]
fn a_service_that_breaks_an_invariant_on_its_own_is_left_out_and_the_rest_compiles() {
    let mut port_zero = service("zero", 18081, None, &[0, 1]);
    port_zero.instances[1].weight = 500;
    let mut heavy = service("heavy", 18082, None, &[1]);
    heavy.instances[0].weight = 5000;
    let catalog = Catalog {
        services: vec![service("a", 18080, None, &[1]), port_zero, heavy],
    };
    let compiled = compile(&catalog, &settings(1)).unwrap();
    let names: Vec<&str> = compiled
        .snapshot
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, vec!["a"]);
    let dropped: Vec<(&str, bool)> = compiled
        .dropped
        .iter()
        .map(|d| {
            (
                d.service.as_str(),
                d.reason.contains(".address") || d.reason.contains(".weight"),
            )
        })
        .collect();
    assert_eq!(dropped, vec![("heavy", true), ("zero", true)]);
    assert!(compiled.dropped[1].reason.contains("port must not be 0"));
}

#[test]
fn a_second_service_on_one_address_loses_it_to_the_lower_name() {
    // Merged catalogs never have this (the merge makes them one service); a compiler given it still
    // publishes a valid snapshot and says why "b" is not served.
    let catalog = Catalog {
        services: vec![
            service("b", 18080, None, &[1]),
            service("a", 18080, None, &[1]),
        ],
    };
    let compiled = compile(&catalog, &settings(1)).unwrap();
    assert_eq!(compiled.snapshot.listeners.len(), 1);
    assert_eq!(compiled.snapshot.listeners[0].name, "a");
    assert_eq!(compiled.dropped.len(), 1);
    assert_eq!(compiled.dropped[0].service, "b");
    assert!(
        compiled.dropped[0]
            .reason
            .contains("already the listener of service \"a\""),
        "{:?}",
        compiled.dropped
    );
}

#[test]
fn an_invariant_no_single_service_breaks_refuses_the_catalog() {
    // Two services of one name: each compiles alone, together their clusters clash.
    let catalog = Catalog {
        services: vec![
            service("a", 18080, None, &[1]),
            service("a", 18081, None, &[1]),
        ],
    };
    let err = compile(&catalog, &settings(1)).unwrap_err();
    assert!(err.to_string().contains("clusters[a].name"), "{err}");
}
