//! The two things the controlplane and the dataplane must agree on, and nothing else:
//!
//! - [`model`]: the route snapshot (listeners, HTTP routes, clusters, backends), its version and content hash, and the
//!   invariants every snapshot must satisfy ([`Snapshot::validate`]).
//! - [`wire`]: the messages exchanged over the controlplane's Unix socket and their framing
//!   (4-byte big-endian length, then a bincode payload).
//!
//! The serialization library is confined to the private `codec` module so it can be swapped.

mod codec;
pub mod model;
pub mod wire;

pub use model::{
    Backend, BackendState, Balance, Cluster, ClusterHttp, HeaderMatch, HttpListener, Listener,
    ModelError, PathMatch, Protocol, Route, Snapshot, Timeouts,
};
pub use wire::{FrameDecoder, Hello, ListenerFailure, Message, Role, WireError};
