//! The HTTP client of a discovery source, with its TLS settings.
//!
//! TLS is rustls (no OpenSSL anywhere in the build), so `https://` works for every source. Which
//! certificates are trusted:
//! - by default, the system's store (`/etc/ssl/certs`, where `update-ca-certificates` puts a cluster's own
//!   CA, as curl and etcdctl trust it) together with Mozilla's roots compiled in (so a minimal container
//!   image without `ca-certificates` still verifies a public certificate);
//! - with a CA file (`--marathon-ca`, `--consul-ca`, `--etcd-ca`), that file's certificates **only**, as
//!   `curl --cacert` and `etcdctl --cacert` do: a source pinned to its cluster's CA trusts nothing else.
//!
//! A client certificate (`--etcd-cert` + `--etcd-key`, `--consul-cert` + `--consul-key`) is presented to
//! servers that ask for one (etcd's `--client-cert-auth`, Consul's `verify_incoming`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sources::discovery::CONNECT_TIMEOUT;

/// How long an idle kept-alive connection to a source stays open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per host: as many as the busiest source uses at once (Consul's two watches and
/// four readers), so a burst that opened extra connections does not leave them all open.
const MAX_IDLE_PER_HOST: usize = 6;

/// The TLS files of one source. `source` names the flags in errors (`--etcd-ca`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub source: &'static str,
    /// PEM certificates to trust instead of the built-in roots.
    pub ca: Option<PathBuf>,
    /// PEM certificate (chain) presented to the server.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    pub fn none(source: &'static str) -> Self {
        Self {
            source,
            ..Self::default()
        }
    }
}

/// Redirects a client follows on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    /// None: the caller follows them itself (Marathon, to keep its credentials on the way to the leader).
    None,
    /// At most one.
    One,
}

/// Why a source's client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--{flag} {path}: {detail}")]
    File {
        flag: String,
        path: String,
        detail: String,
    },
    #[error("--{of}-cert and --{of}-key go together: give both or neither")]
    HalfIdentity { of: &'static str },
    #[error("cannot set up the HTTP client: {0}")]
    Build(String),
}

/// The client of one source: plain HTTP/1.1 or HTTPS, no proxy from the environment (sources are on the
/// cluster's own network), a bounded connect. Request timeouts are set per request, because watches and
/// event streams are long-lived.
pub fn http_client(tls: &TlsFiles, redirects: Redirects) -> Result<reqwest::Client, ClientError> {
    let policy = match redirects {
        Redirects::None => reqwest::redirect::Policy::none(),
        Redirects::One => reqwest::redirect::Policy::limited(1),
    };
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
        .redirect(policy)
        .tcp_nodelay(true);
    if let Some(ca) = &tls.ca {
        let flag = format!("{}-ca", tls.source);
        let pem = read(&flag, ca)?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| file_error(&flag, ca, error_chain(&e)))?;
        if certificates.is_empty() {
            return Err(file_error(&flag, ca, "no PEM certificate in it".into()));
        }
        builder = builder.tls_built_in_root_certs(false);
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    match (&tls.cert, &tls.key) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            let cert_flag = format!("{}-cert", tls.source);
            let mut pem = read(&cert_flag, cert)?;
            pem.push(b'\n');
            pem.extend(read(&format!("{}-key", tls.source), key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                file_error(
                    &cert_flag,
                    cert,
                    format!("with its key: {}", error_chain(&e)),
                )
            })?;
            builder = builder.identity(identity);
        }
        _ => return Err(ClientError::HalfIdentity { of: tls.source }),
    }
    builder
        .build()
        .map_err(|e| ClientError::Build(error_chain(&e)))
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| file_error(flag, path, e.to_string()))
}

fn file_error(flag: &str, path: &Path, detail: String) -> ClientError {
    ClientError::File {
        flag: flag.to_string(),
        path: path.display().to_string(),
        detail,
    }
}

/// An error with its causes (`error sending request for url (…): client error (Connect): invalid peer
/// certificate: UnknownIssuer`): reqwest's own message alone hides why a TLS connection failed.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_clients_build_and_bad_files_name_their_flag() {
        http_client(&TlsFiles::none("consul"), Redirects::One).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let tls = TlsFiles {
            ca: Some(empty.clone()),
            ..TlsFiles::none("etcd")
        };
        let err = http_client(&tls, Redirects::One).unwrap_err().to_string();
        assert!(err.starts_with("--etcd-ca "), "{err}");
        assert!(err.contains("empty.pem"), "{err}");
        let tls = TlsFiles {
            ca: Some(dir.path().join("missing.pem")),
            ..TlsFiles::none("marathon")
        };
        let err = http_client(&tls, Redirects::None).unwrap_err().to_string();
        assert!(err.starts_with("--marathon-ca "), "{err}");
        let tls = TlsFiles {
            cert: Some(empty),
            ..TlsFiles::none("etcd")
        };
        let err = http_client(&tls, Redirects::One).unwrap_err().to_string();
        assert_eq!(
            err,
            "--etcd-cert and --etcd-key go together: give both or neither"
        );
    }
}
