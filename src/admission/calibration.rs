//! How far the queue's wait predictions fall short of what the fleet does
//! now: the ratio of the actual wait to the predicted one over the latest
//! queued entries, whose upper quantile scales the prediction an arrival's
//! deadline is judged by (issue 13, queue timeouts when the servers' speed
//! drifts).
//!
//! ## Why
//!
//! The predictions ([`super::predict`], [`super::schedule`]) are learnt from
//! durations and the drain rate, which follow the fleet over tens of
//! seconds. A server that slows by a third within minutes (measured on two
//! real llama-servers sharing a machine) makes every prediction short by
//! about that much until they catch up, and entries admitted close to their
//! budget wait it out and are refused at its end: slow 503s, where an
//! arrival told at once could have gone elsewhere. What the predictions
//! missed by is known sooner: each served entry shows it.
//!
//! ## The rule
//!
//! Each entry leaving the queue gives `actual ÷ predicted` (one that waited
//! out its budget gives its budget ÷ predicted, a lower bound). Only
//! entries predicted to wait at least a floor (half a typical request
//! duration: the gate passes it in) count: a wait predicted at a few
//! milliseconds misses by a large ratio and by nothing that matters. The
//! margin is the [`QUANTILE`] of the last [`WINDOW`] ratios, at least 1 (a
//! fleet faster than predicted is left to the predictions themselves: the
//! standing bound and the queue's depth rest on them) and at most
//! [`MAX_MARGIN`]; 1 until [`MIN_SAMPLES`] are known. An arrival is queued
//! only if its predicted wait times the margin fits its budget.
//!
//! Pure: no clock, no locks; the gate keeps one under its queue lock.

use std::collections::VecDeque;
use std::time::Duration;

/// How many of the latest ratios count: at a few completions a second, the
/// last ten to twenty seconds, so a drift is followed within one.
pub const WINDOW: usize = 64;
/// The share of the latest entries whose wait the margin covers.
pub const QUANTILE: f64 = 0.9;
/// No margin before this many ratios are known.
pub const MIN_SAMPLES: usize = 8;
/// The margin never exceeds this: a stalled fleet's ratios would otherwise
/// refuse every arrival until the window turned over.
pub const MAX_MARGIN: f64 = 3.0;

/// The latest ratios of actual to predicted waits. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct WaitCalibration {
    /// Oldest first, at most [`WINDOW`].
    ratios: VecDeque<f64>,
    /// [`WaitCalibration::margin`], kept current as ratios come in.
    margin: Option<f64>,
}

// === impl WaitCalibration ===

impl WaitCalibration {
    /// An entry left the queue after `waited`, predicted to wait
    /// `predicted`; it counts if that was at least `floor`. An entry that
    /// waited out its budget passes the budget as `waited`.
    pub fn observe(&mut self, predicted: Duration, waited: Duration, floor: Duration) {
        if predicted.is_zero() || predicted < floor {
            return;
        }
        let ratio = waited.as_secs_f64() / predicted.as_secs_f64();
        if !ratio.is_finite() {
            return;
        }
        if self.ratios.len() == WINDOW {
            self.ratios.pop_front();
        }
        self.ratios.push_back(ratio);
        self.margin = self.quantile();
    }

    /// What a prediction is multiplied by before it is held against a
    /// budget: in `[1, MAX_MARGIN]`.
    pub fn margin(&self) -> f64 {
        self.margin.unwrap_or(1.0)
    }

    /// `predicted` scaled by the margin.
    pub fn scale(&self, predicted: Duration) -> Duration {
        predicted.mul_f64(self.margin())
    }

    /// Ratios known.
    pub fn len(&self) -> usize {
        self.ratios.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.ratios.is_empty()
    }

    fn quantile(&self) -> Option<f64> {
        if self.ratios.len() < MIN_SAMPLES {
            return None;
        }
        let mut sorted: Vec<f64> = self.ratios.iter().copied().collect();
        sorted.sort_unstable_by(f64::total_cmp);
        let i = ((sorted.len() as f64 * QUANTILE).ceil() as usize).clamp(1, sorted.len()) - 1;
        Some(sorted[i].clamp(1.0, MAX_MARGIN))
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
    fn predictions_that_hold_leave_them_alone() {
        let mut c = WaitCalibration::default();
        assert_eq!(c.margin(), 1.0);
        for i in 0..WINDOW as u64 {
            // At or a little under the prediction, as on a steady fleet
            // (the predictions lean to the cautious side).
            c.observe(ms(800), ms(740 + i % 7 * 10), ms(200));
        }
        assert!(c.margin() <= 1.0 + 1e-9, "{}", c.margin());
        assert_eq!(c.scale(ms(800)), ms(800));
    }

    #[test]
    fn a_fleet_slower_than_predicted_raises_the_margin_within_the_window() {
        let mut c = WaitCalibration::default();
        for _ in 0..WINDOW {
            c.observe(ms(800), ms(800), ms(200));
        }
        // The servers slow by a third: ten entries later (a sixth of the
        // window, past the quantile's tail) the margin has followed.
        for _ in 0..10 {
            c.observe(ms(600), ms(800), ms(200));
        }
        assert!((c.margin() - 800.0 / 600.0).abs() < 1e-9, "{}", c.margin());
        // An entry predicted at 900 ms is now judged at 1.2 s.
        assert_eq!(c.scale(ms(900)), ms(1200));
        // And back: once the window holds only the old speed again.
        for _ in 0..WINDOW {
            c.observe(ms(800), ms(800), ms(200));
        }
        assert_eq!(c.margin(), 1.0);
    }

    #[test]
    fn short_predictions_and_few_samples_do_not_count() {
        let mut c = WaitCalibration::default();
        for _ in 0..WINDOW {
            // Predicted 10 ms, taken at 60: below the floor.
            c.observe(ms(10), ms(60), ms(200));
            c.observe(Duration::ZERO, ms(60), Duration::ZERO);
        }
        assert!(c.is_empty());
        for _ in 0..MIN_SAMPLES - 1 {
            c.observe(ms(400), ms(1100), ms(200));
        }
        assert_eq!(c.margin(), 1.0, "not yet {MIN_SAMPLES} samples");
        c.observe(ms(400), ms(1100), ms(200));
        assert!((c.margin() - 2.75).abs() < 1e-9, "{}", c.margin());
        assert_eq!(c.len(), MIN_SAMPLES);
    }

    #[test]
    fn a_stalled_fleet_is_capped() {
        let mut c = WaitCalibration::default();
        for _ in 0..WINDOW {
            c.observe(ms(300), ms(30_000), ms(200));
        }
        assert_eq!(c.margin(), MAX_MARGIN);
    }

    proptest! {
        #[test]
        fn prop_margin_bounded(
            obs in proptest::collection::vec((0u64..10_000, 0u64..100_000), 0..200),
            floor in 0u64..1_000,
        ) {
            let mut c = WaitCalibration::default();
            for (p, w) in obs {
                c.observe(ms(p), ms(w), ms(floor));
                prop_assert!(c.len() <= WINDOW);
                prop_assert!((1.0..=MAX_MARGIN).contains(&c.margin()));
            }
        }
    }
}
