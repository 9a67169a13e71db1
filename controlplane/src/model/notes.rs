//! Notes that are logged once per change, not once per read.
//!
//! Sources re-read their whole view on every event and every refresh, and the pipeline recompiles on every
//! change; a problem that stays (a bad label, a bad entry, two apps sharing a port, a service the compiler
//! had to drop) would otherwise be logged again each time, drowning the news. Each stage keeps a
//! [`OncePerChange`] of what it reported last round and logs only what is new: a note that goes away and
//! comes back is logged again.

use std::collections::BTreeSet;

/// What was reported last round.
#[derive(Debug, Clone)]
pub struct OncePerChange<T: Ord> {
    last: BTreeSet<T>,
}

impl<T: Ord> Default for OncePerChange<T> {
    fn default() -> Self {
        Self {
            last: BTreeSet::new(),
        }
    }
}

impl<T: Ord + Clone> OncePerChange<T> {
    /// Takes this round's notes and returns those the last round did not have (the ones to log now), in
    /// order; this round becomes the last.
    pub fn news(&mut self, current: impl IntoIterator<Item = T>) -> Vec<T> {
        let current: BTreeSet<T> = current.into_iter().collect();
        let fresh = current.difference(&self.last).cloned().collect();
        self.last = current;
        fresh
    }

    /// The notes of the last round, in order.
    pub fn last(&self) -> impl Iterator<Item = &T> {
        self.last.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_news_once_and_again_after_it_went_away() {
        let mut notes = OncePerChange::default();
        assert_eq!(notes.news(["a", "b"]), vec!["a", "b"]);
        assert!(notes.news(["b", "a"]).is_empty(), "same notes: nothing new");
        assert_eq!(notes.news(["a", "c"]), vec!["c"]);
        assert!(notes.news([]).is_empty());
        assert_eq!(notes.news(["a"]), vec!["a"], "back after it went away");
    }
}
