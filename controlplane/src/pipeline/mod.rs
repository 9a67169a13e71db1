//! The pipeline.

pub mod compiler;
pub mod intake;
pub mod merge;
pub mod overrides;
pub mod publisher;
pub mod versions;
