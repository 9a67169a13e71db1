//! Snapshot version numbers that keep increasing across controlplane restarts.
//!
//! A dataplane outlives controlplane restarts and never applies a version older than the one it has. A
//! counter starting at 1 after a restart would therefore be ignored until it caught up. Versions are instead
//! `max(previous + 1, unix time in microseconds)`: a restarted controlplane starts above anything it handed
//! out before (unless the clock went back), and a floor raised by what dataplanes report in their `Hello`
//! covers the clock-went-back case.

use crate::clock::unix_micros;

/// Hands out strictly increasing versions.
#[derive(Debug, Clone, Default)]
pub struct VersionClock {
    /// Highest version handed out or seen from a dataplane; every new version is above it.
    floor: u64,
}

impl VersionClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next version, read against the system clock.
    pub fn issue(&mut self) -> u64 {
        self.issue_at(unix_micros())
    }

    /// The next version given the current time `now_micros`: above everything before, and at least the time.
    pub fn issue_at(&mut self, now_micros: u64) -> u64 {
        let version = self.floor.saturating_add(1).max(now_micros);
        self.floor = version;
        version
    }

    /// Remembers a version a dataplane reported, so every later version is above it.
    pub fn observe(&mut self, version: u64) {
        self.floor = self.floor.max(version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_the_clock_and_never_repeat() {
        let mut clock = VersionClock::new();
        assert_eq!(clock.issue_at(1_000), 1_000);
        // Same microsecond, or the clock went back: still strictly increasing.
        assert_eq!(clock.issue_at(1_000), 1_001);
        assert_eq!(clock.issue_at(10), 1_002);
        assert_eq!(clock.issue_at(5_000), 5_000);
    }

    #[test]
    fn a_restarted_clock_starts_above_the_old_one() {
        let mut before = VersionClock::new();
        let old = before.issue_at(1_000);
        let mut after = VersionClock::new();
        assert!(after.issue_at(2_000) > old);
    }

    #[test]
    fn observed_versions_raise_the_floor() {
        let mut clock = VersionClock::new();
        clock.observe(9_000);
        assert_eq!(clock.issue_at(1_000), 9_001);
        clock.observe(5);
        assert_eq!(clock.issue_at(1_000), 9_002);
    }

    #[test]
    fn the_real_clock_is_past_2020() {
        const JAN_2020_MICROS: u64 = 1_577_836_800_000_000;
        assert!(VersionClock::new().issue() > JAN_2020_MICROS);
    }
}
