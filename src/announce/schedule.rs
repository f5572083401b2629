//! When to talk to trackers again: the per-tracker backoff after failures and the delay until
//! the next announce round. Pure logic: no I/O, and time always comes in as `now`, so every
//! rule here is unit-tested with a made-up clock. `Announcer` (in `mod.rs`) owns one
//! `Backoff` per tracker and the `LastRound`, and the engine asks it for the next delay.

use std::time::{Duration, Instant};

/// Wait after a tracker's first failure before trying it again.
pub const BACKOFF_BASE: Duration = Duration::from_secs(30);
/// The backoff stops doubling here: a tracker that has been down for hours is still retried
/// twice an hour, about as often as a healthy one is announced to.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);

/// How long to leave a tracker alone after `failures` failures in a row: nothing for 0, then
/// `BACKOFF_BASE` doubling with each further failure, capped at `BACKOFF_MAX`.
pub fn backoff_delay(failures: u32) -> Duration {
    let Some(doublings) = failures.checked_sub(1) else {
        return Duration::ZERO;
    };
    // 2^6 * 30 s already passes the cap; clamping the exponent keeps the shift in range.
    let factor = 1u32 << doublings.min(6);
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
}

/// One tracker's failure streak and when it may be tried again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    /// Counts a failure at `now` and pushes the next allowed attempt out accordingly.
    pub fn record_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + backoff_delay(self.failures));
    }

    /// A success ends the streak.
    pub fn record_success(&mut self) {
        *self = Backoff::default();
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the tracker may be tried again; `None` if it is not backing off.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Whether a regular announce may go to this tracker at `now`.
    pub fn is_ready(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }

    /// How much longer the tracker is left alone, measured from `now`.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.retry_at
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
    }
}

/// How the last announce round ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LastRound {
    /// No round yet: announce now.
    #[default]
    Never,
    /// A tracker answered at `at` and asked for the next announce `interval` later.
    Succeeded { at: Instant, interval: Duration },
    /// Every tracker failed or was backing off.
    Failed,
}

/// The delay from `now` until the next regular announce. After a success that is what is
/// left of the tracker's interval; after a failed round it is until the first tracker's
/// backoff ends (`earliest_retry`, `None` when there is no tracker at all, which waits the
/// longest backoff rather than spinning).
pub fn next_announce_delay(
    last: LastRound,
    earliest_retry: Option<Instant>,
    now: Instant,
) -> Duration {
    match last {
        LastRound::Never => Duration::ZERO,
        LastRound::Succeeded { at, interval } => (at + interval).saturating_duration_since(now),
        LastRound::Failed => {
            earliest_retry.map_or(BACKOFF_MAX, |at| at.saturating_duration_since(now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn backoff_doubles_from_thirty_seconds_up_to_thirty_minutes() {
        let delays: Vec<u64> = (0..9).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 30, 60, 120, 240, 480, 960, 1800, 1800]);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn a_failing_tracker_waits_and_a_success_clears_the_streak() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(b.is_ready(t0));
        b.record_failure(t0);
        assert_eq!(b.failures(), 1);
        assert!(!b.is_ready(t0 + S(29)));
        assert!(b.is_ready(t0 + S(30)));
        assert_eq!(b.remaining(t0 + S(10)), S(20));

        let t1 = t0 + S(30);
        b.record_failure(t1);
        assert_eq!(b.retry_at(), Some(t1 + S(60)));
        assert!(!b.is_ready(t1 + S(59)));

        b.record_success();
        assert_eq!(b, Backoff::default());
        assert!(b.is_ready(t1));
        assert_eq!(b.remaining(t1), Duration::ZERO);
    }

    #[test]
    fn next_delay_follows_the_interval_after_a_success() {
        let t0 = Instant::now();
        assert_eq!(next_announce_delay(LastRound::Never, None, t0), S(0));
        let ok = LastRound::Succeeded {
            at: t0,
            interval: S(1800),
        };
        assert_eq!(next_announce_delay(ok, None, t0 + S(800)), S(1000));
        assert_eq!(next_announce_delay(ok, None, t0 + S(5000)), S(0));
    }

    #[test]
    fn next_delay_after_a_failed_round_waits_for_the_first_backoff_to_end() {
        let t0 = Instant::now();
        let delay = next_announce_delay(LastRound::Failed, Some(t0 + S(30)), t0 + S(5));
        assert_eq!(delay, S(25));
        let late = next_announce_delay(LastRound::Failed, Some(t0), t0 + S(5));
        assert_eq!(late, S(0));
        assert_eq!(
            next_announce_delay(LastRound::Failed, None, t0),
            BACKOFF_MAX
        );
    }
}
