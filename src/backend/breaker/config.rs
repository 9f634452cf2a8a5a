//! The breaker's parameters and their validation.

use std::fmt;
use std::time::Duration;

use super::window::WINDOW_BUCKETS;

/// Breaker parameters. Build with [`BreakerConfig::default`] and adjust; the
/// breaker validates them in [`Breaker::new`](super::Breaker::new).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker. Default 5: a dead backend
    /// is found after five requests, while a single timeout or reset (which
    /// happens to healthy servers) is not enough.
    pub consecutive_failures: u32,
    /// Failure share over `window` that opens the breaker, in (0, 1].
    /// Default 0.5: a backend failing half its requests is worse than waiting
    /// for another one; lower values eject backends for noise.
    pub failure_rate: f64,
    /// Length of the sliding window for the failure rate. Default 30 s: LLM
    /// requests last seconds, so a shorter window holds too few outcomes.
    pub window: Duration,
    /// Outcomes needed in the window before the rate may trip. Default 10:
    /// below that, a rate of 0.5 is two or three unlucky requests.
    pub min_requests: u32,
    /// First open period. Default 2 s: long enough that a restarting
    /// llama-server is not hammered, short enough that a blip costs little.
    pub base_backoff: Duration,
    /// Growth of the open period on each re-open. Default 2.0 (exponential).
    pub backoff_multiplier: f64,
    /// Cap on the open period. Default 60 s: a model load takes tens of
    /// seconds; probing less often than once a minute wastes a recovered
    /// backend for too long.
    pub max_backoff: Duration,
    /// Relative jitter on the open period, in [0, 1). Default 0.2 (±20 %),
    /// enough to spread probes of backends that failed together.
    pub jitter: f64,
    /// Closed time after which the backoff level resets. Default 60 s: a
    /// backend that served for a minute is healthy again, its next failure
    /// starts from `base_backoff`.
    pub healthy_period: Duration,
    /// Requests admitted at once in half-open. Default 2: one probe can be
    /// unlucky (a long generation); more would hit a sick backend with load.
    pub half_open_probes: u32,
    /// Probe successes that close the breaker. Default 2.
    pub successes_to_close: u32,
    /// A probe that has not reported after this long gives its slot back, so
    /// a lost outcome cannot wedge the breaker in half-open. Default 300 s,
    /// longer than any sane generation.
    pub probe_timeout: Duration,
    /// Largest share of the fleet that statistical trips may hold open, in
    /// (0, 1]. Default 0.5: see "The fleet ejection cap" above.
    pub max_ejected_share: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(30),
            min_requests: 10,
            base_backoff: Duration::from_secs(2),
            backoff_multiplier: 2.0,
            max_backoff: Duration::from_secs(60),
            jitter: 0.2,
            healthy_period: Duration::from_secs(60),
            half_open_probes: 2,
            successes_to_close: 2,
            probe_timeout: Duration::from_secs(300),
            max_ejected_share: 0.5,
        }
    }
}

/// A configuration value that cannot work; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidBreakerConfig(pub String);

impl fmt::Display for InvalidBreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidBreakerConfig {}

impl BreakerConfig {
    /// Checks every field; the error names the first bad one and its value.
    pub fn validate(&self) -> Result<(), InvalidBreakerConfig> {
        let bad = |field: &str, value: String, why: &str| {
            Err(InvalidBreakerConfig(format!(
                "breaker.{field} = {value} is not valid: {why}"
            )))
        };
        if self.consecutive_failures == 0 {
            return bad("consecutive_failures", "0".into(), "must be at least 1");
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return bad(
                "failure_rate",
                self.failure_rate.to_string(),
                "must be in (0, 1]",
            );
        }
        if self.window < Duration::from_millis(WINDOW_BUCKETS as u64) {
            return bad(
                "window",
                format!("{:?}", self.window),
                "must be at least 10ms",
            );
        }
        if self.min_requests == 0 {
            return bad("min_requests", "0".into(), "must be at least 1");
        }
        if self.base_backoff.is_zero() {
            return bad("base_backoff", "0s".into(), "must be positive");
        }
        if !(self.backoff_multiplier >= 1.0 && self.backoff_multiplier.is_finite()) {
            return bad(
                "backoff_multiplier",
                self.backoff_multiplier.to_string(),
                "must be a finite number ≥ 1",
            );
        }
        if self.max_backoff < self.base_backoff {
            return bad(
                "max_backoff",
                format!("{:?}", self.max_backoff),
                "must not be less than base_backoff",
            );
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return bad("jitter", self.jitter.to_string(), "must be in [0, 1)");
        }
        if self.half_open_probes == 0 {
            return bad("half_open_probes", "0".into(), "must be at least 1");
        }
        if self.successes_to_close == 0 {
            return bad("successes_to_close", "0".into(), "must be at least 1");
        }
        if self.probe_timeout.is_zero() {
            return bad("probe_timeout", "0s".into(), "must be positive");
        }
        if !(self.max_ejected_share > 0.0 && self.max_ejected_share <= 1.0) {
            return bad(
                "max_ejected_share",
                self.max_ejected_share.to_string(),
                "must be in (0, 1]",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::breaker::Breaker;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_config_is_valid() {
        BreakerConfig::default().validate().unwrap();
    }

    #[test]
    fn invalid_config_names_field_and_value() {
        let cfg = BreakerConfig {
            failure_rate: 1.5,
            ..BreakerConfig::default()
        };
        let err = Breaker::new(cfg, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "breaker.failure_rate = 1.5 is not valid: must be in (0, 1]"
        );
        let cfg = BreakerConfig {
            max_backoff: secs(1),
            base_backoff: secs(2),
            ..BreakerConfig::default()
        };
        assert!(Breaker::new(cfg, 0)
            .unwrap_err()
            .0
            .starts_with("breaker.max_backoff"));
        let cfg = BreakerConfig {
            jitter: 1.0,
            ..BreakerConfig::default()
        };
        assert!(Breaker::new(cfg, 0).unwrap_err().0.contains("jitter"));
    }
}
