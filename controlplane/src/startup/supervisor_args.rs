//! The supervisor's flags (flattened into the controlplane's command line) and the dataplane command they
//! describe.
//!
//! The dataplane is configured the way it always is: by its own flags and environment variables. The
//! child inherits the supervisor's environment, so a container sets `RINGWAY_WORKERS=4` once; flags can
//! be added with `RINGWAY_DATAPLANE_ARGS` or after `--`. Two variables are set for the child because
//! they must agree with the controlplane: `RINGWAY_SOCKET` (the socket this controlplane serves) and
//! `RINGWAY_LOG_FORMAT` (one log format on the container's output). Being variables, an explicit
//! dataplane flag still overrides them.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum as _;
use clap::builder::BoolishValueParser;

use crate::startup::logging::LogFormat;

/// Name of the dataplane binary, looked up next to the controlplane's own binary by default.
pub const DATAPLANE_BIN: &str = "ringway-dataplane";

/// Flags of `ringway-controlplane --spawn-dataplane`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Supervisor (--spawn-dataplane)")]
pub struct SupervisorArgs {
    /// Also run a ringway-dataplane as a child on the same socket and supervise it: a crashed dataplane
    /// is restarted, SIGTERM/SIGINT drains the dataplane and then stops the controlplane. The container
    /// entrypoint; under systemd use the two units instead.
    #[arg(long, env = "RINGWAY_SPAWN_DATAPLANE", value_parser = BoolishValueParser::new(),
          action = clap::ArgAction::SetTrue)]
    pub spawn_dataplane: bool,

    /// The dataplane binary [default: ringway-dataplane next to this binary].
    #[arg(long, env = "RINGWAY_DATAPLANE_BIN", value_name = "PATH")]
    pub dataplane_bin: Option<PathBuf>,

    /// Extra dataplane flags, separated by spaces (no quoting; set values with spaces through the
    /// dataplane's own environment variables, which it inherits). Arguments after `--` come after these.
    #[arg(
        long,
        env = "RINGWAY_DATAPLANE_ARGS",
        value_name = "ARGS",
        allow_hyphen_values = true
    )]
    pub dataplane_args: Option<String>,

    /// A dataplane that exits sooner than this after it was started counts as crashing at start-up.
    #[arg(long, env = "RINGWAY_DATAPLANE_MIN_UPTIME", value_name = "DURATION",
          default_value = "10s", value_parser = parse_duration)]
    pub dataplane_min_uptime: Duration,

    /// Start-up crashes in a row after which the supervisor gives up and exits with status 4.
    #[arg(long, env = "RINGWAY_DATAPLANE_MAX_START_FAILURES", value_name = "N",
          default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub dataplane_max_start_failures: u32,

    /// After SIGTERM/SIGINT, how long the dataplane may take to drain and exit before it is killed
    /// (exit status 5). Keep it above the dataplane's --drain-grace plus --drain-timeout.
    #[arg(long, env = "RINGWAY_DATAPLANE_STOP_TIMEOUT", value_name = "DURATION",
          default_value = "45s", value_parser = parse_duration)]
    pub dataplane_stop_timeout: Duration,

    /// Dataplane arguments, after `--` (with --spawn-dataplane).
    #[arg(
        last = true,
        value_name = "DATAPLANE_ARGS",
        requires = "spawn_dataplane"
    )]
    pub trailing_args: Vec<String>,
}

/// Why the dataplane cannot be started at all.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(
        "cannot find the dataplane binary {path:?} ({reason}); install ringway-dataplane next to \
         ringway-controlplane or pass --dataplane-bin (RINGWAY_DATAPLANE_BIN)"
    )]
    NotFound { path: PathBuf, reason: String },
    #[error("cannot tell where this binary is, to find ringway-dataplane next to it: {0}")]
    OwnPath(std::io::Error),
}

/// What the supervisor runs: a program, its arguments and the variables set for it on top of the
/// inherited environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(&'static str, OsString)>,
}

impl SupervisorArgs {
    /// The dataplane command for a controlplane serving `socket` and logging in `log_format`. Checks the
    /// binary now, so a wrong path is one clear start-up error rather than a run of failed restarts.
    pub fn dataplane_command(
        &self,
        socket: &Path,
        log_format: LogFormat,
    ) -> Result<DataplaneCommand, CommandError> {
        let program = match &self.dataplane_bin {
            Some(path) => resolve_program(path)?,
            None => {
                let own = std::env::current_exe().map_err(CommandError::OwnPath)?;
                let path = own.with_file_name(DATAPLANE_BIN);
                check_executable(&path)?;
                path
            }
        };
        let args = self
            .dataplane_args
            .iter()
            .flat_map(|line| line.split_whitespace().map(str::to_string))
            .chain(self.trailing_args.iter().cloned())
            .collect();
        let format = log_format
            .to_possible_value()
            .map(|value| value.get_name().to_string())
            .unwrap_or_else(|| "text".into());
        Ok(DataplaneCommand {
            program,
            args,
            env: vec![
                ("RINGWAY_SOCKET", socket.as_os_str().to_owned()),
                ("RINGWAY_LOG_FORMAT", format.into()),
            ],
        })
    }
}

/// A path with a `/` is used as it is; a bare name is looked up in `PATH`, as a shell would.
fn resolve_program(program: &Path) -> Result<PathBuf, CommandError> {
    if program.components().count() > 1 || program.is_absolute() {
        check_executable(program)?;
        return Ok(program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| check_executable(candidate).is_ok())
        .ok_or_else(|| CommandError::NotFound {
            path: program.to_path_buf(),
            reason: "not found in PATH".into(),
        })
}

fn check_executable(path: &Path) -> Result<(), CommandError> {
    let not_found = |reason: String| CommandError::NotFound {
        path: path.to_path_buf(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(|e| not_found(e.to_string()))?;
    if !metadata.is_file() {
        return Err(not_found("not a file".into()));
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        return Err(not_found("not executable".into()));
    }
    Ok(())
}

/// Parses `250ms`, `30s`, `2m` or a bare number of seconds (proxymatic's `REFRESH_INTERVAL=60`): the
/// dataplane's duration syntax, so the two binaries' variables in one environment file read alike. Every
/// duration flag of the controlplane uses it.
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
        "m" => Ok(Duration::from_secs(value.saturating_mul(60))),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::startup::cli::Cli;
    use clap::Parser as _;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ringway-controlplane").chain(args.iter().copied()))
    }

    #[test]
    fn off_by_default_with_documented_defaults() {
        let args = parse(&[]).unwrap().supervisor;
        assert!(!args.spawn_dataplane);
        assert_eq!(args.dataplane_min_uptime, Duration::from_secs(10));
        assert_eq!(args.dataplane_max_start_failures, 5);
        assert_eq!(args.dataplane_stop_timeout, Duration::from_secs(45));
        assert!(args.trailing_args.is_empty());
    }

    #[test]
    fn dataplane_arguments_from_the_flag_and_after_the_separator() {
        let args = parse(&[
            "--spawn-dataplane",
            "--dataplane-args",
            "--workers 2  --no-pin",
            "--",
            "--drain-grace",
            "0s",
        ])
        .unwrap()
        .supervisor;
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("dp");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let args = SupervisorArgs {
            dataplane_bin: Some(program.clone()),
            ..args
        };
        let command = args
            .dataplane_command(Path::new("/run/x/control.sock"), LogFormat::Json)
            .unwrap();
        assert_eq!(command.program, program);
        assert_eq!(
            command.args,
            ["--workers", "2", "--no-pin", "--drain-grace", "0s"]
        );
        assert_eq!(
            command.env,
            vec![
                ("RINGWAY_SOCKET", OsString::from("/run/x/control.sock")),
                ("RINGWAY_LOG_FORMAT", OsString::from("json")),
            ]
        );
    }

    #[test]
    fn trailing_arguments_need_spawn_dataplane() {
        let err = parse(&["--", "--workers", "2"]).unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::MissingRequiredArgument,
            "{err}"
        );
    }

    #[test]
    fn a_missing_or_non_executable_binary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "not a program").unwrap();
        for (path, reason) in [
            (dir.path().join("missing"), "No such file"),
            (plain, "not executable"),
            (dir.path().to_path_buf(), "not a file"),
        ] {
            let args = SupervisorArgs {
                dataplane_bin: Some(path.clone()),
                ..parse(&["--spawn-dataplane"]).unwrap().supervisor
            };
            let err = args
                .dataplane_command(Path::new("/s"), LogFormat::Text)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(reason) && err.contains("--dataplane-bin"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_bare_name_is_looked_up_in_path() {
        let args = SupervisorArgs {
            dataplane_bin: Some(PathBuf::from("sh")),
            ..parse(&["--spawn-dataplane"]).unwrap().supervisor
        };
        let command = args
            .dataplane_command(Path::new("/s"), LogFormat::Text)
            .unwrap();
        assert!(command.program.is_absolute(), "{command:?}");
        assert!(command.program.ends_with("sh"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1h").is_err());
    }
}
