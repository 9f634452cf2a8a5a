//! The per-token baseline: the backend's normal generation time per token.
//!
//! Per-token time grows with batch size (more busy slots), which is not
//! queueing. The baseline follows lower samples fast and higher ones slowly,
//! so it tracks the backend's normal time under its normal load; only a
//! sample far above it (default 3×, `per_token_ratio`) counts as a signal.
//! This is a different quantity from the request-duration average the change
//! gate uses: per token, asymmetric, and learned from generations only.

/// Samples needed before the per-token baseline is trusted.
const BASELINE_MIN_SAMPLES: u32 = 5;
/// Weight of a sample below the baseline (follow improvements fast).
const BASELINE_ALPHA_DOWN: f64 = 0.3;
/// Weight of a sample above the baseline (follow degradation slowly, so a
/// congested episode does not become the new normal within seconds).
const BASELINE_ALPHA_UP: f64 = 0.02;

/// Asymmetric average of per-token times, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Baseline {
    per_token: f64,
    samples: u32,
}

impl Baseline {
    /// Whether `pt` (seconds per token) is more than `ratio` × a trusted
    /// baseline.
    pub(super) fn exceeded_by(&self, pt: f64, ratio: f64) -> bool {
        self.samples >= BASELINE_MIN_SAMPLES && pt > ratio * self.per_token
    }

    /// Learns one sample; non-finite or negative ones are ignored.
    pub(super) fn update(&mut self, pt: f64) {
        if !pt.is_finite() || pt < 0.0 {
            return;
        }
        if self.samples == 0 {
            self.per_token = pt;
        } else {
            let alpha = if pt < self.per_token {
                BASELINE_ALPHA_DOWN
            } else {
                BASELINE_ALPHA_UP
            };
            self.per_token += alpha * (pt - self.per_token);
        }
        self.samples = self.samples.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_until_enough_samples_then_follows_down_fast_up_slowly() {
        let mut b = Baseline::default();
        for _ in 0..4 {
            b.update(0.02);
        }
        assert!(!b.exceeded_by(1.0, 3.0), "4 samples are not trusted");
        b.update(0.02);
        assert!(!b.exceeded_by(0.05, 3.0));
        assert!(b.exceeded_by(0.09, 3.0));
        b.update(0.2);
        assert!(b.per_token < 0.03, "one high sample barely moves it");
        b.update(0.0);
        assert!(b.per_token < 0.02, "a low sample moves it fast");
        b.update(f64::NAN);
        assert_eq!(b.samples, 7);
    }
}
