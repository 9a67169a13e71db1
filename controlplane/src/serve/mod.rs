//! Serving snapshots.

pub mod peer_auth;
pub mod registry;
pub mod session;
pub mod snapshot_server;
