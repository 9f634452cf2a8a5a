//! Adaptive concurrency limit per backend (AIMD): how many requests this
//! gateway may have in flight at one llama-server.
//!
//! ```text
//!            on_breaker_closed: limit := 1, target := max(limit, slots)
//!   ┌────────────────────────────────────────────────────────────┐
//!   │                                                            ▼
//!   │   ┌────────────────┐  limit ≥ target, or any     ┌──────────────────┐
//!   │   │   Avoidance    │ ◄────────────────────────── │    SlowStart     │
//!   └── │ (AIMD, gated)  │   congestion signal         │ limit ×2 after   │
//!       └────────────────┘                             │ `limit` successes│
//!          │    ▲     ▲                                └──────────────────┘
//!   queueing│    │     │ in use (in-flight reached the limit) and
//!   signal  │    │     │ nothing deferred: limit += increase_step
//!   ×0.9    ▼    │     │
//!       (stays in Avoidance; timeouts and resets: ×0.5)
//! ```
//!
//! The limit lives in `[1, slots + lookahead]` as an `f64`; routing reads the
//! integer part ([`AimdLimiter::limit`]).
//!
//! ## Why start at the slot count
//!
//! llama-server runs at most `slots` requests at once; the rest wait inside
//! it (`requests_deferred`), in a FIFO the gateway cannot reorder, expire or
//! move to another backend. So the right limit is about `slots`. A little
//! `lookahead` above it hides the gap between a slot freeing and the next
//! request arriving; AIMD finds how much of it helps.
//!
//! ## Signals
//!
//! * Queueing, ×`decrease_factor` and at least one whole request less: the
//!   scraped `requests_deferred` above `deferred_allowance` while all slots
//!   are busy; an in-server wait (from `timings`) above `wait_threshold`; a
//!   per-token time above `per_token_ratio` × its baseline; a failed or slow
//!   scrape while our in-flight fills the limit, down to `slots - 1` (a
//!   failed scrape carries no figure; eligibility already keeps work away
//!   while figures are missing). (Near the slot count ×0.9 alone needs two steps to move the
//!   routed integer, 5.9 → 5.3 → 4.8, and the backend queues all that time.)
//! * Timeouts and resets, ×`severe_decrease_factor`: the backend is in
//!   trouble, back off hard.
//! * In use and nothing deferred, +`increase_step`: the limit was the
//!   constraint (in-flight reached it since the last change) and no scrape
//!   showed a deferred request for a whole change gate (one lucky reading of
//!   0 is not "nothing deferred").
//!
//! ## Stale signals
//!
//! Every signal describes the past; `gate.rs` says why and how the limit
//! still does not collapse (one change per typical request duration).
//!
//! Measured in `tests/policy_scenarios.rs` (4 backends × 4 slots, Poisson
//! arrivals at 2× and 3× capacity, gauges scraped every 500 ms): the limit
//! stays in [4, 5] (mean 4.14), time-weighted mean deferred 0.31 per
//! backend, throughput at capacity; a 10 s spike at 10× capacity leaves the
//! limit at or above the slot count.
//!
//! ## Files
//!
//! This file holds the AIMD state machine; beside it: `gate.rs` (when the
//! limit may change), `baseline.rs` (the per-token baseline), `signal.rs`
//! (response samples and limit changes), `config.rs` (parameters and their
//! validation).

mod baseline;
mod config;
mod gate;
mod signal;

use std::time::Duration;

use tokio::time::Instant;

use crate::backend::breaker::Outcome;
use baseline::Baseline;
pub use config::{InvalidLimiterConfig, LimiterConfig};
use gate::ChangeGate;
pub use signal::{ChangeReason, LimitChange, ResponseSample};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    SlowStart { target: f64, successes: u32 },
    Avoidance,
}

// === AimdLimiter ===

/// Adaptive concurrency limit for one backend. See the module docs.
#[derive(Debug, Clone)]
pub struct AimdLimiter {
    cfg: LimiterConfig,
    slots: u32,
    limit: f64,
    phase: Phase,
    /// When the limit may change, from the typical request duration.
    gate: ChangeGate,
    baseline: Baseline,
    /// The most requests in flight since the last change: the evidence that
    /// the limit was in use. The current in-flight itself is not kept here:
    /// its one home is the backend's atomic count, and every decision takes
    /// it as an argument.
    peak_since_change: u32,
    last_scrape: Option<(u32, Instant)>,
    /// Last scrape that showed any deferred request.
    last_deferred_seen: Option<Instant>,
}

// === impl AimdLimiter ===

impl AimdLimiter {
    /// A limiter for a backend with `slots` slots (0 is read as 1), starting
    /// at the slot count.
    pub fn new(cfg: LimiterConfig, slots: u32) -> Result<Self, InvalidLimiterConfig> {
        cfg.validate()?;
        let slots = slots.max(1);
        Ok(Self {
            gate: ChangeGate::new(&cfg),
            cfg,
            slots,
            limit: f64::from(slots),
            phase: Phase::Avoidance,
            baseline: Baseline::default(),
            peak_since_change: 0,
            last_scrape: None,
            last_deferred_seen: None,
        })
    }

    /// The limit routing uses: the integer part, within [1, slots + lookahead].
    pub fn limit(&self) -> u32 {
        (self.limit.floor() as u32).clamp(1, self.max_limit())
    }

    /// Upper bound of the limit: slots + lookahead.
    pub fn max_limit(&self) -> u32 {
        self.slots.saturating_add(self.cfg.lookahead)
    }

    /// Slot count in use.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Whether the limiter is ramping up after a breaker closed.
    pub fn in_slow_start(&self) -> bool {
        matches!(self.phase, Phase::SlowStart { .. })
    }

    /// The current change gate: typical duration within its floor and cap.
    pub fn change_interval(&self) -> Duration {
        self.gate.interval()
    }

    /// The slot count changed (new `/props`). The limit moves by the same
    /// amount, as it tracks "slots plus something", and is clamped.
    pub fn set_slots(&mut self, slots: u32) -> Option<LimitChange> {
        let slots = slots.max(1);
        if slots == self.slots {
            return None;
        }
        let from = self.limit();
        self.limit += f64::from(slots) - f64::from(self.slots);
        self.slots = slots;
        if let Phase::SlowStart { target, .. } = &mut self.phase {
            *target = target.min(f64::from(slots.saturating_add(self.cfg.lookahead)));
        }
        self.clamp();
        self.changed(from, ChangeReason::Slots)
    }

    /// A dispatch raised this gateway's in-flight at the backend to
    /// `in_flight`; feeds "the limit was in use".
    pub fn on_dispatch(&mut self, in_flight: u32) {
        self.peak_since_change = self.peak_since_change.max(in_flight);
    }

    /// A scrape of `/metrics` (and `/props` for `slots`; pass 0 if unknown);
    /// `in_flight` is this gateway's count there now. Deferred requests
    /// count as queueing only while all slots are busy:
    /// deferred with a free slot is the moment between a slot freeing and
    /// llama-server handing it the next request.
    pub fn on_scrape(
        &mut self,
        deferred: u32,
        processing: u32,
        slots: u32,
        in_flight: u32,
        now: Instant,
    ) -> Option<LimitChange> {
        self.on_dispatch(in_flight);
        let slot_change = if slots > 0 {
            self.set_slots(slots)
        } else {
            None
        };
        self.last_scrape = Some((deferred, now));
        if deferred > 0 {
            self.last_deferred_seen = Some(now);
        }
        // While our own in-flight is above the limit (a decrease is still
        // draining), deferred requests are that excess, already dealt with.
        let queueing = deferred > self.cfg.deferred_allowance
            && processing >= self.slots
            && in_flight <= self.limit();
        let change = if queueing {
            self.decrease(ChangeReason::Deferred, in_flight, now)
        } else if deferred == 0 {
            self.try_increase(in_flight, now)
        } else {
            None
        };
        change.or(slot_change)
    }

    /// A scrape failed or took too long: llama-server's HTTP threads may all
    /// be busy, which is queueing we cannot see in the gauges.
    ///
    /// It counts only while our own requests fill the limit there, and only
    /// down to one below the slot count. A failed scrape carries no figure:
    /// the stale or slow reading already makes the backend ineligible, so
    /// nothing is sent meanwhile, and once figures come back the deferred
    /// gauge says how far to go. Cutting on every failed round instead left
    /// the limit at 1 when they came back (measured in
    /// `tests/overload_scenarios.rs`: a `/metrics` stalled for 3 s took the
    /// limit 4 → 1 with nothing in flight; a gateway short of CPU, whose own
    /// scrapes then look slow, took every backend's limit to 1 at 2× load).
    pub fn on_scrape_failed(&mut self, in_flight: u32, now: Instant) -> Option<LimitChange> {
        self.on_dispatch(in_flight);
        let floor = self.slots.saturating_sub(1).max(1);
        if in_flight < self.limit() || self.limit() <= floor {
            return None;
        }
        self.decrease(ChangeReason::ScrapeFailed, in_flight, now)
    }

    /// A response finished normally; `in_flight` is what remains in flight
    /// there without it.
    pub fn on_response(
        &mut self,
        sample: ResponseSample,
        in_flight: u32,
        now: Instant,
    ) -> Option<LimitChange> {
        self.on_dispatch(in_flight);
        self.gate.observe(sample.latency);
        let current = self.gate.sent_since_change(sample.latency, now);
        let mut signal = None;
        if !current {
            // Still learn the baseline below.
        } else if let Some(wait) = sample.in_server_wait {
            if wait > self.cfg.wait_threshold {
                signal = Some(ChangeReason::InServerWait);
            }
        }
        if let Some(pt) = sample.per_token {
            let pt = pt.as_secs_f64();
            if current && self.baseline.exceeded_by(pt, self.cfg.per_token_ratio) {
                signal = signal.or(Some(ChangeReason::PerTokenLatency));
            }
            self.baseline.update(pt);
        }
        if let Some(reason) = signal {
            return self.decrease(reason, in_flight, now);
        }
        if let Phase::SlowStart { target, successes } = &mut self.phase {
            *successes = successes.saturating_add(1);
            if *successes >= self.limit.floor().max(1.0) as u32 {
                let target = *target;
                let from = self.limit();
                self.limit = (self.limit * 2.0).min(target);
                self.phase = if self.limit >= target {
                    Phase::Avoidance
                } else {
                    Phase::SlowStart {
                        target,
                        successes: 0,
                    }
                };
                self.mark_change(in_flight, now);
                return self.changed(from, ChangeReason::SlowStart);
            }
            return None;
        }
        self.try_increase(in_flight, now)
    }

    /// A request failed. Timeouts and resets halve the limit (once per
    /// gate); other failures are the breaker's business.
    pub fn on_failure(
        &mut self,
        kind: Outcome,
        in_flight: u32,
        now: Instant,
    ) -> Option<LimitChange> {
        self.on_dispatch(in_flight);
        if !matches!(kind, Outcome::FirstByteTimeout | Outcome::Reset) {
            return None;
        }
        if !self.gate.may_cut_hard(now) {
            return None;
        }
        let from = self.limit();
        self.limit *= self.cfg.severe_decrease_factor;
        self.phase = Phase::Avoidance;
        self.clamp();
        self.gate.cut_hard(now);
        self.mark_change(in_flight, now);
        self.changed(from, ChangeReason::Failure)
    }

    /// The breaker closed after an open period: restart at 1 and double per
    /// window of successes up to the level before (at least the slot count).
    pub fn on_breaker_closed(&mut self, in_flight: u32, now: Instant) -> Option<LimitChange> {
        self.on_dispatch(in_flight);
        let from = self.limit();
        let target = self
            .limit
            .max(f64::from(self.slots))
            .min(f64::from(self.max_limit()));
        self.limit = 1.0;
        self.phase = if target > 1.0 {
            Phase::SlowStart {
                target,
                successes: 0,
            }
        } else {
            Phase::Avoidance
        };
        self.mark_change(in_flight, now);
        self.changed(from, ChangeReason::BreakerClosed)
    }

    fn decrease(
        &mut self,
        reason: ChangeReason,
        in_flight: u32,
        now: Instant,
    ) -> Option<LimitChange> {
        if !self.gate.may_decrease(now) {
            return None;
        }
        self.gate.decreased(now);
        let from = self.limit();
        // At least one whole request less: near the slot count ×0.9 alone
        // would take two gates to move the routed limit (5.9 → 5.3 → 4.8),
        // and the backend queues all that time.
        self.limit = (self.limit * self.cfg.decrease_factor).min(self.limit.floor() - 1.0);
        self.phase = Phase::Avoidance;
        self.clamp();
        self.mark_change(in_flight, now);
        self.changed(from, reason)
    }

    fn try_increase(&mut self, in_flight: u32, now: Instant) -> Option<LimitChange> {
        if self.in_slow_start() || !self.gate.may_increase(now) {
            return None;
        }
        if self.peak_since_change < self.limit() {
            return None;
        }
        let fresh_zero = matches!(self.last_scrape, Some((0, at))
            if now.saturating_duration_since(at) <= self.cfg.scrape_stale_after);
        // "Nothing deferred" means for a whole gate, not in one lucky
        // reading: otherwise the limit spends half its time one above the
        // level where the backend queues.
        let quiet = self.gate.elapsed_since(self.last_deferred_seen, now);
        if !fresh_zero || !quiet {
            return None;
        }
        let from = self.limit();
        self.limit += self.cfg.increase_step;
        self.clamp();
        self.mark_change(in_flight, now);
        self.changed(from, ChangeReason::Increase)
    }

    fn mark_change(&mut self, in_flight: u32, now: Instant) {
        self.gate.changed(now);
        self.peak_since_change = in_flight;
    }

    fn clamp(&mut self) {
        let max = f64::from(self.max_limit());
        self.limit = if self.limit.is_finite() {
            self.limit.clamp(1.0, max)
        } else {
            1.0
        };
    }

    fn changed(&self, from: u32, reason: ChangeReason) -> Option<LimitChange> {
        let to = self.limit();
        (from != to).then_some(LimitChange { from, to, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn limiter(slots: u32) -> AimdLimiter {
        AimdLimiter::new(LimiterConfig::default(), slots).unwrap()
    }

    fn ok(latency: Duration) -> ResponseSample {
        ResponseSample {
            latency,
            ..ResponseSample::default()
        }
    }

    #[test]
    fn starts_at_slots_within_range() {
        let l = limiter(4);
        assert_eq!(l.limit(), 4);
        assert_eq!(l.max_limit(), 6);
        assert_eq!(limiter(0).limit(), 1);
    }

    #[test]
    fn deferred_decreases_once_per_gate() {
        let t = Instant::now();
        let mut l = limiter(4);
        l.on_dispatch(4);
        // 4 × 0.9 = 3.6, and at least one whole request less: 3.
        let c = l.on_scrape(3, 4, 4, 4, t).unwrap();
        assert_eq!((c.from, c.to, c.reason), (4, 3, ChangeReason::Deferred));
        // Our in-flight (4) is still above the new limit: the deferred
        // requests are that excess, already dealt with.
        assert_eq!(l.on_scrape(3, 4, 4, 4, t + ms(500)), None);
        l.on_dispatch(3);
        // Same reading within the gate (2 s typical): no change.
        assert_eq!(l.on_scrape(3, 4, 4, 3, t + ms(1900)), None);
        assert_eq!(l.limit(), 3);
        assert_eq!(l.on_scrape(3, 4, 4, 3, t + ms(2000)).unwrap().to, 2);
    }

    #[test]
    fn increase_that_causes_queueing_is_undone_at_once() {
        let t = Instant::now();
        let mut l = limiter(4);
        l.on_dispatch(4);
        assert_eq!(l.on_scrape(0, 4, 4, 4, t).unwrap().to, 5);
        l.on_dispatch(5);
        // The next reading shows the request we added waiting: back to 4
        // without waiting for the change gate.
        let c = l.on_scrape(1, 4, 4, 5, t + ms(500)).unwrap();
        assert_eq!((c.from, c.to), (5, 4));
        // The next increase needs a whole gate without deferred requests.
        l.on_dispatch(4);
        assert_eq!(l.on_scrape(0, 4, 4, 4, t + ms(2400)), None);
        assert_eq!(l.on_scrape(0, 4, 4, 4, t + ms(2500)).unwrap().to, 5);
    }

    #[test]
    fn responses_sent_before_the_last_change_are_not_signals() {
        let t = Instant::now();
        let mut l = limiter(4);
        l.on_dispatch(4);
        l.on_scrape(2, 4, 4, 4, t + secs(10)).unwrap();
        assert_eq!(l.limit(), 3);
        let waited = |latency: Duration| ResponseSample {
            latency,
            in_server_wait: Some(secs(1)),
            ..ResponseSample::default()
        };
        // Sent at t+8 s, before the decrease at t+10 s.
        assert_eq!(l.on_response(waited(secs(5)), 4, t + secs(13)), None);
        // Sent at t+11 s, after it: the limit is still too high.
        let c = l.on_response(waited(secs(2)), 4, t + secs(13)).unwrap();
        assert_eq!(c.reason, ChangeReason::InServerWait);
    }

    #[test]
    fn deferred_with_free_slot_is_not_queueing() {
        let t = Instant::now();
        let mut l = limiter(4);
        assert_eq!(l.on_scrape(2, 3, 4, 0, t), None);
        assert_eq!(l.limit(), 4);
    }

    #[test]
    fn increases_only_when_in_use_and_nothing_deferred() {
        let t = Instant::now();
        let mut l = limiter(4);
        l.on_dispatch(3);
        assert_eq!(l.on_scrape(0, 3, 4, 3, t), None, "limit not in use");
        l.on_dispatch(4);
        let c = l.on_scrape(0, 4, 4, 4, t).unwrap();
        assert_eq!((c.from, c.to, c.reason), (4, 5, ChangeReason::Increase));
        // Gate: the next increase needs a typical duration and use at 5.
        l.on_dispatch(5);
        assert_eq!(l.on_scrape(0, 4, 4, 5, t + secs(1)), None);
        assert_eq!(l.on_response(ok(secs(2)), 5, t + secs(2)).unwrap().to, 6);
        // Capped at slots + lookahead.
        l.on_dispatch(6);
        assert_eq!(l.on_scrape(0, 4, 4, 6, t + secs(10)), None);
        assert_eq!(l.limit(), 6);
    }

    #[test]
    fn no_increase_on_stale_or_missing_scrape() {
        let t = Instant::now();
        let mut l = limiter(4);
        l.on_dispatch(4);
        assert_eq!(l.on_response(ok(secs(1)), 4, t), None, "no scrape yet");
        l.on_scrape(1, 2, 4, 4, t);
        assert_eq!(l.on_response(ok(secs(1)), 4, t), None, "deferred seen");
        let mut idle = limiter(4);
        idle.on_dispatch(3);
        assert_eq!(idle.on_scrape(0, 3, 4, 3, t), None, "not in use");
        assert_eq!(
            l.on_response(ok(secs(1)), 4, t + secs(30)),
            None,
            "scrape too old"
        );
        assert_eq!(l.on_scrape(0, 4, 4, 4, t + secs(31)).unwrap().to, 5);
    }

    #[test]
    fn timeouts_halve_once_per_gate() {
        let t = Instant::now();
        let mut l = AimdLimiter::new(
            LimiterConfig {
                lookahead: 4,
                ..LimiterConfig::default()
            },
            8,
        )
        .unwrap();
        let c = l.on_failure(Outcome::FirstByteTimeout, 0, t).unwrap();
        assert_eq!((c.from, c.to), (8, 4));
        assert_eq!(l.on_failure(Outcome::Reset, 0, t + ms(100)), None);
        assert_eq!(l.on_failure(Outcome::ServerError5xx, 0, t + secs(60)), None);
        assert_eq!(l.on_failure(Outcome::Reset, 0, t + secs(60)).unwrap().to, 2);
        assert_eq!(
            l.on_failure(Outcome::Reset, 0, t + secs(120)).unwrap().to,
            1
        );
        assert_eq!(l.on_failure(Outcome::Reset, 0, t + secs(180)), None);
        assert_eq!(l.limit(), 1);
    }

    #[test]
    fn in_server_wait_and_per_token_latency_are_queueing() {
        let t = Instant::now();
        let mut l = limiter(4);
        let slow_wait = ResponseSample {
            latency: secs(2),
            in_server_wait: Some(ms(800)),
            ..ResponseSample::default()
        };
        assert_eq!(
            l.on_response(slow_wait, 0, t).unwrap().reason,
            ChangeReason::InServerWait
        );
        let mut l = limiter(4);
        let tok = |ms_per: u64| ResponseSample {
            latency: secs(2),
            per_token: Some(ms(ms_per)),
            ..ResponseSample::default()
        };
        for i in 0..10 {
            assert_eq!(l.on_response(tok(20), 0, t + ms(i)), None);
        }
        // 50 ms < 3 × 20 ms: batching, not queueing.
        assert_eq!(l.on_response(tok(50), 0, t + ms(20)), None);
        let c = l.on_response(tok(90), 0, t + ms(30)).unwrap();
        assert_eq!(c.reason, ChangeReason::PerTokenLatency);
    }

    #[test]
    fn slow_start_after_breaker_closes() {
        let t = Instant::now();
        let mut l = limiter(4);
        l.on_dispatch(4);
        l.on_scrape(0, 4, 4, 4, t);
        assert_eq!(l.limit(), 5);
        let c = l.on_breaker_closed(4, t + secs(1)).unwrap();
        assert_eq!((c.from, c.to), (5, 1));
        assert!(l.in_slow_start());
        // Increases from scrapes do not apply during slow start.
        l.on_dispatch(1);
        assert_eq!(l.on_scrape(0, 1, 4, 1, t + secs(10)), None);
        // 1 success → 2; 2 successes → 4; 4 successes → 5 (target).
        assert_eq!(l.on_response(ok(secs(1)), 1, t + secs(11)).unwrap().to, 2);
        assert_eq!(l.on_response(ok(secs(1)), 1, t + secs(12)), None);
        assert_eq!(l.on_response(ok(secs(1)), 1, t + secs(12)).unwrap().to, 4);
        for _ in 0..3 {
            assert_eq!(l.on_response(ok(secs(1)), 1, t + secs(13)), None);
        }
        assert_eq!(l.on_response(ok(secs(1)), 1, t + secs(13)).unwrap().to, 5);
        assert!(!l.in_slow_start());
    }

    #[test]
    fn congestion_ends_slow_start() {
        let t = Instant::now();
        let mut l = limiter(8);
        l.on_breaker_closed(0, t);
        l.on_response(ok(secs(1)), 0, t + secs(3));
        l.on_response(ok(secs(1)), 0, t + secs(6));
        l.on_response(ok(secs(1)), 0, t + secs(6));
        assert_eq!(l.limit(), 4);
        assert!(l.in_slow_start());
        // Queueing at 4 (someone else uses this backend): 4 → 3, and AIMD
        // from there instead of doubling on to 8.
        l.on_scrape(2, 8, 8, 0, t + secs(7));
        assert!(!l.in_slow_start());
        assert_eq!(l.limit(), 3);
    }

    #[test]
    fn slots_change_moves_limit_and_bounds() {
        let t = Instant::now();
        let mut l = limiter(4);
        let c = l.on_scrape(0, 0, 8, 0, t).unwrap();
        assert_eq!((c.from, c.to, c.reason), (4, 8, ChangeReason::Slots));
        assert_eq!(l.max_limit(), 10);
        l.set_slots(1);
        assert_eq!(l.limit(), 1);
        assert_eq!(l.max_limit(), 3);
        assert_eq!(l.set_slots(0), None);
    }

    #[test]
    fn change_interval_follows_durations_within_bounds() {
        let t = Instant::now();
        let mut l = limiter(4);
        assert_eq!(l.change_interval(), secs(2));
        for _ in 0..50 {
            l.on_response(ok(ms(10)), 0, t);
        }
        assert_eq!(l.change_interval(), secs(1));
        for _ in 0..50 {
            l.on_response(ok(secs(600)), 0, t);
        }
        assert_eq!(l.change_interval(), secs(15));
    }

    #[test]
    fn scrape_failure_decreases_while_the_limit_is_in_use() {
        let t = Instant::now();
        let mut l = limiter(10);
        l.on_dispatch(10);
        assert_eq!(
            l.on_scrape_failed(10, t).unwrap().reason,
            ChangeReason::ScrapeFailed
        );
        assert_eq!(l.limit(), 9);
        // The excess drains (the backend is ineligible meanwhile); further
        // failed rounds with less than the limit in flight change nothing.
        l.on_dispatch(0);
        for i in 1..20 {
            assert_eq!(l.on_scrape_failed(0, t + secs(i)), None);
        }
        assert_eq!(l.limit(), 9);
    }

    #[test]
    fn scrape_failures_alone_stop_one_below_the_slots() {
        let t = Instant::now();
        let mut l = AimdLimiter::new(
            LimiterConfig {
                lookahead: 2,
                ..LimiterConfig::default()
            },
            4,
        )
        .unwrap();
        l.on_dispatch(4);
        l.on_scrape(0, 4, 4, 4, t);
        assert_eq!(l.limit(), 5);
        for i in 1..30 {
            let n = l.limit();
            l.on_dispatch(n);
            l.on_scrape_failed(n, t + secs(i));
        }
        assert_eq!(l.limit(), 3, "slots - 1");
        // Queueing seen in the gauges still goes further.
        l.on_dispatch(3);
        assert_eq!(l.on_scrape(2, 4, 4, 3, t + secs(40)).unwrap().to, 2);
    }

    #[derive(Debug, Clone)]
    enum Input {
        Scrape(u32, u32, u32),
        ScrapeFailed,
        Response(u64, Option<u64>, Option<u64>),
        Failure(u8),
        InFlight(u32),
        Closed,
        Slots(u32),
    }

    fn input() -> impl Strategy<Value = (Input, u64)> {
        let i = prop_oneof![
            (0u32..20, 0u32..20, 0u32..20).prop_map(|(d, p, s)| Input::Scrape(d, p, s)),
            Just(Input::ScrapeFailed),
            (
                0u64..100_000,
                proptest::option::of(0u64..5_000),
                proptest::option::of(0u64..2_000)
            )
                .prop_map(|(l, w, p)| Input::Response(l, w, p)),
            (0u8..6).prop_map(Input::Failure),
            (0u32..40).prop_map(Input::InFlight),
            Just(Input::Closed),
            (0u32..40).prop_map(Input::Slots),
        ];
        (i, 0u64..3_000)
    }

    proptest! {
        #[test]
        fn prop_limit_stays_within_bounds(
            inputs in proptest::collection::vec(input(), 1..400),
            slots in 0u32..16,
            lookahead in 0u32..8,
        ) {
            let cfg = LimiterConfig { lookahead, ..LimiterConfig::default() };
            let mut l = AimdLimiter::new(cfg, slots).unwrap();
            let mut now = Instant::now();
            let mut in_flight = 0;
            for (inp, dt) in inputs {
                now += Duration::from_millis(dt);
                let change = match inp {
                    Input::Scrape(d, p, s) => l.on_scrape(d, p, s, in_flight, now),
                    Input::ScrapeFailed => l.on_scrape_failed(in_flight, now),
                    Input::Response(lat, w, p) => l.on_response(ResponseSample {
                        latency: Duration::from_millis(lat),
                        ttft: None,
                        per_token: p.map(Duration::from_millis),
                        in_server_wait: w.map(Duration::from_millis),
                    }, in_flight, now),
                    Input::Failure(k) => l.on_failure([Outcome::Success, Outcome::ConnectError,
                        Outcome::Reset, Outcome::ServerError5xx, Outcome::FirstByteTimeout,
                        Outcome::NotCounted][k as usize], in_flight, now),
                    Input::InFlight(n) => { in_flight = n; l.on_dispatch(n); None }
                    Input::Closed => l.on_breaker_closed(in_flight, now),
                    Input::Slots(s) => l.set_slots(s),
                };
                let max = l.slots().max(1) + lookahead;
                prop_assert!(l.limit() >= 1 && l.limit() <= max, "limit {} max {}", l.limit(), max);
                prop_assert!(l.limit >= 1.0 && l.limit <= f64::from(max));
                if let Some(c) = change {
                    prop_assert_ne!(c.from, c.to);
                    prop_assert_eq!(c.to, l.limit());
                }
            }
        }
    }
}
