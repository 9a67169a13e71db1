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
mod tests;
