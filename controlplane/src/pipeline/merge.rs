//! Merging the sources: the latest catalog of every source becomes one catalog.
//!
//! How services that share a listen address or a name are combined is the model's rule
//! ([`crate::model::merge`]), the same one a source applies to its own apps. Which source gives the
//! settings of a combined service is this stage's policy: the source kinds' ranking, [`SOURCE_KINDS`].

use std::collections::BTreeMap;

use crate::model::merge::{Merged, Origin, merge};
use crate::model::{Catalog, SourceId};

/// Kinds in merge order: when services of several sources share a listen address, the settings (balance,
/// limits, timeouts) come from the earliest kind here. The static file is what an operator wrote by hand,
/// so it wins; Marathon over registrator is proxymatic's order. The API (docker-flow-proxy's calls, made by
/// automation such as its swarm listener) comes last.
pub const SOURCE_KINDS: [&str; 6] = [
    "file",
    "marathon",
    "consul",
    "etcd-v3",
    "registrator",
    "api",
];

impl SourceId {
    /// Position of the kind in [`SOURCE_KINDS`]; unknown kinds come last.
    pub fn rank(&self) -> usize {
        SOURCE_KINDS
            .iter()
            .position(|k| *k == self.kind())
            .unwrap_or(SOURCE_KINDS.len())
    }
}

/// Merges the latest catalog of every source (the publisher's inputs), settings from the best-ranked one.
pub fn merge_sources(latest: &BTreeMap<SourceId, Catalog>) -> Merged {
    merge(latest.iter().flat_map(|(id, catalog)| {
        let origin = Origin {
            rank: id.rank(),
            name: id.0.clone(),
        };
        catalog
            .services
            .iter()
            .map(move |s| (origin.clone(), s.clone()))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_the_kind() {
        assert_eq!(SourceId::new("file:/x:y").kind(), "file");
        assert!(SourceId::new("file:/x").rank() < SourceId::new("marathon").rank());
        assert!(SourceId::new("marathon").rank() < SourceId::new("registrator").rank());
        assert_eq!(SourceId::new("other").rank(), SOURCE_KINDS.len());
    }
}
