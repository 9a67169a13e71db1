//! The seed workflows of HTTP routing, end to end: docker-flow-proxy's `reconfigure` with a `servicePath`
//! and no `srcPort` (served on the shared HTTP port), a Marathon app with `HAPROXY_0_VHOST` (answers on the
//! vhost port by Host, and on `--app-id-listen` by `X-Marathon-App-Id`), a registrator service under
//! `--vhost-domain`. Marathon is the test double of `ringway_tests::doubles::marathon`; etcd is real.
//!
//! What the controlplane sends is also asserted without a dataplane by the unit tests of the compiler
//! (`pipeline/compiler/http_tests.rs`) and of each source's parsing.

use std::sync::Arc;
use std::time::Duration;

use ringway_tests::api::{version_of, wait_version};
use ringway_tests::discovery::Stack;
use ringway_tests::doubles::http::{HttpServer, Reply};
use ringway_tests::doubles::marathon::{MarathonDouble, host_app};
use ringway_tests::http::request;
use ringway_tests::net::{free_port, local, wait_until};
use ringway_tests::{EchoBackend, Etcd, Harness, Service};
use serde_json::json;

/// Longest a route may take to answer once its source changed; generous for a loaded machine.
const ROUTE_LIMIT: Duration = Duration::from_secs(20);

/// An HTTP backend answering `200 <name> <path>` to every request.
fn named_http(name: &'static str) -> HttpServer {
    HttpServer::start(Arc::new(move |r| Reply::Full {
        status: 200,
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: format!("{name} {}", r.target).into_bytes(),
    }))
}

/// `(status, body)` of `GET path` on `port` with `headers`, or `(0, error)` while nothing answers.
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    request(local(port), "GET", path, headers, None).unwrap_or_else(|e| (0, e.to_string()))
}

/// Waits until `GET path` on `port` answers `status` with a body starting with `body`.
fn wait_answer(port: u16, path: &str, headers: &[(&str, &str)], status: u16, body: &str) {
    let mut last = (0, String::new());
    let ok = wait_until(ROUTE_LIMIT, || {
        last = get(port, path, headers);
        last.0 == status && last.1.starts_with(body)
    });
    assert!(
        ok,
        "GET {path} on {port} with {headers:?}: expected {status} {body:?}, last got {last:?}"
    );
}

#[test]
fn docker_flow_proxy_service_path_without_src_port_answers_on_the_shared_http_port() {
    let backend = named_http("go-demo");
    let vhost_port = free_port();
    let vhost = vhost_port.to_string();
    let echo = EchoBackend::start();
    let mut h = Harness::start(
        &[Service::new("static", free_port()).backend(echo.port())],
        &[
            "--listen-address",
            "127.0.0.1",
            "--api-allow-backends",
            "127.0.0.0/8",
            "--vhost-port",
            &vhost,
        ],
        &[],
    );
    let api = h.controlplane.api();
    // The seed workflow: curl "$PROXY/v1/docker-flow-proxy/reconfigure?serviceName=go-demo&servicePath=/demo"
    let answer = api.ok(
        "GET",
        &format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName=go-demo&servicePath=/demo&port={}\
             &outboundHostname=127.0.0.1",
            backend.port()
        ),
        None,
    );
    assert_eq!(answer["Status"], "OK", "{answer}");
    assert_eq!(
        answer["ServiceDest"][0]["SrcPort"], 0,
        "no srcPort: the shared port"
    );
    wait_version(&mut h.dataplane, version_of(&answer));
    // …then curl $PROXY/demo/hello
    wait_answer(vhost_port, "/demo/hello", &[], 200, "go-demo /demo/hello");
    assert_eq!(get(vhost_port, "/other", &[]).0, 404, "no route: 404");

    let answer = api.ok(
        "GET",
        "/v1/docker-flow-proxy/remove?serviceName=go-demo",
        None,
    );
    wait_version(&mut h.dataplane, version_of(&answer));
    wait_until(ROUTE_LIMIT, || get(vhost_port, "/demo/hello", &[]).0 != 200);
}

#[test]
fn a_marathon_app_with_haproxy_0_vhost_answers_by_host_and_by_app_id() {
    let (shop, blog) = (named_http("shop"), named_http("blog"));
    let (shop_port, blog_port) = (free_port(), free_port());
    let leader = MarathonDouble::leader(json!([
        host_app(
            "/shop",
            shop_port,
            &[shop.port()],
            json!({"HAPROXY_0_VHOST": "shop.example.com,*.shop.example.com", "HAPROXY_0_PATH": "/"})
        ),
        host_app(
            "/blog",
            blog_port,
            &[blog.port()],
            json!({"HAPROXY_0_VHOST": "blog.example.com"})
        ),
    ]));
    let (vhost_port, app_id_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let mut stack = Stack::start(
        dir.path(),
        &[
            "--marathon",
            &leader.url(),
            "--vhost-port",
            &vhost_port.to_string(),
            "--app-id-listen",
            &format!("127.0.0.1:{app_id_port}"),
        ],
    );
    stack.dataplane.wait_applied(1);
    // By Host on the vhost port (marathon-lb's port 80), wildcard included.
    wait_answer(
        vhost_port,
        "/",
        &[("Host", "shop.example.com")],
        200,
        "shop /",
    );
    wait_answer(
        vhost_port,
        "/x",
        &[("Host", "a.b.shop.example.com:8080")],
        200,
        "shop /x",
    );
    wait_answer(
        vhost_port,
        "/",
        &[("Host", "blog.example.com")],
        200,
        "blog /",
    );
    assert_eq!(
        get(vhost_port, "/", &[("Host", "nobody.example.com")]).0,
        404
    );
    // On its own service port, every request (marathon-lb's per-app frontend).
    wait_answer(shop_port, "/any", &[], 200, "shop /any");
    // By X-Marathon-App-Id on the app-id port (marathon-lb's 9091).
    wait_answer(
        app_id_port,
        "/",
        &[("X-Marathon-App-Id", "/blog")],
        200,
        "blog /",
    );
    assert_eq!(
        get(app_id_port, "/", &[("X-Marathon-App-Id", "/nope")]).0,
        404
    );
}

#[test]
fn a_registrator_service_answers_under_the_vhost_domain() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let backend = named_http("web");
    let (service_port, vhost_port) = (free_port(), free_port());
    let mut stack = Stack::start(
        dir.path(),
        &[
            "--registrator",
            &format!("etcd://127.0.0.1:{}/services", etcd.client_port),
            "--vhost-domain",
            "example.com",
            "--vhost-port",
            &vhost_port.to_string(),
        ],
    );
    // registrator's key for the service "service.system.product" (proxymatic's naming).
    etcd.v2_set(
        &format!("/services/service.system.product/host1:web.0:{service_port}"),
        &format!("127.0.0.1:{}", backend.port()),
    );
    stack.dataplane.wait_applied(1);
    wait_answer(
        vhost_port,
        "/hello",
        &[("Host", "service.system.product.example.com")],
        200,
        "web /hello",
    );
    assert_eq!(
        get(vhost_port, "/", &[("Host", "other.example.com")]).0,
        404
    );
}
