//! What the controlplane runs with, independent of how it was given (flags, environment, or a test).

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use ringway_shared::model::DEFAULT_MAX_CONNECTIONS;

use crate::api::policy::RegistrationPolicy;
use crate::pipeline::compiler::CompileSettings;
use crate::pipeline::intake::Coalescing;
use crate::serve::snapshot_server::ServerOptions;
use crate::sources::client::TlsFiles;
use crate::sources::consul::ConsulConfig;
use crate::sources::discovery::DiscoveryOptions;
use crate::sources::etcd_v3::EtcdV3Config;
use crate::sources::file::DEFAULT_POLL_INTERVAL;
use crate::sources::marathon::MarathonConfig;
use crate::sources::registrator::RegistratorUrl;

/// Where dataplanes find the controlplane unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ringway/control.sock";
/// How often the controlplane pings each dataplane.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_millis(5_000);

/// The model's default service total, checked non-zero at compile time.
const DEFAULT_MAX_CONNECTIONS_NZ: NonZeroU32 = match NonZeroU32::new(DEFAULT_MAX_CONNECTIONS) {
    Some(n) => n,
    None => panic!("DEFAULT_MAX_CONNECTIONS must not be 0"),
};

/// Everything [`run`](crate::run) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The static services file.
    pub services: Option<PathBuf>,
    /// Marathon replicas (credentials apart) and TLS; `None`: no Marathon source.
    pub marathon: Option<MarathonConfig>,
    /// registrator's etcd v2 tree.
    pub registrator: Option<RegistratorUrl>,
    /// etcd v3 JSON gateway members and prefix.
    pub etcd_v3: Option<EtcdV3Config>,
    /// The etcd TLS flags, for registrator's `etcd+https://` (etcd v3 carries its own copy).
    pub etcd_tls: TlsFiles,
    /// Consul HTTP API, token, TLS.
    pub consul: Option<ConsulConfig>,
    /// What applies to every discovery source.
    pub discovery: DiscoveryOptions,
    /// How catalogs become snapshots.
    pub coalescing: Coalescing,
    pub socket: PathBuf,
    pub group_size: NonZeroU32,
    /// Per-service connection total when a source sets none.
    pub default_max_connections: NonZeroU32,
    /// Peer uids allowed on the socket besides our own.
    pub allow_uids: Vec<u32>,
    pub ping_interval: Duration,
    /// Period of the services file's fallback poll (not a flag: inotify does the real work).
    pub file_poll_interval: Duration,
    /// Where the HTTP API listens (`--api`); `None`: no API (and no `api` source).
    pub api: Option<SocketAddr>,
    /// The bearer token the API requires (`--api-token`).
    pub api_token: Option<ApiToken>,
    /// Where the API keeps what it registered and the overrides (`--api-state-file`); `None`: memory only.
    pub api_state_file: Option<PathBuf>,
    /// Browser origins allowed besides the API's own (`--api-allowed-origins`), normalized.
    pub api_allowed_origins: Vec<String>,
    /// What docker-flow-proxy registrations may ask for.
    pub api_policy: RegistrationPolicy,
    /// marathon-lb's app-id routing listener (`--app-id-listen`); `None`: off.
    pub app_id_listen: Option<SocketAddr>,
}

/// The API's bearer token; its `Debug` does not show it, so a logged configuration never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(pub String);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl Config {
    /// Defaults for everything, with the services file as the only source and no API (the command line's
    /// defaults turn the API on).
    pub fn new(services: Option<PathBuf>) -> Self {
        Self {
            services,
            marathon: None,
            registrator: None,
            etcd_v3: None,
            etcd_tls: TlsFiles::none("etcd"),
            consul: None,
            discovery: DiscoveryOptions::default(),
            coalescing: Coalescing::default(),
            socket: PathBuf::from(DEFAULT_SOCKET),
            group_size: NonZeroU32::MIN,
            default_max_connections: DEFAULT_MAX_CONNECTIONS_NZ,
            allow_uids: Vec::new(),
            ping_interval: DEFAULT_PING_INTERVAL,
            file_poll_interval: DEFAULT_POLL_INTERVAL,
            api: None,
            api_token: None,
            api_state_file: None,
            api_allowed_origins: Vec::new(),
            api_policy: RegistrationPolicy::default(),
            app_id_listen: None,
        }
    }

    /// Whether any source is configured.
    pub fn has_source(&self) -> bool {
        self.services.is_some()
            || self.marathon.is_some()
            || self.registrator.is_some()
            || self.etcd_v3.is_some()
            || self.consul.is_some()
    }

    /// Whether the services file is the only source.
    pub fn is_file_only(&self) -> bool {
        self.services.is_some()
            && self.marathon.is_none()
            && self.registrator.is_none()
            && self.etcd_v3.is_none()
            && self.consul.is_none()
    }

    pub fn compile_settings(&self) -> CompileSettings {
        CompileSettings {
            group_size: self.group_size,
            default_max_connections: self.default_max_connections,
            vhost_listen: self.discovery.vhost_listen(),
            app_id_listen: self.app_id_listen,
        }
    }

    pub fn server_options(&self) -> ServerOptions {
        ServerOptions {
            socket: self.socket.clone(),
            allow_uids: self.allow_uids.clone(),
            ping_interval: self.ping_interval,
        }
    }
}
