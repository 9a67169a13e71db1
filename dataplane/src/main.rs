use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = ringway_dataplane::cli::Config::parse();
    ringway_dataplane::init_logging(config.log_format);
    match ringway_dataplane::run(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ringway-dataplane: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
