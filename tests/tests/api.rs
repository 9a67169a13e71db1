//! The controlplane's API end to end: a real controlplane and dataplane, real backends on loopback.
//! docker-flow-proxy's reconfigure/remove, drain, weights, the blue/green switch, the token, persistence.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ringway_tests::api::{version_of, wait_version};
use ringway_tests::http::{find_backend, stats};
use ringway_tests::net::{connect, free_port, local};
use ringway_tests::procs::Controlplane;
use ringway_tests::traffic::echo_round_trip;
use ringway_tests::{EchoBackend, Harness, NamedBackend, Service, read_name, wait_until};

/// Registrations here forward to test backends on loopback, which the API refuses unless allowed.
const LOOPBACK_BACKENDS: &[&str] = &[
    "--listen-address",
    "127.0.0.1",
    "--api-allow-backends",
    "127.0.0.0/8",
];

/// One round trip on a held connection: it still flows.
fn still_flows(stream: &mut TcpStream) {
    stream.write_all(b"ping").unwrap();
    let mut four = [0u8; 4];
    stream.read_exact(&mut four).unwrap();
    assert_eq!(&four, b"ping");
}

/// Opens connections until one lands on `name`; returns it (the others are closed).
fn connection_to(port: u16, name: &str) -> TcpStream {
    for _ in 0..20 {
        let mut stream = connect(port).unwrap();
        if read_name(&mut stream).unwrap() == name {
            return stream;
        }
    }
    panic!("no connection reached {name}");
}

/// Backend names of `n` sequential new connections.
fn names(port: u16, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let mut stream = connect(port).unwrap();
        *counts.entry(read_name(&mut stream).unwrap()).or_default() += 1;
    }
    counts
}

/// A service's backend in the dataplane's `/stats`.
/// Stops the controlplane with SIGTERM, as systemd does, and waits for it to exit.
fn stop_controlplane(h: &mut Harness) {
    h.controlplane.proc.signal(libc::SIGTERM);
    assert!(
        h.controlplane
            .proc
            .wait_exit(Duration::from_secs(15))
            .is_some()
    );
}

fn backend_stats(h: &mut Harness, service: &str, port: u16) -> serde_json::Value {
    let admin = h.dataplane.admin_address();
    let stats = stats(admin);
    find_backend(&stats, service, &local(port).to_string())
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn reconfigure_and_remove_route_and_unroute_a_service() {
    let echo = EchoBackend::start();
    let other = free_port();
    let mut h = Harness::start(
        &[Service::new("static", other).backend(echo.port())],
        LOOPBACK_BACKENDS,
        &[],
    );
    let api = h.controlplane.api();
    let port = free_port();
    assert!(connect(port).is_err(), "nothing listens before reconfigure");

    let answer = api.ok(
        "GET",
        &format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName=echo&reqMode=tcp&srcPort={port}\
             &port={}&outboundHostname=127.0.0.1",
            echo.port()
        ),
        None,
    );
    assert_eq!(answer["Status"], "OK", "{answer}");
    assert_eq!(answer["ServiceName"], "echo");
    assert_eq!(answer["ServiceDest"][0]["SrcPort"], port);
    assert_eq!(answer["RingwayChanged"], true);
    wait_version(&mut h.dataplane, version_of(&answer));
    echo_round_trip(port, 1, 100_000).expect("the registered service routes");
    let accepted = echo.counters().accepted();
    assert!(accepted >= 1);

    // The same call again changes nothing and produces no snapshot.
    let again = api.ok(
        "GET",
        &format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName=echo&reqMode=tcp&srcPort={port}\
             &port={}&outboundHostname=127.0.0.1",
            echo.port()
        ),
        None,
    );
    assert_eq!(again["RingwayChanged"], false);
    assert_eq!(version_of(&again), version_of(&answer));

    let (_, sources) = api.get("/v1/sources");
    let api_source = sources["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "api")
        .cloned()
        .expect("the api source is listed");
    assert_eq!(api_source["state"], "ok");

    let removed = api.ok(
        "DELETE",
        "/v1/docker-flow-proxy/remove?serviceName=echo",
        None,
    );
    assert_eq!(removed["Status"], "OK");
    assert_eq!(removed["RingwayChanged"], true);
    wait_version(&mut h.dataplane, version_of(&removed));
    assert!(
        wait_until(Duration::from_secs(10), || connect(port).is_err()),
        "connections are refused after remove"
    );
    echo_round_trip(other, 2, 1_000).expect("the file's service is untouched");
}

#[test]
fn drain_stops_new_connections_while_open_ones_continue() {
    let a = NamedBackend::start("a");
    let b = NamedBackend::start("b");
    let port = free_port();
    let mut h = Harness::start(
        &[Service::new("web", port)
            .backend(a.port())
            .backend(b.port())],
        &[],
        &[],
    );
    let api = h.controlplane.api();
    let mut held = connection_to(port, "a");

    let path = format!("/v1/services/web/backends/127.0.0.1:{}", a.port());
    let answer = api.ok("PUT", &path, Some(r#"{"state":"drain"}"#));
    assert_eq!(answer["override"], serde_json::json!({"state": "drain"}));
    assert_eq!(answer["changed"], true);
    let version = version_of(&answer);
    wait_version(&mut h.dataplane, version);

    let before = a.counters().accepted();
    let counts = names(port, 20);
    assert_eq!(
        counts.get("b"),
        Some(&20),
        "new connections avoid the drained backend: {counts:?}"
    );
    assert_eq!(
        a.counters().accepted(),
        before,
        "the drained backend saw no new connection"
    );
    still_flows(&mut held);
    assert_eq!(a.counters().active(), 1, "its open connection continues");
    let stats = backend_stats(&mut h, "web", a.port());
    assert_eq!(stats["state"], "draining", "{stats}");
    assert_eq!(stats["connections"], 1, "{stats}");

    // The controlplane shows the override, the effective state and the dataplane's ACK.
    let ok = wait_until(Duration::from_secs(10), || {
        api.get("/v1/services").1["dataplanes"][0]["last_ack"] == version
    });
    assert!(ok, "the dataplane's ACK of {version} never showed");
    let (_, services) = api.get("/v1/services");
    assert_eq!(services["snapshot"]["version"], version);
    assert_eq!(services["dataplanes"][0]["in_sync"], true);
    let instance = &services["services"][0]["instances"][0];
    assert_eq!(instance["address"], local(a.port()).to_string());
    assert_eq!(instance["state"], "active", "what the source says");
    assert_eq!(instance["effective"]["state"], "draining");
    assert!(
        instance["sources"][0]
            .as_str()
            .unwrap()
            .starts_with("file:")
    );

    // maint takes it out of the snapshot; the held connection still flows. Clearing brings it back.
    let answer = api.ok("PUT", &path, Some(r#"{"state":"maint"}"#));
    wait_version(&mut h.dataplane, version_of(&answer));
    assert_eq!(backend_stats(&mut h, "web", a.port())["state"], "removed");
    still_flows(&mut held);
    let cleared = api.ok("DELETE", &path, None);
    assert_eq!(cleared["override"], serde_json::Value::Null);
    wait_version(&mut h.dataplane, version_of(&cleared));
    let counts = names(port, 10);
    assert!(
        counts.get("a").is_some_and(|n| *n >= 3),
        "a takes connections again: {counts:?}"
    );
    drop(held);
}

#[test]
fn weight_overrides_change_the_distribution() {
    let light = NamedBackend::start("light");
    let heavy = NamedBackend::start("heavy");
    let port = free_port();
    let mut h = Harness::start(
        &[Service::new("w", port)
            .backend(light.port())
            .backend(heavy.port())],
        &[],
        &[],
    );
    let api = h.controlplane.api();
    let even = names(port, 100);
    assert!(
        even.get("light").is_some_and(|n| (35..=65).contains(n)),
        "equal weights share evenly: {even:?}"
    );
    let answer = api.ok(
        "PUT",
        &format!("/v1/services/w/backends/127.0.0.1:{}", light.port()),
        Some(r#"{"weight":100}"#),
    );
    assert_eq!(answer["override"]["weight"], 100);
    wait_version(&mut h.dataplane, version_of(&answer));
    // 100 against the default 500: a sixth of 300 connections is 50.
    let skewed = names(port, 300);
    let got = skewed.get("light").copied().unwrap_or(0);
    assert!(
        (30..=75).contains(&got),
        "light got {got} of 300: {skewed:?}"
    );
    assert_eq!(backend_stats(&mut h, "w", light.port())["weight"], 100);
}

#[test]
fn switch_moves_new_connections_and_the_old_set_drains() {
    let blue = [NamedBackend::start("blue1"), NamedBackend::start("blue2")];
    let green = [NamedBackend::start("green1"), NamedBackend::start("green2")];
    let port = free_port();
    let mut h = Harness::start(
        &[Service::new("app", port)
            .backend(blue[0].port())
            .backend(blue[1].port())
            .backend(green[0].port())
            .backend(green[1].port())],
        &[],
        &[],
    );
    let api = h.controlplane.api();
    let mut held_blue = connection_to(port, "blue1");

    let body = format!(
        r#"{{"backends":["127.0.0.1:{}","127.0.0.1:{}"]}}"#,
        green[0].port(),
        green[1].port()
    );
    let answer = api.ok("POST", "/v1/services/app/switch", Some(&body));
    assert_eq!(answer["switch"].as_array().unwrap().len(), 2, "{answer}");
    let version = version_of(&answer);
    wait_version(&mut h.dataplane, version);
    assert_eq!(
        h.dataplane
            .applied_versions()
            .iter()
            .filter(|v| **v >= version)
            .count(),
        1,
        "one snapshot moved the whole service"
    );

    let blue_before: usize = blue.iter().map(|b| b.counters().accepted()).sum();
    let counts = names(port, 20);
    assert!(
        counts.keys().all(|n| n.starts_with("green")) && counts.len() == 2,
        "new connections go to the green set: {counts:?}"
    );
    let blue_after: usize = blue.iter().map(|b| b.counters().accepted()).sum();
    assert_eq!(blue_before, blue_after);
    still_flows(&mut held_blue);
    let stats = backend_stats(&mut h, "app", blue[0].port());
    assert_eq!(
        (stats["state"].as_str(), stats["connections"].as_u64()),
        (Some("draining"), Some(1))
    );

    let cleared = api.ok("DELETE", "/v1/services/app/switch", None);
    assert_eq!(cleared["switch"], serde_json::Value::Null);
    wait_version(&mut h.dataplane, version_of(&cleared));
    assert_eq!(
        backend_stats(&mut h, "app", blue[1].port())["state"],
        "active"
    );
    drop(held_blue);
}

#[test]
fn the_token_is_required_when_set() {
    let echo = EchoBackend::start();
    let mut h = Harness::start(
        &[Service::new("echo", free_port()).backend(echo.port())],
        &["--api-token", "s3cret"],
        &[],
    );
    let anonymous = h.controlplane.api();
    for path in ["/v1/sources", "/v1/services"] {
        let (status, body) = anonymous.get(path);
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["field"], "authorization");
    }
    let (status, body) = anonymous.get("/v1/docker-flow-proxy/remove?serviceName=x");
    assert_eq!((status, body["Status"].as_str()), (401, Some("NOK")));
    let wrong = anonymous.clone().with_token("s3cret-not");
    assert_eq!(wrong.get("/v1/services").0, 401);
    let (status, body) = anonymous.clone().with_token("s3cret").call(
        "PUT",
        "/v1/services/echo/backends/127.0.0.1:1",
        Some(r#"{"state":"drain"}"#),
    );
    assert_eq!(status, 404, "authorized, then checked: {body}");
    let authorized = anonymous.with_token("s3cret");
    let (status, body) = authorized.get("/v1/services");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["services"][0]["name"], "echo");
}

#[test]
fn bad_input_answers_4xx_naming_the_field() {
    let a = NamedBackend::start("a");
    let port = free_port();
    let mut h = Harness::start(&[Service::new("web", port).backend(a.port())], &[], &[]);
    let api = h.controlplane.api();
    let backend = format!("/v1/services/web/backends/127.0.0.1:{}", a.port());
    let cases: Vec<(&str, String, Option<&str>, u16, &str)> = vec![
        (
            "PUT",
            "/v1/services/nope/backends/127.0.0.1:1".into(),
            Some(r#"{"state":"drain"}"#),
            404,
            "service",
        ),
        (
            "PUT",
            "/v1/services/web/backends/127.0.0.1:1".into(),
            Some(r#"{"state":"drain"}"#),
            404,
            "backend",
        ),
        (
            "PUT",
            "/v1/services/web/backends/not-an-address".into(),
            Some(r#"{"state":"drain"}"#),
            400,
            "backend",
        ),
        (
            "PUT",
            backend.clone(),
            Some(r#"{"weight":1001}"#),
            400,
            "weight",
        ),
        (
            "PUT",
            backend.clone(),
            Some(r#"{"weight":0}"#),
            400,
            "weight",
        ),
        (
            "PUT",
            backend.clone(),
            Some(r#"{"weight":"heavy"}"#),
            400,
            "weight",
        ),
        (
            "PUT",
            backend.clone(),
            Some(r#"{"state":"sleeping"}"#),
            400,
            "state",
        ),
        ("PUT", backend.clone(), Some(r#"{}"#), 400, "state"),
        (
            "PUT",
            backend.clone(),
            Some(r#"{"state":"drain","colour":"blue"}"#),
            400,
            "colour",
        ),
        (
            "PUT",
            backend.clone(),
            Some(r#"{"state": drain}"#),
            400,
            "body",
        ),
        ("PUT", backend.clone(), None, 400, "body"),
        ("DELETE", backend.clone(), None, 404, "backend"),
        (
            "POST",
            "/v1/services/web/switch".into(),
            Some(r#"{"backends":[]}"#),
            400,
            "backends",
        ),
        (
            "POST",
            "/v1/services/web/switch".into(),
            Some(r#"{"backends":["127.0.0.1:1"]}"#),
            400,
            "backends[0]",
        ),
        (
            "DELETE",
            "/v1/services/web/switch".into(),
            None,
            404,
            "service",
        ),
        ("GET", "/v1/nothing".into(), None, 404, "path"),
        ("POST", "/v1/services".into(), None, 405, "method"),
    ];
    for (method, path, body, status, field) in &cases {
        let (got, answer) = api.call(method, path, *body);
        assert_eq!(got, *status, "{method} {path} {body:?}: {answer}");
        assert_eq!(
            answer["field"], *field,
            "{method} {path} {body:?}: {answer}"
        );
        assert!(
            answer["error"].as_str().unwrap().starts_with(field),
            "the message names the field: {answer}"
        );
    }
    let (status, answer) = api.call("PUT", &backend, Some(r#"{"weight":1001}"#));
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("weight: 1001 is outside 1..=1000"))
    );

    // docker-flow-proxy's calls answer in its own shape.
    let dfp: Vec<(&str, u16, &str)> = vec![
        (
            "/v1/docker-flow-proxy/reconfigure?port=80",
            400,
            "serviceName",
        ),
        (
            "/v1/docker-flow-proxy/reconfigure?serviceName=%zz",
            400,
            "serviceName",
        ),
        (
            "/v1/docker-flow-proxy/reconfigure?serviceName=x&reqMode=tcp&port=80",
            400,
            "srcPort",
        ),
        (
            "/v1/docker-flow-proxy/reconfigure?serviceName=x&reqMode=tcp&srcPort=1&port=http",
            400,
            "port",
        ),
        (
            "/v1/docker-flow-proxy/reconfigure?serviceName=x&port=80&srcPort=1",
            409,
            "servicePath",
        ),
        ("/v1/docker-flow-proxy/remove", 400, "serviceName"),
    ];
    for (path, status, field) in dfp {
        let (got, answer) = api.get(path);
        assert_eq!(got, status, "{path}: {answer}");
        assert_eq!(answer["Status"], "NOK", "{path}: {answer}");
        assert_eq!(answer["Field"], field, "{path}: {answer}");
    }
    let (_, answer) = api.get("/v1/docker-flow-proxy/remove");
    assert_eq!(answer["Message"], "The serviceName query is mandatory");
    // Nothing above changed the routing.
    assert_eq!(h.controlplane.published_versions().len(), 1);
}

#[test]
fn api_services_and_overrides_survive_a_controlplane_restart() {
    let echo = EchoBackend::start();
    let named = NamedBackend::start("n");
    let (port, static_port) = (free_port(), free_port());
    let mut h = Harness::start(
        &[Service::new("static", static_port).backend(named.port())],
        LOOPBACK_BACKENDS,
        &[],
    );
    let api = h.controlplane.api();
    let registered = api.ok(
        "GET",
        &format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName=kept&reqMode=tcp&srcPort={port}&port={}\
             &outboundHostname=127.0.0.1",
            echo.port()
        ),
        None,
    );
    let drained = api.ok(
        "PUT",
        &format!("/v1/services/static/backends/127.0.0.1:{}", named.port()),
        Some(r#"{"state":"drain","weight":7}"#),
    );
    wait_version(&mut h.dataplane, version_of(&drained));
    let hash = api.get("/v1/services").1["snapshot"]["hash"].clone();
    assert!(version_of(&drained) > version_of(&registered));

    stop_controlplane(&mut h);
    let services = h.services.path.clone();
    h.controlplane = Controlplane::start(h.path(), &services, LOOPBACK_BACKENDS);
    let api = h.controlplane.api();
    let (_, view) = api.get("/v1/services");
    assert_eq!(
        view["snapshot"]["hash"], hash,
        "the same routing after the restart: {view}"
    );
    let kept = view["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "kept")
        .unwrap_or_else(|| panic!("the registered service is back: {view}"));
    assert_eq!(kept["instances"][0]["sources"][0], "api");
    echo_round_trip(port, 3, 10_000).expect("still routed");
    let removed = api.ok("GET", "/v1/docker-flow-proxy/remove?serviceName=kept", None);
    wait_version(&mut h.dataplane, version_of(&removed));
    assert!(wait_until(Duration::from_secs(10), || connect(port).is_err()));

    // Registered while loopback backends were allowed; restarted without that: not restored.
    api.ok("GET", &format!("/v1/docker-flow-proxy/reconfigure?serviceName=loop&reqMode=tcp&srcPort={port}&port={}&outboundHostname=127.0.0.1", echo.port()), None);
    stop_controlplane(&mut h);
    h.controlplane = Controlplane::start(h.path(), &services, &["--listen-address", "127.0.0.1"]);
    let (_, view) = h.controlplane.api().get("/v1/services");
    assert!(
        !view["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "loop"),
        "a registration the limits now refuse came back: {view}"
    );
    assert_eq!(
        h.controlplane.api().get("/v1/sources").1["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["source"] == "api")
            .map(|s| s["state"].clone()),
        Some(serde_json::json!("ok"))
    );
}

#[test]
fn an_override_stays_with_its_listen_address_when_another_service_takes_the_name() {
    let a = NamedBackend::start("a");
    let (first, second) = (free_port(), free_port());
    let mut h = Harness::start(&[Service::new("web", first).backend(a.port())], &[], &[]);
    let api = h.controlplane.api();
    let drained = api.ok(
        "PUT",
        &format!("/v1/services/web/backends/127.0.0.1:{}", a.port()),
        Some(r#"{"state":"drain"}"#),
    );
    wait_version(&mut h.dataplane, version_of(&drained));

    // "web" on the first port goes away; a different service (another listen address) is now "web".
    h.reconfigure(&[Service::new("web", second).backend(a.port())]);
    let (_, view) = api.get("/v1/services");
    let instance = &view["services"][0]["instances"][0];
    assert_eq!(view["services"][0]["listen"], local(second).to_string());
    assert_eq!(instance["override"], serde_json::Value::Null, "{view}");
    assert_eq!(instance["effective"]["state"], "active", "{view}");
    let mut stream = connect(second).unwrap();
    assert_eq!(
        read_name(&mut stream).unwrap(),
        "a",
        "the new service routes"
    );
    assert_eq!(
        view["dormant_overrides"][0]["listen"],
        local(first).to_string(),
        "the override waits for its own service: {view}"
    );
}
