//! Where services run: every source turns what it watches into a full [`Catalog`](crate::model::Catalog)
//! and reports it, or its failure, through a [`SourceHandle`]. Sources know the model and the intake's
//! channel, nothing else of the controlplane.
//!
//! - [`handle`]: the framework: [`SourceHandle`], and the [`SourceRegistry`] of every source's state
//!   (starting, ok, stale, failing) that the API shows.
//! - [`discovery`]: what the discovery sources share: options, backoff, how a discovered port becomes a
//!   service. [`checks`]: the checks every entry goes through, and the notes (bad entries, bad labels,
//!   merges) logged once per change. [`labels`]: the label and tag settings users already write.
//! - [`client`]: the HTTP client (rustls, CA files, client certificates); [`secret`]: credentials and
//!   tokens that never show; [`endpoints`]: several URLs of one cluster, with failover; [`resolve`]: host
//!   names, resolved concurrently, cached, last known kept.
//! - One module per source: [`file`](mod@file) (the services file, watched), [`marathon`] (`/v2/apps` + SSE
//!   `/v2/events`), [`registrator`] (registrator's etcd v2 tree), [`etcd_v3`] (an etcd v3 prefix through the
//!   JSON gateway), [`consul`] (catalog + health with blocking queries). The API's source is in
//!   [`crate::api`].

pub mod checks;
pub mod client;
pub mod consul;
pub mod discovery;
pub mod endpoints;
pub mod etcd_v3;
pub mod file;
pub mod handle;
pub mod labels;
pub mod marathon;
pub mod registrator;
pub mod resolve;
pub mod secret;

pub use handle::{SourceHandle, SourceRegistry, SourceState, SourceStatus, SourceView};
