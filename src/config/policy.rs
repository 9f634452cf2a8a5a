//! `[breaker]` and `[limiter]`: every backend's policy settings.
//!
//! The structs are the policy modules' own, and so are their checks; they
//! are called here, once, so the backend layer receives values that work.

use super::file::{FileBreaker, FileLimiter};
use super::problems::Problems;
use crate::backend::breaker::BreakerConfig;
use crate::backend::limiter::LimiterConfig;
use crate::backend::spec::PolicyParams;

pub(crate) fn validate(b: &FileBreaker, l: &FileLimiter, p: &mut Problems) -> PolicyParams {
    let defaults = PolicyParams::default();
    let bd = BreakerConfig::default();
    let breaker = BreakerConfig {
        consecutive_failures: p.int(
            "breaker.consecutive_failures",
            b.consecutive_failures,
            1,
            1000,
            i64::from(bd.consecutive_failures),
        ) as u32,
        failure_rate: p.fraction(
            "breaker.failure_rate",
            b.failure_rate,
            true,
            bd.failure_rate,
        ),
        window: p.duration("breaker.window", b.window.as_deref(), bd.window),
        min_requests: p.int(
            "breaker.min_requests",
            b.min_requests,
            1,
            100_000,
            i64::from(bd.min_requests),
        ) as u32,
        base_backoff: p.duration(
            "breaker.base_backoff",
            b.base_backoff.as_deref(),
            bd.base_backoff,
        ),
        max_backoff: p.duration(
            "breaker.max_backoff",
            b.max_backoff.as_deref(),
            bd.max_backoff,
        ),
        half_open_probes: p.int(
            "breaker.half_open_probes",
            b.half_open_probes,
            1,
            1000,
            i64::from(bd.half_open_probes),
        ) as u32,
        successes_to_close: p.int(
            "breaker.successes_to_close",
            b.successes_to_close,
            1,
            1000,
            i64::from(bd.successes_to_close),
        ) as u32,
        max_ejected_share: p.fraction(
            "breaker.max_ejected_share",
            b.max_ejected_share,
            true,
            bd.max_ejected_share,
        ),
        ..bd
    };
    if let Err(e) = breaker.validate() {
        p.rejected("breaker", e);
    }

    let ld = LimiterConfig::default();
    let limiter = LimiterConfig {
        lookahead: p.int(
            "limiter.lookahead",
            l.lookahead,
            0,
            1000,
            i64::from(defaults.limiter.lookahead),
        ) as u32,
        deferred_allowance: p.int(
            "limiter.deferred_allowance",
            l.deferred_allowance,
            0,
            1000,
            i64::from(ld.deferred_allowance),
        ) as u32,
        decrease_factor: match l.decrease_factor {
            None => ld.decrease_factor,
            Some(v) if v > 0.0 && v < 1.0 => v,
            Some(v) => {
                p.invalid("limiter.decrease_factor", v, "must be in (0, 1)");
                ld.decrease_factor
            }
        },
        min_change_interval: p.duration(
            "limiter.min_change_interval",
            l.min_change_interval.as_deref(),
            ld.min_change_interval,
        ),
        ..ld
    };
    if let Err(e) = limiter.validate() {
        p.rejected("limiter", e);
    }

    PolicyParams {
        breaker,
        limiter,
        adaptive: l.enabled.unwrap_or(true),
    }
}
