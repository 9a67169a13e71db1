//! `ringway-demo-backend`: parse flags, bind, announce, serve. The server is
//! [`ringway_devtools::demo_backend`].

use std::process::ExitCode;

use clap::Parser;
use ringway_devtools::demo_backend::{Cli, DemoBackend};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let server = match DemoBackend::bind(cli.listen, cli.name) {
        Ok(server) => server,
        Err(e) => {
            // Named so that a script starting several backends shows which port is the problem.
            eprintln!("ringway-demo-backend: cannot listen on {}: {e}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "ringway-demo-backend: {:?} serving HTTP on {}",
        server.name(),
        server.local_addr()
    );
    server.run()
}
