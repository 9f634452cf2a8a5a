//! What `/metrics` shows of the model: counter sums that move when a
//! request finishes, and throughput gauges over the time since the previous
//! scrape (reset by each scrape).

use tokio::time::Instant;

use super::{Event, MetricsSnapshot, Model};

/// Counter and bucket sums behind `/metrics`.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub(super) prompt_tokens: u64,
    pub(super) prompt_tokens_cached: u64,
    pub(super) prompt_seconds: f64,
    pub(super) predicted_tokens: u64,
    pub(super) predicted_seconds: f64,
    pub(super) decode_steps: f64,
    pub(super) busy_slot_steps: f64,
    pub(super) n_tokens_max: u64,
    // reset by each scrape
    pub(super) bucket_prompt_tokens: u64,
    pub(super) bucket_prompt_seconds: f64,
    pub(super) bucket_predicted_tokens: u64,
    pub(super) bucket_predicted_seconds: f64,
}

// === impl Model: metrics ===

impl Model {
    /// What `/metrics` shows; resets the per-scrape throughput gauges.
    pub fn scrape(&mut self, now: Instant) -> (MetricsSnapshot, Vec<Event>) {
        let events = self.advance(now);
        let t = &mut self.totals;
        let per_sec = |tokens: u64, s: f64| if s > 0.0 { tokens as f64 / s } else { 0.0 };
        let kv: u64 = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| match s.and_then(|id| self.reqs.get(&id)) {
                Some(r) => r.prompt_in_kv() as u64 + r.gen_done as u64,
                None => self.cache.slot_tokens(i),
            })
            .sum();
        let capacity = self.cfg.n_ctx as f64 * self.slots.len() as f64;
        let snap = MetricsSnapshot {
            prompt_tokens_total: t.prompt_tokens,
            prompt_tokens_cached_total: t.prompt_tokens_cached,
            prompt_seconds_total: t.prompt_seconds,
            tokens_predicted_total: t.predicted_tokens,
            tokens_predicted_seconds_total: t.predicted_seconds,
            n_decode_total: t.decode_steps as u64,
            n_busy_slots_per_decode: if t.decode_steps > 0.0 {
                t.busy_slot_steps / t.decode_steps
            } else {
                0.0
            },
            n_tokens_max: t.n_tokens_max,
            prompt_tokens_seconds: per_sec(t.bucket_prompt_tokens, t.bucket_prompt_seconds),
            predicted_tokens_seconds: per_sec(
                t.bucket_predicted_tokens,
                t.bucket_predicted_seconds,
            ),
            kv_cache_tokens: kv,
            kv_cache_usage_ratio: if capacity > 0.0 {
                kv as f64 / capacity
            } else {
                0.0
            },
            requests_processing: self.counters.processing_now,
            requests_deferred: self.counters.deferred_now,
        };
        t.bucket_prompt_tokens = 0;
        t.bucket_prompt_seconds = 0.0;
        t.bucket_predicted_tokens = 0;
        t.bucket_predicted_seconds = 0.0;
        (snap, events)
    }
}
