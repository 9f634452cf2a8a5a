//! `Retry-After` / `retry-after-ms` / `x-should-retry`: one rounding rule,
//! one cap, the estimates behind every value the gateway sends, and the one
//! decision that a retry cannot help.
//!
//! Every refusal that tells a client when to come back takes its seconds
//! from [`RetryAfter`], so the same reason carries the same value whichever
//! path refused the request (the gate at admission, the queue, the proxy
//! after a connect failure, a passthrough read).
//!
//! ## The rule
//!
//! A wait becomes a [`Hint`]: whole milliseconds, rounded up, at least
//! [`MIN_HINT`] and at most `cap` (`queue.max_retry_after`, default 60 s);
//! `retry-after-ms` sends it as is (the OpenAI SDKs prefer it), `Retry-After`
//! as the same value rounded up to whole seconds (0.2 s → 1, 1.01 s → 2), so
//! the two never disagree by more than the rounding. Never 0: a client told
//! 0 retries at once and adds to the overload it was refused for. Never past
//! the cap: a client told to wait longer usually gives up, and the fleet may
//! recover sooner. The cap holds for rate limits and token budgets too: a
//! client that comes back before its bucket refills is refused again, with
//! a fresh value.
//!
//! ## No retry can fit ([`RetryAfter::for_client`])
//!
//! An OpenAI SDK retries a refusal `max_retries` times (default 2,
//! [`SDK_MAX_RETRIES`]; the server is not told the setting) and says which
//! attempt this is (`x-stainless-retry-count`). With `left` retries to go,
//! each told to wait at most `min(patience, cap)` (its declared timeout: a
//! client that waits 30 s for an answer is not asked to wait longer than
//! that between attempts), the client's last retry comes at most
//! `left × min(patience, cap)` from now. When the predicted wait until the
//! fleet can take it is longer than that, or no retry is left, the hint says
//! `x-should-retry: false`: the client fails at once instead of spending its
//! retries in vain (and the gateway handles fewer hopeless attempts).
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

pub use crate::reject::Hint;

/// The shortest hint: sooner, a retry would find the fleet as it was.
pub const MIN_HINT: Duration = Duration::from_millis(100);

/// Retries an OpenAI SDK makes by default (`max_retries = 2`, Python and
/// JS alike); the SDK does not tell the server its setting.
pub const SDK_MAX_RETRIES: u32 = 2;

/// What the gateway knows of a refused request's client: its declared
/// patience (`x-stainless-read-timeout` / `x-stainless-timeout`) and which
/// attempt this is (`x-stainless-retry-count`); both unknown for other
/// clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retries {
    /// Retries taken before this attempt.
    pub taken: Option<u32>,
    /// The client's own timeout.
    pub patience: Option<Duration>,
}

/// Default of `queue.max_retry_after`: a client told to wait longer usually
/// gives up, and the fleet may recover sooner.
pub const DEFAULT_CAP: u32 = 60;

/// The largest cap: a day (`queue.max_retry_after` allows an hour).
const MAX_CAP: u32 = 86_400;

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
    completions_wait(position as f64 + 1.0, rate)
}

/// `n` completions at `rate` per second, at most [`MAX_PREDICTION`] (also
/// when the rate is 0 or not a number): the one rule [`queue_wait`] and
/// [`super::predict::work_wait`] share.
pub(super) fn completions_wait(n: f64, rate: f64) -> Duration {
    let secs = n / rate;
    if secs.is_finite() && secs >= 0.0 {
        Duration::try_from_secs_f64(secs)
            .unwrap_or(MAX_PREDICTION)
            .min(MAX_PREDICTION)
    } else {
        MAX_PREDICTION
    }
}

/// The wait behind [`RetryAfter::busy`], uncapped (at most
/// [`MAX_PREDICTION`]).
pub fn busy_wait(waiting: usize, rate: f64) -> Duration {
    queue_wait(waiting.max(1) - 1, rate)
}

/// Turns waits into hints. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    cap: u32,
}

// === impl RetryAfter ===

impl RetryAfter {
    /// At most `cap` seconds (0 is read as 1; above a day, a day).
    pub fn new(cap: u32) -> RetryAfter {
        RetryAfter {
            cap: cap.clamp(1, MAX_CAP),
        }
    }

    /// The largest value sent.
    pub fn cap(self) -> u32 {
        self.cap
    }

    /// The one rounding rule: `wait` in whole milliseconds, rounded up, in
    /// `[MIN_HINT, cap]`; a retry is welcome.
    pub fn hint(self, wait: Duration) -> Hint {
        let ns = wait.as_nanos();
        let ms = ns.div_ceil(1_000_000);
        let cap_ms = u128::from(self.cap) * 1000;
        let ms = ms.clamp(MIN_HINT.as_millis(), cap_ms);
        Hint::from_millis(u32::try_from(ms).unwrap_or(u32::MAX), true)
    }

    /// `Retry-After` of `wait`: [`RetryAfter::hint`] in whole seconds,
    /// rounded up, in `[1, cap]`.
    pub fn secs(self, wait: Duration) -> u32 {
        self.hint(wait).secs_rounded_up()
    }

    /// The hint for a client predicted to be taken in `wait` (uncapped):
    /// [`RetryAfter::hint`], with `x-should-retry: false` when no retry it
    /// can still make reaches that far (see the module docs).
    pub fn for_client(self, wait: Duration, client: Retries) -> Hint {
        let hint = self.hint(wait);
        if self.can_fit(wait, client) {
            hint
        } else {
            hint.no_retry()
        }
    }

    /// Whether one of the client's remaining retries can come late enough
    /// to be taken after `wait`.
    pub fn can_fit(self, wait: Duration, client: Retries) -> bool {
        let left = SDK_MAX_RETRIES.saturating_sub(client.taken.unwrap_or(0));
        let cap = Duration::from_secs(u64::from(self.cap));
        let reach = client.patience.unwrap_or(cap).min(cap);
        left > 0 && wait <= reach.saturating_mul(left)
    }

    /// Every serving backend is busy and `waiting` requests are queued (or
    /// promised a place): the time for `max(waiting, 1)` completions at
    /// `rate` per second (with no one waiting, a slot still has to free).
    pub fn busy(self, waiting: usize, rate: f64) -> Hint {
        self.hint(busy_wait(waiting, rate))
    }

    /// No backend is healthy: the time until a breaker lets a probe through
    /// when every one is open (`probe_in`), else one `stale_after`.
    pub fn unhealthy(self, probe_in: Option<Duration>, stale_after: Duration) -> Hint {
        self.hint(probe_in.unwrap_or(stale_after))
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
        let busy = |w, rate| r.busy(w, rate).secs_rounded_up();
        // 4 completions per second: 10 waiting take 2.5 s.
        assert_eq!(busy(10, 4.0), 3);
        assert_eq!(r.busy(10, 4.0).millis(), 2500);
        // Nobody waiting: one slot must free, 0.25 s.
        assert_eq!(busy(0, 4.0), 1);
        assert_eq!(r.busy(0, 4.0).millis(), 250);
        assert_eq!(busy(1, 0.5), 2);
        assert_eq!(busy(0, 0.5), 2);
        // A fleet that stopped draining: the cap.
        assert_eq!(busy(3, 0.0), 60);
        assert_eq!(r.busy(3, 0.0).millis(), 60_000);
        assert_eq!(busy(3, f64::NAN), 60);
    }

    #[test]
    fn unhealthy_prefers_the_next_probe() {
        let r = RetryAfter::default();
        let u = |p, s| r.unhealthy(p, s).secs_rounded_up();
        assert_eq!(u(Some(ms(2100)), ms(1500)), 3);
        assert_eq!(u(Some(Duration::ZERO), ms(1500)), 1);
        assert_eq!(u(None, ms(1500)), 2);
        assert_eq!(u(None, Duration::from_secs(600)), 60);
        assert_eq!(r.unhealthy(Some(ms(2100)), ms(1500)).millis(), 2100);
    }

    #[test]
    fn milliseconds_rounded_up_within_floor_and_cap() {
        let r = RetryAfter::new(60);
        assert_eq!(r.hint(Duration::ZERO).millis(), 100);
        assert_eq!(r.hint(ms(99)).millis(), 100);
        assert_eq!(r.hint(Duration::from_micros(1_234_001)).millis(), 1235);
        assert_eq!(r.hint(Duration::from_secs(61)).millis(), 60_000);
        assert_eq!(r.hint(Duration::MAX).millis(), 60_000);
        // One rule: Retry-After is the milliseconds rounded up.
        assert_eq!(r.hint(ms(1001)).secs_rounded_up(), 2);
        assert_eq!(r.secs(ms(1001)), 2);
        assert!(r.hint(ms(500)).retry());
    }

    #[test]
    fn no_retry_when_even_the_last_retry_cannot_fit() {
        let r = RetryAfter::new(60);
        let sdk = |taken, patience: u64| Retries {
            taken: Some(taken),
            patience: Some(Duration::from_secs(patience)),
        };
        // Two retries left, 30 s each: up to 60 s away can still be met.
        assert!(r.for_client(Duration::from_secs(59), sdk(0, 30)).retry());
        assert!(r.for_client(Duration::from_secs(60), sdk(0, 30)).retry());
        let h = r.for_client(Duration::from_secs(61), sdk(0, 30));
        assert!(!h.retry());
        assert_eq!(h.millis(), 60_000, "the hint itself is unchanged");
        // One retry left: 30 s.
        assert!(r.for_client(Duration::from_secs(29), sdk(1, 30)).retry());
        assert!(!r.for_client(Duration::from_secs(31), sdk(1, 30)).retry());
        // The last attempt: nothing can fit.
        assert!(!r.for_client(ms(200), sdk(2, 30)).retry());
        assert!(!r.for_client(ms(200), sdk(7, 30)).retry());
        // Patience above the cap counts as the cap.
        assert!(r.for_client(Duration::from_secs(119), sdk(0, 600)).retry());
        assert!(!r.for_client(Duration::from_secs(121), sdk(0, 600)).retry());
        // A client that says nothing: two retries of up to the cap.
        assert!(r
            .for_client(Duration::from_secs(120), Retries::default())
            .retry());
        assert!(!r
            .for_client(Duration::from_secs(121), Retries::default())
            .retry());
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
            prop_assert!(s >= 1 && s <= cap.clamp(1, MAX_CAP));
            let b = r.busy(waiting, rate).secs_rounded_up();
            prop_assert!(b >= 1 && b <= cap.clamp(1, MAX_CAP));
            let h = r.hint(Duration::from_nanos(nanos));
            prop_assert!(u64::from(h.millis()) <= u64::from(cap.clamp(1, MAX_CAP)) * 1000);
            prop_assert!(h.millis() >= 1);
            prop_assert_eq!(h.secs_rounded_up(), s);
            prop_assert!(queue_wait(waiting, rate) <= MAX_PREDICTION);
        }
    }
}
