//! The controlplane API's safe defaults, end to end: what a browser page on the host can no longer do,
//! what docker-flow-proxy registrations may not point at or take over, and the token from a file in its
//! three forms. docker-flow-proxy's plain GETs (no `Origin`, no headers) keep working.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;
use ringway_tests::api::{version_of, wait_version};
use ringway_tests::net::{free_port, local};
use ringway_tests::traffic::echo_round_trip;
use ringway_tests::{EchoBackend, Harness, Service, wait_until};

/// Asserts `status` and the `field` (or docker-flow-proxy's `Field`) an answer names.
fn refused(answer: (u16, serde_json::Value), status: u16, field: &str, what: &str) {
    let (got, body) = answer;
    assert_eq!(got, status, "{what}: {body}");
    let named = body["field"].as_str().or(body["Field"].as_str());
    assert_eq!(named, Some(field), "{what}: {body}");
}

#[test]
fn browsers_on_other_sites_cannot_call_the_api() {
    let echo = EchoBackend::start();
    let mut h = Harness::start(
        &[Service::new("web", free_port())
            .backend(echo.port())
            .backend(free_port())],
        &[],
        &[],
    );
    let api = h.controlplane.api();
    let switch = format!(r#"{{"backends":["127.0.0.1:{}"]}}"#, echo.port());
    let evil = ("Origin", "http://evil.example");

    // A page's form or fetch: a text/plain POST carrying another site's Origin.
    refused(
        api.call_with(
            "POST",
            "/v1/services/web/switch",
            &[evil, ("Content-Type", "text/plain")],
            Some(&switch),
        ),
        403,
        "origin",
        "cross-site POST",
    );
    refused(
        api.call_with("GET", "/v1/services", &[evil], None),
        403,
        "origin",
        "GET with another site's Origin",
    );
    for site in ["cross-site", "same-site"] {
        refused(
            api.call_with("GET", "/v1/sources", &[("Sec-Fetch-Site", site)], None),
            403,
            "sec-fetch-site",
            site,
        );
    }
    // DNS rebinding: the page's own name, resolved to loopback.
    let rebound = format!("rebound.evil.example:{}", api.address.port());
    refused(
        api.call_with("GET", "/v1/services", &[("Host", &rebound)], None),
        403,
        "host",
        "a foreign Host without a token",
    );
    // Not JSON: refused even without an Origin.
    refused(
        api.call_with(
            "POST",
            "/v1/services/web/switch",
            &[("Content-Type", "text/plain")],
            Some(&switch),
        ),
        415,
        "content-type",
        "text/plain body",
    );
    assert_eq!(
        h.controlplane.published_versions().len(),
        1,
        "nothing above changed the routing"
    );

    // The API's own origin, a user typing the URL, and docker-flow-proxy's plain GETs still work.
    let own = format!("http://{}", api.address);
    let (status, body) = api.call_with("GET", "/v1/services", &[("Origin", &own)], None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.call_with("GET", "/v1/services", &[("Sec-Fetch-Site", "none")], None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.get("/v1/docker-flow-proxy/ping");
    assert_eq!((status, body["Status"].as_str()), (200, Some("OK")));
    let answer = api.ok("POST", "/v1/services/web/switch", Some(&switch));
    assert_eq!(answer["changed"], true);
}

#[test]
fn docker_flow_proxy_registrations_cannot_point_anywhere_or_take_any_port() {
    let echo = EchoBackend::start();
    let file_port = free_port();
    let mut h = Harness::start(
        &[Service::new("web", file_port).backend(echo.port())],
        &[
            "--listen-address",
            "127.0.0.1",
            "--api-max-registrations",
            "1",
        ],
        &[],
    );
    let api = h.controlplane.api();
    let reconfigure = |query: &str| {
        api.get(&format!(
            "/v1/docker-flow-proxy/reconfigure?reqMode=tcp&port=8080&{query}"
        ))
    };
    let port = free_port();
    for host in [
        "127.0.0.1",
        "169.254.169.254",
        "169.254.10.1",
        "0.0.0.0",
        "[::1]",
        "[fe80::1]",
        "[fd00:ec2::254]",
        "::ffff:127.0.0.1",
    ] {
        refused(
            reconfigure(&format!(
                "serviceName=x&srcPort={port}&outboundHostname={host}"
            )),
            400,
            "outboundHostname",
            host,
        );
    }
    let api_port = api.address.port();
    for (query, status, field) in [
        (
            "serviceName=x&srcPort=80&outboundHostname=10.0.0.5".to_string(),
            400,
            "srcPort",
        ),
        (
            format!("serviceName=x&srcPort={api_port}&outboundHostname=10.0.0.5"),
            400,
            "srcPort",
        ),
        (
            format!("serviceName=x&srcPort={file_port}&outboundHostname=10.0.0.5"),
            409,
            "srcPort",
        ),
        (
            format!("serviceName=a/b&srcPort={port}&outboundHostname=10.0.0.5"),
            400,
            "serviceName",
        ),
        (
            format!(
                "serviceName={}&srcPort={port}&outboundHostname=10.0.0.5",
                "n".repeat(64)
            ),
            400,
            "serviceName",
        ),
        (
            format!(
                "serviceName=x&reqMode=http&serviceDomain=bad..example&srcPort={port}&outboundHostname=10.0.0.5"
            ),
            400,
            "serviceDomain",
        ),
    ] {
        refused(reconfigure(&query), status, field, &query);
    }
    assert_eq!(h.controlplane.published_versions().len(), 1);

    // A routable backend on a free port in range is fine; the cap (1 here) then refuses a second name.
    let ok = reconfigure(&format!(
        "serviceName=app.v2_x-1&serviceDomain=*.example.com&srcPort={port}&outboundHostname=10.0.0.5"
    ));
    assert_eq!(
        (ok.0, ok.1["Status"].as_str()),
        (200, Some("OK")),
        "{}",
        ok.1
    );
    wait_version(&mut h.dataplane, version_of(&ok.1));
    refused(
        reconfigure(&format!(
            "serviceName=second&srcPort={}&outboundHostname=10.0.0.6",
            free_port()
        )),
        409,
        "serviceName",
        "over --api-max-registrations",
    );
}

#[test]
fn a_token_from_a_file_works_as_bearer_basic_or_query_on_docker_flow_proxy_routes() {
    let echo = EchoBackend::start();
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-from-a-file";
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut h = Harness::start(
        &[Service::new("web", free_port()).backend(echo.port())],
        &[
            "--api-token-file",
            token_file.to_str().unwrap(),
            "--api-allow-backends",
            "127.0.0.0/8",
            "--listen-address",
            "127.0.0.1",
        ],
        &[],
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", h.controlplane.proc.pid())).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(token),
        "the token is not in ps"
    );
    let anonymous = h.controlplane.api();
    let basic = |password: &str| {
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("ops:{password}"));
        format!("Basic {credentials}")
    };
    refused(
        anonymous.get("/v1/services"),
        401,
        "authorization",
        "no token",
    );
    let (status, _) = anonymous.clone().with_token(token).get("/v1/services");
    assert_eq!(status, 200, "Bearer");
    let (status, _) = anonymous.call_with(
        "GET",
        "/v1/services",
        &[("Authorization", &basic(token))],
        None,
    );
    assert_eq!(status, 200, "Basic with the token as password");
    let (status, _) = anonymous.call_with(
        "GET",
        "/v1/services",
        &[("Authorization", &basic("nope"))],
        None,
    );
    assert_eq!(status, 401, "Basic with a wrong password");
    refused(
        anonymous.get(&format!("/v1/services?token={token}")),
        401,
        "authorization",
        "?token= is for docker-flow-proxy's routes only",
    );

    // docker-flow-proxy's caller: a plain GET, the token in the query.
    let port = free_port();
    let path = format!(
        "/v1/docker-flow-proxy/reconfigure?serviceName=echo&reqMode=tcp&srcPort={port}&port={}\
         &outboundHostname=127.0.0.1",
        echo.port()
    );
    refused(
        anonymous.get(&path),
        401,
        "Authorization",
        "dfp without token",
    );
    let answer = anonymous.ok("GET", &format!("{path}&token={token}"), None);
    wait_version(&mut h.dataplane, version_of(&answer));
    assert!(
        wait_until(Duration::from_secs(10), || echo_round_trip(port, 1, 1000)
            .is_ok()),
        "the registered service routes"
    );
    assert_eq!(
        answer["ServiceDest"][0]["Backends"][0],
        local(echo.port()).to_string()
    );
}

#[test]
fn idle_connections_beyond_the_cap_wait_instead_of_taking_the_api_down() {
    // The API serves at most 64 connections at once (api::MAX_CONNECTIONS); the next waits in the
    // backlog until one ends, and an idle one ends by itself after the header read timeout (10 s).
    const CAP: usize = 64;
    let mut h = Harness::start(
        &[Service::new("web", free_port()).backend(free_port())],
        &[],
        &[],
    );
    let api = h.controlplane.api();
    let idle: Vec<TcpStream> = (0..CAP)
        .map(|_| TcpStream::connect(api.address).unwrap())
        .collect();
    let mut waiting = TcpStream::connect(api.address).unwrap();
    waiting
        .write_all(b"GET /v1/sources HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut first = [0u8; 1];
    assert!(
        waiting.read(&mut first).is_err(),
        "answered while {CAP} connections are open"
    );
    drop(idle);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    waiting.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
