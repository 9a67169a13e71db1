//! The command line. Every flag can also be set through an environment variable (shown in `--help`), which
//! is how containers and systemd units usually configure services; proxymatic's names (`GROUP_SIZE`,
//! `MAX_CONNECTIONS`) are kept so existing deployments carry over.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ringway_shared::model::DEFAULT_MAX_CONNECTIONS;

use crate::config::{Config, DEFAULT_SOCKET};
use crate::file_watch::DEFAULT_POLL_INTERVAL;
use crate::logging::LogFormat;

/// Default of `--ping-interval-ms`.
const DEFAULT_PING_INTERVAL_MS: u64 = 5_000;

/// Ringway controlplane: discovers services, compiles route snapshots and serves them to dataplanes.
#[derive(Debug, Clone, Parser)]
#[command(name = "ringway-controlplane", version, about)]
pub struct Cli {
    /// Static services file (TOML), re-read when it changes and on SIGHUP. Required until other sources exist.
    #[arg(long, env = "RINGWAY_SERVICES", value_name = "FILE")]
    pub services: Option<PathBuf>,

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

    /// `--spawn-dataplane` and its settings (see [`crate::supervisor`]).
    #[command(flatten)]
    pub supervisor: crate::supervisor::SupervisorArgs,
}

/// A parsed command line that still cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("--{flag} must be at least 1")]
    Zero { flag: &'static str },
}

impl Cli {
    pub fn into_config(self) -> Result<Config, CliError> {
        let positive = |value: u32, flag| NonZeroU32::new(value).ok_or(CliError::Zero { flag });
        Ok(Config {
            services: self.services,
            socket: self.socket,
            group_size: positive(self.group_size, "group-size")?,
            default_max_connections: positive(self.max_connections, "max-connections")?,
            allow_uids: self.allow_uids,
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            file_poll_interval: DEFAULT_POLL_INTERVAL,
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
        ] {
            assert!(
                help.contains(&format!("env: {var}")),
                "{var} missing from:\n{help}"
            );
        }
    }
}
