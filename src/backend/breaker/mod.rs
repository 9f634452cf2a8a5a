//! Per-backend circuit breaker: stop sending work to a backend that is
//! failing, probe it gently, and let it back in when it answers again.
//!
//! ```text
//!                 N consecutive failures, or failure rate ≥ R over the
//!                 window with ≥ V requests (both subject to the fleet
//!                 ejection cap), or trip_now(cause) (never capped)
//!   ┌────────┐ ─────────────────────────────────────────────────► ┌──────────────┐
//!   │ Closed │                                                    │ Open{until}  │
//!   └────────┘ ◄──────────┐                                       └──────────────┘
//!        ▲                │ `successes_to_close`                     │        ▲
//!        │                │ probe successes                 backoff  │        │ any probe failure,
//!        │           ┌──────────┐ ◄──────────────────────────── elapsed        │ or trip_now(cause)
//!        └───────────│ HalfOpen │ ──────────────────────────────────────────────┘
//!                    └──────────┘   (admits ≤ `half_open_probes` requests at once)
//! ```
//!
//! Only these four transitions exist: Closed→Open, Open→HalfOpen,
//! HalfOpen→Closed, HalfOpen→Open. Every one is returned to the caller as a
//! [`Transition`] with its [`TransitionCause`], so metrics can count them.
//!
//! ## Why both a consecutive count and a rate
//!
//! A backend that is down fails every request: the consecutive count sees it
//! after N requests, however slow the traffic. A backend that fails one
//! request in three never produces N in a row but is still bad: the windowed
//! rate sees it, and the minimum volume keeps two unlucky requests out of
//! three at low traffic from ejecting a healthy backend.
//!
//! ## What counts as a failure
//!
//! Connect errors, resets, 5xx other than llama-server's `503 Loading model`,
//! and first-byte timeouts (see [`Outcome`]). A 4xx is the client's fault, a
//! client abort or our own deadline expiry says nothing about the backend, and
//! "Loading model" is a backend that is starting: none of these count.
//!
//! ## The fleet ejection cap
//!
//! When every backend fails at once the cause is usually not the backends (a
//! poisonous prompt, a shared dependency, overload that makes everyone time
//! out). Ejecting them all turns a partial outage into a total one. So a
//! *statistical* trip (consecutive failures or rate) first asks
//! [`may_eject`]. A trip with direct evidence ([`Breaker::trip_now`]:
//! connection refused, `/health` 503) ignores the cap: sending requests to a
//! port that refuses them helps nobody. A probe failure in half-open ignores
//! it too: that backend already counts as ejected.
//!
//! ## Backoff
//!
//! Each re-open without a healthy period in between multiplies the open time
//! by `backoff_multiplier`, capped at `max_backoff`, with ± `jitter` so a
//! fleet that failed together does not probe together. The jitter comes from
//! a small deterministic generator seeded in [`Breaker::new`]: the breaker
//! stays pure and reproducible, and no call needs an rng argument. The level
//! resets once the breaker has stayed closed for `healthy_period`.
//!
//! ## Late outcomes
//!
//! Requests admitted while closed may finish after the breaker opened. While
//! open, outcomes are ignored (the decision is made). In half-open, any
//! outcome is evidence about the backend and is counted like a probe's; the
//! probe slot count saturates at zero.
//!
//! ## Files
//!
//! This file holds the state machine; beside it: `backoff.rs` (the open
//! period and its jitter), `window.rs` (the failure-rate window),
//! `outcome.rs` (outcomes, states, transitions), `eject.rs` (the fleet
//! ejection cap), `config.rs` (parameters and their validation).

mod backoff;
mod config;
mod eject;
mod outcome;
mod window;

use std::time::Duration;

use tokio::time::Instant;

use backoff::Backoff;
pub use config::{BreakerConfig, InvalidBreakerConfig};
pub use eject::may_eject;
pub use outcome::{
    Allow, BreakerState, Outcome, StateKind, Transition, TransitionCause, Transitions, TripCause,
};
use window::Window;

// === Breaker ===

#[derive(Debug, Clone, Copy)]
enum Inner {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        since: Instant,
        in_flight: u32,
        successes: u32,
    },
}

/// Circuit breaker for one backend. See the module docs.
#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    inner: Inner,
    consecutive: u32,
    window: Window,
    /// Open periods since the last healthy period, and the jitter.
    backoff: Backoff,
    /// When the breaker last closed (None: never opened).
    closed_since: Option<Instant>,
}

// === impl Breaker ===

impl Breaker {
    /// A closed breaker. `jitter_seed` seeds the backoff jitter; give each
    /// backend a different one (e.g. its index, or a random number) so their
    /// probes spread out.
    pub fn new(cfg: BreakerConfig, jitter_seed: u64) -> Result<Self, InvalidBreakerConfig> {
        cfg.validate()?;
        Ok(Self {
            window: Window::new(cfg.window),
            cfg,
            inner: Inner::Closed,
            consecutive: 0,
            backoff: Backoff::new(jitter_seed),
            closed_since: None,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// The state at `now` (an elapsed open period reads as half-open even
    /// before [`Breaker::allow`] moved it there).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.inner {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { until } if now < until => BreakerState::Open { until },
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// The state as it stands, without resolving an open period that has
    /// run out: what [`PolicyView`](crate::backend::policy::PolicyView)
    /// publishes, for its readers to resolve with their own `now`.
    pub fn published(&self) -> BreakerState {
        match self.inner {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { until } => BreakerState::Open { until },
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Time left in the open period, for `Retry-After`; `None` unless open.
    pub fn remaining_open(&self, now: Instant) -> Option<Duration> {
        match self.inner {
            Inner::Open { until } if now < until => Some(until - now),
            _ => None,
        }
    }

    /// Whether a request may be sent now. In half-open this takes a probe
    /// slot, which the request's [`Breaker::record`] gives back.
    pub fn allow(&mut self, now: Instant) -> Allow {
        let transition = self.advance(now);
        let allowed = match &mut self.inner {
            Inner::Closed => true,
            Inner::Open { .. } => false,
            Inner::HalfOpen {
                since, in_flight, ..
            } => {
                if now.saturating_duration_since(*since) >= self.cfg.probe_timeout {
                    // Probes that never reported: give their slots back.
                    *in_flight = 0;
                    *since = now;
                }
                if *in_flight < self.cfg.half_open_probes {
                    *in_flight += 1;
                    true
                } else {
                    false
                }
            }
        };
        Allow {
            allowed,
            transition,
        }
    }

    /// Moves an elapsed Open period to HalfOpen. [`Breaker::allow`] and
    /// [`Breaker::record`] call it; call it from a periodic task to publish
    /// the transition even when no request arrives.
    pub fn poll(&mut self, now: Instant) -> Option<Transition> {
        self.advance(now)
    }

    /// Reports the outcome of a request. `may_eject` is the answer of
    /// [`may_eject`] for this fleet right now; it only matters for the
    /// statistical trips. Outcomes that arrive while Open (even an elapsed
    /// Open that no [`Breaker::allow`] or [`Breaker::poll`] has moved on yet)
    /// come from requests admitted before the trip and are ignored.
    pub fn record(
        &mut self,
        outcome: Outcome,
        now: Instant,
        may_eject: bool,
    ) -> Option<Transition> {
        match &mut self.inner {
            Inner::Open { .. } => None,
            Inner::HalfOpen {
                in_flight,
                successes,
                ..
            } => {
                *in_flight = in_flight.saturating_sub(1);
                match outcome {
                    Outcome::NotCounted => None,
                    Outcome::Success => {
                        *successes += 1;
                        if *successes >= self.cfg.successes_to_close {
                            Some(self.close(now))
                        } else {
                            None
                        }
                    }
                    _ => Some(self.open(now, StateKind::HalfOpen, TransitionCause::ProbeFailed)),
                }
            }
            Inner::Closed => {
                if outcome == Outcome::NotCounted {
                    return None;
                }
                let failure = outcome.is_failure();
                self.window.add(failure, now);
                if !failure {
                    self.consecutive = 0;
                    return None;
                }
                self.consecutive = self.consecutive.saturating_add(1);
                if !may_eject {
                    return None;
                }
                if self.consecutive >= self.cfg.consecutive_failures {
                    return Some(self.open(
                        now,
                        StateKind::Closed,
                        TransitionCause::ConsecutiveFailures,
                    ));
                }
                let (s, f) = self.window.totals(now);
                let total = s + f;
                if total >= u64::from(self.cfg.min_requests)
                    && f as f64 >= self.cfg.failure_rate * total as f64
                {
                    return Some(self.open(now, StateKind::Closed, TransitionCause::FailureRate));
                }
                None
            }
        }
    }

    /// Opens at once on direct evidence (connection refused, `/health`
    /// 503, operator drain). Ignores the ejection cap. While open this does
    /// nothing: the open period runs out and the next half-open decides, so
    /// repeated health failures back off exponentially. If the open period
    /// has elapsed unobserved, both steps (Open→HalfOpen, HalfOpen→Open) are
    /// returned.
    pub fn trip_now(&mut self, cause: TripCause, now: Instant) -> Transitions {
        let half_opened = self.advance(now);
        let from = match self.inner {
            Inner::Open { .. } => return Transitions([half_opened, None]),
            Inner::Closed => StateKind::Closed,
            Inner::HalfOpen { .. } => StateKind::HalfOpen,
        };
        let opened = self.open(now, from, TransitionCause::Tripped(cause));
        Transitions([half_opened, Some(opened)])
    }

    fn advance(&mut self, now: Instant) -> Option<Transition> {
        match self.inner {
            Inner::Open { until } if now >= until => {
                self.inner = Inner::HalfOpen {
                    since: now,
                    in_flight: 0,
                    successes: 0,
                };
                Some(Transition {
                    from: StateKind::Open,
                    to: StateKind::HalfOpen,
                    cause: TransitionCause::BackoffElapsed,
                })
            }
            _ => None,
        }
    }

    fn open(&mut self, now: Instant, from: StateKind, cause: TransitionCause) -> Transition {
        if let Some(closed) = self.closed_since {
            if from == StateKind::Closed
                && now.saturating_duration_since(closed) >= self.cfg.healthy_period
            {
                self.backoff.reset();
            }
        }
        let backoff = self.backoff.next(&self.cfg);
        self.inner = Inner::Open {
            until: now.checked_add(backoff).unwrap_or(now),
        };
        self.consecutive = 0;
        self.window.clear();
        Transition {
            from,
            to: StateKind::Open,
            cause,
        }
    }

    fn close(&mut self, now: Instant) -> Transition {
        self.inner = Inner::Closed;
        self.closed_since = Some(now);
        self.consecutive = 0;
        self.window.clear();
        Transition {
            from: StateKind::HalfOpen,
            to: StateKind::Closed,
            cause: TransitionCause::ProbesSucceeded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> Instant {
        Instant::now()
    }

    fn no_jitter() -> BreakerConfig {
        BreakerConfig {
            jitter: 0.0,
            ..BreakerConfig::default()
        }
    }

    fn breaker(cfg: BreakerConfig) -> Breaker {
        Breaker::new(cfg, 7).unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn opens_after_consecutive_failures() {
        let now = t0();
        let mut b = breaker(no_jitter());
        for i in 0..4 {
            assert_eq!(b.record(Outcome::Reset, now + secs(i), true), None);
        }
        let t = b
            .record(Outcome::ServerError5xx, now + secs(4), true)
            .unwrap();
        assert_eq!(
            t,
            Transition {
                from: StateKind::Closed,
                to: StateKind::Open,
                cause: TransitionCause::ConsecutiveFailures
            }
        );
        assert_eq!(
            b.state(now + secs(4)),
            BreakerState::Open {
                until: now + secs(6)
            }
        );
        assert!(!b.allow(now + secs(5)).allowed);
        assert_eq!(b.remaining_open(now + secs(5)), Some(secs(1)));
    }

    #[test]
    fn success_resets_the_consecutive_count() {
        let now = t0();
        let mut b = breaker(BreakerConfig {
            min_requests: 1000,
            ..no_jitter()
        });
        for i in 0..20 {
            let o = if i % 4 == 3 {
                Outcome::Success
            } else {
                Outcome::FirstByteTimeout
            };
            assert_eq!(b.record(o, now, true), None, "step {i}");
        }
        assert_eq!(b.state(now), BreakerState::Closed);
    }

    #[test]
    fn not_counted_outcomes_never_trip() {
        let now = t0();
        let mut b = breaker(no_jitter());
        for _ in 0..100 {
            assert_eq!(b.record(Outcome::NotCounted, now, true), None);
        }
        assert_eq!(b.state(now), BreakerState::Closed);
    }

    #[test]
    fn opens_on_failure_rate_with_minimum_volume() {
        let now = t0();
        let mut b = breaker(no_jitter());
        // Alternate: never 5 in a row, but 50 % failures.
        let mut got = None;
        for i in 0..10u32 {
            let o = if i % 2 == 0 {
                Outcome::Success
            } else {
                Outcome::ServerError5xx
            };
            got = b.record(o, now + Duration::from_millis(u64::from(i)), true);
            if i < 9 {
                assert_eq!(got, None, "below min volume at {i}");
            }
        }
        assert_eq!(got.unwrap().cause, TransitionCause::FailureRate);
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let now = t0();
        let mut b = breaker(no_jitter());
        for _ in 0..8 {
            b.record(Outcome::Success, now, true);
        }
        for _ in 0..4 {
            b.record(Outcome::Reset, now, true);
        }
        b.record(Outcome::Success, now, true);
        // 12 ok / 4 failed in the window; the successes age out after 30 s.
        let later = now + secs(31);
        for _ in 0..4 {
            assert_eq!(b.record(Outcome::Reset, later, true), None);
            assert_eq!(b.record(Outcome::Success, later, true), None);
        }
        assert_eq!(b.state(later), BreakerState::Closed);
        // Now 4 ok / 4 failed, below volume 10; two more failures: 6/10.
        b.record(Outcome::Reset, later, true);
        let t = b.record(Outcome::Reset, later, true).unwrap();
        assert_eq!(t.cause, TransitionCause::FailureRate);
    }

    #[test]
    fn ejection_cap_blocks_statistical_trips_only() {
        let now = t0();
        let mut b = breaker(no_jitter());
        for _ in 0..20 {
            assert_eq!(b.record(Outcome::Reset, now, false), None);
        }
        assert_eq!(b.state(now), BreakerState::Closed);
        // Once the cap allows, the next failure trips.
        assert!(b.record(Outcome::Reset, now, true).is_some());
        let mut b = breaker(no_jitter());
        let t = b
            .trip_now(TripCause::ConnectionRefused, now)
            .last()
            .unwrap();
        assert_eq!(
            t.cause,
            TransitionCause::Tripped(TripCause::ConnectionRefused)
        );
    }

    #[test]
    fn half_open_admits_limited_probes_and_closes_after_successes() {
        let now = t0();
        let mut b = breaker(no_jitter());
        b.trip_now(TripCause::HealthUnavailable, now);
        let t = now + secs(2);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        let a = b.allow(t);
        assert!(a.allowed);
        assert_eq!(a.transition.unwrap().to, StateKind::HalfOpen);
        assert!(b.allow(t).allowed);
        let third = b.allow(t);
        assert!(!third.allowed);
        assert_eq!(third.transition, None);
        assert_eq!(b.record(Outcome::Success, t, true), None);
        // The freed slot admits another probe.
        assert!(b.allow(t).allowed);
        let closed = b.record(Outcome::Success, t, true).unwrap();
        assert_eq!(closed.from, StateKind::HalfOpen);
        assert_eq!(closed.to, StateKind::Closed);
        assert!(b.allow(t).allowed);
    }

    #[test]
    fn probe_failure_reopens_with_longer_backoff() {
        let now = t0();
        let mut b = breaker(no_jitter());
        b.trip_now(TripCause::ConnectionRefused, now);
        let t = now + secs(2);
        assert!(b.allow(t).allowed);
        let t2 = b.record(Outcome::ConnectError, t, false).unwrap();
        assert_eq!(t2.cause, TransitionCause::ProbeFailed);
        assert_eq!(b.remaining_open(t), Some(secs(4)));
        // Third open: 8 s; then capped at 60 s.
        let mut at = t + secs(4);
        let mut expect = 8;
        for _ in 0..8 {
            assert!(b.allow(at).allowed);
            b.record(Outcome::Reset, at, true);
            assert_eq!(b.remaining_open(at), Some(secs(expect)));
            at += secs(expect);
            expect = (expect * 2).min(60);
        }
    }

    #[test]
    fn not_counted_probe_gives_its_slot_back() {
        let now = t0();
        let mut b = breaker(BreakerConfig {
            half_open_probes: 1,
            ..no_jitter()
        });
        b.trip_now(TripCause::Manual, now);
        let t = now + secs(3);
        assert!(b.allow(t).allowed);
        assert!(!b.allow(t).allowed);
        assert_eq!(b.record(Outcome::NotCounted, t, true), None);
        assert!(b.allow(t).allowed);
    }

    #[test]
    fn lost_probe_slot_is_reclaimed_after_probe_timeout() {
        let now = t0();
        let mut b = breaker(BreakerConfig {
            half_open_probes: 1,
            ..no_jitter()
        });
        b.trip_now(TripCause::Manual, now);
        let t = now + secs(2);
        assert!(b.allow(t).allowed);
        assert!(!b.allow(t + secs(299)).allowed);
        assert!(b.allow(t + secs(300)).allowed);
    }

    #[test]
    fn backoff_resets_after_healthy_period() {
        let now = t0();
        let mut b = breaker(BreakerConfig {
            half_open_probes: 1,
            successes_to_close: 1,
            ..no_jitter()
        });
        let reopen_and_close = |b: &mut Breaker, at: Instant| -> Duration {
            b.trip_now(TripCause::ConnectionRefused, at);
            let d = b.remaining_open(at).unwrap();
            assert!(b.allow(at + d).allowed);
            b.record(Outcome::Success, at + d, true);
            assert_eq!(b.state(at + d), BreakerState::Closed);
            d
        };
        assert_eq!(reopen_and_close(&mut b, now), secs(2));
        assert_eq!(reopen_and_close(&mut b, now + secs(10)), secs(4));
        assert_eq!(reopen_and_close(&mut b, now + secs(20)), secs(8));
        // Closed at now+28 s; healthy for 60 s → back to the base.
        assert_eq!(reopen_and_close(&mut b, now + secs(90)), secs(2));
    }

    #[test]
    fn trip_while_open_changes_nothing() {
        let now = t0();
        let mut b = breaker(no_jitter());
        b.trip_now(TripCause::HealthUnavailable, now);
        assert!(b
            .trip_now(TripCause::HealthUnavailable, now + secs(1))
            .is_empty());
        assert_eq!(b.remaining_open(now + secs(1)), Some(secs(1)));
        // After the period, a trip goes HalfOpen → Open with a longer backoff.
        let ts: Vec<_> = b
            .trip_now(TripCause::HealthUnavailable, now + secs(2))
            .iter()
            .collect();
        assert_eq!(ts.len(), 2);
        assert_eq!(
            (ts[0].from, ts[0].to),
            (StateKind::Open, StateKind::HalfOpen)
        );
        assert_eq!(
            (ts[1].from, ts[1].to),
            (StateKind::HalfOpen, StateKind::Open)
        );
        assert_eq!(b.remaining_open(now + secs(2)), Some(secs(4)));
    }

    #[test]
    fn outcomes_while_open_are_ignored() {
        let now = t0();
        let mut b = breaker(no_jitter());
        b.trip_now(TripCause::Manual, now);
        for _ in 0..10 {
            assert_eq!(b.record(Outcome::Success, now, true), None);
        }
        assert!(matches!(b.state(now), BreakerState::Open { .. }));
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let now = t0();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..50 {
            let mut b = Breaker::new(BreakerConfig::default(), seed).unwrap();
            b.trip_now(TripCause::Manual, now);
            let d = b.remaining_open(now).unwrap();
            assert!(d >= Duration::from_millis(1600) && d <= Duration::from_millis(2400));
            seen.insert(d);
        }
        assert!(seen.len() > 40);
    }

    #[test]
    fn poll_publishes_open_to_half_open() {
        let now = t0();
        let mut b = breaker(no_jitter());
        b.trip_now(TripCause::Manual, now);
        assert_eq!(b.poll(now + secs(1)), None);
        assert_eq!(
            b.poll(now + secs(2)).unwrap().cause,
            TransitionCause::BackoffElapsed
        );
        assert_eq!(b.poll(now + secs(3)), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allow,
        Record(Outcome, bool),
        Trip(TripCause),
        Poll,
    }

    fn op() -> impl Strategy<Value = (Op, u64)> {
        let outcome = prop_oneof![
            Just(Outcome::Success),
            Just(Outcome::ConnectError),
            Just(Outcome::Reset),
            Just(Outcome::ServerError5xx),
            Just(Outcome::FirstByteTimeout),
            Just(Outcome::NotCounted),
        ];
        let cause = prop_oneof![
            Just(TripCause::ConnectionRefused),
            Just(TripCause::HealthUnavailable),
            Just(TripCause::Manual),
        ];
        let o = prop_oneof![
            4 => Just(Op::Allow),
            6 => (outcome, any::<bool>()).prop_map(|(o, e)| Op::Record(o, e)),
            1 => cause.prop_map(Op::Trip),
            1 => Just(Op::Poll),
        ];
        (o, 0u64..5_000)
    }

    fn legal(t: &Transition) -> bool {
        use StateKind::*;
        matches!(
            (t.from, t.to),
            (Closed, Open) | (Open, HalfOpen) | (HalfOpen, Closed) | (HalfOpen, Open)
        )
    }

    fn kind(s: BreakerState) -> StateKind {
        match s {
            BreakerState::Closed => StateKind::Closed,
            BreakerState::Open { .. } => StateKind::Open,
            BreakerState::HalfOpen => StateKind::HalfOpen,
        }
    }

    proptest! {
        #[test]
        fn prop_only_legal_transitions(
            ops in proptest::collection::vec(op(), 1..300),
            seed in any::<u64>(),
            probes in 1u32..4,
        ) {
            let cfg = BreakerConfig { half_open_probes: probes, ..BreakerConfig::default() };
            let mut b = Breaker::new(cfg, seed).unwrap();
            let mut now = t0();
            let mut probes_out = 0u32;
            for (op, dt_ms) in ops {
                now += Duration::from_millis(dt_ms);
                let before = b.inner;
                let ts: Vec<Transition> = match op {
                    Op::Allow => {
                        let a = b.allow(now);
                        if a.allowed && matches!(b.inner, Inner::HalfOpen { .. }) {
                            probes_out += 1;
                        }
                        a.transition.into_iter().collect()
                    }
                    Op::Record(o, e) => b.record(o, now, e).into_iter().collect(),
                    Op::Trip(c) => b.trip_now(c, now).iter().collect(),
                    Op::Poll => b.poll(now).into_iter().collect(),
                };
                for t in &ts {
                    prop_assert!(legal(t), "illegal {:?} from {:?}", t, before);
                }
                if let Inner::HalfOpen { in_flight, .. } = b.inner {
                    prop_assert!(in_flight <= probes);
                } else {
                    probes_out = 0;
                }
                if let Some(d) = b.remaining_open(now) {
                    prop_assert!(d <= Duration::from_secs(60));
                    prop_assert_eq!(kind(b.state(now)), StateKind::Open);
                }
            }
            let _ = probes_out;
        }

        #[test]
        fn prop_closed_breaker_without_cap_never_trips(
            outcomes in proptest::collection::vec(0u8..6, 1..200),
        ) {
            let mut b = Breaker::new(BreakerConfig::default(), 1).unwrap();
            let now = t0();
            for o in outcomes {
                let o = [Outcome::Success, Outcome::ConnectError, Outcome::Reset,
                         Outcome::ServerError5xx, Outcome::FirstByteTimeout,
                         Outcome::NotCounted][o as usize];
                prop_assert_eq!(b.record(o, now, false), None);
            }
            prop_assert_eq!(b.state(now), BreakerState::Closed);
        }
    }
}
