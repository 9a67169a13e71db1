//! The dataplane's HTTP engine, compiled on its own for fuzzing (see Cargo.toml).

#[path = "../../src/http/mod.rs"]
pub mod http;
