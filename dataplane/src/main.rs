#![deny(unsafe_code)]

use clap::Parser;

use ringway_dataplane::cli::{Config, LogFormat};

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let json_logs = config.log_format == LogFormat::Json;
    ringway_dataplane::init_logging(config.log_format);
    match ringway_dataplane::run(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            if json_logs {
                // The log line is JSON; say it in plain words too for whoever started it by hand.
                eprintln!("ringway-dataplane: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
