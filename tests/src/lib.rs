//! Support for Ringway's end-to-end tests: the real binaries as child processes, real TCP backends on
//! loopback, and a scripted controlplane for what the real one never sends (invalid snapshots).
//!
//! Every wait is bounded; every process is killed when its handle drops, so a failing test leaves
//! nothing running.

pub mod backends;
pub mod fake_controlplane;
pub mod harness;
pub mod help;
pub mod http;
pub mod net;
pub mod procs;
pub mod services;
pub mod supervised;
pub mod traffic;

pub use backends::{EchoBackend, NamedBackend, read_name};
pub use harness::Harness;
pub use net::{free_port, wait_until};
pub use procs::{Controlplane, Dataplane};
pub use services::{Service, ServicesFile};
