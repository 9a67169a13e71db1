//! Development helpers for Ringway: programs that demos, examples and benchmarks run around the real
//! binaries, kept out of them so they never ship in a release.
//!
//! - [`http`]: just enough HTTP/1.1 request parsing to answer every request correctly on a kept-alive,
//!   pipelined connection, without any I/O, so its edge cases are unit-tested directly.
//! - [`demo_backend`]: `ringway-demo-backend`, a thread-per-connection HTTP server that says who it is, used by
//!   `tools/demo` to show requests alternating between backends.

pub mod demo_backend;
pub mod http;
