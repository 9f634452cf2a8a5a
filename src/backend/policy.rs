//! One backend's adaptive policy: its circuit breaker and its AIMD limit,
//! fed by scrapes and request outcomes, with time passed in.
//!
//! ## Why combine them here
//!
//! The two react to the same events and must agree: a breaker that closes
//! after an outage restarts the limit in slow start; a scrape that finds the
//! backend refusing connections or loading trips the breaker; a timeout
//! counts against the breaker *and* halves the limit. Keeping both behind one
//! lock keeps that ordering simple. No clock reads, no I/O: the caller
//! passes `now` and publishes [`PolicyView`] for the request path.
//!
//! ## One home for each fact
//!
//! The breaker's state lives in the [`Breaker`]; the published view holds a
//! copy that every reader resolves through [`PolicyView::breaker`] with its
//! own `now`, so an open period that ran out reads as half-open everywhere
//! at once (admission, `/status`, metrics, `Retry-After`), whether or not a
//! scrape or a request has moved the breaker on yet. In-flight lives in the
//! backend's atomic count only: the limiter is handed it at each decision.

use tokio::time::Instant;

use super::breaker::{
    Breaker, BreakerConfig, BreakerState, Outcome, Transition, TransitionCause, TripCause,
};
use super::limiter::{AimdLimiter, LimitChange, LimiterConfig, ResponseSample};
use super::observed::{DownCause, Health, Observed};

/// What a policy event changed, for metrics and logs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effects {
    pub transitions: Vec<Transition>,
    pub limit_change: Option<LimitChange>,
}

/// What the request path needs to know.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyView {
    /// The adaptive limit, once the slot count is known (and AIMD is on).
    pub limit: Option<u32>,
    /// The breaker as last published: private, because an `Open` here may
    /// have run out since. Read it through [`PolicyView::breaker`].
    breaker: BreakerState,
}

impl PolicyView {
    /// The breaker's state at `now`: an open period that has ended reads as
    /// half-open (the next request or scrape moves the breaker there), so
    /// every reader gets the same answer without comparing times itself.
    pub fn breaker(&self, now: Instant) -> BreakerState {
        match self.breaker {
            BreakerState::Open { until } if now >= until => BreakerState::HalfOpen,
            s => s,
        }
    }

    /// Time left in the open period at `now`; `None` unless open.
    pub fn remaining_open(&self, now: Instant) -> Option<std::time::Duration> {
        match self.breaker(now) {
            BreakerState::Open { until } => Some(until.saturating_duration_since(now)),
            _ => None,
        }
    }
}

pub struct BackendPolicy {
    breaker: Breaker,
    limiter_cfg: LimiterConfig,
    adaptive: bool,
    limiter: Option<AimdLimiter>,
}

impl BackendPolicy {
    /// `seed` decorrelates the breaker's jitter between backends.
    pub fn new(breaker: BreakerConfig, limiter: LimiterConfig, adaptive: bool, seed: u64) -> Self {
        let breaker = Breaker::new(breaker.clone(), seed).unwrap_or_else(|_| {
            Breaker::new(BreakerConfig::default(), seed).expect("default breaker config is valid")
        });
        BackendPolicy {
            breaker,
            limiter_cfg: limiter,
            adaptive,
            limiter: None,
        }
    }

    /// The view to publish; needs no clock, as readers resolve the
    /// breaker's state with theirs ([`PolicyView::breaker`]).
    pub fn view(&self) -> PolicyView {
        PolicyView {
            limit: self.limiter.as_ref().map(AimdLimiter::limit),
            breaker: self.breaker.published(),
        }
    }

    /// May a request go there now? Takes a probe slot when half-open.
    pub fn admit(&mut self, now: Instant) -> (bool, Effects) {
        let a = self.breaker.allow(now);
        let mut fx = Effects::default();
        fx.transitions.extend(a.transition);
        (a.allowed, fx)
    }

    /// A dispatch raised this gateway's in-flight there to `in_flight`: the
    /// limiter's evidence that its limit is in use. (It keeps only that peak;
    /// the count itself lives in the backend and is passed to each decision.)
    pub fn on_in_flight(&mut self, in_flight: u32) {
        if let Some(l) = &mut self.limiter {
            l.on_dispatch(in_flight);
        }
    }

    /// A scrape round finished. `metrics_failed`: `/metrics` failed or was
    /// slow this round (saturation we cannot see in the gauges).
    /// `in_flight`: this gateway's requests there now.
    pub fn on_scrape(
        &mut self,
        obs: &Observed,
        metrics_failed: bool,
        in_flight: u32,
        now: Instant,
    ) -> Effects {
        let mut fx = Effects::default();
        fx.transitions.extend(self.breaker.poll(now));
        // "Loading model" is not a failure: eligibility already keeps work
        // away, and tripping would hold a freshly loaded server out for a
        // whole backoff after its /health turns 200.
        let trip = match &obs.health {
            Health::Loading => None,
            Health::Down(DownCause::Refused) => Some(TripCause::ConnectionRefused),
            Health::Down(_) => Some(TripCause::HealthUnavailable),
            Health::Ok | Health::Unknown => None,
        };
        if let Some(cause) = trip {
            fx.transitions
                .extend(self.breaker.trip_now(cause, now).iter());
        }
        if self.adaptive {
            if let (None, Some(slots)) = (&self.limiter, obs.slots) {
                self.limiter = AimdLimiter::new(self.limiter_cfg.clone(), slots).ok();
            }
        }
        if let Some(l) = &mut self.limiter {
            fx.limit_change = if metrics_failed && obs.health == Health::Ok {
                l.on_scrape_failed(in_flight, now)
            } else if let Some((load, _)) = &obs.load {
                l.on_scrape(
                    load.deferred,
                    load.processing,
                    obs.slots.unwrap_or(0),
                    in_flight,
                    now,
                )
            } else {
                None
            };
        }
        fx
    }

    /// A request to this backend ended. `may_eject` answers whether the
    /// fleet may lose one more backend to a statistical trip; `in_flight` is
    /// what stays in flight there without this request.
    pub fn on_outcome(
        &mut self,
        outcome: Outcome,
        sample: Option<ResponseSample>,
        may_eject: bool,
        in_flight: u32,
        now: Instant,
    ) -> Effects {
        let mut fx = Effects::default();
        if outcome == Outcome::ConnectError {
            fx.transitions.extend(
                self.breaker
                    .trip_now(TripCause::ConnectionRefused, now)
                    .iter(),
            );
        } else if let Some(t) = self.breaker.record(outcome, now, may_eject) {
            fx.transitions.push(t);
        }
        let closed = fx
            .transitions
            .iter()
            .any(|t| t.cause == TransitionCause::ProbesSucceeded);
        if let Some(l) = &mut self.limiter {
            fx.limit_change = if closed {
                l.on_breaker_closed(in_flight, now)
            } else if outcome.is_failure() {
                l.on_failure(outcome, in_flight, now)
            } else if let (Outcome::Success, Some(s)) = (outcome, sample) {
                l.on_response(s, in_flight, now)
            } else {
                None
            };
        }
        fx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::breaker::StateKind;
    use crate::backend::load::LoadSnapshot;
    use std::time::Duration;

    fn observed(health: Health, deferred: u32, now: Instant) -> Observed {
        Observed {
            health,
            slots: Some(4),
            load: Some((
                LoadSnapshot {
                    processing: 4,
                    deferred,
                    ..Default::default()
                },
                now,
            )),
            ..Default::default()
        }
    }

    fn policy() -> BackendPolicy {
        BackendPolicy::new(BreakerConfig::default(), LimiterConfig::default(), true, 1)
    }

    #[test]
    fn the_limit_starts_at_the_slot_count_once_known() {
        let mut p = policy();
        let t0 = Instant::now();
        assert_eq!(p.view().limit, None);
        p.on_scrape(&observed(Health::Ok, 0, t0), false, 0, t0);
        assert_eq!(p.view().limit, Some(4));
    }

    #[test]
    fn connection_refused_opens_then_probes_then_slow_start() {
        let mut p = policy();
        let t0 = Instant::now();
        p.on_scrape(&observed(Health::Ok, 0, t0), false, 0, t0);
        let fx = p.on_outcome(Outcome::ConnectError, None, true, 0, t0);
        assert_eq!(fx.transitions.last().unwrap().to, StateKind::Open);
        assert!(!p.admit(t0).0);
        let later = t0 + Duration::from_secs(5);
        let (ok, _) = p.admit(later);
        assert!(ok, "half-open admits a probe");
        let ok_sample = ResponseSample {
            latency: Duration::from_millis(100),
            ..Default::default()
        };
        p.on_outcome(Outcome::Success, Some(ok_sample), true, 0, later);
        assert!(p.admit(later).0);
        let fx = p.on_outcome(Outcome::Success, Some(ok_sample), true, 0, later);
        assert!(fx.transitions.iter().any(|t| t.to == StateKind::Closed));
        assert_eq!(p.view().breaker(later), BreakerState::Closed);
        assert_eq!(p.view().limit, Some(1), "slow start after closing");
    }

    #[test]
    fn the_view_reads_an_elapsed_open_period_as_half_open() {
        let mut p = policy();
        let t0 = Instant::now();
        p.on_outcome(Outcome::ConnectError, None, true, 0, t0);
        let v = p.view();
        let until = match v.breaker(t0) {
            BreakerState::Open { until } => until,
            s => panic!("{s:?}"),
        };
        assert_eq!(v.remaining_open(t0), Some(until - t0));
        // Nothing moved the breaker on, yet every reader sees half-open.
        assert_eq!(v.breaker(until), BreakerState::HalfOpen);
        assert_eq!(v.remaining_open(until), None);
        assert_eq!(p.view(), v);
    }

    #[test]
    fn refused_trips_as_refused_other_down_causes_as_unavailable() {
        use crate::backend::breaker::{TransitionCause, TripCause};
        let t0 = Instant::now();
        for (cause, trip) in [
            (DownCause::Refused, TripCause::ConnectionRefused),
            (DownCause::Timeout, TripCause::HealthUnavailable),
            (DownCause::Status(500), TripCause::HealthUnavailable),
            (DownCause::Other("tls".into()), TripCause::HealthUnavailable),
        ] {
            let mut p = policy();
            let fx = p.on_scrape(&observed(Health::Down(cause), 0, t0), false, 0, t0);
            assert_eq!(
                fx.transitions.last().unwrap().cause,
                TransitionCause::Tripped(trip)
            );
        }
    }

    #[test]
    fn loading_does_not_trip_but_down_does() {
        let mut p = policy();
        let t0 = Instant::now();
        let fx = p.on_scrape(&observed(Health::Loading, 0, t0), false, 0, t0);
        assert!(fx.transitions.is_empty());
        let fx = p.on_scrape(
            &observed(Health::Down(DownCause::Status(500)), 0, t0),
            false,
            0,
            t0,
        );
        assert_eq!(fx.transitions.last().unwrap().to, StateKind::Open);
    }

    #[test]
    fn deferred_shrinks_the_limit() {
        let mut p = policy();
        let t0 = Instant::now();
        p.on_scrape(&observed(Health::Ok, 0, t0), false, 0, t0);
        let t1 = t0 + Duration::from_secs(3);
        let fx = p.on_scrape(&observed(Health::Ok, 3, t1), false, 0, t1);
        assert!(fx.limit_change.is_some());
        assert_eq!(p.view().limit, Some(3));
    }
}
