//! Command line and environment of `ringway-dataplane`. Every flag can also be set by the environment
//! variable shown in `--help`, so a systemd environment file or a container can configure it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::worker::forward::ForwardMode;

/// Ringway's dataplane: one pinned io_uring worker per core forwarding TCP with splice, configured by
/// route snapshots from ringway-controlplane over a Unix socket.
#[derive(Debug, Clone, Parser)]
#[command(name = "ringway-dataplane", version, about)]
pub struct Config {
    /// Controlplane socket to subscribe to.
    #[arg(
        long,
        env = "RINGWAY_SOCKET",
        value_name = "PATH",
        default_value = "/run/ringway/control.sock"
    )]
    pub socket: PathBuf,

    /// Worker threads; 0 means one per core. Each is pinned to a core and has its own ring and listeners.
    #[arg(long, env = "RINGWAY_WORKERS", value_name = "N", default_value_t = 0)]
    pub workers: usize,

    /// Where the last applied snapshot is kept, so a restart serves at once even while the controlplane
    /// is unreachable. An empty value disables it.
    #[arg(
        long,
        env = "RINGWAY_STATE_FILE",
        value_name = "PATH",
        default_value = "/var/lib/ringway/dataplane.snapshot"
    )]
    pub state_file: String,

    /// How bytes move: io_uring readiness + inline splice(2) (poll-splice), IORING_OP_SPLICE on io-wq
    /// threads (uring-splice), or recv/send through buffers (copy).
    #[arg(
        long,
        env = "RINGWAY_FORWARD",
        value_name = "MODE",
        value_enum,
        default_value = "poll-splice"
    )]
    pub forward: ForwardMode,

    /// On SIGTERM/SIGINT, how long established connections may take to finish before they are reset.
    #[arg(long, env = "RINGWAY_DRAIN_TIMEOUT",
        value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// After SIGTERM/SIGINT, how long listeners keep accepting while `/status` already says DRAINING,
    /// so an upstream balancer notices and moves away before connections are refused.
    #[arg(long, env = "RINGWAY_DRAIN_GRACE", value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub drain_grace: Duration,

    /// Address of the admin endpoint (/status, /stats, /metrics, /config, /); an empty value disables it.
    #[arg(
        long,
        env = "STATUS_ENDPOINT",
        value_name = "ADDR",
        default_value = "0.0.0.0:9090"
    )]
    pub status_endpoint: String,

    /// At start, take the listening sockets and the routes from the dataplane already running on this host,
    /// which then stops accepting and drains: a binary upgrade that refuses no connection.
    #[arg(long, env = "RINGWAY_TAKEOVER")]
    pub takeover: bool,

    /// Where a running dataplane offers its sockets to a successor (default: takeover.sock in the
    /// directory of --socket).
    #[arg(long, env = "RINGWAY_TAKEOVER_SOCKET", value_name = "PATH")]
    pub takeover_socket: Option<PathBuf>,

    /// Start the dataplane (same flags) in the background and exit once it serves: for systemd's
    /// ExecReload= together with --takeover.
    #[arg(long, env = "RINGWAY_DETACH")]
    pub detach: bool,

    /// Log one line per TCP connection when it ends (client, backend, bytes, duration, outcome) and one
    /// per HTTP request (client, service, backend, method, host, path, status, bytes, duration).
    #[arg(long, env = "RINGWAY_ACCESS_LOG")]
    pub access_log: bool,

    /// Submission queue entries per worker ring (the completion queue is 4 times larger). Ring memory
    /// counts against RLIMIT_MEMLOCK.
    #[arg(long, env = "RINGWAY_RING_ENTRIES",
        value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=32768))]
    pub ring_entries: u32,

    /// Receive buffers per worker ring (16 KiB each, a power of two): what one turn of the loop can
    /// receive on the buffered path (HTTP). Idle connections hold none.
    #[arg(long, env = "RINGWAY_RECV_BUFFERS",
        value_name = "N", default_value_t = crate::worker::ring::provided::DEFAULT_BUFFERS,
        value_parser = parse_recv_buffers)]
    pub recv_buffers: u16,

    /// `uring-splice` only: io-wq threads allowed per worker (bounded and unbounded each), pinned to
    /// the worker's core.
    #[arg(long, env = "RINGWAY_IOWQ_MAX_WORKERS",
        value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub iowq_max_workers: u32,

    /// Size requested for each splice pipe, in bytes (capped by fs.pipe-max-size).
    #[arg(long, env = "RINGWAY_PIPE_SIZE",
        value_name = "BYTES", default_value_t = 256 * 1024)]
    pub pipe_size: usize,

    /// Size of each copy-mode buffer, in bytes.
    #[arg(long, env = "RINGWAY_BUFFER_SIZE",
        value_name = "BYTES", default_value_t = 64 * 1024)]
    pub buffer_size: usize,

    /// Connections the whole dataplane holds at most (each also has a backend socket). At the cap, new
    /// clients wait in the kernel's accept queue until a connection ends. 0 derives it from RLIMIT_NOFILE:
    /// (limit − reserve) × 2/5, leaving descriptors for pipes; the reserve is max(128, limit/64).
    #[arg(
        long,
        env = "RINGWAY_MAX_CONNECTIONS_TOTAL",
        value_name = "N",
        default_value_t = 0
    )]
    pub max_connections_total: u32,

    /// Connections that may wait for a free backend slot, per worker; beyond it new connections are closed.
    #[arg(
        long,
        env = "RINGWAY_QUEUE_SIZE",
        value_name = "N",
        default_value_t = 1024
    )]
    pub queue_size: usize,

    /// Do not pin workers to cores.
    #[arg(long, env = "RINGWAY_NO_PIN")]
    pub no_pin: bool,

    /// Name this dataplane gives the controlplane (default: host name and process id).
    #[arg(long, env = "RINGWAY_NAME", value_name = "NAME")]
    pub name: Option<String>,

    /// Log format.
    #[arg(
        long,
        env = "RINGWAY_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

impl Config {
    /// The takeover socket: `--takeover-socket`, or `takeover.sock` beside the controlplane socket.
    pub fn takeover_path(&self) -> PathBuf {
        self.takeover_socket.clone().unwrap_or_else(|| {
            self.socket
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("takeover.sock")
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A receive-buffer count: a power of two from 16 to 32768.
fn parse_recv_buffers(text: &str) -> Result<u16, String> {
    let n: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(16..=32_768).contains(&n) || !n.is_power_of_two() {
        return Err(format!("{n}: must be a power of two from 16 to 32768"));
    }
    Ok(n as u16)
}

/// Parses `250ms`, `30s`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (examples: 250ms, 30s, 2m)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn every_flag_names_its_environment_variable() {
        use clap::CommandFactory;
        let help = Config::command().render_long_help().to_string();
        for var in [
            "RINGWAY_SOCKET",
            "RINGWAY_WORKERS",
            "RINGWAY_STATE_FILE",
            "RINGWAY_FORWARD",
            "RINGWAY_DRAIN_TIMEOUT",
            "RINGWAY_RING_ENTRIES",
            "RINGWAY_PIPE_SIZE",
            "RINGWAY_QUEUE_SIZE",
            "RINGWAY_MAX_CONNECTIONS_TOTAL",
        ] {
            assert!(help.contains(var), "--help does not mention {var}");
        }
    }
}
