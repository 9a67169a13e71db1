//! `ringway-controlplane`: parse the command line, set up logging and a small runtime, run the library.

use std::process::ExitCode;

use clap::Parser;
use ringway_controlplane::startup::cli::Cli;
use ringway_controlplane::startup::logging;

/// The controlplane waits on sockets and timers; two workers keep a slow compile from delaying pings.
const RUNTIME_WORKERS: usize = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = logging::init(cli.log_format) {
        eprintln!("ringway-controlplane: {e}");
        return ExitCode::FAILURE;
    }
    let supervisor = cli.supervisor.clone();
    let log_format = cli.log_format;
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_WORKERS)
        .thread_name("ringway-cp")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&e),
    };
    if supervisor.spawn_dataplane {
        // On this (main) thread, not spawned: the dataplane child's parent-death signal follows the
        // thread that started it.
        let supervise = ringway_controlplane::supervisor::run(config, supervisor, log_format);
        return runtime.block_on(supervise).into();
    }
    match runtime.block_on(ringway_controlplane::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!("{error}");
    ExitCode::FAILURE
}
