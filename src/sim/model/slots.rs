//! Slots and scheduling: the FIFO deferred queue moving into free slots,
//! finishing a request (its timings and the `/metrics` sums), dropping an
//! abandoned deferred one, and the `/slots` view.

use tokio::time::Instant;

use super::{Event, Model, Phase, ReqId, SlotView, Timings};

// === impl Model: slots ===

impl Model {
    pub fn slots(&self) -> Vec<SlotView> {
        self.slots
            .iter()
            .enumerate()
            .map(
                |(i, s)| match s.and_then(|id| self.reqs.get(&id).map(|r| (id, r))) {
                    Some((id, r)) => SlotView {
                        id: i,
                        task: Some(id),
                        n_decoded: r.emitted,
                        n_remain: r.spec.n_predict.saturating_sub(r.emitted),
                        prompt_tokens: r.prompt_total(),
                    },
                    None => SlotView {
                        id: i,
                        task: None,
                        n_decoded: 0,
                        n_remain: 0,
                        prompt_tokens: 0,
                    },
                },
            )
            .collect()
    }

    pub(super) fn finish(&mut self, now: Instant, id: ReqId, events: &mut Vec<Event>) {
        let Some(r) = self.reqs.remove(&id) else {
            return;
        };
        let started = r.started.unwrap_or(now);
        let prompt_end = r.prompt_end.unwrap_or(now);
        let prompt_s = (prompt_end - started).as_secs_f64();
        let gen_s = (now - prompt_end).as_secs_f64();
        let timings = Timings {
            slot: r.slot,
            cache_n: r.prompt_total() - r.prompt_n(),
            prompt_n: r.prompt_n(),
            prompt_ms: prompt_s * 1e3,
            predicted_n: r.spec.n_predict,
            predicted_ms: gen_s * 1e3,
        };
        let t = &mut self.totals;
        t.prompt_tokens += timings.prompt_n as u64;
        t.prompt_tokens_cached += timings.cache_n as u64;
        t.prompt_seconds += prompt_s;
        t.predicted_tokens += timings.predicted_n as u64;
        t.predicted_seconds += gen_s;
        t.bucket_prompt_tokens += timings.prompt_n as u64;
        t.bucket_prompt_seconds += prompt_s;
        t.bucket_predicted_tokens += timings.predicted_n as u64;
        t.bucket_predicted_seconds += gen_s;
        t.n_tokens_max = t
            .n_tokens_max
            .max(r.prompt_total() as u64 + timings.predicted_n as u64);
        self.slots[r.slot] = None;
        let kept = r.prompt_total() as usize;
        self.cache
            .release(r.slot, r.spec.tokens, kept, timings.predicted_n);
        self.counters.completed += 1;
        if r.abandoned_at.is_some() {
            self.counters.completed_without_reader += 1;
        }
        self.counters.processing_now = self.busy();
        events.push(Event::Finished { id, timings });
    }

    pub(super) fn drop_deferred(&mut self, id: ReqId, events: &mut Vec<Event>) {
        self.deferred.retain(|d| *d != id);
        self.reqs.remove(&id);
        self.counters.dropped_deferred += 1;
        self.counters.deferred_now = self.deferred.len();
        events.push(Event::Dropped { id });
    }

    /// Moves deferred requests into free slots, FIFO; the prompt cache
    /// picks which free slot. Abandoned requests waiting to be dropped
    /// (2026-10) are skipped; in b4748 mode they run.
    pub(super) fn schedule(&mut self, now: Instant, events: &mut Vec<Event>) {
        let mut i = 0;
        let mut free: Vec<usize> = Vec::new();
        while i < self.deferred.len() {
            free.clear();
            free.extend((0..self.slots.len()).filter(|&s| self.slots[s].is_none()));
            if free.is_empty() {
                break;
            }
            let id = self.deferred[i];
            let skip = !self.cfg.keep_abandoned_deferred
                && self.reqs.get(&id).is_some_and(|r| r.abandoned_at.is_some());
            if skip {
                i += 1;
                continue;
            }
            let Some((tokens, reuse)) = self
                .reqs
                .get(&id)
                .map(|r| (r.spec.tokens.clone(), r.spec.cache_prompt))
            else {
                self.deferred.remove(i);
                continue;
            };
            let Some(at) = self.cache.assign(&free, &tokens, reuse) else {
                break;
            };
            self.deferred.remove(i);
            let Some(r) = self.reqs.get_mut(&id) else {
                continue;
            };
            let slot = at.slot;
            r.cached = at.cached;
            r.phase = Phase::Prompt;
            r.slot = slot;
            r.started = Some(now);
            self.slots[slot] = Some(id);
            self.counters.started += 1;
            events.push(Event::Started { id, slot });
        }
        self.counters.processing_now = self.busy();
        self.counters.deferred_now = self.deferred.len();
        self.counters.max_deferred_seen = self.counters.max_deferred_seen.max(self.deferred.len());
    }
}
