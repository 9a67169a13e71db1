//! Tests of the routing table builder.

use super::*;
use ringway_shared::{Backend, Cluster, Listener, Protocol};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn snapshot(version: u64, port: u16, backends: &[(u16, Option<u32>)]) -> Arc<Snapshot> {
    Arc::new(
        Snapshot::new(
            version,
            vec![Listener {
                name: "web".into(),
                address: SocketAddr::from(([127, 0, 0, 1], port)),
                protocol: Protocol::Tcp,
                cluster: Some("web".into()),
                http: None,
            }],
            vec![Cluster {
                name: "web".into(),
                balance: Balance::RoundRobin,
                timeouts: Timeouts::default(),
                max_connections: 100,
                backends: backends
                    .iter()
                    .map(|&(port, limit)| Backend {
                        address: SocketAddr::from(([127, 0, 0, 1], port)),
                        weight: 500,
                        max_connections: limit,
                        state: BackendState::Active,
                    })
                    .collect(),
                http: None,
            }],
        )
        .unwrap(),
    )
}

fn builder() -> TableBuilder {
    TableBuilder::new(2, Arc::new(Wakers::new(2).unwrap()))
}

#[test]
fn slots_and_sockets_persist_across_versions() {
    let port = free_port();
    let mut builder = builder();
    let first = builder
        .build(snapshot(1, port, &[(1, Some(4)), (2, None)]))
        .unwrap();
    let second = builder
        .build(snapshot(2, port, &[(1, Some(2)), (3, None)]))
        .unwrap();
    let b1_v1 = &first.clusters[0].backends[0].slot;
    let b1_v2 = &second.clusters[0].backends[0].slot;
    assert!(Arc::ptr_eq(b1_v1, b1_v2), "the same backend keeps its slot");
    assert_eq!(b1_v2.limit(), 2, "the new limit applies");
    assert!(Arc::ptr_eq(
        &first.listeners[0].sockets,
        &second.listeners[0].sockets
    ));
    assert!(Arc::ptr_eq(
        &first.clusters[0].slot,
        &second.clusters[0].slot
    ));
}

#[test]
fn an_unchanged_cluster_keeps_its_route_and_a_changed_one_is_rebuilt() {
    let port = free_port();
    let mut builder = builder();
    let first = builder.build(snapshot(1, port, &[(1, Some(4))])).unwrap();
    let same = builder.build(snapshot(2, port, &[(1, Some(4))])).unwrap();
    assert!(
        Arc::ptr_eq(&first.clusters[0], &same.clusters[0]),
        "nothing to rebuild"
    );
    let changed = builder.build(snapshot(3, port, &[(1, Some(2))])).unwrap();
    assert!(!Arc::ptr_eq(&same.clusters[0], &changed.clusters[0]));
    assert_eq!(changed.clusters[0].backends[0].slot.limit(), 2);
    assert!(Arc::ptr_eq(
        &same.clusters[0].backends[0].slot,
        &changed.clusters[0].backends[0].slot
    ));
}

#[test]
fn a_removed_backend_drains_as_retired_and_comes_back_with_its_count() {
    let port = free_port();
    let mut builder = builder();
    let first = builder
        .build(snapshot(1, port, &[(1, Some(4)), (2, None)]))
        .unwrap();
    let route = &first.clusters[0];
    let lease = crate::routing::Lease::acquire(&route.slot, &route.backends[1].slot).unwrap();
    let removed = builder.build(snapshot(2, port, &[(1, Some(4))])).unwrap();
    assert_eq!(
        removed.retired.len(),
        1,
        "the backend with a connection is listed while it drains"
    );
    assert!(removed.retired[0].slot.is_draining());
    let back = builder
        .build(snapshot(3, port, &[(1, Some(4)), (2, None)]))
        .unwrap();
    assert!(back.retired.is_empty());
    assert!(
        Arc::ptr_eq(
            &back.clusters[0].backends[1].slot,
            &first.clusters[0].backends[1].slot
        ),
        "the returning backend keeps the slot that counts its open connection"
    );
    assert_eq!(back.clusters[0].backends[1].slot.active(), 1);
    assert!(!back.clusters[0].backends[1].slot.is_draining());
    drop(lease);
    let gone = builder.build(snapshot(4, port, &[(1, Some(4))])).unwrap();
    assert!(
        gone.retired.is_empty(),
        "a removed backend without connections is simply gone"
    );
}

#[test]
fn a_listener_that_cannot_bind_is_left_out_and_retried_by_building_again() {
    let port = free_port();
    let mut builder = builder();
    builder.build(snapshot(1, port, &[(1, Some(4))])).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = taken.local_addr().unwrap();
    let table = builder
        .build(snapshot(2, held.port(), &[(1, Some(1))]))
        .unwrap();
    assert!(table.listeners.is_empty(), "{:?}", table.listeners);
    assert_eq!(table.failed.len(), 1);
    assert_eq!(table.failed[0].address, held);
    assert!(
        table.failed[0].error.starts_with("cannot bind: "),
        "{}",
        table.failed[0].error
    );
    assert_eq!(
        table.clusters[0].backends[0].slot.limit(),
        1,
        "the rest of the snapshot applies"
    );
    drop(taken);
    let again = builder.build(Arc::clone(&table.snapshot)).unwrap();
    assert!(again.failed.is_empty());
    assert_eq!(again.listeners[0].address, held);
    assert!(Arc::ptr_eq(&table.clusters[0], &again.clusters[0]));
    let back = builder.build(snapshot(3, port, &[(1, Some(4))])).unwrap();
    assert!(back.failed.is_empty());
}

#[test]
fn retrying_the_failed_listeners_opens_them_for_the_next_build() {
    let mut builder = builder();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = taken.local_addr().unwrap();
    let table = builder
        .build(snapshot(1, held.port(), &[(1, Some(1))]))
        .unwrap();
    assert_eq!(table.failed.len(), 1);
    assert_eq!(
        builder.retry_failed(&table.failed),
        table.failed,
        "still held: the same failure, so no rebuild is needed"
    );
    drop(taken);
    assert!(builder.retry_failed(&table.failed).is_empty());
    let again = builder.build(Arc::clone(&table.snapshot)).unwrap();
    assert!(again.failed.is_empty(), "{:?}", again.failed);
    assert_eq!(again.listeners[0].address, held);
}

/// One HTTP listener on `port` with a route per `(name, host, path, path_match)` to cluster `web`.
fn http_snapshot(
    version: u64,
    port: u16,
    routes: &[(&str, &str, &str, ringway_shared::PathMatch)],
) -> Arc<Snapshot> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = snapshot(version, free_port(), &[(1, None)]);
    Arc::new(
        Snapshot::with_routes(
            version,
            vec![Listener::http(
                "http",
                address,
                ringway_shared::HttpListener::default(),
            )],
            routes
                .iter()
                .map(|&(name, host, path, path_match)| ringway_shared::Route {
                    listener: address,
                    name: name.into(),
                    hosts: vec![host.into()],
                    paths: vec![path.into()],
                    path_match,
                    header: None,
                    cluster: "web".into(),
                })
                .collect(),
            tcp.clusters.clone(),
        )
        .unwrap(),
    )
}

#[test]
fn an_http_listener_gets_a_router_over_the_tables_clusters() {
    let mut builder = builder();
    let table = builder
        .build(http_snapshot(
            1,
            free_port(),
            &[("shop", "shop.test", "/", ringway_shared::PathMatch::Prefix)],
        ))
        .unwrap();
    let http = table.listeners[0].http().expect("an HTTP listener");
    assert!(table.listeners[0].tcp_cluster().is_none());
    assert_eq!(http.route_names, vec!["shop".to_string()]);
    assert_eq!(http.limits, crate::routing::http::HttpLimits::default());
}

#[test]
fn a_route_whose_regex_does_not_compile_refuses_the_snapshot_naming_the_route() {
    let port = free_port();
    let mut builder = builder();
    builder
        .build(http_snapshot(
            1,
            port,
            &[("ok", "a.test", "/", ringway_shared::PathMatch::Prefix)],
        ))
        .unwrap();
    let error = builder
        .build(http_snapshot(
            2,
            port,
            &[("broken", "a.test", "/(", ringway_shared::PathMatch::Regex)],
        ))
        .unwrap_err()
        .to_string();
    assert!(error.contains("\"broken\""), "{error}");
    assert!(error.contains("regex"), "{error}");
}
