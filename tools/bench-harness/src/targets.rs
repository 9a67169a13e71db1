//! What is measured, and where it listens. Everything is on 127.0.0.1, on fixed ports below the ephemeral
//! range (32768-60999) so no client or proxy connection can take one of them by chance.

use std::net::SocketAddr;

/// All harness ports are `BASE_PORT + offset`.
pub const BASE_PORT: u16 = 27000;
/// iperf3 server (bulk backend).
pub const BULK_BACKEND: u16 = BASE_PORT + 1;
/// nginx, one worker, a 101-byte file (HTTP backend, as in the reference measurements).
pub const HTTP_BACKEND: u16 = BASE_PORT + 2;
/// The harness's own accept-and-hold server (idle-connection backend, figure 5).
pub const IDLE_BACKEND: u16 = BASE_PORT + 3;
/// Figure 6: the Ringway listener and the two backends the changes alternate between.
pub const RECONFIG_LISTEN: u16 = BASE_PORT + 200;
pub const RECONFIG_BACKENDS: [u16; 2] = [BASE_PORT + 201, BASE_PORT + 202];
/// Figure 6 through the HTTP API: the controlplane's API address.
pub const RECONFIG_API: u16 = BASE_PORT + 203;
/// Figure 7: the listener the error counter uses, its backend, and the first of the other listeners.
pub const SCALE_PROBE_LISTEN: u16 = BASE_PORT + 300;
pub const SCALE_PROBE_BACKEND: u16 = BASE_PORT + 301;
pub const SCALE_LISTENERS_FROM: u16 = BASE_PORT + 310;
/// Worker threads / processes of every proxy that has the knob (pen is single-process by design).
pub const PROXY_WORKERS: usize = 2;
/// Virtual hosts configured on every HTTP-routing target's listener, each a service of its own.
pub const ROUTED_HOSTS: usize = 1000;
/// The virtual host wrk asks for: one in the middle of the table. Every HTTP test sends it (the TCP
/// targets and the backend ignore it), so all targets see the same request bytes.
pub const BENCH_HOST: &str = "vhost-0500.bench.test";

/// The name of virtual host `i` of the HTTP-routing targets.
pub fn routed_host(i: usize) -> String {
    format!("vhost-{i:04}.bench.test")
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// How a target forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No proxy: the client talks to the backend.
    Direct,
    /// Ringway with one `--forward` mode.
    Ringway(&'static str),
    /// HAProxy tcp mode, `option splice-auto` (which does not splice on this kernel, see the docs).
    Haproxy,
    /// HAProxy tcp mode with `option splice-request` + `option splice-response`: the splice-for-splice peer.
    HaproxyForcedSplice,
    /// nginx `stream` module, reuseport listeners.
    Nginx,
    /// pen, one single-threaded process per listener.
    Pen,
    /// Ringway HTTP listener routing [`ROUTED_HOSTS`] virtual hosts, backend keep-alive.
    RingwayHttp,
    /// HAProxy `mode http`, the hosts in a map, `http-reuse always` (its most reusing setting).
    HaproxyHttp,
    /// nginx `http` with one `server_name` per host and `proxy_pass` to an upstream with `keepalive`.
    NginxHttp,
}

impl Kind {
    /// The HTTP-routing targets (L7), which listen on their `http` port only.
    fn routes_http(self) -> bool {
        matches!(
            self,
            Kind::RingwayHttp | Kind::HaproxyHttp | Kind::NginxHttp
        )
    }
}

/// A target and its three listening ports (HTTP-routing targets have only `http`; the others are 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub name: &'static str,
    pub kind: Kind,
    pub bulk: u16,
    pub http: u16,
    pub idle: u16,
}

impl Target {
    pub fn is_proxy(&self) -> bool {
        self.kind != Kind::Direct
    }

    pub fn is_ringway(&self) -> bool {
        matches!(self.kind, Kind::Ringway(_) | Kind::RingwayHttp)
    }

    /// Routes HTTP requests (L7): measured by the HTTP tests only.
    pub fn routes_http(&self) -> bool {
        self.kind.routes_http()
    }

    /// The ports this target listens on.
    pub fn ports(&self) -> Vec<u16> {
        [self.bulk, self.http, self.idle]
            .into_iter()
            .filter(|&p| p != 0)
            .collect()
    }
}

/// Ringway's `--forward` modes, default first.
pub const RINGWAY_MODES: [&str; 3] = ["poll-splice", "uring-splice", "copy"];

/// The name of the Ringway target the headline ratios are computed for (the default forwarding mode).
pub const HEADLINE: &str = "ringway-poll-splice";

/// Every target, in the fixed order of each round.
pub fn all() -> Vec<Target> {
    let kinds: [(&'static str, Kind); 11] = [
        ("direct", Kind::Direct),
        ("ringway-poll-splice", Kind::Ringway(RINGWAY_MODES[0])),
        ("ringway-uring-splice", Kind::Ringway(RINGWAY_MODES[1])),
        ("ringway-copy", Kind::Ringway(RINGWAY_MODES[2])),
        ("haproxy-forced-splice", Kind::HaproxyForcedSplice),
        ("haproxy", Kind::Haproxy),
        ("nginx", Kind::Nginx),
        ("pen", Kind::Pen),
        ("ringway-http", Kind::RingwayHttp),
        ("haproxy-http", Kind::HaproxyHttp),
        ("nginx-http", Kind::NginxHttp),
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, (name, kind))| {
            if kind == Kind::Direct {
                Target {
                    name,
                    kind,
                    bulk: BULK_BACKEND,
                    http: HTTP_BACKEND,
                    idle: IDLE_BACKEND,
                }
            } else {
                let base = BASE_PORT + 10 * i as u16;
                let other = |offset| if kind.routes_http() { 0 } else { base + offset };
                Target {
                    name,
                    kind,
                    bulk: other(1),
                    http: base + 2,
                    idle: other(3),
                }
            }
        })
        .collect()
}

/// The peers the ratios compare each Ringway target with, in display order.
pub const PEERS: [&str; 7] = [
    "haproxy-forced-splice",
    "haproxy",
    "nginx",
    "pen",
    "haproxy-http",
    "nginx-http",
    "direct",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_port_is_distinct_and_below_the_ephemeral_range() {
        let mut seen = HashSet::new();
        for t in all().iter().filter(|t| t.is_proxy()) {
            assert_eq!(t.ports().len(), if t.routes_http() { 1 } else { 3 });
            for p in t.ports() {
                assert!(seen.insert(p), "port {p} used twice");
            }
        }
        let fixed = [
            BULK_BACKEND,
            HTTP_BACKEND,
            IDLE_BACKEND,
            RECONFIG_LISTEN,
            RECONFIG_API,
        ]
        .into_iter()
        .chain(RECONFIG_BACKENDS)
        .chain([SCALE_PROBE_LISTEN, SCALE_PROBE_BACKEND]);
        for p in fixed {
            assert!(seen.insert(p), "port {p} used twice");
        }
        assert!(seen.iter().all(|&p| p < 32768 && p > BASE_PORT));
        assert!(all().iter().any(|t| t.name == HEADLINE));
        for peer in PEERS {
            assert!(all().iter().any(|t| t.name == peer));
        }
    }
}
