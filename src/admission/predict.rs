//! The queue's wait prediction by work (issue 16): how long until the entry
//! at a place in the queue is taken, counting what the requests ahead of it
//! will ask of the fleet rather than how many they are.
//!
//! ## The rule
//!
//! The drain estimator ([`super::drain`]) measures completions per second
//! of the requests the fleet actually serves: requests of *typical* work.
//! A request ahead that asks for twice the typical work holds its slot
//! twice as long, so it counts as two typical completions; a short one
//! counts as less. The entry behind `ahead` work units (in typical
//! requests) is taken after `ahead + 1` typical completions (one slot must
//! free for it too): `(ahead + 1) ÷ rate`, the same formula as
//! [`super::retry_after::queue_wait`] with a fractional position, so a
//! queue of typical requests is predicted exactly as before.
//!
//! ## Units of work
//!
//! A request's work is its generated tokens (`max_tokens`, or the typical
//! length) plus its prompt tokens not cached, weighted by what a prompt
//! token costs against a generated one on this fleet (its measured
//! `prompt_ms ÷ gen_ms`, [`crate::backend::speed`]; before any is measured,
//! [`DEFAULT_PROMPT_WEIGHT`]: llama.cpp processes prompts 10–20× faster
//! than it generates). The typical work is the decaying mean of the work of
//! the requests queued so far ([`WorkMix`]); a request whose body was not
//! read counts as one typical request.
//!
//! Pure: no clock, no locks; the gate keeps a [`WorkMix`] under its queue
//! lock and passes the fleet's speeds in.

use std::time::Duration;

#[cfg(test)]
use super::retry_after::MAX_PREDICTION;
use crate::backend::speed::Work;

/// What a prompt token costs against a generated one before the fleet has
/// measured both (1/16: prompt processing is 10–20× faster).
pub const DEFAULT_PROMPT_WEIGHT: f64 = 1.0 / 16.0;

/// Weight of the newest request in the typical work (1/32: the last few
/// dozen requests, so one huge request does not swing every prediction).
const NEWEST: f64 = 1.0 / 32.0;

/// A request's work in generated-token equivalents.
pub fn units(work: Work, prompt_weight: f64) -> f64 {
    let w = if prompt_weight.is_finite() && prompt_weight >= 0.0 {
        prompt_weight
    } else {
        DEFAULT_PROMPT_WEIGHT
    };
    work.generate as f64 + work.prompt as f64 * w
}

/// The fleet's prompt weight from its measured per-token times, in ms
/// (`prompt_ms ÷ gen_ms`), or [`DEFAULT_PROMPT_WEIGHT`].
pub fn prompt_weight(gen_ms: Option<f64>, prompt_ms: Option<f64>) -> f64 {
    match (gen_ms, prompt_ms) {
        (Some(g), Some(p)) if g > 0.0 && p >= 0.0 && (p / g).is_finite() => p / g,
        _ => DEFAULT_PROMPT_WEIGHT,
    }
}

/// The typical work of the requests the queue sees. See the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorkMix {
    typical: Option<f64>,
}

// === impl WorkMix ===

impl WorkMix {
    /// Learns from one request's work, in units ([`units`]).
    pub fn observe(&mut self, units: f64) {
        if !(units.is_finite() && units > 0.0) {
            return;
        }
        self.typical = Some(match self.typical {
            Some(t) => t + NEWEST * (units - t),
            None => units,
        });
    }

    /// The typical work in units, once one request was seen.
    pub fn typical(&self) -> Option<f64> {
        self.typical
    }

    /// How many typical requests `units` of work are: 1 when either is
    /// unknown (the count-based prediction), never negative.
    pub fn share(&self, units: Option<f64>) -> f64 {
        match (units, self.typical) {
            (Some(u), Some(t)) if u.is_finite() && u >= 0.0 && t > 0.0 => u / t,
            _ => 1.0,
        }
    }
}

/// Predicted wait of an entry behind `ahead` typical requests of work while
/// the fleet completes `rate` typical requests per second: the time for
/// `ahead + 1` completions, at most [`MAX_PREDICTION`] (also when the rate
/// is 0 or not a number).
pub fn work_wait(ahead: f64, rate: f64) -> Duration {
    super::retry_after::completions_wait(ahead.max(0.0) + 1.0, rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::retry_after::queue_wait;
    use proptest::prelude::*;

    fn work(prompt: u64, generate: u64) -> Work {
        Work { prompt, generate }
    }

    #[test]
    fn typical_requests_predict_as_the_count_did() {
        let mut mix = WorkMix::default();
        for _ in 0..10 {
            mix.observe(units(work(0, 32), DEFAULT_PROMPT_WEIGHT));
        }
        let ahead: f64 = (0..9).map(|_| mix.share(Some(32.0))).sum();
        assert!((ahead - 9.0).abs() < 1e-9);
        assert_eq!(work_wait(ahead, 4.0), queue_wait(9, 4.0));
        assert_eq!(work_wait(0.0, 4.0), Duration::from_millis(250));
    }

    #[test]
    fn long_requests_ahead_count_for_more_short_for_less() {
        let mut mix = WorkMix::default();
        mix.observe(100.0);
        // Three requests of 4x the typical work ahead: 12 typical
        // completions, then one more for the slot.
        let ahead = 3.0 * mix.share(Some(400.0));
        assert_eq!(work_wait(ahead, 2.0), Duration::from_millis(6500));
        // Ten tiny ones ahead: about one typical request.
        let tiny = 10.0 * mix.share(Some(10.0));
        assert!((tiny - 1.0).abs() < 1e-9);
        // Unknown work, or nothing learnt yet: one typical request each.
        assert_eq!(mix.share(None), 1.0);
        assert_eq!(WorkMix::default().share(Some(400.0)), 1.0);
    }

    #[test]
    fn prompt_tokens_weigh_by_the_measured_speeds() {
        // 2 ms per prompt token, 20 per generated: a prompt token is 1/10.
        let w = prompt_weight(Some(20.0), Some(2.0));
        assert!((w - 0.1).abs() < 1e-12);
        assert!((units(work(1000, 50), w) - 150.0).abs() < 1e-9);
        // Not measured: the default weight.
        assert_eq!(prompt_weight(None, Some(2.0)), DEFAULT_PROMPT_WEIGHT);
        assert_eq!(prompt_weight(Some(0.0), Some(2.0)), DEFAULT_PROMPT_WEIGHT);
        assert_eq!(units(work(16, 0), f64::NAN), 1.0);
    }

    #[test]
    fn the_typical_work_follows_slowly() {
        let mut mix = WorkMix::default();
        mix.observe(100.0);
        mix.observe(f64::NAN);
        mix.observe(-5.0);
        mix.observe(0.0);
        assert_eq!(mix.typical(), Some(100.0));
        mix.observe(3300.0);
        assert_eq!(mix.typical(), Some(200.0), "one outlier moves it 1/32");
    }

    proptest! {
        #[test]
        fn prop_bounded_and_monotone(
            ahead in -10.0f64..1e9,
            more in 0.0f64..1e6,
            rate in proptest::num::f64::ANY,
        ) {
            let w = work_wait(ahead, rate);
            prop_assert!(w <= MAX_PREDICTION);
            if rate > 0.0 && rate.is_finite() {
                prop_assert!(work_wait(ahead + more, rate) >= w);
            }
        }
    }
}
