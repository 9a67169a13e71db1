//! Consul through its double (tests/src/doubles/consul.rs): instances come and go, checks fail, the blocking
//! index goes backwards, malformed answers keep the last good routes, a port 0 entry skips only itself, a
//! thousand services share a few connections, and an ACL token is sent over HTTPS and never
//! shown.

use std::time::Duration;

use ringway_tests::NamedBackend;
use ringway_tests::discovery::{NO_ROUTE, Stack, assert_routes, names_on};
use ringway_tests::doubles::consul::{ConsulDouble, ConsulInstance};
use ringway_tests::net::{free_port, free_ports_below_ephemeral, wait_until};
use ringway_tests::tls::TestCa;

/// Longer than any wait in these tests: a query that is not woken by a change hangs past the test's limit,
/// so only a client that handles the index correctly passes.
const BLOCK: Duration = Duration::from_secs(60);

fn tags(port: u16) -> String {
    format!("ringway.servicePort={port}")
}

#[test]
fn instances_come_and_go_and_a_failing_check_removes_one() {
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let port = free_port();
    let consul = ConsulDouble::start(BLOCK);
    let tag = tags(port);
    consul.register("web", ConsulInstance::new("web-a", a.port(), &[&tag]));
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), &["--consul", &consul.url()]);
    assert_routes(&stack, port, &["a"]);

    // b registers with no service address: the node's address is used.
    let mut on_node = ConsulInstance::new("web-b", b.port(), &[&tag]);
    on_node.address = String::new();
    consul.register("web", on_node);
    assert_routes(&stack, port, &["a", "b"]);

    consul.set_check("web", "web-b", "critical");
    assert_routes(&stack, port, &["a"]);
    consul.set_check("web", "web-b", "passing");
    assert_routes(&stack, port, &["a", "b"]);

    consul.deregister("web", "web-a");
    assert_routes(&stack, port, &["b"]);
    consul.deregister("web", "web-b");
    assert_routes(&stack, port, &[NO_ROUTE]);
}

#[test]
fn an_index_that_goes_backwards_is_handled() {
    let (a, b, c) = (
        NamedBackend::start("a"),
        NamedBackend::start("b"),
        NamedBackend::start("c"),
    );
    let port = free_port();
    let consul = ConsulDouble::start(BLOCK);
    let tag = tags(port);
    for i in 0..20 {
        // Move the index well up first.
        consul.register("filler", ConsulInstance::new(&format!("f{i}"), 1, &[]));
    }
    consul.register("web", ConsulInstance::new("web-a", a.port(), &[&tag]));
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), &["--consul", &consul.url()]);
    assert_routes(&stack, port, &["a"]);

    // A snapshot restore while the controlplane's two blocking queries (the catalog, the checks) are
    // parked: the index drops to 3, the restored state has b too, and the parked queries answer at once.
    assert!(wait_until(Duration::from_secs(20), || consul.parked() == 2));
    let restored = ConsulInstance::new("web-b", b.port(), &[&tag]);
    consul.restore_snapshot(3, |services| {
        services.get_mut("web").unwrap().push(restored)
    });
    assert_routes(&stack, port, &["a", "b"]);

    // A change after the restore raises the index to 4 only: a client still blocking on the old, higher
    // index would not hear of it before the query times out.
    consul.register("web", ConsulInstance::new("web-c", c.port(), &[&tag]));
    assert_routes(&stack, port, &["a", "b", "c"]);
}

#[test]
fn malformed_json_keeps_the_last_good_routes_and_a_bad_tag_skips_only_its_service() {
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let (port, bad) = (free_port(), free_port());
    let consul = ConsulDouble::start(BLOCK);
    consul.register(
        "web",
        ConsulInstance::new("web-a", a.port(), &[&tags(port)]),
    );
    consul.register(
        "bad",
        ConsulInstance::new("bad-a", b.port(), &[&tags(bad), "ringway.maxconn=-3"]),
    );
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), &["--consul", &consul.url()]);
    assert_routes(&stack, port, &["a"]);
    assert_eq!(names_on(bad, 1), [NO_ROUTE.to_string()].into());
    assert!(
        stack.log().contains("ringway.maxconn"),
        "the bad tag is reported"
    );

    consul.malformed(true);
    assert!(
        stack.wait_log("source stale"),
        "the malformed answer was reported"
    );
    assert_eq!(
        names_on(port, 3),
        ["a".to_string()].into(),
        "the last good routes stay"
    );

    consul.malformed(false);
    consul.register(
        "web",
        ConsulInstance::new("web-b", b.port(), &[&tags(port)]),
    );
    assert_routes(&stack, port, &["a", "b"]);
}

#[test]
fn a_port_0_entry_next_to_good_services_leaves_the_good_ones_updating() {
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let (port, bad) = (free_port(), free_port());
    let consul = ConsulDouble::start(BLOCK);
    let tag = tags(port);
    consul.register("web", ConsulInstance::new("web-a", a.port(), &[&tag]));
    // A registration with port 0 in a service of its own, and one inside the good service.
    consul.register("bad", ConsulInstance::new("bad-0", 0, &[&tags(bad)]));
    consul.register("web", ConsulInstance::new("web-zero", 0, &[&tag]));
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), &["--consul", &consul.url()]);
    assert_routes(&stack, port, &["a"]);
    assert_eq!(names_on(bad, 1), [NO_ROUTE.to_string()].into());

    consul.register("web", ConsulInstance::new("web-b", b.port(), &[&tag]));
    assert_routes(&stack, port, &["a", "b"]);
    consul.deregister("web", "web-a");
    assert_routes(&stack, port, &["b"]);

    let skipped = stack.controlplane.proc.events("bad entry skipped");
    for (service, entry) in [("bad", "bad-0"), ("web", "web-zero")] {
        let line = skipped
            .iter()
            .find(|e| e["fields"]["entry"] == entry)
            .unwrap_or_else(|| panic!("{entry} not reported:\n{}", stack.log()));
        assert_eq!(line["fields"]["source"], "consul", "{line}");
        assert_eq!(line["fields"]["service"], service, "{line}");
        assert_eq!(line["fields"]["field"], "Service.Port", "{line}");
    }
    assert_eq!(
        skipped.len(),
        2,
        "each bad entry is logged once: {skipped:?}"
    );
}

#[test]
fn a_thousand_services_route_over_a_bounded_number_of_connections() {
    const SERVICES: usize = 1000;
    /// Six requests at once (the catalog watch, the health watch, four readers), each of whose connections
    /// may still be going back to the pool when the next opens (docs/discovery.md).
    const CONNECTIONS: usize = 12;
    let a = NamedBackend::start("a");
    let consul = ConsulDouble::start(BLOCK);
    // Distinct ports outside the ephemeral range, so no connection on the machine holds one of them.
    let ports = free_ports_below_ephemeral(SERVICES);
    consul.register_all(ports.iter().enumerate().map(|(i, port)| {
        (
            format!("svc{i}"),
            ConsulInstance::new(&format!("svc{i}-1"), a.port(), &[&tags(*port)]),
        )
    }));
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), &["--consul", &consul.url()]);
    assert_routes(&stack, ports[SERVICES - 1], &["a"]);
    let unrouted: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|port| names_on(*port, 1) != ["a".to_string()].into())
        .collect();
    assert!(
        unrouted.is_empty(),
        "{} of {SERVICES} services do not route",
        unrouted.len()
    );

    // Changes still flow: one service loses its instance, another gains one.
    let b = NamedBackend::start("b");
    consul.deregister("svc7", "svc7-1");
    consul.register(
        "svc8",
        ConsulInstance::new("svc8-2", b.port(), &[&tags(ports[8])]),
    );
    assert_routes(&stack, ports[7], &[NO_ROUTE]);
    assert_routes(&stack, ports[8], &["a", "b"]);
    assert!(
        consul.max_open_connections() <= CONNECTIONS,
        "the controlplane held {} connections to Consul at once (bound {CONNECTIONS})",
        consul.max_open_connections()
    );
}

#[test]
fn an_acl_token_from_a_file_is_sent_over_https_and_never_shown() {
    const TOKEN: &str = "b1gs3cret-acl-token";
    let a = NamedBackend::start("a");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let consul = ConsulDouble::start_tls(BLOCK, ca.server_config(&ca.server("consul")));
    consul.require_token(TOKEN);
    consul.register(
        "web",
        ConsulInstance::new("web-a", a.port(), &[&tags(port)]),
    );
    let token = dir.path().join("consul-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let ca_file = ca.ca_file();
    let mut stack = Stack::start(
        dir.path(),
        &[
            "--consul",
            &consul.url(),
            "--consul-token-file",
            token.to_str().unwrap(),
            "--consul-ca",
            ca_file.to_str().unwrap(),
        ],
    );
    assert_routes(&stack, port, &["a"]);
    assert!(consul.url().starts_with("https://"));
    assert_eq!(consul.refused(), 0, "every request carried the token");
    let (_, sources) = stack.controlplane.api().call("GET", "/v1/sources", None);
    assert!(!sources.to_string().contains(TOKEN), "{sources}");
    assert!(!stack.log().contains(TOKEN));
}
