//! How the controlplane is started: what the operator said, turned into what each stage needs.
//!
//! - [`cli`]: flags and environment variables (proxymatic's names included) → [`config::Config`];
//!   [`api_args`]: the API's safety flags.
//! - [`source_args`]: credentials and TLS files of the discovery sources (secured clusters).
//! - [`supervisor_args`]: the `--spawn-dataplane` flags and the dataplane command they describe.
//! - [`logging`]: text or JSON logs. [`readiness`]: "serving", for systemd (`sd_notify`) and the
//!   [supervisor](crate::supervisor).

pub mod api_args;
pub mod cli;
pub mod config;
pub mod logging;
pub mod readiness;
pub mod source_args;
pub mod supervisor_args;
