//! docker-flow-proxy's parameters, validation messages and answer shape.

use super::*;

fn params(query: &str) -> Params {
    Params::new(crate::api::http::query_pairs(Some(query)).unwrap())
}

fn parse(query: &str) -> Result<Reconfigure, DfpError> {
    parse_reconfigure(&params(query))
}

#[test]
fn a_tcp_service_maps_to_a_listen_port_and_a_backend() {
    let r = parse("serviceName=redis&reqMode=tcp&srcPort=6379&port=6380&outboundHostname=10.0.0.5")
        .unwrap();
    assert!(!r.hosts_from_name);
    let d = &r.registration.destinations[0];
    assert_eq!(
        (d.index, d.src_port, d.port, d.mode),
        (0, Some(6379), 6380, ServiceMode::Tcp)
    );
    assert_eq!(d.hosts, vec!["10.0.0.5"]);
}

#[test]
fn indexed_destinations_follow_docker_flow_proxy() {
    // docker-flow-proxy's own example (docs/usage.md), with the unindexed outboundHostname as fallback.
    let r = parse(
        "serviceName=foo&servicePath.1=/&port.1=8080&srcPort.1=80&servicePath.2=/&port.2=8081\
         &srcPort.2=443&port.4=9000&outboundHostname=127.0.0.1",
    )
    .unwrap();
    let ds = &r.registration.destinations;
    assert_eq!(ds.len(), 2, "index 3 is missing, so 4 is never read");
    assert_eq!(
        (ds[0].index, ds[0].src_port, ds[0].port),
        (1, Some(80), 8080)
    );
    assert_eq!(
        (ds[1].index, ds[1].src_port, ds[1].port),
        (2, Some(443), 8081)
    );
    assert_eq!(ds[1].mode, ServiceMode::Http, "http is the default mode");
    assert_eq!(ds[0].service_path, vec!["/"]);
}

#[test]
fn hosts_default_to_the_service_name_as_swarm_dns_did() {
    let r = parse("serviceName=web&reqMode=tcp&srcPort=80&port=8080").unwrap();
    assert!(r.hosts_from_name);
    assert_eq!(r.registration.destinations[0].hosts, vec!["web"]);
    let r =
        parse("serviceName=web&serviceDomain=Example.COM&srcPort=80&port=8080&timeoutServer=30")
            .unwrap();
    assert_eq!(
        r.registration.destinations[0].service_domain,
        vec!["example.com"]
    );
    assert_eq!(r.registration.timeout_server_s, Some(30));
}

#[test]
fn invalid_calls_answer_with_docker_flow_proxys_messages() {
    let cases: &[(&str, u16, &str, &str)] = &[
        ("port=80", 400, "serviceName", NO_SERVICE_NAME),
        (
            "serviceName=a&port=80&srcPort=80",
            409,
            "servicePath",
            HTTP_NEEDS_PATH,
        ),
        (
            "serviceName=a&reqMode=tcp&port=80",
            400,
            "srcPort",
            TCP_NEEDS_PORTS,
        ),
        (
            "serviceName=a&reqMode=tcp&srcPort=80",
            400,
            "port",
            TCP_NEEDS_PORTS,
        ),
        (
            "serviceName=a&servicePath=/&srcPort=80",
            400,
            "port",
            NO_PORT,
        ),
        (
            "serviceName=a&reqMode=tcp&srcPort=80&port=x",
            400,
            "port",
            "port: \"x\" is not a port",
        ),
        (
            "serviceName=a&reqMode=tcp&srcPort=0&port=1",
            400,
            "srcPort",
            "srcPort: \"0\" is not",
        ),
        (
            "serviceName=a&reqMode=sni&srcPort=1&port=1",
            400,
            "reqMode",
            "reqMode: \"sni\" is not",
        ),
        (
            "serviceName=a&servicePath.1=/&port.1=99999&srcPort.1=1",
            400,
            "port.1",
            "port.1: \"99999\" is not a port",
        ),
        (
            "serviceName=a&reqMode=tcp&srcPort=1&port=1&timeoutServer=soon",
            400,
            "timeoutServer",
            "timeoutServer: \"soon\"",
        ),
    ];
    for (query, status, field, message) in cases {
        let err = parse(query).unwrap_err();
        assert_eq!(
            (err.status, err.field.as_str()),
            (*status, *field),
            "{query}: {err}"
        );
        assert!(err.message.starts_with(message), "{query}: {err}");
    }
}

#[tokio::test]
async fn ip_hosts_resolve_to_themselves_and_unresolvable_names_name_their_field() {
    let r = parse(
        "serviceName=a&reqMode=tcp&srcPort=80&port=81&outboundHostname=127.0.0.2,[::1],127.0.0.2",
    )
    .unwrap();
    let registration = resolve(r).await.unwrap();
    let backends: Vec<String> = registration.destinations[0]
        .backends
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(backends, vec!["127.0.0.2:81", "[::1]:81"]);

    let r = parse("serviceName=no-such-host.invalid&reqMode=tcp&srcPort=80&port=81").unwrap();
    let err = resolve(r).await.unwrap_err();
    assert_eq!(err.field, "serviceName");
    assert!(
        err.message.starts_with("serviceName: cannot resolve"),
        "{err}"
    );
}

fn registration(name: &str, destinations: &[(u16, &[u16])]) -> Registration {
    Registration {
        service_name: name.into(),
        destinations: destinations
            .iter()
            .enumerate()
            .map(|(i, (src, backends))| Destination {
                index: i + 1,
                src_port: Some(*src),
                port: backends[0],
                mode: ServiceMode::Tcp,
                hosts: vec!["127.0.0.1".into()],
                backends: backends
                    .iter()
                    .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
                    .collect(),
                service_path: Vec::new(),
                service_domain: Vec::new(),
                path_match: PathMatch::Prefix,
            })
            .collect(),
        timeout_server_s: Some(2),
        timeout_tunnel_s: None,
    }
}

#[test]
fn registrations_become_one_service_per_destination() {
    let regs = [registration("a", &[(80, &[1, 2]), (81, &[3])])];
    let c = catalog(&regs, IpAddr::from([0, 0, 0, 0]), 80);
    assert_eq!(c.services.len(), 2);
    assert_eq!(c.services[0].listen, "0.0.0.0:80".parse().unwrap());
    assert_eq!(c.services[0].instances.len(), 2);
    assert_eq!(c.services[0].timeouts.idle_ms, Some(2_000));
    assert_eq!(
        c.services[1].name, "a",
        "the merge renames the second to a-81"
    );
}

#[test]
fn answers_have_docker_flow_proxys_shape() {
    let reg = registration("a", &[(80, &[1])]);
    let mut ok = DfpResponse::ok("a").with_registration(&reg);
    ok.ringway_version = Some(7);
    ok.ringway_changed = Some(true);
    let json = serde_json::to_value(&ok).unwrap();
    assert_eq!(json["Status"], "OK");
    assert_eq!(json["Message"], "");
    assert_eq!(json["ServiceName"], "a");
    assert_eq!(json["ServiceDest"][0]["Port"], "1");
    assert_eq!(json["ServiceDest"][0]["SrcPort"], 80);
    assert_eq!(json["ServiceDest"][0]["ReqMode"], "tcp");
    assert_eq!(json["ServiceDest"][0]["Backends"][0], "127.0.0.1:1");
    assert_eq!(json["TimeoutServer"], "2");
    assert_eq!(json["RingwayVersion"], 7);
    assert!(json.get("Field").is_none());

    let err = DfpError::bad("serviceName", NO_SERVICE_NAME_REMOVE);
    let json = serde_json::to_value(DfpResponse::error("", &err)).unwrap();
    assert_eq!(json["Status"], "NOK");
    assert_eq!(json["Message"], NO_SERVICE_NAME_REMOVE);
    assert_eq!(json["Field"], "serviceName");
    assert!(json.get("ServiceDest").is_none());
}

#[test]
fn a_repeated_parameter_keeps_its_first_value() {
    let p = params("serviceName=first&serviceName=second");
    assert_eq!(p.service_name(), Some("first"));
}

#[test]
fn an_http_destination_without_src_port_joins_the_shared_http_port() {
    // The seed workflow: docker-flow-proxy's own example, served by path on port 80.
    let r = parse("serviceName=go-demo&servicePath=/demo&port=8080&outboundHostname=127.0.0.1")
        .unwrap();
    let d = &r.registration.destinations[0];
    assert_eq!(
        (d.src_port, d.mode, d.path_match),
        (None, ServiceMode::Http, PathMatch::Prefix)
    );
    let mut registration = r.registration.clone();
    registration.destinations[0].backends = vec!["127.0.0.1:8080".parse().unwrap()];
    let c = catalog([&registration], IpAddr::from([0, 0, 0, 0]), 8088);
    let s = &c.services[0];
    assert_eq!(s.listen, "0.0.0.0:8088".parse().unwrap());
    assert_eq!(s.mode, ServiceMode::Http);
    assert_eq!(s.route.paths, vec!["/demo"]);
    assert!(s.route.hosts.is_empty());
    let json =
        serde_json::to_value(DfpResponse::ok("go-demo").with_registration(&registration)).unwrap();
    assert_eq!(json["ServiceDest"][0]["SrcPort"], 0);
    assert_eq!(json["ServiceDest"][0]["PathType"], "path_beg");
}

#[test]
fn path_type_domain_and_tunnel_timeout_become_the_route() {
    let r = parse(
        "serviceName=api&servicePath=^/v[0-9]%2B/,/x&pathType=path_reg&serviceDomain=*.Example.com\
         &srcPort=8081&port=8080&timeoutServer=5&timeoutTunnel=7",
    )
    .unwrap();
    let d = &r.registration.destinations[0];
    assert_eq!(d.path_match, PathMatch::Regex);
    assert_eq!(d.service_path, vec!["^/v[0-9]+/", "/x"]);
    let c = catalog([&r.registration], IpAddr::from([127, 0, 0, 1]), 80);
    let s = &c.services[0];
    assert_eq!(s.listen, "127.0.0.1:8081".parse().unwrap());
    assert_eq!(s.route.hosts, vec!["*.example.com"]);
    assert_eq!(s.route.path_match, PathMatch::Regex);
    assert_eq!(
        (s.timeouts.server_ms, s.timeouts.tunnel_ms),
        (Some(5_000), Some(7_000))
    );

    for (query, field, needle) in [
        (
            "serviceName=a&servicePath=/x&pathType=path_end&port=1",
            "pathType",
            "path_beg, path or path_reg",
        ),
        (
            "serviceName=a&servicePath=x&port=1",
            "servicePath",
            "does not start with '/'",
        ),
        (
            "serviceName=a&servicePath=/(x&pathType=path_reg&port=1",
            "servicePath",
            "not a valid regex",
        ),
        (
            "serviceName=a&servicePath.1=/(x&pathType.1=path_reg&port.1=1",
            "servicePath.1",
            "not a valid regex",
        ),
        (
            "serviceName=a&servicePath=/x&port=1&timeoutTunnel=x",
            "timeoutTunnel",
            "seconds",
        ),
    ] {
        let err = parse(query).unwrap_err();
        assert_eq!((err.status, err.field.as_str()), (400, field), "{query}");
        assert!(err.message.contains(needle), "{query}: {}", err.message);
    }
}
