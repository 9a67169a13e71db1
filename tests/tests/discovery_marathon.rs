//! Marathon through its double (tests/src/doubles/marathon.rs): apps and tasks come and go, replicas fail,
//! the event stream drops, tasks are unhealthy or lose their health results in a leader failover, groups
//! filter, bad input keeps the last good routes, SIGHUP and `POST /v1/refresh` re-read, and Marathon is
//! reached over HTTPS with credentials.

use std::net::TcpListener;
use std::thread;

use ringway_tests::NamedBackend;
use ringway_tests::discovery::{NO_ROUTE, Stack, assert_routes, names_on};
use ringway_tests::doubles::marathon::{MarathonDouble, host_app};
use ringway_tests::net::{free_port, wait_until};
use ringway_tests::tls::TestCa;
use serde_json::{Value, json};

use std::time::Duration;

fn status_update(app: &str) -> Value {
    json!({"appId": app, "taskStatus": "TASK_RUNNING", "taskId": format!("{app}.x"), "host": "127.0.0.1"})
}

/// A port nothing listens on: a replica that is down.
fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

#[test]
fn tasks_appear_and_disappear_through_a_standby_when_the_first_replica_is_down() {
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let port = free_port();
    let leader = MarathonDouble::leader(json!([host_app("/web", port, &[a.port()], json!({}))]));
    let standby = leader.standby();
    let dir = tempfile::tempdir().unwrap();
    let replicas = format!("http://127.0.0.1:{},{}", dead_port(), standby.url());
    let stack = Stack::start(dir.path(), &["--marathon", &replicas]);

    // The first replica refuses; the standby answers REST and redirects the event stream to the leader.
    assert_routes(&stack, port, &["a"]);
    assert!(
        wait_until(Duration::from_secs(20), || leader.attached() == 1),
        "the event stream reached the leader through the standby's 302"
    );

    leader.set_apps(json!([host_app(
        "/web",
        port,
        &[a.port(), b.port()],
        json!({})
    )]));
    leader.emit("status_update_event", status_update("/web"));
    assert_routes(&stack, port, &["a", "b"]);

    leader.set_apps(json!([host_app("/web", port, &[b.port()], json!({}))]));
    leader.emit("status_update_event", status_update("/web"));
    assert_routes(&stack, port, &["b"]);
    let before = a.counters().accepted();
    names_on(port, 5);
    assert_eq!(
        a.counters().accepted(),
        before,
        "the task that disappeared gets no new connections"
    );

    leader.set_apps(json!([]));
    leader.emit("app_terminated_event", json!({"appId": "/web"}));
    assert_routes(&stack, port, &[NO_ROUTE]);
}

#[test]
fn a_change_made_while_the_event_stream_was_down_is_picked_up_on_reconnect() {
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let port = free_port();
    let leader = MarathonDouble::leader(json!([host_app("/web", port, &[a.port()], json!({}))]));
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), &["--marathon", &leader.url()]);
    assert_routes(&stack, port, &["a"]);
    assert!(wait_until(Duration::from_secs(20), || leader.attached() == 1));
    let connections = leader.stream_connections();

    // The stream drops (the controlplane re-reads once at that moment) and reconnects are refused;
    // meanwhile the app moves to b, and no event can tell.
    // Let the read the attach triggered finish first, so the next read is the one the drop causes.
    let mut reads = leader.app_reads();
    for _ in 0..50 {
        thread::sleep(Duration::from_millis(200));
        if leader.app_reads() == reads {
            break;
        }
        reads = leader.app_reads();
    }
    leader.drop_streams(true);
    assert!(wait_until(Duration::from_secs(20), || leader.app_reads() > reads));
    leader.set_apps(json!([host_app("/web", port, &[b.port()], json!({}))]));
    assert_eq!(
        names_on(port, 3),
        ["a".to_string()].into(),
        "nothing told the controlplane yet"
    );

    leader.accept_streams();
    assert_routes(&stack, port, &["b"]);
    assert!(
        leader.stream_connections() > connections,
        "the stream reconnected"
    );
}

#[test]
fn unhealthy_tasks_are_not_routed_and_groups_filter_apps() {
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let (web, internal) = (free_port(), free_port());
    let apps = |b_alive: bool, internal_groups: &str| {
        let mut web_app = host_app(
            "/web",
            web,
            &[a.port(), b.port()],
            json!({"HAPROXY_GROUP": "external"}),
        );
        web_app["healthChecks"] = json!([{"protocol": "TCP", "portIndex": 0}]);
        web_app["tasks"][0]["healthCheckResults"] =
            json!([{"alive": true, "consecutiveFailures": 0}]);
        web_app["tasks"][1]["healthCheckResults"] =
            json!([{"alive": true}, {"alive": b_alive, "consecutiveFailures": 3}]);
        let other = host_app(
            "/internal",
            internal,
            &[a.port()],
            json!({"HAPROXY_GROUP": internal_groups}),
        );
        json!([web_app, other])
    };
    let leader = MarathonDouble::leader(apps(false, "internal"));
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(
        dir.path(),
        &["--marathon", &leader.url(), "--group", "external"],
    );

    assert_routes(&stack, web, &["a"]);
    assert_eq!(
        names_on(internal, 1),
        [NO_ROUTE.to_string()].into(),
        "group internal is not served"
    );

    leader.set_apps(apps(true, "internal,external"));
    leader.emit(
        "health_status_changed_event",
        json!({"appId": "/web", "alive": true}),
    );
    assert_routes(&stack, web, &["a", "b"]);
    assert_routes(&stack, internal, &["a"]);
}

#[test]
fn malformed_json_keeps_the_last_good_routes_and_bad_labels_skip_only_their_port() {
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let (good, bad_maxconn, bad_weight) = (free_port(), free_port(), free_port());
    let leader = MarathonDouble::leader(json!([
        host_app("/good", good, &[a.port()], json!({})),
        host_app(
            "/bad/maxconn",
            bad_maxconn,
            &[a.port()],
            json!({"ringway.port.0.maxconn": "-3"})
        ),
        host_app(
            "/bad/weight",
            bad_weight,
            &[b.port()],
            json!({"com.meltwater.proxymatic.port.0.weight": "abc"})
        ),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), &["--marathon", &leader.url()]);

    assert_routes(&stack, good, &["a"]);
    assert_routes(&stack, bad_weight, &["b"]);
    assert_eq!(names_on(bad_maxconn, 1), [NO_ROUTE.to_string()].into());
    let log = stack.log();
    for reported in [
        "/bad/maxconn",
        "ringway.port.0.maxconn",
        "\"-3\"",
        "this port is not routed",
        "/bad/weight",
        "com.meltwater.proxymatic.port.0.weight",
        "\"abc\"",
        "the default is used",
    ] {
        assert!(log.contains(reported), "{reported} not in the log:\n{log}");
    }

    leader.malformed(true);
    leader.emit("api_post_event", json!({"uri": "/v2/apps/good"}));
    assert!(
        stack.wait_log("source stale"),
        "the malformed answer was reported"
    );
    assert_eq!(
        names_on(good, 3),
        ["a".to_string()].into(),
        "the last good routes stay"
    );

    leader.malformed(false);
    leader.set_apps(json!([host_app("/good", good, &[b.port()], json!({}))]));
    leader.emit("api_post_event", json!({"uri": "/v2/apps/good"}));
    assert_routes(&stack, good, &["b"]);
}

/// Waits until the double has served no new `/v2/apps` read for a while: the reads that attaching the event
/// stream triggers are over, so the next change is seen only if something makes the controlplane read.
fn settle_reads(leader: &MarathonDouble) {
    let mut reads = leader.app_reads();
    for _ in 0..50 {
        thread::sleep(Duration::from_millis(200));
        if leader.app_reads() == reads {
            return;
        }
        reads = leader.app_reads();
    }
}

/// `app` with a health check defined and, per task, its results: `Some(alive)` one result, `None` none at
/// all (what a new leader says until its first check has run).
fn checked(mut app: Value, results: &[Option<bool>]) -> Value {
    app["healthChecks"] = json!([{"protocol": "TCP", "portIndex": 0, "intervalSeconds": 3}]);
    for (i, result) in results.iter().enumerate() {
        if let Some(alive) = result {
            app["tasks"][i]["healthCheckResults"] =
                json!([{"alive": alive, "consecutiveFailures": if *alive { 0 } else { 3 }}]);
        }
    }
    app
}

#[test]
fn a_leader_failover_that_loses_every_health_result_keeps_every_route() {
    let (a, b, c) = (
        NamedBackend::start("a"),
        NamedBackend::start("b"),
        NamedBackend::start("c"),
    );
    let (web, api, probe) = (free_port(), free_port(), free_port());
    let web_app = |tasks: &[u16], results: &[Option<bool>]| {
        checked(host_app("/web", web, tasks, json!({})), results)
    };
    let api_app =
        |results: &[Option<bool>]| checked(host_app("/api", api, &[a.port()], json!({})), results);
    let leader = MarathonDouble::leader(json!([
        web_app(&[a.port(), b.port()], &[Some(true), Some(true)]),
        api_app(&[Some(true)]),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), &["--marathon", &leader.url()]);
    assert_routes(&stack, web, &["a", "b"]);
    assert_routes(&stack, api, &["a"]);

    // Failover: the new leader knows the tasks but has no health result for any of them yet; a new task c
    // starts on /web meanwhile. An app without checks on another port shows when the read was applied.
    leader.set_apps(json!([
        web_app(&[a.port(), b.port(), c.port()], &[None, None, None]),
        api_app(&[None]),
        host_app("/probe", probe, &[c.port()], json!({})),
    ]));
    leader.emit("status_update_event", status_update("/probe"));
    assert_routes(&stack, probe, &["c"]);
    assert_eq!(
        names_on(web, 7),
        ["a".to_string(), "b".to_string()].into(),
        "routed tasks stay while their results are missing; the new task waits for its first result"
    );
    assert_eq!(names_on(api, 3), ["a".to_string()].into());

    // Results come back: one says b is down, c has none yet.
    leader.set_apps(json!([
        web_app(
            &[a.port(), b.port(), c.port()],
            &[Some(true), Some(false), None]
        ),
        api_app(&[None]),
    ]));
    leader.emit("health_status_changed_event", status_update("/web"));
    assert_routes(&stack, web, &["a"]);
    // c passes its first check; b goes away.
    leader.set_apps(json!([
        web_app(&[a.port(), c.port()], &[None, Some(true)]),
        api_app(&[Some(true)]),
    ]));
    leader.emit("health_status_changed_event", status_update("/web"));
    assert_routes(&stack, web, &["a", "c"]);
    assert_eq!(names_on(api, 3), ["a".to_string()].into());
}

#[test]
fn sighup_and_post_v1_refresh_re_read_every_source() {
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let port = free_port();
    let leader = MarathonDouble::leader(json!([host_app("/web", port, &[a.port()], json!({}))]));
    let dir = tempfile::tempdir().unwrap();
    let mut stack = Stack::start(dir.path(), &["--marathon", &leader.url()]);
    assert_routes(&stack, port, &["a"]);
    assert!(wait_until(Duration::from_secs(20), || leader.attached() == 1));
    settle_reads(&leader);

    // No event tells of these changes (and the refresh interval is a minute away): only a re-read finds them.
    leader.set_apps(json!([host_app("/web", port, &[b.port()], json!({}))]));
    stack.controlplane.proc.signal(libc::SIGHUP);
    assert_routes(&stack, port, &["b"]);

    leader.set_apps(json!([host_app("/web", port, &[a.port()], json!({}))]));
    let (status, answer) = stack
        .controlplane
        .api()
        .call("POST", "/v1/refresh", Some("{}"));
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["refreshing"], json!(["marathon"]), "{answer}");
    assert_routes(&stack, port, &["a"]);
}

#[test]
fn merges_inside_marathon_and_label_warnings_are_logged_once_per_change() {
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let (web, bad, probe) = (free_port(), free_port(), free_port());
    let apps = |probe_backend: u16| {
        json!([
            host_app("/web", web, &[a.port()], json!({})),
            host_app(
                "/web-canary",
                free_port(),
                &[b.port()],
                json!({"ringway.port.0.servicePort": web.to_string()})
            ),
            host_app(
                "/bad",
                bad,
                &[a.port()],
                json!({"ringway.port.0.maxconn": "-3"})
            ),
            host_app("/probe", probe, &[probe_backend], json!({})),
        ])
    };
    let leader = MarathonDouble::leader(apps(a.port()));
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), &["--marathon", &leader.url()]);
    assert_routes(&stack, web, &["a", "b"]);
    // Three more reads, each applied (the probe moves), none changing the merge or the bad label.
    for (backend, name) in [(b.port(), "b"), (a.port(), "a"), (b.port(), "b")] {
        leader.set_apps(apps(backend));
        leader.emit("status_update_event", status_update("/probe"));
        assert_routes(&stack, probe, &[name]);
    }
    let log = stack.log();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("share listen address"),
        1,
        "the canary's merge is logged once:\n{log}"
    );
    assert_eq!(
        count("ringway.port.0.maxconn"),
        1,
        "the bad label is logged once:\n{log}"
    );
}

#[test]
fn marathon_over_https_with_basic_auth_behind_a_standby_that_redirects_to_the_leader() {
    const PASSWORD: &str = "s3cret-marathon-pass";
    let (a, b) = (NamedBackend::start("a"), NamedBackend::start("b"));
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let tls = ca.server_config(&ca.server("marathon"));
    let leader =
        MarathonDouble::leader_tls(json!([host_app("/web", port, &[a.port()], json!({}))]), tls);
    leader.require_auth("ops", PASSWORD);
    let standby = leader.standby();
    let auth = dir.path().join("marathon-auth");
    std::fs::write(&auth, format!("ops:{PASSWORD}\n")).unwrap();
    let mut stack = Stack::start(
        dir.path(),
        &[
            "--marathon",
            &standby.url(),
            "--marathon-auth-file",
            auth.to_str().unwrap(),
            "--marathon-ca",
            ca.ca_file().to_str().unwrap(),
        ],
    );

    // REST through the standby, the event stream redirected to the leader: both over TLS, both with the
    // credentials (a 401 anywhere would count).
    assert_routes(&stack, port, &["a"]);
    assert!(
        wait_until(Duration::from_secs(20), || leader.attached() == 1),
        "the event stream followed the standby's redirect, credentials kept:\n{}",
        stack.log()
    );
    leader.set_apps(json!([host_app("/web", port, &[b.port()], json!({}))]));
    leader.emit("status_update_event", status_update("/web"));
    assert_routes(&stack, port, &["b"]);
    assert_eq!(
        leader.unauthorized(),
        0,
        "every request carried the credentials"
    );

    let (status, sources) = stack.controlplane.api().call("GET", "/v1/sources", None);
    assert_eq!(status, 200);
    assert!(!sources.to_string().contains(PASSWORD), "{sources}");
    assert!(
        !stack.log().contains(PASSWORD),
        "the password is in the logs"
    );
}
