//! When to restart a dataplane that exited, and when to give up.
//!
//! A dataplane that ran for a while and crashed is restarted at once (after [`FIRST_DELAY`]): it served,
//! so the next one very likely will too, and every moment without it refuses connections. One that exits
//! soon after it started ("short run": less than `--dataplane-min-uptime`) most likely has a problem that
//! a restart does not fix (a port it cannot bind, io_uring not allowed, a bad flag), so the delay doubles
//! with each short run in a row, and after `--dataplane-max-start-failures` of them the supervisor gives
//! up and exits with a status that says so, which is what an orchestrator needs to show the operator.

use std::time::Duration;

/// Delay before restarting after a normal run, and the first step of the back-off.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest delay between two starts (the dataplane's own reconnect back-off has the same cap).
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// What to do after the dataplane exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after `delay`; `short_runs` in a row so far.
    Restart { delay: Duration, short_runs: u32 },
    /// It kept exiting at start-up `short_runs` times in a row.
    GiveUp { short_runs: u32 },
}

/// Counts short runs in a row.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    min_uptime: Duration,
    max_short_runs: u32,
    short_runs: u32,
}

impl RestartPolicy {
    /// `max_short_runs` is at least 1 (the flag refuses 0).
    pub fn new(min_uptime: Duration, max_short_runs: u32) -> Self {
        Self {
            min_uptime,
            max_short_runs: max_short_runs.max(1),
            short_runs: 0,
        }
    }

    /// Runs shorter than this count as start-up crashes.
    pub fn min_uptime(&self) -> Duration {
        self.min_uptime
    }

    /// Records a run that lasted `ran` (zero when the program could not even be started).
    pub fn after_exit(&mut self, ran: Duration) -> Decision {
        if ran >= self.min_uptime {
            self.short_runs = 0;
            return Decision::Restart {
                delay: FIRST_DELAY,
                short_runs: 0,
            };
        }
        self.short_runs += 1;
        if self.short_runs >= self.max_short_runs {
            return Decision::GiveUp {
                short_runs: self.short_runs,
            };
        }
        let doublings = (self.short_runs - 1).min(16);
        Decision::Restart {
            delay: FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY),
            short_runs: self.short_runs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN_UPTIME: Duration = Duration::from_secs(10);

    fn delay(decision: Decision) -> Duration {
        match decision {
            Decision::Restart { delay, .. } => delay,
            Decision::GiveUp { .. } => panic!("gave up: {decision:?}"),
        }
    }

    #[test]
    fn short_runs_back_off_and_then_give_up() {
        let mut policy = RestartPolicy::new(MIN_UPTIME, 5);
        let short = Duration::from_millis(50);
        assert_eq!(delay(policy.after_exit(short)), Duration::from_millis(100));
        assert_eq!(delay(policy.after_exit(short)), Duration::from_millis(200));
        assert_eq!(delay(policy.after_exit(short)), Duration::from_millis(400));
        assert_eq!(delay(policy.after_exit(short)), Duration::from_millis(800));
        assert_eq!(policy.after_exit(short), Decision::GiveUp { short_runs: 5 });
    }

    #[test]
    fn a_long_run_resets_the_count() {
        let mut policy = RestartPolicy::new(MIN_UPTIME, 3);
        policy.after_exit(Duration::ZERO);
        policy.after_exit(Duration::ZERO);
        assert_eq!(
            policy.after_exit(MIN_UPTIME),
            Decision::Restart {
                delay: FIRST_DELAY,
                short_runs: 0
            }
        );
        assert!(matches!(
            policy.after_exit(Duration::ZERO),
            Decision::Restart { short_runs: 1, .. }
        ));
    }

    #[test]
    fn the_delay_is_capped() {
        let mut policy = RestartPolicy::new(MIN_UPTIME, 1000);
        let delays: Vec<Duration> = (0..40)
            .map(|_| delay(policy.after_exit(Duration::ZERO)))
            .collect();
        assert_eq!(*delays.last().unwrap(), MAX_DELAY);
        assert!(delays.iter().all(|d| *d <= MAX_DELAY));
    }

    #[test]
    fn one_allowed_failure_gives_up_at_the_first() {
        let mut policy = RestartPolicy::new(MIN_UPTIME, 1);
        assert_eq!(
            policy.after_exit(Duration::ZERO),
            Decision::GiveUp { short_runs: 1 }
        );
    }
}
