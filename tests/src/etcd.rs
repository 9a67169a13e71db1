//! A real etcd (Debian's `etcd-server`, 3.4) on free loopback ports with a data directory of its own, killed
//! when dropped. Started with `--enable-v2` so registrator's v2 key layout can be written and watched. The
//! data directory lives in `/dev/shm` when there is one: etcd syncs every write, and the tests are about
//! Ringway, not the disk. [`Etcd::start_tls`] adds a client port that serves TLS only and requires a client
//! certificate, as a secured cluster does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;

use crate::doubles::http::{Response, request};
use crate::net::{free_port, wait_until};
use crate::procs::Proc;
use crate::tls::TestCa;

/// The binary Debian's `etcd-server` installs.
pub const ETCD: &str = "/usr/bin/etcd";
/// How long etcd may take to answer after a start.
const START_LIMIT: Duration = Duration::from_secs(30);
const FORM: &str = "application/x-www-form-urlencoded";

/// A running etcd.
pub struct Etcd {
    proc: Option<Proc>,
    /// The plain HTTP client port: the tests' own writes go there, and so does a controlplane without TLS.
    pub client_port: u16,
    peer_port: u16,
    data: tempfile::TempDir,
    logs: PathBuf,
    tls: Option<TlsListener>,
}

/// An HTTPS client port that requires a client certificate from the test CA.
struct TlsListener {
    port: u16,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Etcd {
    /// Starts etcd, logging into `log_dir`, and waits until it answers.
    pub fn start(log_dir: &Path) -> Self {
        Self::start_with(log_dir, None)
    }

    /// Starts etcd with a second client port, [`Etcd::tls_url`], that serves only TLS with a server
    /// certificate from `ca` and takes only clients presenting a certificate `ca` issued
    /// (`--client-cert-auth`), as a secured cluster's etcd. The plain port stays for the test's own writes.
    pub fn start_tls(log_dir: &Path, ca: &TestCa) -> Self {
        let server = ca.server("etcd-server");
        Self::start_with(
            log_dir,
            Some(TlsListener {
                port: free_port(),
                cert: server.cert_file,
                key: server.key_file,
                ca: ca.ca_file(),
            }),
        )
    }

    fn start_with(log_dir: &Path, tls: Option<TlsListener>) -> Self {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: install the Debian package etcd-server (tools/test does)"
        );
        let shm = Path::new("/dev/shm");
        let data = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let mut etcd = Self {
            proc: None,
            client_port: free_port(),
            peer_port: free_port(),
            data,
            logs: log_dir.to_path_buf(),
            tls,
        };
        etcd.launch();
        etcd
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The TLS client port's URL (`https://127.0.0.1:PORT`); only for [`Etcd::start_tls`].
    pub fn tls_url(&self) -> String {
        let tls = self.tls.as_ref().expect("etcd was started without TLS");
        format!("https://127.0.0.1:{}", tls.port)
    }

    /// The TLS client port; only for [`Etcd::start_tls`].
    pub fn tls_port(&self) -> u16 {
        self.tls
            .as_ref()
            .expect("etcd was started without TLS")
            .port
    }

    fn launch(&mut self) {
        let plain = self.url();
        let (listen, advertise) = match &self.tls {
            Some(tls) => {
                let secure = format!("https://127.0.0.1:{}", tls.port);
                (format!("{secure},{plain}"), secure)
            }
            None => (plain.clone(), plain),
        };
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut args: Vec<String> = [
            "--name",
            "ringway-test",
            "--data-dir",
            &self.data.path().join("member").display().to_string(),
            "--listen-client-urls",
            &listen,
            "--advertise-client-urls",
            &advertise,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("ringway-test={peer}"),
            "--enable-v2",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(tls) = &self.tls {
            for (flag, path) in [
                ("--cert-file", &tls.cert),
                ("--key-file", &tls.key),
                ("--trusted-ca-file", &tls.ca),
            ] {
                args.push(flag.into());
                args.push(path.display().to_string());
            }
            args.push("--client-cert-auth".into());
        }
        let log = (0..)
            .map(|i| self.logs.join(format!("etcd-{i}.log")))
            .find(|p| !p.exists())
            .unwrap();
        self.proc = Some(Proc::spawn_path(Path::new(ETCD), &args, log, &[]));
        let port = self.client_port;
        let up = wait_until(START_LIMIT, || {
            request(port, "GET", "/v2/keys/", FORM, b"").is_ok_and(|r| r.status == 200)
        });
        assert!(
            up,
            "etcd did not start:\n{}",
            self.proc.as_ref().unwrap().log_text()
        );
    }

    /// Kills etcd (SIGKILL) and starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Kills etcd; [`Etcd::restart`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Starts a stopped etcd again.
    pub fn resume(&mut self) {
        assert!(self.proc.is_none(), "etcd is running");
        self.launch();
    }

    fn v2(&self, method: &str, key: &str, body: &str) -> Response {
        let response = request(
            self.client_port,
            method,
            &format!("/v2/keys{key}"),
            FORM,
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("etcd {method} {key}: {e}"));
        assert!(
            response.status < 300,
            "etcd {method} {key}: {} {}",
            response.status,
            response.text()
        );
        response
    }

    /// Sets a v2 key (as registrator does).
    pub fn v2_set(&self, key: &str, value: &str) {
        self.v2("PUT", key, &format!("value={}", url_encode(value)));
    }

    pub fn v2_delete(&self, key: &str) {
        self.v2("DELETE", key, "");
    }

    /// Creates a v2 directory.
    pub fn v2_mkdir(&self, key: &str) {
        self.v2("PUT", key, "dir=true");
    }

    fn v3(&self, path: &str, body: serde_json::Value) {
        let response = request(
            self.client_port,
            "POST",
            path,
            "application/json",
            body.to_string().as_bytes(),
        )
        .unwrap_or_else(|e| panic!("etcd {path}: {e}"));
        assert_eq!(response.status, 200, "etcd {path}: {}", response.text());
    }

    pub fn v3_put(&self, key: &str, value: &str) {
        self.v3(
            "/v3/kv/put",
            json!({"key": BASE64.encode(key), "value": BASE64.encode(value)}),
        );
    }

    pub fn v3_delete(&self, key: &str) {
        self.v3("/v3/kv/deleterange", json!({"key": BASE64.encode(key)}));
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Percent-encodes everything but unreserved characters.
fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
