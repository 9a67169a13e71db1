//! A real nginx (Debian's `nginx` package, which `tools/test` installs) as an HTTP backend: one worker,
//! keep-alive, answering every request with its name. It can be stopped gracefully (`SIGQUIT`: in-flight
//! requests finish, idle keep-alive connections close) and started again on the same port, which is
//! what a backend restart looks like to a proxy.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::net::{local, wait_until};
use crate::procs::Proc;

/// Where Debian installs the binary.
const NGINX: &str = "/usr/sbin/nginx";
/// How long nginx may take to listen, or to exit after `SIGQUIT`.
const START_STOP_LIMIT: Duration = Duration::from_secs(20);

pub struct Nginx {
    pub name: String,
    pub port: u16,
    dir: PathBuf,
    process: Option<Proc>,
}

impl Nginx {
    /// Starts nginx on `127.0.0.1:port`, its files under `dir/name`, and waits until it listens.
    pub fn start(dir: &Path, name: &str, port: u16) -> Self {
        assert!(
            Path::new(NGINX).is_file(),
            "{NGINX} is missing: tools/test installs Debian's nginx package"
        );
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("nginx.conf"), config(&dir, name, port)).unwrap();
        let mut nginx = Self {
            name: name.to_string(),
            port,
            dir,
            process: None,
        };
        nginx.spawn();
        nginx
    }

    fn spawn(&mut self) {
        let prefix = self.dir.display().to_string();
        let args = [
            "-p",
            &prefix,
            "-e",
            &format!("{prefix}/error.log"),
            "-c",
            &format!("{prefix}/nginx.conf"),
            "-g",
            "daemon off;",
        ]
        .map(String::from);
        self.process = Some(Proc::spawn_path(
            Path::new(NGINX),
            &args,
            self.dir.join("stdout.log"),
            &[],
        ));
        let port = self.port;
        assert!(
            wait_until(START_STOP_LIMIT, || TcpStream::connect(local(port)).is_ok()),
            "{} does not listen on {port}; {}",
            self.name,
            std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
        );
    }

    /// Graceful stop (`SIGQUIT`) and wait for the exit, then start again on the same port.
    pub fn restart(&mut self) {
        let mut process = self.process.take().expect("nginx is running");
        process.signal(libc::SIGQUIT);
        assert!(
            process.wait_exit(START_STOP_LIMIT).is_some(),
            "{} did not stop after SIGQUIT",
            self.name
        );
        self.spawn();
    }
}

fn config(dir: &Path, name: &str, port: u16) -> String {
    let dir = dir.display();
    format!(
        "worker_processes 1;\npid {dir}/nginx.pid;\nevents {{ worker_connections 1024; }}\n\
         http {{\n    access_log off;\n    keepalive_timeout 60;\n    keepalive_requests 1000000;\n\
         \x20   client_body_temp_path {dir}/body;\n    proxy_temp_path {dir}/proxy;\n\
         \x20   fastcgi_temp_path {dir}/fastcgi;\n    uwsgi_temp_path {dir}/uwsgi;\n    scgi_temp_path {dir}/scgi;\n\
         \x20   server {{\n        listen 127.0.0.1:{port};\n        default_type text/plain;\n\
         \x20       location / {{ return 200 \"{name}\\n\"; }}\n    }}\n}}\n"
    )
}
