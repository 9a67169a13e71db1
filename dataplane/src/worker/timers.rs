//! Deadlines of one worker (idle and queue timeouts), checked lazily.
//!
//! Each connection has at most one entry. Activity does not touch the heap: it only moves the
//! connection's own `last_active`. When an entry comes due, the worker recomputes the connection's real
//! deadline and either times it out or pushes a new entry; so a busy connection costs one heap operation
//! per idle period, not one per byte.
//!
//! A connection that closes leaves its entry behind (a binary heap cannot remove from the middle); the
//! worker reports it with [`Timers::forget`], and once such stale entries outnumber the live ones the heap
//! is rebuilt without them. Without that, 15,000 connections a second under a 10-minute idle timeout would
//! keep 9 million dead entries (~150 MB) that never shrink.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A due entry: which connection slot and generation to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerEntry {
    pub due_ms: u64,
    pub index: u32,
    pub generation: u32,
}

/// Entries of closed connections tolerated before the heap is compacted (when they are also at least
/// half of it): compaction costs O(entries) and runs at most once per that many closes.
pub const COMPACT_AFTER: usize = 1024;

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<TimerEntry>>,
    /// Entries whose connection closed (reported by `forget`) and that are still in the heap.
    stale: usize,
}

impl Timers {
    pub fn schedule(&mut self, due_ms: u64, index: u32, generation: u32) {
        self.heap.push(Reverse(TimerEntry {
            due_ms,
            index,
            generation,
        }));
    }

    /// The earliest deadline, if any.
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(e)| e.due_ms)
    }

    /// Removes and returns one entry due at `now_ms` or before.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<TimerEntry> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.due_ms <= now_ms => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// A connection with an entry in the heap closed: its entry is now stale.
    pub fn forget(&mut self) {
        self.stale += 1;
    }

    /// A popped entry turned out stale (its connection closed); it no longer counts.
    pub fn discard_stale(&mut self) {
        self.stale = self.stale.saturating_sub(1);
    }

    /// Stale entries reported and not yet removed.
    pub fn stale(&self) -> usize {
        self.stale
    }

    /// Rebuilds the heap without stale entries once they are many: `live` says whether an entry still
    /// belongs to an open connection. Frees the heap's memory too when it shrank a lot.
    pub fn compact_if_worthwhile(&mut self, live: impl FnMut(&TimerEntry) -> bool) {
        if self.stale < COMPACT_AFTER || self.stale * 2 < self.heap.len() {
            return;
        }
        let mut live = live;
        self.heap.retain(|Reverse(entry)| live(entry));
        self.stale = 0;
        if self.heap.capacity() > 4 * self.heap.len().max(COMPACT_AFTER) {
            self.heap.shrink_to(2 * self.heap.len().max(COMPACT_AFTER));
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let mut t = Timers::default();
        t.schedule(30, 1, 0);
        t.schedule(10, 2, 0);
        t.schedule(20, 3, 0);
        assert_eq!(t.next_due(), Some(10));
        assert_eq!(t.pop_due(5), None);
        assert_eq!(t.pop_due(25).map(|e| e.index), Some(2));
        assert_eq!(t.pop_due(25).map(|e| e.index), Some(3));
        assert_eq!(t.pop_due(25), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn stale_entries_are_dropped_once_they_outnumber_live_ones() {
        let mut t = Timers::default();
        // Even indices stay open, odd ones close.
        for i in 0..4 * COMPACT_AFTER as u32 {
            t.schedule(600_000 + u64::from(i), i, 0);
            if !i.is_multiple_of(2) {
                t.forget();
            }
        }
        let open = |e: &TimerEntry| e.index.is_multiple_of(2);
        t.compact_if_worthwhile(open);
        assert_eq!(
            t.len(),
            2 * COMPACT_AFTER,
            "only open connections keep entries"
        );
        assert_eq!(t.stale(), 0);
        assert_eq!(t.next_due(), Some(600_000), "still a heap");
        // A few stale entries are not worth a rebuild.
        t.forget();
        t.compact_if_worthwhile(|_| panic!("no compaction for one stale entry"));
    }
}
