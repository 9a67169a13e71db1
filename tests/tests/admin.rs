//! The dataplane's admin endpoint as an operator and an upstream balancer see it.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ringway_shared::wire::Message;
use ringway_shared::{
    Backend, BackendState, Balance, Cluster, ClusterHttp, HttpListener, Listener, PathMatch,
    Protocol, Route, Snapshot, Timeouts,
};
use ringway_tests::fake_controlplane::FakeControlplane;
use ringway_tests::http::{find_backend, get};
use ringway_tests::net::{connect, free_port, local};
use ringway_tests::traffic::echo_round_trip;
use ringway_tests::{
    Dataplane, EchoBackend, Harness, NamedBackend, Service, read_name, wait_until,
};

fn one_service(version: u64, listen: u16, backend: u16) -> Snapshot {
    Snapshot::new(
        version,
        vec![Listener {
            name: "echo".into(),
            address: local(listen),
            protocol: Protocol::Tcp,
            cluster: Some("echo".into()),
            http: None,
        }],
        vec![Cluster {
            name: "echo".into(),
            balance: Balance::RoundRobin,
            timeouts: Timeouts::default(),
            max_connections: 100,
            backends: vec![Backend {
                address: local(backend),
                weight: 500,
                max_connections: None,
                state: BackendState::Active,
            }],
            http: None,
        }],
    )
    .unwrap()
}

#[test]
fn status_goes_initializing_ok_draining_and_the_grace_period_still_serves() {
    let echo = EchoBackend::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeControlplane::bind(&dir.path().join("cp.sock"));
    let mut dataplane = Dataplane::start(dir.path(), &fake.path, &["--drain-grace", "3s"]);
    let admin = dataplane.admin_address();

    assert_eq!(
        get(admin, "/status").unwrap(),
        (503, "INITIALIZING\n".to_string())
    );
    let mut session = fake.accept();
    session.send(&one_service(1, port, echo.port()));
    session.reply();
    assert_eq!(get(admin, "/status").unwrap(), (200, "OK\n".to_string()));

    let mut open = connect(port).unwrap();
    dataplane.proc.signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || get(admin, "/status")
            .ok()
            .map(|r| r.0)
            == Some(503)),
        "status never turned to DRAINING"
    );
    assert_eq!(get(admin, "/status").unwrap().1, "DRAINING\n");
    // Within the grace period new connections are still served.
    echo_round_trip(port, 1, 10_000)
        .expect("a connection opened during the grace period is served");
    assert!(
        wait_until(Duration::from_secs(10), || connect(port).is_err()),
        "listeners never closed"
    );
    open.write_all(b"after").unwrap();
    let mut five = [0u8; 5];
    open.read_exact(&mut five).unwrap();
    assert_eq!(&five, b"after", "connections keep flowing while draining");
    drop(open);
    let status = dataplane
        .proc
        .wait_exit(Duration::from_secs(20))
        .expect("exits once drained");
    assert!(status.success());
}

fn backend_stats<'a>(
    stats: &'a serde_json::Value,
    service: &str,
    address: &str,
) -> &'a serde_json::Value {
    find_backend(stats, service, address)
        .unwrap_or_else(|| panic!("no backend {address} in service {service}: {stats}"))
}

#[test]
fn stats_and_metrics_count_what_the_test_did() {
    let a = NamedBackend::start("a");
    let b = NamedBackend::start("b");
    let (port_a, port_b) = (free_port(), free_port());
    let mut h = Harness::start(
        &[
            Service::new("alpha", port_a).backend(a.port()),
            Service::new("beta", port_b).maxconn(10).backend(b.port()),
        ],
        &[],
        &[],
    );
    let admin = h.dataplane.admin_address();
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut s = connect(port_b).unwrap();
        assert_eq!(read_name(&mut s).unwrap(), "b");
        s.write_all(&[7u8; 1000]).unwrap();
        let mut echo = [0u8; 1000];
        s.read_exact(&mut echo).unwrap();
        held.push(s);
    }
    let b_address = local(b.port()).to_string();
    // A worker counts spliced bytes once splice(2) returns, which can be just after the client read
    // them: the counts settle within moments, then must be exact.
    let mut stats = serde_json::Value::Null;
    wait_until(Duration::from_secs(10), || {
        let (status, body) = get(admin, "/stats").unwrap();
        assert_eq!(status, 200);
        stats = serde_json::from_str(&body).unwrap();
        backend_stats(&stats, "beta", &b_address)["bytes_out"] == 5 * (2 + 1000)
    });
    let backend = backend_stats(&stats, "beta", &b_address);
    assert_eq!(backend["connections"], 5, "{backend}");
    assert_eq!(backend["total"], 5);
    assert_eq!(backend["limit"], 10);
    assert_eq!(backend["state"], "active");
    assert_eq!(backend["bytes_in"], 5000);
    assert_eq!(
        backend["bytes_out"],
        5 * (2 + 1000),
        "greeting \"b\\n\" plus the echo, per connection"
    );
    assert_eq!(
        backend_stats(&stats, "alpha", &local(a.port()).to_string())["connections"],
        0
    );
    assert_eq!(stats["status"], "serving");
    assert_eq!(
        stats["snapshot"]["version"],
        h.dataplane.applied_versions()[0]
    );
    assert_eq!(ringway_tests::http::accepted_total(&stats), 5);

    let (status, metrics) = get(admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    // The real Prometheus tool parses and lints the exposition.
    let out_dir = output_dir();
    let file = out_dir.join("metrics.txt");
    std::fs::write(&file, &metrics).unwrap();
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool is installed (Debian package prometheus; tools/test installs it)");
    assert!(
        promtool.status.success(),
        "promtool rejected /metrics: {}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
    let parsed =
        prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str| {
        parsed
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && s.labels.get("service") == Some("beta")
                    && s.labels.get("backend") == Some(&b_address)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} missing for beta/{b_address}:\n{metrics}"))
    };
    assert_eq!(value("ringway_backend_connections"), 5.0);
    assert_eq!(value("ringway_backend_connections_opened_total"), 5.0);
    assert_eq!(value("ringway_backend_sent_bytes_total"), 5000.0);

    drop(held);
    assert!(wait_until(Duration::from_secs(10), || {
        let stats: serde_json::Value =
            serde_json::from_str(&get(admin, "/stats").unwrap().1).unwrap();
        backend_stats(&stats, "beta", &b_address)["connections"] == 0
    }));
    // /config is the applied snapshot.
    let config: serde_json::Value =
        serde_json::from_str(&get(admin, "/config").unwrap().1).unwrap();
    assert_eq!(config["listeners"].as_array().unwrap().len(), 2);
    h.reconfigure(&[Service::new("alpha", port_a).backend(a.port())]);
}

/// Two HTTP services on one listener: `shop` by host and path prefix, `search` by a regular
/// expression that needs escaping on a web page.
fn two_http_services(listen: std::net::SocketAddr, backend: u16) -> Snapshot {
    let route = |name: &str, hosts: &[&str], paths: &[&str], path_match| Route {
        listener: listen,
        name: name.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        path_match,
        header: None,
        cluster: name.into(),
    };
    let cluster = |name: &str| Cluster {
        name: name.into(),
        balance: Balance::RoundRobin,
        timeouts: Timeouts::default(),
        max_connections: 100,
        backends: vec![Backend {
            address: local(backend),
            weight: 500,
            max_connections: None,
            state: BackendState::Active,
        }],
        http: Some(ClusterHttp::default()),
    };
    Snapshot::with_routes(
        1,
        vec![Listener::http(
            format!("http:{listen}"),
            listen,
            HttpListener::default(),
        )],
        vec![
            route(
                "shop",
                &["shop.example.com", "*.shop.example.com"],
                &["/api", "/cart"],
                PathMatch::Prefix,
            ),
            route("search", &[], &["^/(?P<v>a|b)&x"], PathMatch::Regex),
        ],
        vec![cluster("shop"), cluster("search")],
    )
    .unwrap()
}

#[test]
fn stats_and_the_status_page_show_the_hosts_and_paths_each_http_service_answers() {
    let listen = local(free_port());
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeControlplane::bind(&dir.path().join("cp.sock"));
    let mut dataplane = Dataplane::start(dir.path(), &fake.path, &[]);
    let mut session = fake.accept();
    session.send(&two_http_services(listen, free_port()));
    assert_eq!(session.reply(), Message::ack(1));
    let admin = dataplane.admin_address();

    let stats = ringway_tests::http::stats(admin);
    let routes = |name: &str| {
        ringway_tests::http::find_service(&stats, name).unwrap_or_else(|| panic!("{stats}"))
            ["routes"]
            .clone()
    };
    assert_eq!(
        routes("shop"),
        serde_json::json!([{
            "name": "shop", "listener": listen.to_string(),
            "hosts": ["shop.example.com", "*.shop.example.com"], "paths": ["/api", "/cart"],
            "path_match": "prefix",
        }])
    );
    assert_eq!(routes("search")[0]["paths"][0], "^/(?P<v>a|b)&x");
    assert_eq!(routes("search")[0]["hosts"], serde_json::json!([]));

    let (status, page) = get(admin, "/").unwrap();
    assert_eq!(status, 200);
    for shown in [
        format!("listens on {listen}"),
        "shop.example.com, *.shop.example.com".to_string(),
        "/api /cart".to_string(),
        "<td>prefix</td>".to_string(),
        "any host".to_string(),
        "^/(?P&lt;v&gt;a|b)&amp;x".to_string(),
        "<td>regex</td>".to_string(),
    ] {
        assert!(
            page.contains(&shown),
            "{shown:?} missing from the page:\n{page}"
        );
    }
    assert!(!page.contains("<v>"), "the regex is escaped:\n{page}");
}

/// Where tests keep artefacts for people to look at (screenshots, scraped metrics).
fn output_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-output");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn status_page_in_a_real_browser_shows_every_service_and_backend() {
    let backends = [
        NamedBackend::start("a"),
        NamedBackend::start("b"),
        NamedBackend::start("c"),
    ];
    let (p1, p2) = (free_port(), free_port());
    let mut h = Harness::start(
        &[
            Service::new("web", p1)
                .backend(backends[0].port())
                .backend(backends[1].port()),
            Service::new("db", p2)
                .balance("least-conn")
                .backend(backends[2].port()),
        ],
        &[],
        &[],
    );
    let admin = h.dataplane.admin_address();
    let mut s = connect(p1).unwrap();
    read_name(&mut s).unwrap();

    let out = output_dir();
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{admin}/");
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium is installed (Debian package chromium; tools/test installs it)")
    };
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for needle in ["web", "db", "serving"] {
        assert!(
            dom.contains(needle),
            "the page does not show {needle:?}:\n{dom}"
        );
    }
    for b in &backends {
        let address = local(b.port()).to_string();
        assert!(
            dom.contains(&address),
            "the page does not show backend {address}"
        );
    }
    let shot = out.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let result = chromium(&[&format!("--screenshot={}", shot.display())]);
    assert!(
        shot.exists() && std::fs::metadata(&shot).unwrap().len() > 1000,
        "no screenshot: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    drop(s);
}
