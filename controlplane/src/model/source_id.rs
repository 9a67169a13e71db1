//! The name of a source.

use std::fmt;

use serde::Serialize;

/// Names a source (`file:/etc/ringway/services.toml`, `marathon`, `registrator`, `etcd-v3`, `consul`).
///
/// The kind before the first `:` also gives the source's rank when two sources describe the same service
/// port: see [`SourceId::rank`] (merge policy, so it lives in [`crate::pipeline::merge`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SourceId(pub String);

impl SourceId {
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The kind: the part before the first `:`.
    pub fn kind(&self) -> &str {
        self.0.split(':').next().unwrap_or_default()
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
