//! What the controlplane runs with, independent of how it was given (flags, environment, or a test).

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use ringway_shared::model::DEFAULT_MAX_CONNECTIONS;

use crate::compiler::CompileSettings;
use crate::file_watch::DEFAULT_POLL_INTERVAL;
use crate::snapshot_server::ServerOptions;

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
    /// The static services file; today the only source, so [`run`](crate::run) refuses to start without it.
    pub services: Option<PathBuf>,
    pub socket: PathBuf,
    pub group_size: NonZeroU32,
    /// Per-service connection total when a source sets none.
    pub default_max_connections: NonZeroU32,
    /// Peer uids allowed on the socket besides our own.
    pub allow_uids: Vec<u32>,
    pub ping_interval: Duration,
    /// Period of the services file's fallback poll (not a flag: inotify does the real work).
    pub file_poll_interval: Duration,
}

impl Config {
    /// Defaults for everything but the services file.
    pub fn new(services: Option<PathBuf>) -> Self {
        Self {
            services,
            socket: PathBuf::from(DEFAULT_SOCKET),
            group_size: NonZeroU32::MIN,
            default_max_connections: DEFAULT_MAX_CONNECTIONS_NZ,
            allow_uids: Vec::new(),
            ping_interval: DEFAULT_PING_INTERVAL,
            file_poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }

    pub fn compile_settings(&self) -> CompileSettings {
        CompileSettings {
            group_size: self.group_size,
            default_max_connections: self.default_max_connections,
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
