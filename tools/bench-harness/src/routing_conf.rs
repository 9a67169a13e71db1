//! Configurations of the HTTP-routing targets: one listener, [`ROUTED_HOSTS`] virtual hosts, each a
//! service of its own whose one backend is the harness's nginx, with backend keep-alive in every proxy.
//!
//! Each proxy gets the setting its users reach for at this scale: Ringway a services file with one
//! `mode = "http"` service per host; HAProxy a host → backend map (`map_str`, one lookup, not 1,000 ACLs)
//! with `http-reuse always`; nginx one `server_name` per host (its hash) and an upstream per host with
//! `keepalive`. Only [`BENCH_HOST`](crate::targets::BENCH_HOST) is requested, so every proxy reuses one
//! backend pool, as a single busy service would.

use std::fmt::Write as _;
use std::path::Path;

use crate::targets::{self, HTTP_BACKEND, ROUTED_HOSTS, Target, routed_host};

/// Idle backend connections each nginx worker keeps per upstream; above wrk's 50 connections.
const NGINX_UPSTREAM_KEEPALIVE: usize = 64;
/// Client and server timeouts, far above a figure's duration.
const TIMEOUT_S: u32 = 600;

/// Ringway: one `mode = "http"` service per virtual host, all on the target's listener.
pub fn ringway_services(t: &Target) -> String {
    let mut text =
        String::from("# Written by tools/bench: HTTP routing, one service per virtual host.\n");
    for i in 0..ROUTED_HOSTS {
        let _ = write!(
            text,
            "\n[[service]]\nname = \"vhost-{i:04}\"\nmode = \"http\"\nlisten = \"127.0.0.1:{}\"\nhosts = [\"{}\"]\ntimeout_idle_ms = {}\nbackends = [{{ address = \"127.0.0.1:{HTTP_BACKEND}\" }}]\n",
            t.http,
            routed_host(i),
            TIMEOUT_S * 1000,
        );
    }
    text
}

/// HAProxy: the config, and the host → backend map it loads from `map_path`.
pub fn haproxy(t: &Target, map_path: &Path) -> (String, String) {
    let mut conf = format!(
        "# HAProxy mode http, {ROUTED_HOSTS} virtual hosts through a map, {workers} threads (written by tools/bench)\n\
         global\n    nbthread {workers}\n    maxconn 7000\n\
         defaults\n    mode http\n    option http-keep-alive\n    http-reuse always\n\
         \x20   timeout connect 5s\n    timeout client {TIMEOUT_S}s\n    timeout server {TIMEOUT_S}s\n\
         \x20   timeout http-keep-alive {TIMEOUT_S}s\n    maxconn 7000\n\
         frontend routed\n    bind 127.0.0.1:{}\n\
         \x20   use_backend %[req.hdr(host),lower,map_str({})]\n",
        t.http,
        map_path.display(),
        workers = targets::PROXY_WORKERS,
    );
    let mut map = String::new();
    for i in 0..ROUTED_HOSTS {
        let _ = write!(
            conf,
            "backend vhost-{i:04}\n    server web 127.0.0.1:{HTTP_BACKEND}\n"
        );
        let _ = writeln!(map, "{} vhost-{i:04}", routed_host(i));
    }
    (conf, map)
}

/// nginx: one server block per virtual host, each proxying to its own keep-alive upstream.
pub fn nginx(t: &Target, run: &Path) -> String {
    let dir = run.display();
    let mut conf = format!(
        "# nginx http, {ROUTED_HOSTS} virtual hosts, upstream keep-alive, {workers} workers (written by tools/bench)\n\
         worker_processes {workers};\npid {dir}/nginx-http.pid;\nworker_rlimit_nofile 20000;\n\
         events {{ worker_connections 9000; }}\n\
         http {{\n    access_log off;\n    server_names_hash_max_size 4096;\n\
         \x20   keepalive_requests 10000000;\n    keepalive_timeout {TIMEOUT_S};\n\
         \x20   client_body_temp_path {dir}/nginx-http-body;\n    proxy_temp_path {dir}/nginx-http-proxy;\n\
         \x20   fastcgi_temp_path {dir}/nginx-http-fastcgi;\n    uwsgi_temp_path {dir}/nginx-http-uwsgi;\n\
         \x20   scgi_temp_path {dir}/nginx-http-scgi;\n\
         \x20   server {{ listen 127.0.0.1:{} default_server reuseport backlog=4096; return 404; }}\n",
        t.http,
        workers = targets::PROXY_WORKERS,
    );
    for i in 0..ROUTED_HOSTS {
        let _ = write!(
            conf,
            "    upstream vhost_{i:04} {{ server 127.0.0.1:{HTTP_BACKEND}; keepalive {NGINX_UPSTREAM_KEEPALIVE}; }}\n\
             \x20   server {{ listen 127.0.0.1:{}; server_name {}; location / {{ proxy_pass http://vhost_{i:04}; \
             proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n",
            t.http,
            routed_host(i),
        );
    }
    conf.push_str("}\n");
    conf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::{BENCH_HOST, Kind};

    fn target(kind: Kind) -> Target {
        targets::all().into_iter().find(|t| t.kind == kind).unwrap()
    }

    #[test]
    fn every_proxy_routes_every_host_and_the_bench_host() {
        let ringway = ringway_services(&target(Kind::RingwayHttp));
        let (haproxy, map) = haproxy(&target(Kind::HaproxyHttp), Path::new("/x/hosts.map"));
        let nginx = nginx(&target(Kind::NginxHttp), Path::new("/x"));
        assert_eq!(ringway.matches("mode = \"http\"").count(), ROUTED_HOSTS);
        assert_eq!(haproxy.matches("\nbackend ").count(), ROUTED_HOSTS);
        assert_eq!(map.lines().count(), ROUTED_HOSTS);
        assert_eq!(nginx.matches("server_name ").count(), ROUTED_HOSTS);
        for text in [&ringway, &map, &nginx] {
            assert!(text.contains(BENCH_HOST));
        }
        assert!(haproxy.contains("map_str(/x/hosts.map)"));
    }
}
