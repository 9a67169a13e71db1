//! Deadlines of one worker (idle and queue timeouts), checked lazily.
//!
//! Each connection has at most one entry. Activity does not touch the heap: it only moves the
//! connection's own `last_active`. When an entry comes due, the worker recomputes the connection's real
//! deadline and either times it out or pushes a new entry; so a busy connection costs one heap operation
//! per idle period, not one per byte.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A due entry: which connection slot and generation to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerEntry {
    pub due_ms: u64,
    pub index: u32,
    pub generation: u32,
}

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<TimerEntry>>,
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
}
