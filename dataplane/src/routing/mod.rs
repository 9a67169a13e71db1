//! Routing state shared between the subscriber and the workers.
//!
//! - [`table`]: the immutable per-version [`RoutingTable`] and the [`TableBuilder`] that makes it.
//! - [`slots`]: cross-core connection counters ([`BackendSlot`], [`ClusterSlot`], [`Lease`]).
//! - [`listeners`]: per-worker `SO_REUSEPORT` sockets.
//! - [`publish`]: atomic publication to every worker and the wait for their acknowledgement.
//! - [`wake`]: the eventfds that wake workers.

pub mod http;
pub mod http_counts;
pub mod listeners;
pub mod publish;
pub mod slots;
pub mod table;
pub mod wake;

pub use listeners::{ListenerError, ListenerSockets};
pub use publish::{ApplyTimeout, Published, Serving};
pub use slots::{BackendSlot, ClusterSlot, Lease};
pub use table::{
    BuildError, ClusterRoute, ListenerKind, ListenerRoute, RetiredBackend, RouteBackend,
    RoutingTable, TableBuilder,
};
pub use wake::Wakers;
