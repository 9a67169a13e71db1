//! Serving snapshots to the dataplanes over the Unix socket.
//!
//! - [`snapshot_server`]: the socket (mode 0660, stale-socket handling) and peer admission.
//! - [`peer_auth`]: which uids may connect (`SO_PEERCRED`).
//! - [`session`]: one dataplane's protocol, from `Hello` to close: snapshots out, ACK/NACK in, pings.
//! - [`registry`]: the connected dataplanes and what each ACKed or NACKed, for the API.

pub mod peer_auth;
pub mod registry;
pub mod session;
pub mod snapshot_server;
