//! Consul through its double (tests/src/doubles/consul.rs): instances come and go, checks fail, the blocking
//! index goes backwards, and malformed answers keep the last good routes.

use std::time::Duration;

use ringway_tests::NamedBackend;
use ringway_tests::discovery::{NO_ROUTE, Stack, assert_routes, names_on};
use ringway_tests::doubles::consul::{ConsulDouble, ConsulInstance};
use ringway_tests::net::{free_port, wait_until};

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

    // A snapshot restore while the controlplane's queries (catalog, filler, web) are parked: the index
    // drops to 3, the restored state has b too, and the parked queries answer at once.
    assert!(wait_until(Duration::from_secs(20), || consul.parked() == 3));
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
