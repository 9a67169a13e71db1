//! Fixtures for Ringway's micro-benchmarks (`cargo bench -p ringway-benches`): the design-scale snapshot
//! and cluster routes built the way the dataplane builds them, so every benchmark measures the real types.

use std::net::SocketAddr;
use std::sync::Arc;

use ringway_dataplane::http::router::{PathMatch, RouteSpec};
use ringway_dataplane::routing::{BackendSlot, ClusterRoute, ClusterSlot, RouteBackend, Wakers};
use ringway_shared::{
    Backend, BackendState, Balance, Cluster, Listener, Protocol, Snapshot, Timeouts,
};

/// The design's routing-state scale: 10,000 services.
pub const SERVICES: usize = 10_000;
/// … with 10 backends each, 100,000 in all.
pub const BACKENDS_PER_SERVICE: usize = 10;

/// A snapshot of `services` services, each with its own listener and [`BACKENDS_PER_SERVICE`] backends,
/// policies and limits mixed as a real fleet would have them.
pub fn snapshot(services: usize) -> Snapshot {
    let clusters: Vec<Cluster> = (0..services)
        .map(|i| Cluster {
            name: format!("svc-{i:05}"),
            balance: if i % 2 == 0 {
                Balance::RoundRobin
            } else {
                Balance::LeastConn
            },
            timeouts: Timeouts::default(),
            max_connections: 8192,
            backends: (0..BACKENDS_PER_SERVICE)
                .map(|b| Backend {
                    address: SocketAddr::from((
                        [10, (i >> 8) as u8, (i & 0xff) as u8, b as u8 + 1],
                        8080,
                    )),
                    weight: 100 + (b as u16 * 50),
                    max_connections: if b % 3 == 0 { None } else { Some(100) },
                    state: if b == BACKENDS_PER_SERVICE - 1 {
                        BackendState::Draining
                    } else {
                        BackendState::Active
                    },
                })
                .collect(),
            http: None,
        })
        .collect();
    let listeners = clusters
        .iter()
        .enumerate()
        .map(|(i, c)| Listener {
            name: c.name.clone(),
            address: SocketAddr::from(([127, 0, (i >> 8) as u8, (i & 0xff) as u8 + 1], 20_000)),
            protocol: Protocol::Tcp,
            cluster: Some(c.name.clone()),
            http: None,
        })
        .collect();
    Snapshot::new(1, listeners, clusters).expect("the fixture snapshot encodes")
}

/// A cluster route of `backends` backends (weights 1..=10, no per-backend limit unless `limit` is given),
/// as the dataplane's table builder makes it.
pub fn route(
    balance: Balance,
    backends: usize,
    limit: Option<u32>,
    cluster_limit: u32,
) -> ClusterRoute {
    let wakers = Arc::new(Wakers::new(0).expect("no eventfds are needed for zero workers"));
    ClusterRoute {
        name: "bench".into(),
        balance,
        timeouts: Timeouts::default(),
        slot: Arc::new(ClusterSlot::new("bench".into(), cluster_limit, wakers)),
        backends: (0..backends)
            .map(|i| RouteBackend {
                slot: Arc::new(BackendSlot::new(
                    SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)),
                    limit,
                )),
                weight: 1 + (i % 10) as u16,
                accepting: true,
            })
            .collect(),
    }
}

/// The scale of virtual hosts on one HTTP listener.
pub const VIRTUAL_HOSTS: usize = 5_000;

/// `hosts` HTTP routes as a shared port carries them: most services one exact host (`app-N.example.com`,
/// a quarter of them with two path prefixes), one in ten also a wildcard (`*.app-N.example.net`), and a
/// catch-all route without hosts.
pub fn vhost_routes(hosts: usize) -> Vec<RouteSpec> {
    let mut routes: Vec<RouteSpec> = (0..hosts)
        .map(|i| RouteSpec {
            name: format!("svc-{i:05}"),
            hosts: if i % 10 == 0 {
                vec![
                    format!("app-{i}.example.com"),
                    format!("*.app-{i}.example.net"),
                ]
            } else {
                vec![format!("app-{i}.example.com")]
            },
            paths: if i % 4 == 0 {
                vec!["/api".into(), "/static".into()]
            } else {
                Vec::new()
            },
            path_match: PathMatch::Prefix,
            header: None,
            target: i,
        })
        .collect();
    routes.push(RouteSpec {
        name: "catch-all".into(),
        hosts: Vec::new(),
        paths: vec!["/".into()],
        path_match: PathMatch::Prefix,
        header: None,
        target: hosts,
    });
    routes
}

/// A browser's request head (Chrome-like, 13 fields, ~700 bytes).
pub const BROWSER_REQUEST: &[u8] = b"GET /api/v1/catalog/items?page=2&sort=price HTTP/1.1\r\n\
Host: app-1234.example.com\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
Upgrade-Insecure-Requests: 1\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Sec-Fetch-Site: none\r\n\
Sec-Fetch-Mode: navigate\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_are_valid() {
        let s = snapshot(100);
        s.validate().unwrap();
        assert_eq!(s.backend_count(), 100 * BACKENDS_PER_SERVICE);
        assert_eq!(route(Balance::LeastConn, 10, None, 100).backends.len(), 10);
        let router =
            ringway_dataplane::http::router::Router::build(&vhost_routes(VIRTUAL_HOSTS)).unwrap();
        assert!(router.conflicts().is_empty());
        let found = router.route(Some(b"app-1234.example.com"), b"/", |_| None);
        assert_eq!(found.map(|m| m.target), Some(1234));
    }
}
