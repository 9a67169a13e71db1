//! Several sources at once: the controlplane starts with a source down, merges the same service port from
//! two sources (a canary), and keeps a failed source's routes.

use ringway_tests::discovery::{Stack, assert_routes, names_on};
use ringway_tests::doubles::marathon::{MarathonDouble, host_app};
use std::time::Duration;

use ringway_tests::net::{free_port, wait_until};
use ringway_tests::{Etcd, NamedBackend};
use serde_json::json;
use std::net::TcpListener;

#[test]
fn a_source_down_at_start_up_joins_later_merges_by_port_and_keeps_its_routes_when_it_dies() {
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let port = free_port();
    let marathon_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    etcd.v2_set(
        &format!("/services/web/host1:web.0:{port}"),
        &format!("127.0.0.1:{}", b.port()),
    );
    let stack = Stack::start(
        dir.path(),
        &[
            "--marathon",
            &format!("http://127.0.0.1:{marathon_port}"),
            "--registrator",
            &format!("etcd://127.0.0.1:{}/services", etcd.client_port),
            "--initial-sync-timeout",
            "1s",
        ],
    );
    // Marathon is down: the controlplane still serves, and after the initial sync timeout what etcd says.
    assert!(
        stack.wait_log("source failing"),
        "the down source is reported"
    );
    assert_routes(&stack, port, &["b"]);
    assert!(stack.controlplane.proc.events("published snapshot").len() == 1);

    // Marathon comes up with an app on the same service port: one service, both instances.
    let marathon = MarathonDouble::leader_on(
        marathon_port,
        json!([host_app("/web", port, &[a.port()], json!({}))]),
    );
    assert_routes(&stack, port, &["a", "b"]);
    assert!(
        stack.log().contains("share listen address"),
        "the merge is logged"
    );

    // Marathon dies while its event stream is followed (the reconnect backoff grew while it was down, so
    // the stream may attach a few seconds after the first read): its instance stays (stale), and etcd's
    // changes still apply.
    assert!(wait_until(Duration::from_secs(20), || marathon.attached() == 1));
    drop(marathon);
    assert!(
        stack.wait_log("source stale"),
        "the dead source is reported stale"
    );
    assert_eq!(names_on(port, 5).len(), 2, "its instance still routes");
    etcd.v2_delete(&format!("/services/web/host1:web.0:{port}"));
    assert_routes(&stack, port, &["a"]);
}
