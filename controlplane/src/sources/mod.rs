//! Where services run: every source turns what it watches into a full [`Catalog`](crate::model::Catalog)
//! and reports it, or its failure, through a [`SourceHandle`]. Sources know the model and the intake's
//! channel, nothing else of the controlplane.
//!
//! - [`handle`]: the framework: [`SourceHandle`], and the [`SourceRegistry`] of every source's state
//!   (starting, ok, stale, failing) that the API shows.
//! - [`discovery`]: what the discovery sources share: options, HTTP client, backoff, host resolution, how a
//!   discovered port becomes a service. [`labels`]: the label and tag settings users already write.
//! - One module per source: [`file`](mod@file) (the services file, watched), [`marathon`] (`/v2/apps` + SSE
//!   `/v2/events`), [`registrator`] (registrator's etcd v2 tree), [`etcd_v3`] (an etcd v3 prefix through the
//!   JSON gateway), [`consul`] (catalog + health with blocking queries). The API's source is in
//!   [`crate::api`].

pub mod consul;
pub mod discovery;
pub mod etcd_v3;
pub mod file;
pub mod handle;
pub mod labels;
pub mod marathon;
pub mod registrator;

pub use handle::{SourceHandle, SourceRegistry, SourceState, SourceStatus, SourceView};
