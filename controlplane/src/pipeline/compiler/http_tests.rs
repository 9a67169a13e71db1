//! The compiler's HTTP rules: shared listeners, routes, the vhost and app-id ports, conflicts.

use std::net::SocketAddr;

use ringway_shared::{ClusterHttp, PathMatch as WirePathMatch, Protocol};

use super::*;
use crate::model::{HttpListenerSettings, PathMatch, RouteMatch, ServiceMode};

fn settings() -> CompileSettings {
    let nz = |n| NonZeroU32::new(n).unwrap();
    CompileSettings {
        vhost_listen: "0.0.0.0:80".parse().unwrap(),
        ..CompileSettings::new(nz(1), nz(8192))
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn tcp(name: &str, listen: &str) -> Service {
    Service::for_test(name, addr(listen), None, [addr("10.0.0.1:8080")])
}

fn http(name: &str, listen: &str, hosts: &[&str], paths: &[&str]) -> Service {
    let mut s = tcp(name, listen);
    s.mode = ServiceMode::Http;
    s.route = RouteMatch::new(strings(hosts), strings(paths), PathMatch::Prefix);
    s
}

fn compile_all(services: Vec<Service>, settings: &CompileSettings) -> Compiled {
    compile(&Catalog { services }, settings).unwrap()
}

/// `(listener, route name, hosts, paths)` of every route.
fn routes(snapshot: &Snapshot) -> Vec<(String, String, Vec<String>, Vec<String>)> {
    snapshot
        .routes
        .iter()
        .map(|r| {
            (
                r.listener.to_string(),
                r.name.clone(),
                r.hosts.clone(),
                r.paths.clone(),
            )
        })
        .collect()
}

#[test]
fn http_services_on_one_address_share_one_listener_with_a_route_each() {
    let mut shop = http(
        "shop",
        "0.0.0.0:8000",
        &["shop.example.com"],
        &["/api", "/cart"],
    );
    shop.timeouts.server_ms = Some(5_000);
    shop.http_listener = HttpListenerSettings {
        max_headers: Some(50),
        ..HttpListenerSettings::default()
    };
    let blog = http("blog", "0.0.0.0:8000", &["blog.example.com"], &[]);
    let compiled = compile_all(vec![shop, blog, tcp("db", "0.0.0.0:5432")], &settings());
    assert!(compiled.dropped.is_empty() && compiled.left_out.is_empty());
    let s = &compiled.snapshot;
    let listeners: Vec<(&str, Protocol)> = s
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.protocol))
        .collect();
    assert_eq!(
        listeners,
        vec![("db", Protocol::Tcp), ("http:0.0.0.0:8000", Protocol::Http)]
    );
    let http_listener = s.listeners[1].http.as_ref().unwrap();
    assert_eq!(http_listener.max_headers, 50, "the service's limit");
    assert_eq!(
        http_listener.max_header_bytes,
        ringway_shared::HttpListener::default().max_header_bytes
    );
    assert!(!http_listener.app_id_routing);
    assert_eq!(
        routes(s),
        vec![
            (
                "0.0.0.0:8000".into(),
                "blog".into(),
                strings(&["blog.example.com"]),
                vec![]
            ),
            (
                "0.0.0.0:8000".into(),
                "shop".into(),
                strings(&["shop.example.com"]),
                strings(&["/api", "/cart"])
            ),
        ]
    );
    assert_eq!(s.routes[1].path_match, WirePathMatch::Prefix);
    assert_eq!(s.routes[1].cluster, "shop");
    let shop = s.cluster("shop").unwrap();
    assert_eq!(shop.http, Some(ClusterHttp::default()));
    assert_eq!(shop.timeouts.server_ms, 5_000);
    assert_eq!(
        shop.timeouts.tunnel_ms,
        ringway_shared::Timeouts::default().tunnel_ms
    );
    assert_eq!(
        s.cluster("db").unwrap().http,
        None,
        "a TCP cluster pools nothing"
    );
}

#[test]
fn tcp_and_http_on_one_address_serve_the_lower_name() {
    let compiled = compile_all(
        vec![
            http("web", "0.0.0.0:8000", &["a.example"], &[]),
            tcp("api", "0.0.0.0:8000"),
        ],
        &settings(),
    );
    assert_eq!(compiled.snapshot.listeners.len(), 1);
    assert_eq!(compiled.snapshot.listeners[0].protocol, Protocol::Tcp);
    assert_eq!(compiled.dropped.len(), 1);
    let d = &compiled.dropped[0];
    assert_eq!(d.service, "web");
    assert!(
        d.reason.contains("TCP listener of service \"api\""),
        "{}",
        d.reason
    );
    assert!(compiled.snapshot.cluster("web").is_none());
}

#[test]
fn the_same_host_and_path_on_one_listener_goes_to_the_lower_name() {
    let compiled = compile_all(
        vec![
            http("zeta", "0.0.0.0:8000", &["a.example", "z.example"], &["/x"]),
            http("alpha", "0.0.0.0:8000", &["a.example"], &["/x", "/y"]),
            http("beta", "0.0.0.0:8000", &["a.example"], &["/x/"]),
        ],
        &settings(),
    );
    let names: Vec<&str> = compiled
        .snapshot
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        names,
        vec!["alpha", "beta"],
        "a longer prefix is another route"
    );
    assert!(compiled.dropped.iter().any(|d| {
        d.service == "zeta"
            && d.reason
                .contains("service \"alpha\" already routes a.example, prefix path \"/x\"")
    }));
}

#[test]
fn vhosts_are_routes_on_the_vhost_port_beside_their_own_listener() {
    let mut web = tcp("webapp.demo", "0.0.0.0:10101");
    web.mode = ServiceMode::Http;
    web.vhost = Some(RouteMatch::new(
        strings(&["myvhost.com"]),
        strings(&["/app"]),
        PathMatch::Prefix,
    ));
    let mut redis = tcp("redis.demo", "0.0.0.0:6379");
    redis.vhost = Some(RouteMatch::new(
        strings(&["redis.demo.example.com"]),
        [],
        PathMatch::Prefix,
    ));
    let compiled = compile_all(vec![web, redis], &settings());
    let s = &compiled.snapshot;
    assert_eq!(
        routes(s),
        vec![
            (
                "0.0.0.0:80".into(),
                "redis.demo".into(),
                strings(&["redis.demo.example.com"]),
                vec![]
            ),
            (
                "0.0.0.0:80".into(),
                "webapp.demo".into(),
                strings(&["myvhost.com"]),
                strings(&["/app"])
            ),
            ("0.0.0.0:10101".into(), "webapp.demo".into(), vec![], vec![]),
        ]
    );
    let listener = |a: &str| s.listeners.iter().find(|l| l.address == addr(a)).unwrap();
    assert_eq!(
        listener("0.0.0.0:6379").protocol,
        Protocol::Tcp,
        "its own port keeps its mode"
    );
    assert_eq!(listener("0.0.0.0:80").protocol, Protocol::Http);
    assert!(
        s.cluster("redis.demo").unwrap().http.is_some(),
        "served over HTTP on the vhost port"
    );

    // A TCP service on the vhost port keeps it; the vhosts are not served, and that is said.
    let mut web = http("web", "0.0.0.0:10101", &[], &[]);
    web.vhost = Some(RouteMatch::new(
        strings(&["a.example"]),
        [],
        PathMatch::Prefix,
    ));
    let compiled = compile_all(vec![web, tcp("legacy", "0.0.0.0:80")], &settings());
    assert_eq!(compiled.snapshot.routes.len(), 1);
    assert_eq!(compiled.left_out.len(), 1);
    assert!(
        compiled.left_out[0]
            .reason
            .starts_with("virtual hosts: 0.0.0.0:80 is the TCP listener")
    );
}

#[test]
fn app_id_routes_match_the_marathon_header_on_their_own_listener() {
    let settings = CompileSettings {
        app_id_listen: Some(addr("0.0.0.0:9091")),
        ..settings()
    };
    let mut port0 = http("shop", "0.0.0.0:10000", &[], &[]);
    port0.app_id = Some("/shop".into());
    let mut port1 = http("shop", "0.0.0.0:10001", &[], &[]);
    port1.name = "shop-10001".into();
    port1.app_id = Some("/shop".into());
    let mut tcp_app = tcp("db", "0.0.0.0:5432");
    tcp_app.app_id = Some("/db".into());
    let mut squatter = http("squatter", "0.0.0.0:9091", &[], &[]);
    squatter.app_id = Some("/squatter".into());
    let compiled = compile_all(vec![port0, port1, tcp_app, squatter], &settings);
    let s = &compiled.snapshot;
    let app_routes: Vec<(&str, &str)> = s
        .routes
        .iter()
        .filter(|r| r.listener == addr("0.0.0.0:9091"))
        .map(|r| {
            let h = r.header.as_ref().unwrap();
            assert_eq!(h.name, APP_ID_HEADER);
            (r.name.as_str(), h.value.as_str())
        })
        .collect();
    assert_eq!(
        app_routes,
        vec![("shop", "/shop"), ("squatter", "/squatter")],
        "one route per HTTP app, from its first port; TCP apps have none"
    );
    let listener = s
        .listeners
        .iter()
        .find(|l| l.address == addr("0.0.0.0:9091"))
        .unwrap();
    assert_eq!(listener.name, "app-id:0.0.0.0:9091");
    assert!(listener.http.as_ref().unwrap().app_id_routing);
    assert_eq!(compiled.left_out.len(), 1, "{:?}", compiled.left_out);
    assert_eq!(compiled.left_out[0].service, "squatter");
    assert!(compiled.left_out[0].reason.contains("--app-id-listen"));
}

#[test]
fn disagreeing_listener_limits_keep_the_first_and_say_so() {
    let mut a = http("a", "0.0.0.0:8000", &["a.example"], &[]);
    a.http_listener.keepalive_ms = Some(1_000);
    let mut b = http("b", "0.0.0.0:8000", &["b.example"], &[]);
    b.http_listener.keepalive_ms = Some(2_000);
    let compiled = compile_all(vec![b, a], &settings());
    let listener = &compiled.snapshot.listeners[0];
    assert_eq!(listener.http.as_ref().unwrap().keepalive_ms, 1_000);
    assert_eq!(compiled.snapshot.routes.len(), 2, "both routes are served");
    assert_eq!(compiled.left_out[0].service, "b");
    assert!(
        compiled.left_out[0]
            .reason
            .contains("timeout_keepalive_ms differs")
    );
}

#[test]
fn a_bad_route_leaves_out_only_its_service() {
    // Sources check hosts and paths; should one still be wrong, the snapshot's own check catches it.
    let mut bad = http("bad", "0.0.0.0:8000", &[], &[]);
    bad.route.paths = strings(&["no-slash"]);
    let good = http("good", "0.0.0.0:8000", &["a.example"], &[]);
    let compiled = compile_all(vec![bad, good], &settings());
    assert_eq!(routes(&compiled.snapshot).len(), 1);
    assert_eq!(compiled.dropped[0].service, "bad");
    assert!(
        compiled.dropped[0].reason.contains("paths[0]"),
        "{}",
        compiled.dropped[0].reason
    );
}

#[test]
fn the_http_snapshot_does_not_depend_on_input_order() {
    let services = vec![
        http("a", "0.0.0.0:8000", &["a.example"], &["/x"]),
        http("b", "0.0.0.0:8000", &["a.example"], &["/x"]),
        http("c", "0.0.0.0:8001", &[], &[]),
    ];
    let forward = compile_all(services.clone(), &settings());
    let mut reversed = services;
    reversed.reverse();
    let backward = compile_all(reversed, &settings());
    assert_eq!(forward, backward);
}

proptest::proptest! {
    /// Whatever host, path and match kind the sources' check accepts, the snapshot's own validation (the
    /// dataplane's NACK rule) accepts too: a checked route never makes a dataplane refuse a snapshot.
    #[test]
    fn what_the_sources_accept_the_snapshot_accepts(
        hosts in proptest::collection::vec("[*.a-zA-Z0-9_:-]{0,12}", 0..3),
        paths in proptest::collection::vec("[/a-z0-9.*+?()\\[\\]^$ \t%-]{0,10}", 0..3),
        kind in 0..3u8,
    ) {
        let kind = [PathMatch::Prefix, PathMatch::Exact, PathMatch::Regex][usize::from(kind)];
        if let Ok(route) = crate::model::http::route_match(&hosts, &paths, kind) {
            let mut service = http("svc", "0.0.0.0:8000", &[], &[]);
            service.route = route;
            let compiled = compile_all(vec![service], &settings());
            proptest::prop_assert!(compiled.dropped.is_empty(), "{:?}", compiled.dropped);
            proptest::prop_assert_eq!(compiled.snapshot.routes.len(), 1);
        }
    }
}
