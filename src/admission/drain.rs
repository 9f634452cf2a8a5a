//! How fast the fleet drains the queue, and what that means for a waiting
//! request (predicted wait) and a refused one (`Retry-After`).
//!
//! ## The estimator
//!
//! Completions per second as an exponentially decaying event rate with time
//! constant `tau`: each completion adds `1/tau`, and the sum decays by
//! `e^(-dt/tau)`. Unlike counting per fixed tick, it needs no timer, it
//! decays by itself when completions stop (a fleet that stopped draining
//! must predict long waits, not the last good rate), and it is exact for
//! any spacing of events.
//!
//! A fresh estimator knows nothing; until `tau` or so of history exists, the
//! missing part is filled with `prior_rate` (weighted `e^(-age/tau)`), so the
//! first seconds after start neither promise instant service nor refuse
//! everything.
//!
//! ## Retry-After
//!
//! The rate feeds both the queue's admission prediction and the `Retry-After`
//! of a busy fleet; both are computed in [`super::retry_after`], so a
//! prediction and a refusal never disagree on how fast the queue drains.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::retry_after::{queue_wait, DEFAULT_CAP};

// === Config ===

/// Estimator parameters, validated in [`DrainEstimator::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct DrainConfig {
    /// Time constant of the rate. Default 10 s: several LLM request
    /// durations, so one slow request does not swing it, short enough to
    /// follow a backend joining or leaving.
    pub tau: Duration,
    /// Completions per second assumed before there is history. Default 1.0:
    /// a modest fleet; errs towards admitting (short queues drain anyway).
    pub prior_rate: f64,
    /// Largest `Retry-After`, seconds, of every refusal (the cap of
    /// [`super::retry_after::RetryAfter`]). Default 60
    /// ([`super::retry_after::DEFAULT_CAP`]).
    pub max_retry_after: u32,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            tau: Duration::from_secs(10),
            prior_rate: 1.0,
            max_retry_after: DEFAULT_CAP,
        }
    }
}

/// A configuration value that cannot work; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDrainConfig(pub String);

impl fmt::Display for InvalidDrainConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidDrainConfig {}

impl DrainConfig {
    /// Checks every field; the error names the first bad one and its value.
    pub fn validate(&self) -> Result<(), InvalidDrainConfig> {
        let bad = |field: &str, value: String, why: &str| {
            Err(InvalidDrainConfig(format!(
                "drain.{field} = {value} is not valid: {why}"
            )))
        };
        if self.tau < Duration::from_millis(100) {
            return bad("tau", format!("{:?}", self.tau), "must be at least 100ms");
        }
        if !(self.prior_rate > 0.0 && self.prior_rate.is_finite()) {
            return bad(
                "prior_rate",
                self.prior_rate.to_string(),
                "must be a finite number > 0",
            );
        }
        if self.max_retry_after == 0 {
            return bad("max_retry_after", "0".into(), "must be at least 1");
        }
        Ok(())
    }
}

/// A [`DrainConfig`] that passed [`DrainConfig::validate`]: what an
/// estimator is built from, so building one cannot fail.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainParams(DrainConfig);

impl DrainParams {
    pub fn new(cfg: DrainConfig) -> Result<Self, InvalidDrainConfig> {
        cfg.validate()?;
        Ok(Self(cfg))
    }

    pub fn config(&self) -> &DrainConfig {
        &self.0
    }
}

impl Default for DrainParams {
    /// The documented defaults (valid: `config` tests check them).
    fn default() -> Self {
        Self(DrainConfig::default())
    }
}

// === DrainEstimator ===

/// Completions-per-second estimate for the whole fleet.
#[derive(Debug, Clone)]
pub struct DrainEstimator {
    cfg: DrainConfig,
    /// Decayed sum, events per second, as of `last`.
    rate: f64,
    last: Option<Instant>,
    first: Option<Instant>,
}

// === impl DrainEstimator ===

impl DrainEstimator {
    /// An estimator with no history; checks `cfg` first (tests).
    pub fn new(cfg: DrainConfig) -> Result<Self, InvalidDrainConfig> {
        Ok(Self::with_params(DrainParams::new(cfg)?))
    }

    /// An estimator with no history, from checked parameters.
    pub fn with_params(params: DrainParams) -> Self {
        Self {
            cfg: params.0,
            rate: 0.0,
            last: None,
            first: None,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &DrainConfig {
        &self.cfg
    }

    /// A request completed (any outcome that freed a slot).
    pub fn on_complete(&mut self, now: Instant) {
        let tau = self.cfg.tau.as_secs_f64();
        self.rate = self.decayed(now) + 1.0 / tau;
        self.first.get_or_insert(now);
        // Keep the latest instant even if calls arrive slightly out of order.
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
    }

    /// Estimated completions per second at `now`.
    pub fn rate(&self, now: Instant) -> f64 {
        let tau = self.cfg.tau.as_secs_f64();
        let age = self
            .first
            .map_or(0.0, |f| now.saturating_duration_since(f).as_secs_f64());
        self.decayed(now) + self.cfg.prior_rate * (-age / tau).exp()
    }

    /// Predicted wait for the entry at `queue_position` (0 = next to be
    /// served): the time for `position + 1` completions, at most an hour.
    pub fn predicted_wait(&self, queue_position: usize, now: Instant) -> Duration {
        queue_wait(queue_position, self.rate(now))
    }

    fn decayed(&self, now: Instant) -> f64 {
        match self.last {
            None => 0.0,
            Some(last) => {
                let dt = now.saturating_duration_since(last).as_secs_f64();
                self.rate * (-dt / self.cfg.tau.as_secs_f64()).exp()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::retry_after::{RetryAfter, MAX_PREDICTION};
    use proptest::prelude::*;

    fn est() -> DrainEstimator {
        DrainEstimator::new(DrainConfig::default()).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn invalid_config_names_field_and_value() {
        let err = DrainEstimator::new(DrainConfig {
            prior_rate: -1.0,
            ..DrainConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "drain.prior_rate = -1 is not valid: must be a finite number > 0"
        );
        assert!(DrainEstimator::new(DrainConfig {
            max_retry_after: 0,
            ..DrainConfig::default()
        })
        .is_err());
    }

    #[test]
    fn prior_before_history() {
        let t = Instant::now();
        let e = est();
        assert!((e.rate(t) - 1.0).abs() < 1e-9);
        assert_eq!(e.predicted_wait(0, t), Duration::from_secs(1));
        assert_eq!(e.predicted_wait(9, t), Duration::from_secs(10));
    }

    #[test]
    fn converges_to_the_steady_rate() {
        let t = Instant::now();
        let mut e = est();
        // 8 completions per second for 60 s.
        for i in 0..480u64 {
            e.on_complete(t + ms(125 * i));
        }
        let now = t + ms(60_000);
        let r = e.rate(now);
        assert!((r - 8.0).abs() < 0.5, "rate {r}");
        let w = e.predicted_wait(79, now).as_secs_f64();
        assert!((w - 10.0).abs() < 1.0, "wait {w}");
        assert!((10..=11).contains(
            &RetryAfter::default()
                .busy(80, e.rate(now))
                .secs_rounded_up()
        ));
    }

    #[test]
    fn rate_decays_when_completions_stop() {
        let t = Instant::now();
        let mut e = est();
        for i in 0..480u64 {
            e.on_complete(t + ms(125 * i));
        }
        let later = t + Duration::from_secs(120);
        assert!(e.rate(later) < 0.05);
        let r = RetryAfter::default()
            .busy(10, e.rate(later))
            .secs_rounded_up();
        assert_eq!(r, 60, "clamped to max");
    }

    #[test]
    fn retry_after_of_an_idle_prior_is_one_second() {
        let t = Instant::now();
        assert_eq!(
            RetryAfter::default()
                .busy(0, est().rate(t))
                .secs_rounded_up(),
            1
        );
    }

    proptest! {
        #[test]
        fn prop_never_panics_and_stays_clamped(
            gaps in proptest::collection::vec(0u64..10_000, 0..200),
            probe_ms in 0u64..1_000_000,
            qlen in 0usize..100_000,
            max in 0u32..1000,
        ) {
            let t = Instant::now();
            let mut e = DrainEstimator::new(DrainConfig { max_retry_after: max.max(1), ..DrainConfig::default() }).unwrap();
            let mut now = t;
            for g in gaps {
                now += ms(g);
                e.on_complete(now);
            }
            let probe = t + ms(probe_ms);
            let r = RetryAfter::new(max).busy(qlen, e.rate(probe)).secs_rounded_up();
            prop_assert!(r >= 1 && r <= max.max(1));
            prop_assert!(e.predicted_wait(qlen, probe) <= MAX_PREDICTION);
            prop_assert!(e.rate(probe).is_finite() && e.rate(probe) >= 0.0);
        }
    }
}
