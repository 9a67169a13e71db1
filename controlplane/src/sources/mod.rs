//! The discovery sources.

pub mod consul;
pub mod discovery;
pub mod etcd_v3;
pub mod file;
pub mod handle;
pub mod labels;
pub mod marathon;
pub mod registrator;

pub use handle::{SourceHandle, SourceRegistry, SourceState, SourceStatus, SourceView};
