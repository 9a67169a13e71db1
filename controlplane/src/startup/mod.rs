//! Start-up.

pub mod cli;
pub mod config;
pub mod logging;
pub mod readiness;
pub mod supervisor_args;
