//! The model: what should be load balanced, as plain data that every stage shares. No I/O, no tokio, and no
//! import of any other part of the controlplane (the layering test holds it to that).
//!
//! - [`catalog`]: [`Catalog`], [`Service`], [`Instance`]: what one source says, validated by that source.
//! - [`SourceId`]: the name of a source.
//! - [`http`]: what an HTTP service asks for ([`RouteMatch`]) and the checks of hosts, paths and regexes.
//! - [`merge`]: how services that share a listen address or a name become one catalog, deterministically.
//! - [`notes`]: what every stage uses to log a problem or a merge once per change, not on every read.

pub mod catalog;
pub mod http;
pub mod merge;
pub mod notes;
mod source_id;

pub use catalog::{Catalog, Instance, Service, ServiceMode, ServiceTimeouts};
pub use http::{HttpListenerSettings, PathMatch, RouteMatch};
pub use source_id::SourceId;
