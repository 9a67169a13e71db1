//! Starts every backend and every target at once (an idle proxy costs nothing, and having all of them up
//! is what lets one round interleave them), and knows which processes belong to which.
//!
//! The peer configurations are the reference's (`shared/reference/benchmarking.md`, section 3) with the
//! harness's ports, plus a third listener per proxy for idle connections. They are written to
//! `RUN/conf/` and copied next to the results.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procs::{Server, which};
use crate::routing_conf;
use crate::targets::{self, BULK_BACKEND, HTTP_BACKEND, IDLE_BACKEND, Kind, Target};

/// How long all servers together may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// HAProxy sizes its fd table as 2 × maxconn (+ pipes); 7000 fits the 20,000 fd hard limit.
const HAPROXY_MAXCONN: u32 = 7000;
/// pen's connection table and client table sizes.
const PEN_MAX_CONNECTIONS: u32 = 8000;
/// Idle timeouts well above a figure's duration, so no proxy closes an idle connection under measurement.
const IDLE_TIMEOUT_MS: u32 = 600_000;
/// Body of the backend's file: 101 bytes, as in the reference runs.
pub const HTTP_BODY_LEN: usize = 101;
/// Ringway dataplanes get this long to drain when the run ends.
const RINGWAY_DRAIN: &str = "1s";

/// Where the Ringway binaries and the run directory are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub bin_dir: PathBuf,
    pub run: PathBuf,
}

impl Paths {
    pub fn conf(&self) -> PathBuf {
        self.run.join("conf")
    }
    pub fn logs(&self) -> PathBuf {
        self.run.join("logs")
    }
    pub fn ringway(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// Every running server, grouped by role.
pub struct Fleet {
    pub backends: Vec<Server>,
    /// Target name → its processes.
    pub targets: Vec<(&'static str, Vec<Server>)>,
}

impl Fleet {
    /// Starts the backends and every proxy target, and waits until every port listens.
    pub fn start(paths: &Paths, targets: &[Target]) -> anyhow::Result<Self> {
        for dir in [paths.conf(), paths.logs(), paths.run.join("www")] {
            std::fs::create_dir_all(&dir)?;
        }
        let mut fleet = Fleet {
            backends: Vec::new(),
            targets: Vec::new(),
        };
        let iperf3 = tool("iperf3")?;
        fleet.backends.push(Server::spawn(
            "iperf3-server",
            &iperf3,
            &args(&["-s", "-B", "127.0.0.1", "-p", &BULK_BACKEND.to_string()]),
            paths.logs().join("iperf3-server.log"),
            &[],
        )?);
        std::fs::write(paths.run.join("www/index.html"), http_body())?;
        let conf = write(paths, "backend-nginx.conf", &backend_nginx_conf(&paths.run))?;
        fleet.backends.push(nginx("backend-nginx", paths, &conf)?);
        for target in targets {
            let servers = start_target(paths, target)?;
            fleet.targets.push((target.name, servers));
        }
        let mut ports = vec![BULK_BACKEND, HTTP_BACKEND];
        for t in targets.iter().filter(|t| t.is_proxy()) {
            ports.extend(t.ports());
        }
        fleet.wait_listening(&ports, START_TIMEOUT)?;
        Ok(fleet)
    }

    /// Fails with the dead server's log if any server exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        let all = self
            .backends
            .iter_mut()
            .chain(self.targets.iter_mut().flat_map(|(_, s)| s.iter_mut()));
        for server in all {
            if !server.alive() {
                bail!(
                    "{} exited unexpectedly; its log:\n{}",
                    server.name,
                    server.log_tail()
                );
            }
        }
        Ok(())
    }

    fn wait_listening(&mut self, ports: &[u16], limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            self.check_alive()?;
            let listening = listening_ports();
            let missing: Vec<u16> = ports
                .iter()
                .copied()
                .filter(|p| !listening.contains(p))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("nothing listens on 127.0.0.1 ports {missing:?} after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Root pids of a target's processes (empty for `direct`).
    pub fn target_roots(&self, name: &str) -> Vec<i32> {
        self.targets
            .iter()
            .filter(|(n, _)| *n == name)
            .flat_map(|(_, s)| s.iter().map(Server::pid))
            .collect()
    }

    pub fn backend_roots(&self) -> Vec<i32> {
        self.backends.iter().map(Server::pid).collect()
    }

    /// Root pids of every server the harness runs.
    pub fn all_roots(&self) -> Vec<i32> {
        let mut roots = self.backend_roots();
        roots.extend(
            self.targets
                .iter()
                .flat_map(|(_, s)| s.iter().map(Server::pid)),
        );
        roots
    }
}

/// Ports on which some socket is in LISTEN state on 127.0.0.1 or any address (from `/proc/net/tcp`), read
/// without connecting, so no backend sees a stray connection.
pub fn listening_ports() -> Vec<u16> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            let (addr, port) = local.split_once(':')?;
            let ours = addr == "0100007F" || addr == "00000000";
            (state == "0A" && ours).then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect()
}

/// Fails if any of `ports` is already taken: a leftover of an earlier run, or another program.
pub fn check_ports_free(ports: &[u16]) -> anyhow::Result<()> {
    let listening = listening_ports();
    let taken: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|p| listening.contains(p))
        .collect();
    if !taken.is_empty() {
        bail!(
            "127.0.0.1 ports {taken:?} are already in use; the harness needs {}..{} free (is an earlier run still up? `ss -ltnp` shows who holds them)",
            targets::BASE_PORT,
            targets::BASE_PORT + 600
        );
    }
    Ok(())
}

/// A peer or load tool, found on PATH or in the sbin directories.
pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
    which(name).with_context(|| {
        format!("{name} is not installed (tools/bench installs the Debian packages with apt-get)")
    })
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn write(paths: &Paths, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = paths.conf().join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Exactly [`HTTP_BODY_LEN`] bytes of HTML.
pub fn http_body() -> String {
    let mut body = String::from("<html><body>ringway bench</body></html>\n");
    while body.len() < HTTP_BODY_LEN - 1 {
        body.insert(body.len() - 1, '.');
    }
    body.push('\n');
    body
}

fn nginx(name: &str, paths: &Paths, conf: &Path) -> anyhow::Result<Server> {
    let nginx = tool("nginx")?;
    let err = paths.logs().join(format!("{name}.err"));
    Server::spawn(
        name,
        &nginx,
        &args(&[
            "-p",
            &paths.run.display().to_string(),
            "-e",
            &err.display().to_string(),
            "-c",
            &conf.display().to_string(),
            "-g",
            "daemon off;",
        ]),
        paths.logs().join(format!("{name}.log")),
        &[],
    )
}

fn start_target(paths: &Paths, t: &Target) -> anyhow::Result<Vec<Server>> {
    let log = |n: &str| paths.logs().join(format!("{n}.log"));
    Ok(match t.kind {
        Kind::Direct => Vec::new(),
        Kind::Haproxy | Kind::HaproxyForcedSplice => {
            let conf = write(paths, &format!("{}.cfg", t.name), &haproxy_conf(t))?;
            let haproxy = tool("haproxy")?;
            vec![Server::spawn(
                t.name,
                &haproxy,
                &args(&["-db", "-f", &conf.display().to_string()]),
                log(t.name),
                &[],
            )?]
        }
        Kind::Nginx => {
            let conf = write(
                paths,
                "nginx-stream.conf",
                &nginx_stream_conf(t, &paths.run),
            )?;
            vec![nginx(t.name, paths, &conf)?]
        }
        Kind::Pen => {
            let pen = tool("pen")?;
            let mut servers = Vec::new();
            for (listen, backend) in [
                (t.bulk, BULK_BACKEND),
                (t.http, HTTP_BACKEND),
                (t.idle, IDLE_BACKEND),
            ] {
                let name = format!("pen-{listen}");
                let max = PEN_MAX_CONNECTIONS.to_string();
                servers.push(Server::spawn(
                    &name,
                    &pen,
                    &args(&[
                        "-f",
                        "-r",
                        "-x",
                        &max,
                        "-c",
                        &max,
                        &format!("127.0.0.1:{listen}"),
                        &format!("127.0.0.1:{backend}"),
                    ]),
                    log(&name),
                    &[],
                )?);
            }
            servers
        }
        Kind::RingwayHttp => {
            let file = write(
                paths,
                &format!("{}.services.toml", t.name),
                &routing_conf::ringway_services(t),
            )?;
            start_ringway(paths, t.name, &file, targets::RINGWAY_MODES[0], None)?
        }
        Kind::HaproxyHttp => {
            let map = paths.conf().join(format!("{}.hosts.map", t.name));
            let (text, hosts) = routing_conf::haproxy(t, &map);
            std::fs::write(&map, hosts).with_context(|| format!("writing {}", map.display()))?;
            let conf = write(paths, &format!("{}.cfg", t.name), &text)?;
            vec![Server::spawn(
                t.name,
                &tool("haproxy")?,
                &args(&["-db", "-f", &conf.display().to_string()]),
                log(t.name),
                &[],
            )?]
        }
        Kind::NginxHttp => {
            let conf = write(
                paths,
                "nginx-http.conf",
                &routing_conf::nginx(t, &paths.run),
            )?;
            vec![nginx(t.name, paths, &conf)?]
        }
        Kind::Ringway(mode) => {
            let services = [
                ("bulk", t.bulk, BULK_BACKEND),
                ("http", t.http, HTTP_BACKEND),
                ("idle", t.idle, IDLE_BACKEND),
            ];
            let file = write(
                paths,
                &format!("{}.services.toml", t.name),
                &ringway_services(&services),
            )?;
            start_ringway(paths, t.name, &file, mode, None)?
        }
    })
}

/// Starts a Ringway controlplane on `services` and a dataplane (2 workers, pinned as deployed, JSON log).
/// The controlplane's HTTP API listens on `api` when given (figure 6), else it is off: targets run side by
/// side, and its default port would be taken twice.
pub fn start_ringway(
    paths: &Paths,
    name: &str,
    services: &Path,
    mode: &str,
    api: Option<u16>,
) -> anyhow::Result<Vec<Server>> {
    let socket = paths.run.join(format!("{name}.sock"));
    let api = api.map_or_else(String::new, |port| targets::local(port).to_string());
    let controlplane = Server::spawn(
        &format!("{name}-controlplane"),
        &paths.ringway("ringway-controlplane"),
        &args(&[
            "--services",
            &services.display().to_string(),
            "--socket",
            &socket.display().to_string(),
            &format!("--api={api}"),
            // Overrides and switches of one run must not leak into the next.
            "--api-state-file=",
            "--log-format",
            "json",
        ]),
        paths.logs().join(format!("{name}-controlplane.log")),
        &[],
    )?;
    let dataplane = start_dataplane(paths, name, &socket, mode, &[])?;
    Ok(vec![controlplane, dataplane])
}

/// Starts a Ringway dataplane following the controlplane socket `socket`.
pub fn start_dataplane(
    paths: &Paths,
    name: &str,
    socket: &Path,
    mode: &str,
    extra: &[&str],
) -> anyhow::Result<Server> {
    let mut dp_args = args(&[
        "--socket",
        &socket.display().to_string(),
        "--workers",
        &targets::PROXY_WORKERS.to_string(),
        "--forward",
        mode,
        "--state-file",
        &paths
            .run
            .join(format!("{name}.state"))
            .display()
            .to_string(),
        "--drain-timeout",
        RINGWAY_DRAIN,
        // Every target runs side by side for interleaved rounds: no admin endpoint (its default port would
        // be taken twice), and no drain grace so a stopped target frees its ports at once.
        "--status-endpoint=",
        "--drain-grace",
        "0s",
        "--log-format",
        "json",
    ]);
    dp_args.extend(extra.iter().map(|s| s.to_string()));
    Server::spawn(
        &format!("{name}-dataplane"),
        &paths.ringway("ringway-dataplane"),
        &dp_args,
        paths.logs().join(format!("{name}-dataplane.log")),
        &[("RUST_LOG", "info")],
    )
}

/// A services file with one service per `(name, listen port, backend port)`.
pub fn ringway_services(services: &[(&str, u16, u16)]) -> String {
    let mut text = String::from("# Written by tools/bench: one service per benchmark listener.\n");
    for (name, listen, backend) in services {
        let _ = write!(
            text,
            "\n[[service]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{listen}\"\ntimeout_idle_ms = {IDLE_TIMEOUT_MS}\nbackends = [{{ address = \"127.0.0.1:{backend}\" }}]\n"
        );
    }
    text
}

fn haproxy_conf(t: &Target) -> String {
    let splice = match t.kind {
        Kind::HaproxyForcedSplice => "    option splice-request\n    option splice-response\n",
        _ => "    option splice-auto\n",
    };
    let secs = IDLE_TIMEOUT_MS / 1000;
    format!(
        "# HAProxy TCP-mode forwarder, {workers} threads (written by tools/bench)\n\
         global\n    nbthread {workers}\n    maxconn {HAPROXY_MAXCONN}\n\
         defaults\n    mode tcp\n{splice}    timeout connect 5s\n    timeout client  {secs}s\n    timeout server  {secs}s\n    maxconn {HAPROXY_MAXCONN}\n\
         listen bulk\n    bind 127.0.0.1:{}\n    server iperf 127.0.0.1:{BULK_BACKEND}\n\
         listen http\n    bind 127.0.0.1:{}\n    server web 127.0.0.1:{HTTP_BACKEND}\n\
         listen idle\n    bind 127.0.0.1:{}\n    server hold 127.0.0.1:{IDLE_BACKEND}\n",
        t.bulk,
        t.http,
        t.idle,
        workers = targets::PROXY_WORKERS,
    )
}

fn nginx_stream_conf(t: &Target, run: &Path) -> String {
    let run = run.display();
    let secs = IDLE_TIMEOUT_MS / 1000;
    let server = |listen: u16, backend: u16| {
        format!(
            "    server {{ listen 127.0.0.1:{listen} reuseport backlog=4096; proxy_pass 127.0.0.1:{backend}; proxy_timeout {secs}s; }}\n"
        )
    };
    format!(
        "# nginx stream (L4) forwarder, {workers} workers, SO_REUSEPORT listeners (written by tools/bench)\n\
         load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         worker_processes {workers};\npid {run}/nginx-stream.pid;\n\
         worker_rlimit_nofile 20000;\nevents {{ worker_connections 9000; }}\n\
         stream {{\n{}{}{}}}\n",
        server(t.bulk, BULK_BACKEND),
        server(t.http, HTTP_BACKEND),
        server(t.idle, IDLE_BACKEND),
        workers = targets::PROXY_WORKERS,
    )
}

fn backend_nginx_conf(run: &Path) -> String {
    let run = run.display();
    format!(
        "# Backend HTTP server: nginx, 1 worker, a {HTTP_BODY_LEN}-byte static file (written by tools/bench)\n\
         worker_processes 1;\npid {run}/backend-nginx.pid;\nworker_rlimit_nofile 20000;\n\
         events {{ worker_connections 9000; }}\n\
         http {{\n    access_log off;\n    default_type text/html;\n\
             sendfile on; tcp_nopush on; tcp_nodelay on;\n\
             keepalive_requests 10000000;\n    keepalive_timeout 65;\n\
             open_file_cache max=100 inactive=60s;\n\
             client_body_temp_path {run}/body;\n    proxy_temp_path {run}/proxy;\n\
             fastcgi_temp_path {run}/fastcgi;\n    uwsgi_temp_path {run}/uwsgi;\n    scgi_temp_path {run}/scgi;\n\
             server {{\n        listen 127.0.0.1:{HTTP_BACKEND} backlog=4096;\n        root {run}/www;\n        location / {{ }}\n    }}\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_body_has_the_reference_size() {
        assert_eq!(http_body().len(), HTTP_BODY_LEN);
    }

    #[test]
    fn configs_name_every_port() {
        for t in targets::all() {
            let text = match t.kind {
                Kind::Haproxy | Kind::HaproxyForcedSplice => haproxy_conf(&t),
                Kind::Nginx => nginx_stream_conf(&t, Path::new("/x")),
                _ => continue,
            };
            for p in [t.bulk, t.http, t.idle] {
                assert!(text.contains(&format!("127.0.0.1:{p}")), "{text}");
            }
        }
        let forced = targets::all()
            .into_iter()
            .find(|t| t.kind == Kind::HaproxyForcedSplice)
            .unwrap();
        assert!(haproxy_conf(&forced).contains("splice-response"));
    }
}
