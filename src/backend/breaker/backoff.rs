//! The open period: exponential in the number of re-opens since the last
//! healthy period, capped, with deterministic jitter (see "Backoff" in the
//! breaker's module docs).

use std::time::Duration;

use super::BreakerConfig;

/// Re-open level and the jitter generator of one breaker.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    /// Open periods since the last healthy period.
    level: u32,
    /// SplitMix64 state: pure and reproducible, seeded per backend.
    rng: u64,
}

impl Backoff {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            level: 0,
            rng: seed,
        }
    }

    /// The backend was healthy long enough: the next open starts from the base.
    pub(super) fn reset(&mut self) {
        self.level = 0;
    }

    /// The next open period: base × multiplier^level, capped, then ± jitter
    /// (and capped again). Raises the level.
    pub(super) fn next(&mut self, cfg: &BreakerConfig) -> Duration {
        let base = cfg.base_backoff.as_secs_f64();
        let max = cfg.max_backoff.as_secs_f64();
        let exp = i32::try_from(self.level.min(1024)).unwrap_or(1024);
        self.level = self.level.saturating_add(1);
        let raw = (base * cfg.backoff_multiplier.powi(exp)).min(max);
        let u = self.next_unit();
        let jittered = raw * (1.0 + cfg.jitter * (2.0 * u - 1.0));
        Duration::try_from_secs_f64(jittered.clamp(0.0, max)).unwrap_or(cfg.max_backoff)
    }

    /// SplitMix64 step mapped to [0, 1).
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> BreakerConfig {
        BreakerConfig {
            jitter: 0.0,
            ..BreakerConfig::default()
        }
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let cfg = no_jitter();
        let mut b = Backoff::new(1);
        let got: Vec<u64> = (0..7).map(|_| b.next(&cfg).as_secs()).collect();
        assert_eq!(got, [2, 4, 8, 16, 32, 60, 60]);
        b.reset();
        assert_eq!(b.next(&cfg), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let cfg = BreakerConfig::default();
        for seed in 0..50 {
            let d = Backoff::new(seed).next(&cfg);
            assert!(d >= Duration::from_millis(1600) && d <= Duration::from_millis(2400));
        }
    }
}
