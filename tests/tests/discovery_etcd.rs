//! etcd, for real: registrator's v2 layout and Ringway's v3 format, a restart of etcd mid-test, a burst
//! of writes, and etcd over TLS with a client certificate.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ringway_tests::discovery::{NO_ROUTE, Stack, assert_routes, names_on};
use ringway_tests::net::{free_port, wait_until};
use ringway_tests::tls::TestCa;
use ringway_tests::{Etcd, NamedBackend};

/// registrator's key for container `container` exposing `exposed`.
fn key(service: &str, container: &str, exposed: u16) -> String {
    format!("/services/{service}/host1:{container}:{exposed}")
}

fn local(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// An etcd v3 entry's value: `backend` serving the service on listen port `port`.
fn v3_value(backend: &NamedBackend, port: u16) -> String {
    format!(
        r#"{{"address":"127.0.0.1:{}","port":{port}}}"#,
        backend.port()
    )
}

fn registrator(etcd: &Etcd) -> String {
    format!("etcd://127.0.0.1:{}/services", etcd.client_port)
}

#[test]
fn registrator_keys_for_three_containers_give_three_backends_and_a_deletion_removes_one() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let backends: Vec<NamedBackend> = ["a", "b", "c"]
        .iter()
        .map(|n| NamedBackend::start(n))
        .collect();
    let port = free_port();
    // The directory does not exist yet: an empty catalog, not an error.
    let stack = Stack::start(dir.path(), &["--registrator", &registrator(&etcd)]);
    assert!(
        stack.wait_log("source ok"),
        "a missing directory is an empty catalog"
    );

    for (i, b) in backends.iter().enumerate() {
        etcd.v2_set(&key("web", &format!("web.{i}"), port), &local(b.port()));
    }
    assert_routes(&stack, port, &["a", "b", "c"]);

    etcd.v2_delete(&key("web", "web.1", port));
    assert_routes(&stack, port, &["a", "c"]);

    // A garbage value is skipped; the others stay.
    etcd.v2_set(&key("web", "web.9", port), "not-an-address");
    etcd.v2_delete(&key("web", "web.0", port));
    assert_routes(&stack, port, &["c"]);

    etcd.v2_delete(&key("web", "web.2", port));
    etcd.v2_delete(&key("web", "web.9", port));
    assert_routes(&stack, port, &[NO_ROUTE]);
}

#[test]
fn an_etcd_restart_loses_no_routes_and_the_watch_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path());
    let (a, b, c) = (
        NamedBackend::start("a"),
        NamedBackend::start("b"),
        NamedBackend::start("c"),
    );
    let port = free_port();
    etcd.v2_set(&key("db", "db.0", port), &local(a.port()));
    etcd.v2_set(&key("db", "db.1", port), &local(b.port()));
    let stack = Stack::start(dir.path(), &["--registrator", &registrator(&etcd)]);
    assert_routes(&stack, port, &["a", "b"]);

    etcd.stop();
    assert!(stack.wait_log("source stale"), "the lost watch is reported");
    for _ in 0..5 {
        assert_eq!(
            names_on(port, 5),
            ["a".to_string(), "b".to_string()].into(),
            "routes kept while etcd is down"
        );
        thread::sleep(Duration::from_millis(100));
    }
    etcd.resume();
    etcd.v2_set(&key("db", "db.2", port), &local(c.port()));
    assert_routes(&stack, port, &["a", "b", "c"]);
}

#[test]
fn etcd_v3_instances_appear_and_disappear() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let port = free_port();
    etcd.v3_put("/ringway/services/web/a", &v3_value(&a, port));
    let stack = Stack::start(
        dir.path(),
        &[
            "--etcd-v3",
            &etcd.url(),
            "--etcd-prefix",
            "/ringway/services",
        ],
    );
    assert_routes(&stack, port, &["a"]);

    etcd.v3_put("/ringway/services/web/b", &v3_value(&b, port));
    assert_routes(&stack, port, &["a", "b"]);
    // A malformed value is skipped and keeps nothing else from routing.
    etcd.v3_put("/ringway/services/web/junk", "{\"address\":");
    etcd.v3_delete("/ringway/services/web/a");
    assert_routes(&stack, port, &["b"]);
    etcd.v3_delete("/ringway/services/web/b");
    assert_routes(&stack, port, &[NO_ROUTE]);
}

#[test]
fn a_burst_of_1000_etcd_writes_gives_a_handful_of_snapshots_and_the_final_state() {
    const WRITES: usize = 1000;
    const KEYS: usize = 20;
    const WRITERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let etcd = Arc::new(Etcd::start(dir.path()));
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let port = free_port();
    etcd.v2_set(&key("burst", "c.0", port), &local(a.port()));
    // The default 5 ms window folds what arrives back to back; on a loaded machine etcd's writes can
    // arrive more than 5 ms apart, and each is then rightly published at once (an isolated change waits
    // for nothing). A 50 ms window (1 s at most per burst) makes this test about the folding, not about
    // how fast the machine is that day.
    let stack = Stack::start(
        dir.path(),
        &["--registrator", &registrator(&etcd), "--coalesce-ms", "50"],
    );
    assert_routes(&stack, port, &["a"]);
    let before = stack.controlplane.published_versions().len();

    // Every write but the last KEYS points its key at an address of its own, so each intermediate state
    // differs; the last KEYS writes point every key at a or b.
    let dummy_base = 20_000u16;
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let etcd = Arc::clone(&etcd);
            thread::spawn(move || {
                for i in (w..WRITES - KEYS).step_by(WRITERS) {
                    etcd.v2_set(
                        &key("burst", &format!("c.{}", i % KEYS), port),
                        &local(dummy_base + i as u16),
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for k in 0..KEYS {
        let target = if k % 2 == 0 { a.port() } else { b.port() };
        etcd.v2_set(&key("burst", &format!("c.{k}"), port), &local(target));
    }
    assert_routes(&stack, port, &["a", "b"]);
    let published = stack.controlplane.published_versions().len() - before;
    // The final state may need a moment more after routes already look right: wait for quiet.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let last = stack.controlplane.proc.events("published snapshot");
            last.last().and_then(|e| e["fields"]["backends"].as_u64()) == Some(2)
        }),
        "the last snapshot holds the final two backends"
    );
    eprintln!("{WRITES} etcd writes produced {published} snapshots");
    assert!(published >= 1);
    assert!(
        published <= 20,
        "{WRITES} writes produced {published} snapshots; coalescing should give a handful"
    );
}

/// Real etcd never answers garbage; the etcd double (tests/src/doubles/etcd.rs) does.
#[test]
fn malformed_etcd_answers_keep_the_last_good_routes() {
    use ringway_tests::doubles::etcd::EtcdDouble;
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let (v2_port, v3_port) = (free_port(), free_port());
    let v2 = EtcdDouble::start();
    let v3 = EtcdDouble::start();
    v2.set(&key("web", "web.0", v2_port), &local(a.port()));
    v3.set(
        "/ringway/services/web/a",
        &format!(r#"{{"address":"127.0.0.1:{}","port":{v3_port}}}"#, a.port()),
    );
    let dir = tempfile::tempdir().unwrap();
    let registrator = format!("etcd://127.0.0.1:{}/services", v2.port());
    let stack = Stack::start(
        dir.path(),
        &["--registrator", &registrator, "--etcd-v3", &v3.url()],
    );
    assert_routes(&stack, v2_port, &["a"]);
    assert_routes(&stack, v3_port, &["a"]);

    v2.malformed(true);
    v3.malformed(true);
    let stale = |source: &str| {
        let tag = format!("\"source\":\"{source}\"");
        stack
            .log()
            .lines()
            .any(|l| l.contains("source stale") && l.contains(&tag))
    };
    assert!(
        wait_until(Duration::from_secs(20), || stale("registrator")
            && stale("etcd-v3")),
        "both malformed answers were reported:\n{}",
        stack.log()
    );
    assert_eq!(
        names_on(v2_port, 3),
        ["a".to_string()].into(),
        "registrator's last good routes stay"
    );
    assert_eq!(
        names_on(v3_port, 3),
        ["a".to_string()].into(),
        "etcd v3's last good routes stay"
    );

    v2.malformed(false);
    v3.malformed(false);
    v2.set(&key("web", "web.1", v2_port), &local(b.port()));
    v3.set(
        "/ringway/services/web/b",
        &format!(r#"{{"address":"127.0.0.1:{}","port":{v3_port}}}"#, b.port()),
    );
    assert_routes(&stack, v2_port, &["a", "b"]);
    assert_routes(&stack, v3_port, &["a", "b"]);
}

#[test]
fn registrator_watches_that_come_back_empty_at_once_do_not_spin() {
    use ringway_tests::doubles::etcd::EtcdDouble;
    let a = NamedBackend::start("a");
    let port = free_port();
    let etcd = EtcdDouble::start();
    etcd.set(&key("web", "web.0", port), &local(a.port()));
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(
        dir.path(),
        &[
            "--registrator",
            &format!("etcd://127.0.0.1:{}/services", etcd.port()),
        ],
    );
    assert_routes(&stack, port, &["a"]);
    // etcd (or a proxy in front of it) ends every long poll at once with an empty body.
    etcd.empty_watches(true);
    let before = etcd.watch_requests();
    std::thread::sleep(Duration::from_secs(3));
    let polls = etcd.watch_requests() - before;
    assert!(
        polls <= 40,
        "{polls} watch requests in 3 s: empty answers must be followed by a pause"
    );
    // A real change is still seen.
    etcd.empty_watches(false);
    let b = NamedBackend::start("b");
    etcd.set(&key("web", "web.1", port), &local(b.port()));
    assert_routes(&stack, port, &["a", "b"]);
}

#[test]
fn etcd_v3_over_tls_with_a_client_certificate_fails_over_from_a_dead_member() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let etcd = Etcd::start_tls(dir.path(), &ca);
    let client = ca.client("ringway");
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let port = free_port();
    // The test writes through etcd's plain port; the controlplane has only the TLS one, after a dead member.
    etcd.v3_put("/ringway/services/web/a", &v3_value(&a, port));
    let members = format!("https://127.0.0.1:{},{}", free_port(), etcd.tls_url());
    let stack = Stack::start(
        dir.path(),
        &[
            "--etcd-v3",
            &members,
            "--etcd-prefix",
            "/ringway/services",
            "--etcd-ca",
            ca.ca_file().to_str().unwrap(),
            "--etcd-cert",
            client.cert_file.to_str().unwrap(),
            "--etcd-key",
            client.key_file.to_str().unwrap(),
        ],
    );
    assert_routes(&stack, port, &["a"]);
    // The watch runs over TLS too.
    etcd.v3_put("/ringway/services/web/b", &v3_value(&b, port));
    assert_routes(&stack, port, &["a", "b"]);
    etcd.v3_delete("/ringway/services/web/a");
    assert_routes(&stack, port, &["b"]);
}
