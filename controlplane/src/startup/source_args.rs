//! The flags that reach secured clusters: credentials, tokens, CA files and client certificates for the
//! discovery sources (docs/discovery.md, "Secured clusters"). Secrets can come from a file, so they are not
//! visible in `ps`; none of them is ever printed.

use std::path::PathBuf;

use clap::Args;

use crate::sources::client::TlsFiles;
use crate::sources::secret::{Credentials, Secret, SecretError};

/// Credentials and TLS of the discovery sources.
#[derive(Debug, Clone, Default, Args)]
pub struct SourceSecurityArgs {
    /// Marathon credentials, user:password, sent (HTTP Basic) to every replica and to the leader a standby
    /// redirects to. A replica URL's own user:password@ wins for that replica. Visible in `ps`: prefer
    /// --marathon-auth-file.
    #[arg(
        long,
        env = "MARATHON_AUTH",
        value_name = "USER:PASSWORD",
        hide_env_values = true,
        conflicts_with = "marathon_auth_file"
    )]
    pub marathon_auth: Option<String>,

    /// File holding the Marathon credentials, user:password (a trailing newline is ignored).
    #[arg(long, env = "MARATHON_AUTH_FILE", value_name = "FILE")]
    pub marathon_auth_file: Option<PathBuf>,

    /// PEM CA certificate(s) trusted for https:// Marathon replicas instead of the system's roots.
    #[arg(long, env = "MARATHON_CA", value_name = "FILE")]
    pub marathon_ca: Option<PathBuf>,

    /// Consul ACL token, sent as X-Consul-Token. Visible in `ps`: prefer --consul-token-file or the variable.
    #[arg(
        long,
        env = "CONSUL_HTTP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        conflicts_with = "consul_token_file"
    )]
    pub consul_token: Option<String>,

    /// File holding the Consul ACL token.
    #[arg(long, env = "CONSUL_HTTP_TOKEN_FILE", value_name = "FILE")]
    pub consul_token_file: Option<PathBuf>,

    /// PEM CA certificate(s) trusted for an https:// Consul instead of the system's roots.
    #[arg(long, env = "CONSUL_CACERT", value_name = "FILE")]
    pub consul_ca: Option<PathBuf>,

    /// PEM client certificate presented to Consul (with --consul-key), for verify_incoming.
    #[arg(
        long,
        env = "CONSUL_CLIENT_CERT",
        value_name = "FILE",
        requires = "consul_key"
    )]
    pub consul_cert: Option<PathBuf>,

    /// PEM private key of --consul-cert.
    #[arg(
        long,
        env = "CONSUL_CLIENT_KEY",
        value_name = "FILE",
        requires = "consul_cert"
    )]
    pub consul_key: Option<PathBuf>,

    /// PEM CA certificate(s) trusted for https:// etcd members (--etcd-v3, --registrator etcd+https://)
    /// instead of the system's roots.
    #[arg(long, env = "RINGWAY_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,

    /// PEM client certificate presented to etcd (with --etcd-key), for etcd's --client-cert-auth.
    #[arg(
        long,
        env = "RINGWAY_ETCD_CERT",
        value_name = "FILE",
        requires = "etcd_key"
    )]
    pub etcd_cert: Option<PathBuf>,

    /// PEM private key of --etcd-cert.
    #[arg(
        long,
        env = "RINGWAY_ETCD_KEY",
        value_name = "FILE",
        requires = "etcd_cert"
    )]
    pub etcd_key: Option<PathBuf>,
}

impl SourceSecurityArgs {
    /// The Marathon credentials given by flag, variable or file.
    pub fn marathon_credentials(&self) -> Result<Option<Credentials>, SecretError> {
        if let Some(text) = &self.marathon_auth {
            return Credentials::parse(text, "--marathon-auth").map(Some);
        }
        self.marathon_auth_file
            .as_deref()
            .map(Credentials::from_file)
            .transpose()
    }

    /// The Consul token given by flag, variable or file.
    pub fn consul_token(&self) -> Result<Option<Secret>, SecretError> {
        if let Some(text) = &self.consul_token {
            return Secret::new(text.clone(), "--consul-token").map(Some);
        }
        self.consul_token_file
            .as_deref()
            .map(Secret::from_file)
            .transpose()
    }

    pub fn marathon_tls(&self) -> TlsFiles {
        TlsFiles {
            ca: self.marathon_ca.clone(),
            ..TlsFiles::none("marathon")
        }
    }

    pub fn consul_tls(&self) -> TlsFiles {
        TlsFiles {
            source: "consul",
            ca: self.consul_ca.clone(),
            cert: self.consul_cert.clone(),
            key: self.consul_key.clone(),
        }
    }

    pub fn etcd_tls(&self) -> TlsFiles {
        TlsFiles {
            source: "etcd",
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
        }
    }
}
