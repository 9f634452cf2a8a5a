//! `Retry-After`: one rounding rule, one cap, and the estimates behind every
//! value the gateway sends.
//!
//! Every refusal that tells a client when to come back takes its seconds
//! from [`RetryAfter`], so the same reason carries the same value whichever
//! path refused the request (the gate at admission, the queue, the proxy
//! after a connect failure, a passthrough read).
//!
//! ## The rule
//!
//! Whole seconds, rounded up (0.2 s → 1, 1.01 s → 2), at least 1 and at most
//! `cap` (`queue.max_retry_after`, default 60). Never 0: a client told 0
//! retries at once and adds to the overload it was refused for. Never past
//! the cap: a client told to wait longer usually gives up, and the fleet may
//! recover sooner. The cap holds for rate limits and token budgets too: a
//! client that comes back before its bucket refills is refused again, with
//! a fresh value.
//!
//! ## The estimates
//!
//! Pure functions of what they are given; the gate gathers the facts.
//!
//! - **Busy** (every serving backend full; queue refusals, timeouts,
//!   displacement): the time for the fleet to serve the requests waiting now,
//!   and at least one, at the drain rate ([`RetryAfter::busy`], from
//!   [`queue_wait`], which is also the queue's admission prediction).
//! - **Unhealthy** (no backend healthy and fresh): when every breaker is
//!   open, the time until the first one lets a probe through; otherwise one
//!   `scrape.stale_after`, within which a recovered backend shows up as
//!   fresh ([`RetryAfter::unhealthy`]).
//! - **Rate limit, token budget**: the time until the bucket admits the
//!   request, as the limiter computes it ([`RetryAfter::secs`]).

use std::time::Duration;

/// Default of `queue.max_retry_after`: a client told to wait longer usually
/// gives up, and the fleet may recover sooner.
pub const DEFAULT_CAP: u32 = 60;

/// Longest wait [`queue_wait`] predicts; beyond it "never" is as good.
pub const MAX_PREDICTION: Duration = Duration::from_secs(3600);

/// Whole seconds, rounded up, saturating at `u32::MAX`. The rounding of
/// every seconds figure the gateway sends (`Retry-After`, the reset headers).
pub fn ceil_secs(d: Duration) -> u32 {
    let s = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    u32::try_from(s).unwrap_or(u32::MAX)
}

/// Predicted wait of the queue entry at `position` (0 = served next) while
/// the fleet completes `rate` requests per second: the time for
/// `position + 1` completions, at most [`MAX_PREDICTION`] (also when the
/// rate is 0 or not a number).
pub fn queue_wait(position: usize, rate: f64) -> Duration {
    let secs = (position as f64 + 1.0) / rate;
    if secs.is_finite() && secs >= 0.0 {
        Duration::try_from_secs_f64(secs)
            .unwrap_or(MAX_PREDICTION)
            .min(MAX_PREDICTION)
    } else {
        MAX_PREDICTION
    }
}

/// Turns waits into `Retry-After` seconds. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    cap: u32,
}

// === impl RetryAfter ===

impl RetryAfter {
    /// At most `cap` seconds (0 is read as 1).
    pub fn new(cap: u32) -> RetryAfter {
        RetryAfter { cap: cap.max(1) }
    }

    /// The largest value sent.
    pub fn cap(self) -> u32 {
        self.cap
    }

    /// The one rounding rule: `wait` in whole seconds, rounded up, in
    /// `[1, cap]`.
    pub fn secs(self, wait: Duration) -> u32 {
        ceil_secs(wait).clamp(1, self.cap)
    }

    /// Every serving backend is busy and `waiting` requests are queued: the
    /// time for `max(waiting, 1)` completions at `rate` per second (with no
    /// one waiting, a slot still has to free).
    pub fn busy(self, waiting: usize, rate: f64) -> u32 {
        self.secs(queue_wait(waiting.max(1) - 1, rate))
    }

    /// No backend is healthy: the time until a breaker lets a probe through
    /// when every one is open (`probe_in`), else one `stale_after`.
    pub fn unhealthy(self, probe_in: Option<Duration>, stale_after: Duration) -> u32 {
        self.secs(probe_in.unwrap_or(stale_after))
    }
}

impl Default for RetryAfter {
    /// The default cap, [`DEFAULT_CAP`].
    fn default() -> RetryAfter {
        RetryAfter::new(DEFAULT_CAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rounds_up_to_whole_seconds_at_least_one() {
        let r = RetryAfter::default();
        assert_eq!(r.secs(Duration::ZERO), 1);
        assert_eq!(r.secs(ms(1)), 1);
        assert_eq!(r.secs(ms(200)), 1);
        assert_eq!(r.secs(ms(1000)), 1);
        assert_eq!(r.secs(ms(1010)), 2);
        assert_eq!(r.secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn capped() {
        let r = RetryAfter::new(60);
        assert_eq!(r.secs(Duration::from_secs(61)), 60);
        assert_eq!(r.secs(Duration::MAX), 60);
        assert_eq!(RetryAfter::new(5).secs(Duration::from_secs(30)), 5);
        assert_eq!(RetryAfter::new(0).cap(), 1);
        assert_eq!(RetryAfter::new(0).secs(Duration::from_secs(5)), 1);
        assert_eq!(ceil_secs(Duration::MAX), u32::MAX);
    }

    #[test]
    fn busy_is_the_time_to_drain_those_waiting() {
        let r = RetryAfter::default();
        // 4 completions per second: 10 waiting take 2.5 s.
        assert_eq!(r.busy(10, 4.0), 3);
        // Nobody waiting: one slot must free, 0.25 s.
        assert_eq!(r.busy(0, 4.0), 1);
        assert_eq!(r.busy(1, 0.5), 2);
        assert_eq!(r.busy(0, 0.5), 2);
        // A fleet that stopped draining: the cap.
        assert_eq!(r.busy(3, 0.0), 60);
        assert_eq!(r.busy(3, f64::NAN), 60);
    }

    #[test]
    fn unhealthy_prefers_the_next_probe() {
        let r = RetryAfter::default();
        assert_eq!(r.unhealthy(Some(ms(2100)), ms(1500)), 3);
        assert_eq!(r.unhealthy(Some(Duration::ZERO), ms(1500)), 1);
        assert_eq!(r.unhealthy(None, ms(1500)), 2);
        assert_eq!(r.unhealthy(None, Duration::from_secs(600)), 60);
    }

    #[test]
    fn queue_wait_is_bounded() {
        assert_eq!(queue_wait(0, 1.0), Duration::from_secs(1));
        assert_eq!(queue_wait(9, 1.0), Duration::from_secs(10));
        assert_eq!(queue_wait(0, 0.0), MAX_PREDICTION);
        assert_eq!(queue_wait(0, -1.0), MAX_PREDICTION);
        assert_eq!(queue_wait(usize::MAX, 1e-300), MAX_PREDICTION);
    }

    proptest! {
        #[test]
        fn prop_always_within_one_and_cap(
            nanos in any::<u64>(),
            cap in any::<u32>(),
            waiting in any::<usize>(),
            rate in any::<f64>(),
        ) {
            let r = RetryAfter::new(cap);
            let s = r.secs(Duration::from_nanos(nanos));
            prop_assert!(s >= 1 && s <= cap.max(1));
            let b = r.busy(waiting, rate);
            prop_assert!(b >= 1 && b <= cap.max(1));
            prop_assert!(queue_wait(waiting, rate) <= MAX_PREDICTION);
        }
    }
}
