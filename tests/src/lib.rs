//! Support for Ringway's end-to-end tests: the real binaries as child processes, real TCP backends on
//! loopback, a scripted controlplane for what the real one never sends (invalid snapshots), a real etcd,
//! doubles of the discovery sources that cannot run here (Marathon, Consul), real WebSocket peers
//! (python3-websockets), and a private Docker engine for the container image.
//!
//! Every wait is bounded; every process is killed when its handle drops, so a failing test leaves
//! nothing running.

pub mod api;
pub mod backends;
pub mod discovery;
pub mod docker;
pub mod doubles;
pub mod etcd;
pub mod fake_controlplane;
pub mod harness;
pub mod help;
pub mod http;
pub mod http_backend;
pub mod http_client;
pub mod http_proxy;
pub mod http_wire;
pub mod load;
pub mod net;
pub mod nginx;
pub mod observe;
pub mod procs;
pub mod services;
pub mod supervised;
pub mod tls;
pub mod traffic;
pub mod websocket;

pub use backends::{EchoBackend, NamedBackend, ScriptedBackend, read_name};
pub use etcd::Etcd;
pub use harness::Harness;
pub use net::{free_port, wait_until};
pub use procs::{Controlplane, Dataplane};
pub use services::{Service, ServicesFile};
