use super::*;
use crate::model::PathMatch;

const FILE: &str = "services.toml";

const VALID: &str = r#"# two services
[[service]]
name = "web"
listen = "127.0.0.1:18080"
balance = "least-conn"
maxconn = 100
max_connections = 4000
timeout_connect_ms = 1500
timeout_idle_ms = 30000
timeout_queue_ms = 250
backends = [ { address = "127.0.0.1:19001", weight = 700 }, { address = "127.0.0.1:19002", state = "draining" } ]

[[service]]
name = "db"
listen = "[::1]:15432"

[[service.backends]]
address = "[::1]:5432"
weight = 1
"#;

fn error_text(text: &str) -> String {
    match parse(text, FILE) {
        Ok(catalog) => panic!("expected an error, parsed {catalog:?}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts the report has a problem at `line` naming `field` and containing `needle`.
fn assert_problem(text: &str, line: usize, field: &str, needle: &str) {
    let report = error_text(text);
    let found = report.lines().any(|l| {
        l.starts_with(&format!("{FILE}:{line}:")) && l.contains(field) && l.contains(needle)
    });
    assert!(
        found,
        "no problem at line {line} naming {field:?} with {needle:?} in:\n{report}"
    );
}

/// A one-service file with `backend` as the single backend's inline table, on line 4.
fn with_backend(backend: &str) -> String {
    format!("[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:18080\"\nbackends = [ {backend} ]\n")
}

#[test]
fn valid_file_round_trips() {
    let catalog = parse(VALID, FILE).unwrap();
    let web = Service {
        name: "web".into(),
        listen: "127.0.0.1:18080".parse().unwrap(),
        balance: Balance::LeastConn,
        maxconn: Some(100),
        max_connections: Some(4000),
        timeouts: ServiceTimeouts {
            connect_ms: Some(1500),
            idle_ms: Some(30000),
            queue_ms: Some(250),
            ..ServiceTimeouts::default()
        },
        mode: ServiceMode::Tcp,
        route: RouteMatch::default(),
        vhost: None,
        app_id: None,
        http_listener: HttpListenerSettings::default(),
        instances: vec![
            Instance {
                address: "127.0.0.1:19001".parse().unwrap(),
                weight: 700,
                maxconn: None,
                state: BackendState::Active,
            },
            Instance {
                address: "127.0.0.1:19002".parse().unwrap(),
                weight: DEFAULT_WEIGHT,
                maxconn: None,
                state: BackendState::Draining,
            },
        ],
    };
    let db = Service {
        name: "db".into(),
        listen: "[::1]:15432".parse().unwrap(),
        balance: Balance::RoundRobin,
        maxconn: None,
        max_connections: None,
        timeouts: ServiceTimeouts::default(),
        mode: ServiceMode::Tcp,
        route: RouteMatch::default(),
        vhost: None,
        app_id: None,
        http_listener: HttpListenerSettings::default(),
        instances: vec![Instance {
            address: "[::1]:5432".parse().unwrap(),
            weight: 1,
            maxconn: None,
            state: BackendState::Active,
        }],
    };
    assert_eq!(
        catalog,
        Catalog {
            services: vec![web, db]
        }
    );
}

#[test]
fn a_blank_file_is_refused_but_a_commented_one_is_empty() {
    assert_problem(" \n", 1, "document", "file is empty");
    assert_eq!(
        parse("# no services yet\n", FILE).unwrap(),
        Catalog::default()
    );
}

#[test]
fn weight_zero_names_line_and_field() {
    let text = with_backend(r#"{ address = "127.0.0.1:19001", weight = 0 }"#);
    assert_problem(
        &text,
        4,
        r#"service "web" backends[0].weight"#,
        "0 is outside 1..=1000",
    );
    // The column points at the value.
    assert!(
        error_text(&text).starts_with("services.toml:4:54:"),
        "{}",
        error_text(&text)
    );
}

#[test]
fn weight_above_range_names_line_and_field() {
    let text = with_backend(r#"{ address = "127.0.0.1:19001", weight = 1001 }"#);
    assert_problem(
        &text,
        4,
        r#"service "web" backends[0].weight"#,
        "1001 is outside 1..=1000",
    );
}

#[test]
fn weight_of_the_wrong_type_names_line_and_field() {
    let text = with_backend(r#"{ address = "127.0.0.1:19001", weight = "abc" }"#);
    assert_problem(
        &text,
        4,
        r#"service "web" backends[0].weight"#,
        "expected an integer",
    );
    // Same under a [[service.backends]] header, second backend.
    let text = "[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\n\
                [[service.backends]]\naddress = \"127.0.0.1:2\"\n\
                [[service.backends]]\naddress = \"127.0.0.1:3\"\nweight = 1.5\n";
    assert_problem(text, 8, r#"service "web" backends[1].weight"#, "1.5");
}

#[test]
fn duplicate_listen_names_both_services() {
    let text = "[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:18080\"\n\n\
                [[service]]\nname = \"api\"\nlisten = \"127.0.0.1:18080\"\n";
    assert_problem(
        text,
        7,
        r#"service "api" listen"#,
        r#"service "web" (line 3)"#,
    );
}

#[test]
fn duplicate_name_points_at_the_second() {
    let text = "[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:18080\"\n\n\
                [[service]]\nname = \"web\"\nlisten = \"127.0.0.1:18081\"\n";
    assert_problem(
        text,
        6,
        r#"service "web" name"#,
        "duplicate service name, first defined at line 2",
    );
}

#[test]
fn broken_toml_names_line_and_key() {
    let text = "[[service]]\nname = \"web\"\nlisten = \n";
    assert_problem(text, 3, "listen", "invalid TOML");
    let text = "[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\n[[service\n";
    assert_problem(text, 4, "[[service", "invalid TOML");
}

#[test]
fn maxconn_zero_is_an_error_never_unlimited() {
    let text = "[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:18080\"\nmaxconn = 0\n";
    assert_problem(
        text,
        4,
        r#"service "web" maxconn"#,
        "must be at least 1, got 0",
    );
}

#[test]
fn unknown_keys_are_errors() {
    let text = "[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:18080\"\nmax_conn = 5\n";
    assert_problem(
        text,
        4,
        r#"service "web" max_conn"#,
        "unknown field `max_conn`",
    );
    let text = with_backend(r#"{ address = "127.0.0.1:19001", wieght = 5 }"#);
    assert_problem(
        &text,
        4,
        r#"service "web" backends[0].wieght"#,
        "unknown field",
    );
    let text = "services = 1\n";
    assert_problem(text, 1, "services", "unknown key");
}

#[test]
fn bad_addresses_say_expected_ip_port() {
    let text = "[[service]]\nname = \"web\"\nlisten = \"localhost:80\"\n";
    assert_problem(text, 3, r#"service "web" listen"#, "expected IP:port");
    let text = with_backend(r#"{ address = "127.0.0.1" }"#);
    assert_problem(
        &text,
        4,
        r#"service "web" backends[0].address"#,
        "expected IP:port",
    );
    let text = with_backend(r#"{ address = "127.0.0.1:0" }"#);
    assert_problem(
        &text,
        4,
        r#"service "web" backends[0].address"#,
        "port must not be 0",
    );
}

#[test]
fn other_checks_name_their_fields() {
    let text = "[[service]]\nname = \"\"\nlisten = \"127.0.0.1:1\"\n";
    assert_problem(text, 2, "service[0] name", "must not be empty");
    let text = "[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\ntimeout_idle_ms = -5\n";
    assert_problem(text, 4, r#"service "web" timeout_idle_ms"#, "at least 1");
    let text = "[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\nbalance = \"random\"\n";
    assert_problem(text, 4, r#"service "web" balance"#, "least-conn");
    let text = with_backend(r#"{ address = "127.0.0.1:2", state = "up" }"#);
    assert_problem(&text, 4, r#"service "web" backends[0].state"#, "draining");
    let text = with_backend(r#"{ address = "127.0.0.1:2" }, { address = "127.0.0.1:2" }"#);
    assert_problem(
        &text,
        4,
        r#"service "web" backends[1].address"#,
        "backends[0]",
    );
    let text = "[[service]]\nname = \"web\"\n";
    assert_problem(text, 1, r#"service "web""#, "missing field `listen`");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "[[service]]\nname = \"a\"\nlisten = \"nope\"\nmaxconn = 0\n\n\
                [[service]]\nname = \"b\"\nlisten = \"127.0.0.1:1\"\nbogus = true\n\n\
                [[service]]\nname = \"c\"\nlisten = \"127.0.0.1:2\"\n\
                backends = [ { address = \"127.0.0.1:3\", weight = 0 } ]\n";
    let err = parse(text, FILE).unwrap_err();
    let lines: Vec<usize> = err.problems().iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![3, 4, 9, 14], "{err}");
}

#[test]
fn duplicates_are_found_next_to_other_mistakes() {
    let text = "[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:18080\"\nmaxconn = 0\n\n\
                [[service]]\nname = \"web\"\nlisten = \"127.0.0.1:18080\"\n";
    let err = parse(text, FILE).unwrap_err();
    let lines: Vec<usize> = err.problems().iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![4, 7, 8], "{err}");
}

/// The issue's example, and a second HTTP service on the same address.
const HTTP: &str = r#"[[service]]
name = "shop"
mode = "http"
listen = "0.0.0.0:80"
hosts = ["Shop.Example.com", "*.shop.example.com"]
paths = ["/api", "/cart"]
path_match = "prefix"
timeout_server_ms = 5000
timeout_tunnel_ms = 60000
http_max_header_bytes = 8192
timeout_keepalive_ms = 1000
backends = [ { address = "10.0.0.5:8080" } ]

[[service]]
name = "blog"
mode = "http"
listen = "0.0.0.0:80"
hosts = ["blog.example.com"]
http_max_headers = 50
backends = [ { address = "10.0.0.6:8080" } ]
"#;

#[test]
fn http_services_share_an_address_with_their_routes() {
    let catalog = parse(HTTP, FILE).unwrap();
    let shop = &catalog.services[0];
    assert_eq!(shop.mode, ServiceMode::Http);
    assert_eq!(
        shop.route.hosts,
        vec!["*.shop.example.com", "shop.example.com"],
        "lowercased, sorted"
    );
    assert_eq!(shop.route.paths, vec!["/api", "/cart"]);
    assert_eq!(shop.route.path_match, PathMatch::Prefix);
    assert_eq!(
        (shop.timeouts.server_ms, shop.timeouts.tunnel_ms),
        (Some(5000), Some(60000))
    );
    assert_eq!(shop.http_listener.max_header_bytes, Some(8192));
    assert_eq!(shop.http_listener.keepalive_ms, Some(1000));
    let blog = &catalog.services[1];
    assert!(blog.route.paths.is_empty(), "no paths: every path");
    assert_eq!(blog.http_listener.max_headers, Some(50));
}

/// `HTTP` with `edit` applied to the second service's lines (after `name = "blog"`).
fn http_with(edit: &str) -> String {
    HTTP.replace("hosts = [\"blog.example.com\"]", edit)
}

#[test]
fn http_conflicts_on_one_address_name_both_services() {
    // Same host and path: the second service's listen line names the first service and the claim.
    let text = http_with("hosts = [\"shop.example.com\"]\npaths = [\"/cart\"]");
    assert_problem(
        &text,
        17,
        r#"service "blog" listen"#,
        r#"service "shop" (line 4) already routes shop.example.com, prefix path "/cart""#,
    );
    // Another match kind on the same path is another route: no conflict.
    let exact =
        http_with("hosts = [\"shop.example.com\"]\npaths = [\"/cart\"]\npath_match = \"exact\"");
    parse(&exact, FILE).unwrap();
    // Listener limits must agree.
    let text = http_with("hosts = [\"blog.example.com\"]\nhttp_max_header_bytes = 4096");
    assert_problem(
        &text,
        17,
        r#"service "blog" listen"#,
        "http_max_header_bytes differs from service \"shop\"",
    );
    // A TCP service on an HTTP address.
    let text = HTTP.replacen(
        "mode = \"http\"\nlisten = \"0.0.0.0:80\"\nhosts = [\"blog",
        "listen = \"0.0.0.0:80\"\nhosts = [\"blog",
        1,
    );
    assert!(
        error_text(&text).contains("TCP and HTTP services cannot share an address"),
        "{}",
        error_text(&text)
    );
}

#[test]
fn bad_http_values_name_the_service_and_field() {
    let cases = [
        (
            "hosts = [\"blog.example.com:80\"]",
            r#"service "blog" hosts[0]"#,
            "takes no port",
        ),
        (
            "hosts = [\"a..b\"]",
            r#"service "blog" hosts[0]"#,
            "is not a host name",
        ),
        (
            "paths = [\"api\"]",
            r#"service "blog" paths[0]"#,
            "does not start with '/'",
        ),
        (
            "paths = [\"/(x\"]\npath_match = \"regex\"",
            r#"service "blog" paths[0]"#,
            "is not a valid regex",
        ),
        (
            "path_match = \"glob\"",
            r#"service "blog" path_match"#,
            "expected \"prefix\"",
        ),
        (
            "hosts = []",
            r#"service "blog" hosts"#,
            "an empty list matches nothing",
        ),
        (
            "http_max_header_bytes = 2000000",
            r#"service "blog" http_max_header_bytes"#,
            "larger than 1048576",
        ),
        (
            "timeout_server_ms = 0",
            r#"service "blog" timeout_server_ms"#,
            "at least 1",
        ),
    ];
    for (edit, field, needle) in cases {
        assert_problem(&http_with(edit), 18, field, needle);
    }
    let text = "[[service]]\nname = \"db\"\nlisten = \"127.0.0.1:1\"\nmode = \"udp\"\n";
    assert_problem(
        text,
        4,
        r#"service "db" mode"#,
        "expected \"tcp\" or \"http\"",
    );
    let text = "[[service]]\nname = \"db\"\nlisten = \"127.0.0.1:1\"\npaths = [\"/x\"]\n";
    assert_problem(text, 4, r#"service "db" paths"#, "add mode = \"http\"");
}

/// A file of `count` HTTP services on one listener, one virtual host each, and one more service that
/// claims the first one's host.
fn many_vhosts(count: usize, clash: bool) -> String {
    let mut text = String::new();
    for i in 0..count {
        text.push_str(&format!(
            "[[service]]\nname = \"vhost-{i}\"\nmode = \"http\"\nlisten = \"127.0.0.1:8080\"\n\
             hosts = [\"vhost-{i}.example.com\"]\nbackends = [ {{ address = \"10.0.0.1:80\" }} ]\n\n"
        ));
    }
    if clash {
        text.push_str(
            "[[service]]\nname = \"late\"\nmode = \"http\"\nlisten = \"127.0.0.1:8080\"\n\
             hosts = [\"vhost-0.example.com\"]\nbackends = [ { address = \"10.0.0.1:80\" } ]\n",
        );
    }
    text
}

#[test]
fn a_thousand_virtual_hosts_on_one_listener_load_without_freezing_the_controlplane() {
    // Liveness, not speed: this took 33 s (a line number computed by scanning the whole file for every
    // pair of services sharing the address), so a real fleet's file froze the controlplane.
    let started = std::time::Instant::now();
    let catalog = parse(&many_vhosts(1000, false), FILE).unwrap();
    assert_eq!(catalog.services.len(), 1000);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "1,000 virtual hosts took {:?}",
        started.elapsed()
    );
    // The conflict is still found, and names the first service's line.
    let text = many_vhosts(1000, true);
    assert_problem(
        &text,
        7004,
        "service \"late\" listen",
        "service \"vhost-0\" (line 4) already routes vhost-0.example.com, every path",
    );
}
