//! The command line. Every flag can also be set through an environment variable (shown in `--help`), which
//! is how containers and systemd units usually configure services; proxymatic's names (`GROUP_SIZE`,
//! `MAX_CONNECTIONS`) are kept so existing deployments carry over.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};
use ringway_shared::model::DEFAULT_MAX_CONNECTIONS;

use crate::api::DEFAULT_API;
use crate::model::http::DEFAULT_VHOST_PORT;
use crate::pipeline::intake::Coalescing;
use crate::sources::consul::ConsulConfig;
use crate::sources::discovery::{DEFAULT_LISTEN_IP, DiscoveryOptions};
use crate::sources::etcd_v3::{DEFAULT_PREFIX, EtcdV3Config};
use crate::sources::file::DEFAULT_POLL_INTERVAL;
use crate::sources::marathon::MarathonConfig;
use crate::sources::registrator::{RegistratorError, RegistratorUrl};
use crate::sources::secret::{SecretError, without_userinfo};
use crate::startup::api_args::{ApiArgs, ApiArgsError};
use crate::startup::config::{ApiToken, Config, DEFAULT_SOCKET};
use crate::startup::logging::LogFormat;
use crate::startup::source_args::SourceSecurityArgs;
use crate::startup::supervisor_args::{SupervisorArgs, parse_duration};

/// Default of `--api-state-file`: beside the dataplane's state file, in the units' `StateDirectory=`.
pub const DEFAULT_API_STATE_FILE: &str = "/var/lib/ringway/api-state.json";
/// Default of `--ping-interval-ms`.
const DEFAULT_PING_INTERVAL_MS: u64 = 5_000;
/// Default of `--coalesce-ms` (see [`crate::pipeline::intake::DEFAULT_COALESCE`]).
const DEFAULT_COALESCE_MS: u64 = 5;

/// Ringway controlplane: discovers services, compiles route snapshots and serves them to dataplanes.
#[derive(Debug, Clone, Parser)]
#[command(name = "ringway-controlplane", version, about)]
pub struct Cli {
    /// Static services file (TOML), re-read when it changes and on SIGHUP. At least one source (this or a
    /// discovery source below) is required.
    #[arg(long, env = "RINGWAY_SERVICES", value_name = "FILE")]
    pub services: Option<PathBuf>,

    /// Marathon replicas (comma-separated base URLs, tried in order): apps from /v2/apps, changes from
    /// /v2/events. https:// works; user:password@ in a URL is taken out of it and sent as credentials.
    #[arg(
        long,
        env = "MARATHON_URL",
        value_name = "URLS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub marathon: Vec<String>,

    /// registrator's etcd v2 tree, as etcd://host:port[,host:port…]/path (etcd+https:// for TLS).
    #[arg(long, env = "REGISTRATOR_URL", value_name = "URL")]
    pub registrator: Option<String>,

    /// etcd v3 JSON gateway members (comma-separated, http(s)://host:2379, tried in turn), read under
    /// --etcd-prefix.
    #[arg(
        long = "etcd-v3",
        env = "RINGWAY_ETCD_V3_URL",
        value_name = "URLS",
        value_delimiter = ','
    )]
    pub etcd_v3: Vec<String>,

    /// Key prefix of the etcd v3 source (format in docs/discovery.md).
    #[arg(long, env = "RINGWAY_ETCD_PREFIX", value_name = "PREFIX", default_value = DEFAULT_PREFIX)]
    pub etcd_prefix: String,

    /// Consul HTTP API (http://host:8500): services with passing checks, settings from their tags.
    #[arg(long, env = "CONSUL_URL", value_name = "URL")]
    pub consul: Option<String>,

    /// marathon-lb groups served (comma-separated HAPROXY_GROUP values); `*` takes every app, grouped or not.
    #[arg(
        long = "group",
        env = "RINGWAY_GROUPS",
        value_name = "GROUPS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub groups: Vec<String>,

    /// Route discovered services whose instances use the service port itself (host networking). The variable
    /// takes true/false, 1/0 (proxymatic's values), yes/no, on/off.
    #[arg(long, env = "EXPOSE_HOST", action = ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub expose_host: bool,

    /// IP address discovered services listen on.
    #[arg(long, env = "RINGWAY_LISTEN_ADDRESS", value_name = "IP", default_value_t = DEFAULT_LISTEN_IP)]
    pub listen_address: IpAddr,

    /// Every discovered service is also the virtual host <name>.<DOMAIN> on --vhost-port (proxymatic's
    /// naming: Marathon app /product/system/service → service.system.product.DOMAIN).
    #[arg(long, env = "VHOST_DOMAIN", value_name = "DOMAIN", value_parser = parse_vhost_domain)]
    pub vhost_domain: Option<String>,

    /// The shared HTTP port (on --listen-address) of virtual hosts: HAPROXY_<N>_VHOST apps, --vhost-domain
    /// names, docker-flow-proxy HTTP services without srcPort.
    #[arg(long, env = "VHOST_PORT", value_name = "PORT", default_value_t = DEFAULT_VHOST_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub vhost_port: u16,

    /// marathon-lb's app-id routing: an HTTP listener (IP:port, or :9091 for every IPv4 interface) where a
    /// request with `X-Marathon-App-Id: /app` reaches that Marathon app's HTTP service. Off when empty.
    #[arg(long, env = "RINGWAY_APP_ID_LISTEN", value_name = "ADDR", default_value = "",
          value_parser = parse_optional_addr)]
    pub app_id_listen: OptionalAddr,

    /// Full re-read of every source this often, events or not (`60`, `60s`, `500ms`, `2m`).
    #[arg(long, env = "REFRESH_INTERVAL", value_name = "DURATION", default_value = "60s",
          value_parser = parse_duration)]
    pub refresh_interval: Duration,

    /// Quiet time that closes a burst of source changes into one snapshot (latest wins).
    #[arg(long, env = "RINGWAY_COALESCE_MS", value_name = "MS", default_value_t = DEFAULT_COALESCE_MS)]
    pub coalesce_ms: u64,

    /// Longest the first snapshot waits for every source to answer once.
    #[arg(long, env = "RINGWAY_INITIAL_SYNC_TIMEOUT", value_name = "DURATION", default_value = "10s",
          value_parser = parse_duration)]
    pub initial_sync_timeout: Duration,

    /// Unix socket the dataplanes connect to.
    #[arg(long, env = "RINGWAY_SOCKET", value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Number of Ringway instances sharing the backends; per-backend maxconn is divided by it.
    #[arg(long, env = "GROUP_SIZE", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub group_size: u32,

    /// Concurrent connections per service on this instance, when the services file sets none.
    #[arg(long, env = "MAX_CONNECTIONS", value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// A peer uid allowed on the socket besides our own (repeatable; the variable is comma-separated).
    #[arg(
        long = "allow-uid",
        env = "RINGWAY_ALLOW_UIDS",
        value_name = "UID",
        value_delimiter = ','
    )]
    pub allow_uids: Vec<u32>,

    /// Log output format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "RINGWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Interval of the pings sent to each dataplane; a session silent for 3 intervals is closed.
    #[arg(long, env = "RINGWAY_PING_INTERVAL_MS", value_name = "MS",
          default_value_t = DEFAULT_PING_INTERVAL_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub ping_interval_ms: u64,

    /// HTTP API (docs/api.md) as IP:port: sources, services, overrides, switch, docker-flow-proxy's calls.
    /// Empty disables it. Keep it on loopback unless --api-token is set.
    #[arg(long, env = "RINGWAY_API", value_name = "ADDR", default_value = DEFAULT_API)]
    pub api: String,

    /// Token every API request must carry (Authorization: Bearer TOKEN, or as the Basic-auth password);
    /// empty: no check. Visible in `ps` and the environment: prefer --api-token-file.
    #[arg(
        long,
        env = "RINGWAY_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,

    /// Where services registered through the API and runtime overrides are kept across restarts
    /// (JSON, replaced atomically). Empty keeps them in memory only.
    #[arg(long, env = "RINGWAY_API_STATE_FILE", value_name = "FILE",
          default_value = DEFAULT_API_STATE_FILE)]
    pub api_state_file: String,

    /// The API's safety: token file, origins, what registrations may ask for.
    #[command(flatten)]
    pub api_args: ApiArgs,
    /// Credentials and TLS for secured sources.
    #[command(flatten)]
    pub security: SourceSecurityArgs,

    /// `--spawn-dataplane` and its settings (see [`crate::supervisor`]).
    #[command(flatten)]
    pub supervisor: SupervisorArgs,
}

/// A parsed command line that still cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("--{flag} must be at least 1")]
    Zero { flag: &'static str },
    #[error("--registrator: {0}")]
    Registrator(#[from] RegistratorError),
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("--{flag}: {url:?} is not an http:// or https:// URL")]
    SourceUrl { flag: &'static str, url: String },
    #[error("--refresh-interval must not be 0")]
    ZeroRefresh,
    #[error("--api: {0:?} is not an address like 127.0.0.1:9095 (empty disables the API)")]
    Api(String),
    #[error(transparent)]
    ApiArgs(#[from] ApiArgsError),
}

/// `--vhost-domain`: a host name (no wildcard), lowercased; empty means none.
fn parse_vhost_domain(text: &str) -> Result<String, String> {
    match crate::model::http::check_host(text) {
        Ok(domain) if !domain.starts_with("*.") => Ok(domain),
        Ok(_) => Err(format!("{text:?}: a domain, not a wildcard")),
        Err(e) => Err(e),
    }
}

/// An address flag that an empty value turns off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

/// Parses an optional address; `:PORT` (marathon-lb's spelling) is every IPv4 interface.
fn parse_optional_addr(text: &str) -> Result<OptionalAddr, String> {
    match text.trim() {
        "" => Ok(OptionalAddr(None)),
        addr if addr.starts_with(':') => format!("0.0.0.0{addr}")
            .parse::<SocketAddr>()
            .map(|a| OptionalAddr(Some(a)))
            .map_err(|_| {
                format!("{addr:?} is not an address like 0.0.0.0:9091 or :9091 (empty: off)")
            }),
        addr => addr
            .parse::<SocketAddr>()
            .map(|a| OptionalAddr(Some(a)))
            .map_err(|_| format!("{addr:?} is not an address like 0.0.0.0:9091 (empty: off)")),
    }
}

/// Every URL of `flag` must be http:// or https://; a URL in an error never shows its credentials.
fn http_urls(flag: &'static str, urls: &[String]) -> Result<(), CliError> {
    match urls
        .iter()
        .find(|u| !(u.trim().starts_with("http://") || u.trim().starts_with("https://")))
    {
        Some(url) => Err(CliError::SourceUrl {
            flag,
            url: without_userinfo(url),
        }),
        None => Ok(()),
    }
}

impl Cli {
    pub fn into_config(self) -> Result<Config, CliError> {
        let positive = |value: u32, flag| NonZeroU32::new(value).ok_or(CliError::Zero { flag });
        if self.refresh_interval.is_zero() {
            return Err(CliError::ZeroRefresh);
        }
        let registrator = self
            .registrator
            .as_deref()
            .map(RegistratorUrl::parse)
            .transpose()?;
        let marathon_urls: Vec<String> = self
            .marathon
            .into_iter()
            .filter(|m| !m.trim().is_empty())
            .collect();
        http_urls("marathon", &marathon_urls)?;
        let marathon = if marathon_urls.is_empty() {
            None
        } else {
            let credentials = self.security.marathon_credentials()?;
            Some(MarathonConfig::new(
                &marathon_urls,
                credentials,
                self.security.marathon_tls(),
            )?)
        };
        let etcd_urls: Vec<String> = self
            .etcd_v3
            .into_iter()
            .filter(|u| !u.trim().is_empty())
            .collect();
        http_urls("etcd-v3", &etcd_urls)?;
        let etcd_v3 = (!etcd_urls.is_empty()).then(|| EtcdV3Config {
            endpoints: etcd_urls,
            prefix: self.etcd_prefix,
            tls: self.security.etcd_tls(),
        });
        let consul = match self.consul.filter(|c| !c.trim().is_empty()) {
            Some(url) => {
                http_urls("consul", std::slice::from_ref(&url))?;
                Some(ConsulConfig {
                    url,
                    token: self.security.consul_token()?,
                    tls: self.security.consul_tls(),
                })
            }
            None => None,
        };
        Ok(Config {
            services: self.services,
            marathon,
            registrator,
            etcd_v3,
            etcd_tls: self.security.etcd_tls(),
            consul,
            discovery: DiscoveryOptions {
                listen_ip: self.listen_address,
                expose_host: self.expose_host,
                groups: self.groups,
                refresh_interval: self.refresh_interval,
                vhost_domain: self.vhost_domain.clone(),
                vhost_port: self.vhost_port,
            },
            coalescing: Coalescing::new(
                Duration::from_millis(self.coalesce_ms),
                self.initial_sync_timeout,
            ),
            socket: self.socket,
            group_size: positive(self.group_size, "group-size")?,
            default_max_connections: positive(self.max_connections, "max-connections")?,
            allow_uids: self.allow_uids,
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            file_poll_interval: DEFAULT_POLL_INTERVAL,
            api: match self.api.trim() {
                "" => None,
                text => Some(
                    text.parse::<SocketAddr>()
                        .map_err(|_| CliError::Api(text.to_string()))?,
                ),
            },
            api_token: match self.api_args.token_from_file()? {
                Some(token) => Some(ApiToken(token)),
                None => self.api_token.filter(|t| !t.is_empty()).map(ApiToken),
            },
            api_allowed_origins: self.api_args.allowed_origins()?,
            api_policy: self.api_args.policy()?,
            app_id_listen: self.app_id_listen.0,
            api_state_file: Some(self.api_state_file)
                .filter(|f| !f.trim().is_empty())
                .map(PathBuf::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ringway-controlplane").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let config = parse(&["--services", "s.toml"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(config.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(config.group_size.get(), 1);
        assert_eq!(config.default_max_connections.get(), 8192);
        assert_eq!(config.ping_interval, Duration::from_millis(5_000));
        assert!(config.allow_uids.is_empty());
    }

    #[test]
    fn zero_group_size_and_max_connections_are_refused() {
        for flag in ["--group-size", "--max-connections", "--ping-interval-ms"] {
            let err = parse(&[flag, "0"]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{flag}"
            );
        }
        assert!(parse(&["--group-size", "2"]).is_ok());
    }

    #[test]
    fn discovery_flags() {
        let config = parse(&[
            "--marathon",
            "http://m1:8080,http://m2:8080/",
            "--registrator",
            "etcd://127.0.0.1:2379/services",
            "--consul",
            "http://c:8500",
            "--group",
            "external,internal",
            "--expose-host",
            "--refresh-interval",
            "500ms",
            "--coalesce-ms",
            "0",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(
            config.marathon.as_ref().unwrap().replicas,
            vec!["http://m1:8080", "http://m2:8080"]
        );
        assert_eq!(config.registrator.as_ref().unwrap().path, "/services");
        assert_eq!(config.discovery.groups, vec!["external", "internal"]);
        assert!(config.discovery.expose_host);
        assert_eq!(
            config.discovery.refresh_interval,
            Duration::from_millis(500)
        );
        assert_eq!(config.coalescing.window, Duration::ZERO);
        assert!(config.has_source());

        let defaults = parse(&[]).unwrap().into_config().unwrap();
        assert!(!defaults.has_source());
        assert_eq!(defaults.discovery.groups, vec!["*"]);
        assert_eq!(defaults.discovery.refresh_interval, Duration::from_secs(60));
        assert_eq!(defaults.coalescing.window, Duration::from_millis(5));
        assert!(!defaults.discovery.expose_host);

        assert!(
            parse(&["--registrator", "http://x"])
                .unwrap()
                .into_config()
                .is_err()
        );
        assert!(
            parse(&["--refresh-interval", "0"])
                .unwrap()
                .into_config()
                .is_err()
        );
        assert!(parse(&["--refresh-interval", "5h"]).is_err());
    }

    #[test]
    fn durations_read_like_proxymatics_and_ours() {
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn the_api_is_on_loopback_by_default_and_can_be_disabled() {
        let config = parse(&[]).unwrap().into_config().unwrap();
        assert_eq!(config.api, Some("127.0.0.1:9095".parse().unwrap()));
        assert_eq!(config.api_token, None);
        assert_eq!(
            config.api_state_file,
            Some(PathBuf::from(DEFAULT_API_STATE_FILE))
        );
        let config = parse(&["--api", "", "--api-state-file", "", "--api-token", ""])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(
            (config.api, config.api_token, config.api_state_file),
            (None, None, None)
        );
        let config = parse(&["--api", "[::1]:0", "--api-token", "s3cret"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(config.api, Some("[::1]:0".parse().unwrap()));
        assert_eq!(config.api_token, Some(ApiToken("s3cret".into())));
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "the token is never printed"
        );
        let err = parse(&["--api", "localhost"])
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(err.to_string().starts_with("--api: \"localhost\""), "{err}");
    }

    #[test]
    fn the_api_is_safe_by_default_and_its_limits_can_be_set() {
        let config = parse(&[]).unwrap().into_config().unwrap();
        assert_eq!(config.api_policy.ports, 1024..=65535);
        assert_eq!(
            config.api_policy.reserved,
            [9090].into(),
            "the status endpoint's"
        );
        assert!(config.api_policy.allow_backends.is_empty());
        assert!(!config.api_policy.allow_merge);
        assert_eq!(config.api_policy.max_registrations, 1000);
        assert!(config.api_allowed_origins.is_empty());

        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "from-file\n").unwrap();
        let config = parse(&[
            "--api-token-file",
            token.to_str().unwrap(),
            "--api-allowed-origins",
            "https://Console.example:443,http://10.0.0.1:8080",
            "--api-port-range",
            "20000-30000",
            "--api-reserved-ports",
            "22000,23000",
            "--dataplane-status-endpoint",
            "127.0.0.1:9999",
            "--api-allow-backends",
            "127.0.0.0/8,169.254.169.254",
            "--api-allow-merge",
            "--api-max-registrations",
            "5",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(config.api_token, Some(ApiToken("from-file".into())));
        assert_eq!(
            config.api_allowed_origins,
            vec!["https://console.example", "http://10.0.0.1:8080"]
        );
        assert_eq!(config.api_policy.ports, 20000..=30000);
        assert_eq!(config.api_policy.reserved, [9999, 22000, 23000].into());
        assert_eq!(config.api_policy.allow_backends.len(), 2);
        assert!(config.api_policy.allow_merge);
        assert_eq!(config.api_policy.max_registrations, 5);

        assert!(
            parse(&["--api-token", "a", "--api-token-file", "f"]).is_err(),
            "one token source"
        );
        for (flag, value) in [
            ("--api-allowed-origins", "console.example"),
            ("--api-port-range", "9-1"),
            ("--api-allow-backends", "localhost"),
            ("--dataplane-status-endpoint", ":9090"),
            ("--api-token-file", "/nonexistent/token"),
        ] {
            let err = parse(&[flag, value]).unwrap().into_config().unwrap_err();
            assert!(
                err.to_string().contains(flag.trim_start_matches('-')),
                "{flag}: {err}"
            );
        }
    }

    #[test]
    fn secured_sources_take_credentials_tokens_and_tls_files_and_never_show_them() {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("marathon-auth");
        std::fs::write(&auth, "ops:file-secret\n").unwrap();
        let token = dir.path().join("consul-token");
        std::fs::write(&token, "token-secret\n").unwrap();
        let config = parse(&[
            "--marathon",
            "https://m1:8443,https://url:url-secret@m2:8443",
            "--marathon-auth-file",
            auth.to_str().unwrap(),
            "--marathon-ca",
            "/etc/ringway/marathon-ca.pem",
            "--consul",
            "https://consul:8501",
            "--consul-token-file",
            token.to_str().unwrap(),
            "--etcd-v3",
            "https://e1:2379,https://e2:2379",
            "--registrator",
            "etcd+https://e1:2379,e2:2379/services",
            "--etcd-ca",
            "/ca.pem",
            "--etcd-cert",
            "/client.pem",
            "--etcd-key",
            "/client-key.pem",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        let marathon = config.marathon.as_ref().unwrap();
        assert_eq!(
            marathon.replicas,
            vec!["https://m1:8443", "https://m2:8443"]
        );
        assert_eq!(marathon.credentials[0].as_ref().unwrap().user, "ops");
        assert_eq!(marathon.credentials[1].as_ref().unwrap().user, "url");
        assert_eq!(
            marathon.tls.ca.as_deref(),
            Some(std::path::Path::new("/etc/ringway/marathon-ca.pem"))
        );
        let consul = config.consul.as_ref().unwrap();
        assert_eq!(consul.token.as_ref().unwrap().expose(), "token-secret");
        let etcd = config.etcd_v3.as_ref().unwrap();
        assert_eq!(etcd.endpoints, vec!["https://e1:2379", "https://e2:2379"]);
        assert_eq!(
            etcd.tls.cert.as_deref(),
            Some(std::path::Path::new("/client.pem"))
        );
        assert_eq!(config.registrator.as_ref().unwrap().bases.len(), 2);
        let shown = format!("{config:?}");
        for secret in ["file-secret", "url-secret", "token-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }

        // Half a client identity, a non-HTTP URL, two sources of one secret: refused, secrets unshown.
        assert!(parse(&["--etcd-cert", "/c.pem"]).is_err());
        let err = parse(&["--marathon", "ftp://u:hidden@m1"])
            .unwrap()
            .into_config()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--marathon:") && !err.contains("hidden"),
            "{err}"
        );
        assert!(parse(&["--consul-token", "a", "--consul-token-file", "/f"]).is_err());
        let err = parse(&["--marathon", "http://m1", "--marathon-auth", "no-colon"])
            .unwrap()
            .into_config()
            .unwrap_err()
            .to_string();
        assert_eq!(err, "--marathon-auth must look like user:password");
    }

    #[test]
    fn http_routing_flags() {
        let config = parse(&[
            "--listen-address",
            "127.0.0.2",
            "--vhost-domain",
            "Example.COM.",
            "--vhost-port",
            "8080",
            "--app-id-listen",
            "0.0.0.0:9091",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(
            config.discovery.vhost_domain.as_deref(),
            Some("example.com")
        );
        let compile = config.compile_settings();
        assert_eq!(compile.vhost_listen, "127.0.0.2:8080".parse().unwrap());
        assert_eq!(compile.app_id_listen, Some("0.0.0.0:9091".parse().unwrap()));
        let defaults = parse(&[]).unwrap().into_config().unwrap();
        assert_eq!(defaults.compile_settings().vhost_listen.port(), 80);
        assert_eq!(
            defaults.app_id_listen, None,
            "app-id routing is off by default"
        );
        assert_eq!(defaults.api, Some("127.0.0.1:9095".parse().unwrap()));
        assert!(parse(&["--vhost-domain", "*.example.com"]).is_err());
        assert!(parse(&["--vhost-domain", "exa mple"]).is_err());
        assert!(parse(&["--vhost-port", "0"]).is_err());
        let marathon_lb = parse(&["--app-id-listen", ":9091"]).unwrap();
        assert_eq!(
            marathon_lb.app_id_listen.0,
            Some("0.0.0.0:9091".parse().unwrap())
        );
        assert!(parse(&["--app-id-listen", "9091"]).is_err());
    }

    #[test]
    fn allow_uid_repeats() {
        let cli = parse(&["--allow-uid", "5", "--allow-uid", "7"]).unwrap();
        assert_eq!(cli.allow_uids, vec![5, 7]);
        let cli = parse(&["--allow-uid", "5,7"]).unwrap();
        assert_eq!(cli.allow_uids, vec![5, 7]);
    }

    #[test]
    fn help_names_every_environment_variable() {
        let help = Cli::command().render_long_help().to_string();
        for var in [
            "RINGWAY_SERVICES",
            "RINGWAY_SOCKET",
            "GROUP_SIZE",
            "MAX_CONNECTIONS",
            "RINGWAY_ALLOW_UIDS",
            "RINGWAY_LOG_FORMAT",
            "RINGWAY_PING_INTERVAL_MS",
            "MARATHON_URL",
            "REGISTRATOR_URL",
            "RINGWAY_ETCD_V3_URL",
            "RINGWAY_ETCD_PREFIX",
            "CONSUL_URL",
            "RINGWAY_GROUPS",
            "EXPOSE_HOST",
            "RINGWAY_LISTEN_ADDRESS",
            "REFRESH_INTERVAL",
            "RINGWAY_COALESCE_MS",
            "RINGWAY_INITIAL_SYNC_TIMEOUT",
            "RINGWAY_API",
            "RINGWAY_API_TOKEN",
            "RINGWAY_API_STATE_FILE",
            "RINGWAY_API_TOKEN_FILE",
            "RINGWAY_API_ALLOWED_ORIGINS",
            "RINGWAY_API_PORT_RANGE",
            "RINGWAY_API_RESERVED_PORTS",
            "STATUS_ENDPOINT",
            "RINGWAY_API_ALLOW_BACKENDS",
            "RINGWAY_API_ALLOW_MERGE",
            "RINGWAY_API_MAX_REGISTRATIONS",
            "MARATHON_AUTH",
            "MARATHON_AUTH_FILE",
            "MARATHON_CA",
            "CONSUL_HTTP_TOKEN",
            "CONSUL_HTTP_TOKEN_FILE",
            "CONSUL_CACERT",
            "CONSUL_CLIENT_CERT",
            "CONSUL_CLIENT_KEY",
            "RINGWAY_ETCD_CA",
            "RINGWAY_ETCD_CERT",
            "RINGWAY_ETCD_KEY",
            "VHOST_DOMAIN",
            "VHOST_PORT",
            "RINGWAY_APP_ID_LISTEN",
        ] {
            assert!(
                help.contains(&format!("env: {var}")),
                "{var} missing from:\n{help}"
            );
        }
    }
}
