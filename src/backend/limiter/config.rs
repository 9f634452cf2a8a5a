//! The limiter's parameters and their validation.

use std::fmt;
use std::time::Duration;

/// Limiter parameters, validated in [`AimdLimiter::new`](super::AimdLimiter::new).
#[derive(Debug, Clone, PartialEq)]
pub struct LimiterConfig {
    /// Requests allowed beyond the slot count. Default 2: enough to hide the
    /// round trip between a slot freeing and the next request arriving, few
    /// enough that what waits inside llama-server is short.
    pub lookahead: u32,
    /// Factor on a queueing signal, in (0, 1). Default 0.9: gentle, as the
    /// signal is often one stale reading.
    pub decrease_factor: f64,
    /// Factor on a timeout or reset, in (0, 1). Default 0.5.
    pub severe_decrease_factor: f64,
    /// Additive increase. Default 1.0 (one request).
    pub increase_step: f64,
    /// Deferred requests tolerated before it counts as queueing. Default 0:
    /// any request waiting inside llama-server is bound to it and cannot be
    /// reordered or expired; the scenario test measured 0.31 mean deferred
    /// with 0 and the limit still settling at or above `slots`.
    pub deferred_allowance: u32,
    /// In-server wait (time before the first slot work, from `timings`)
    /// above which a response counts as queueing. Default 500 ms: a prompt
    /// that waited half a second for a slot waited for someone else.
    pub wait_threshold: Duration,
    /// Per-token time above this multiple of the baseline counts as
    /// queueing, > 1. Default 3.0: batching alone costs well under 2×.
    pub per_token_ratio: f64,
    /// EWMA weight of a new request duration, in (0, 1]. Default 0.2 (about
    /// the last five requests).
    pub duration_alpha: f64,
    /// Request duration assumed before any was observed. Default 2 s.
    pub initial_duration: Duration,
    /// Floor of the change gate. Default 1 s: two scrape intervals of 500 ms,
    /// so one stale reading cannot be acted on twice.
    pub min_change_interval: Duration,
    /// Cap of the change gate. Default 15 s: long generations must not
    /// freeze the limit for minutes.
    pub max_change_interval: Duration,
    /// A scrape older than this is not evidence that nothing is deferred,
    /// so the limit does not grow on it. Default 5 s (ten 500 ms intervals).
    pub scrape_stale_after: Duration,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            lookahead: 2,
            decrease_factor: 0.9,
            severe_decrease_factor: 0.5,
            increase_step: 1.0,
            deferred_allowance: 0,
            wait_threshold: Duration::from_millis(500),
            per_token_ratio: 3.0,
            duration_alpha: 0.2,
            initial_duration: Duration::from_secs(2),
            min_change_interval: Duration::from_secs(1),
            max_change_interval: Duration::from_secs(15),
            scrape_stale_after: Duration::from_secs(5),
        }
    }
}

/// A configuration value that cannot work; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLimiterConfig(pub String);

impl fmt::Display for InvalidLimiterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidLimiterConfig {}

impl LimiterConfig {
    /// Checks every field; the error names the first bad one and its value.
    pub fn validate(&self) -> Result<(), InvalidLimiterConfig> {
        let bad = |field: &str, value: String, why: &str| {
            Err(InvalidLimiterConfig(format!(
                "limiter.{field} = {value} is not valid: {why}"
            )))
        };
        let unit_open = |x: f64| x > 0.0 && x < 1.0;
        if self.lookahead > 1024 {
            return bad(
                "lookahead",
                self.lookahead.to_string(),
                "must be at most 1024",
            );
        }
        if !unit_open(self.decrease_factor) {
            return bad(
                "decrease_factor",
                self.decrease_factor.to_string(),
                "must be in (0, 1)",
            );
        }
        if !unit_open(self.severe_decrease_factor) {
            return bad(
                "severe_decrease_factor",
                self.severe_decrease_factor.to_string(),
                "must be in (0, 1)",
            );
        }
        if !(self.increase_step > 0.0 && self.increase_step <= 1024.0) {
            return bad(
                "increase_step",
                self.increase_step.to_string(),
                "must be in (0, 1024]",
            );
        }
        if !(self.per_token_ratio > 1.0 && self.per_token_ratio.is_finite()) {
            return bad(
                "per_token_ratio",
                self.per_token_ratio.to_string(),
                "must be a finite number > 1",
            );
        }
        if !(self.duration_alpha > 0.0 && self.duration_alpha <= 1.0) {
            return bad(
                "duration_alpha",
                self.duration_alpha.to_string(),
                "must be in (0, 1]",
            );
        }
        if self.min_change_interval.is_zero() {
            return bad("min_change_interval", "0s".into(), "must be positive");
        }
        if self.max_change_interval < self.min_change_interval {
            return bad(
                "max_change_interval",
                format!("{:?}", self.max_change_interval),
                "must not be less than min_change_interval",
            );
        }
        if self.scrape_stale_after.is_zero() {
            return bad("scrape_stale_after", "0s".into(), "must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::limiter::AimdLimiter;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn invalid_config_names_field_and_value() {
        let cfg = LimiterConfig {
            decrease_factor: 1.5,
            ..LimiterConfig::default()
        };
        assert_eq!(
            AimdLimiter::new(cfg, 4).unwrap_err().to_string(),
            "limiter.decrease_factor = 1.5 is not valid: must be in (0, 1)"
        );
        let cfg = LimiterConfig {
            max_change_interval: ms(10),
            ..LimiterConfig::default()
        };
        assert!(AimdLimiter::new(cfg, 4)
            .unwrap_err()
            .0
            .starts_with("limiter.max_change_interval"));
        let cfg = LimiterConfig {
            per_token_ratio: f64::NAN,
            ..LimiterConfig::default()
        };
        assert!(AimdLimiter::new(cfg, 4).is_err());
    }
}
