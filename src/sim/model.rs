//! The queueing model of one llama-server: slots, a FIFO deferred queue and
//! a fluid approximation of prompt processing and generation.
//!
//! Pure: no clock reads, no I/O. Every call takes `now`; the model
//! integrates its state from the previous call to `now` piecewise (rates
//! change only when a request starts, finishes its prompt, or ends), and
//! returns what happened as [`Event`]s.
//!
//! ```text
//!  submit ──► Deferred ──(slot free, FIFO)──► Prompt ──► Generating ──► Finished
//!               │  client gone                 │   client gone  │
//!               ▼                              ▼                ▼
//!   dropped after abandon_delay (2026-10)   Cancelled (slot freed at once)
//!   or kept and run with no reader (b4748)
//! ```
//!
//! A request's prompt is processed only beyond what the slot it gets
//! already holds ([`prompt_cache`]: llama-server's slot choice by shared
//! prefix, and its host-memory prompt cache).
//!
//! This file holds the types and the calls a driver makes; the model's
//! parts live beside it: `fluid` (the timing model: rates, integration,
//! transitions, tokens), `slots` (the deferred queue, scheduling into slots,
//! finishing and dropping), `metrics` (the sums behind `/metrics`) and
//! `prompt_cache` (what each slot and the host memory hold).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::options::ThroughputCurve;

mod fluid;
mod metrics;
pub mod prompt_cache;
mod slots;

use metrics::Totals;
pub use prompt_cache::{CacheParams, PromptCache};

use crate::sim::tokens::Token;

/// Identifies one request inside a model (llama-server's `id_task`).
pub type ReqId = u64;

/// What a request asks of the server.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RequestSpec {
    /// Prompt tokens (at least one is processed).
    pub prompt_tokens: u32,
    /// Tokens to generate (may be 0).
    pub n_predict: u32,
    /// The prompt as tokens, for the prompt cache (empty: never matches).
    pub tokens: Arc<[Token]>,
    /// Reuse the slot's cached prefix (`cache_prompt`).
    pub cache_prompt: bool,
}

/// Per-request figures reported in `timings`, `usage` and the counters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timings {
    pub slot: usize,
    /// Prompt tokens reused from the cache (`timings.cache_n`).
    pub cache_n: u32,
    /// Prompt tokens processed (`timings.prompt_n`, without `cache_n`).
    pub prompt_n: u32,
    pub prompt_ms: f64,
    pub predicted_n: u32,
    pub predicted_ms: f64,
}

/// Something that happened to a request during a model call.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Got slot `slot`.
    Started { id: ReqId, slot: usize },
    /// `count` more tokens were generated (total so far: `total`).
    Tokens { id: ReqId, count: u32, total: u32 },
    /// Generated its last token.
    Finished { id: ReqId, timings: Timings },
    /// Removed from the deferred queue after its client went away.
    Dropped { id: ReqId },
}

/// Static parameters of the model.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub slots: usize,
    pub prompt_tps: f64,
    pub gen_tps: f64,
    pub curve: ThroughputCurve,
    pub keep_abandoned_deferred: bool,
    pub abandon_delay: Duration,
    pub n_ctx: u32,
    pub cache: CacheParams,
}

/// Lifetime counters of the model (what tests read).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ModelCounters {
    pub received: u64,
    pub started: u64,
    pub completed: u64,
    /// Completed after the client had gone (b4748 abandoned deferred).
    pub completed_without_reader: u64,
    pub cancelled: u64,
    pub dropped_deferred: u64,
    pub processing_now: usize,
    pub deferred_now: usize,
    pub max_deferred_seen: usize,
    /// ∫ deferred dt, in request·seconds.
    pub deferred_integral: f64,
    /// ∫ (processing + deferred) dt, in request·seconds: the backend's
    /// time-mean load over an interval, exactly, without sampling.
    pub load_integral: f64,
}

/// What `/metrics` shows. Counters move when a request finishes; the
/// `*_tokens_seconds` gauges cover the time since the previous scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Processed prompt tokens, without cached ones.
    pub prompt_tokens_total: u64,
    pub prompt_tokens_cached_total: u64,
    pub prompt_seconds_total: f64,
    pub tokens_predicted_total: u64,
    pub tokens_predicted_seconds_total: f64,
    pub n_decode_total: u64,
    pub n_busy_slots_per_decode: f64,
    pub n_tokens_max: u64,
    pub prompt_tokens_seconds: f64,
    pub predicted_tokens_seconds: f64,
    pub kv_cache_tokens: u64,
    pub kv_cache_usage_ratio: f64,
    pub requests_processing: usize,
    pub requests_deferred: usize,
}

/// One slot as `/slots` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotView {
    pub id: usize,
    /// `id_task` of the request in it, if any.
    pub task: Option<ReqId>,
    pub n_decoded: u32,
    pub n_remain: u32,
    pub prompt_tokens: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Deferred,
    Prompt,
    Generating,
}

#[derive(Debug)]
struct Req {
    spec: RequestSpec,
    phase: Phase,
    slot: usize,
    /// Prompt tokens reused from the slot's cache, set when it starts.
    cached: u32,
    prompt_done: f64,
    gen_done: f64,
    emitted: u32,
    started: Option<Instant>,
    prompt_end: Option<Instant>,
    /// The client went away (only kept in b4748 mode or until dropped).
    abandoned_at: Option<Instant>,
}

impl Req {
    /// The whole prompt.
    fn prompt_total(&self) -> u32 {
        self.spec.prompt_tokens.max(1)
    }

    /// The prompt tokens to process: those beyond the cached prefix.
    fn prompt_n(&self) -> u32 {
        self.prompt_total() - self.cached.min(self.prompt_total() - 1)
    }

    /// Prompt tokens in the slot's KV cache now.
    fn prompt_in_kv(&self) -> u32 {
        self.cached + self.prompt_done.min(self.prompt_n() as f64) as u32
    }
}

/// The model. See the module docs.
#[derive(Debug)]
pub struct Model {
    cfg: ModelConfig,
    /// Multiplies every rate (the "slow down" fault sets it below 1).
    speed: f64,
    slots: Vec<Option<ReqId>>,
    /// What each slot's KV cache and the host memory hold.
    cache: PromptCache,
    deferred: VecDeque<ReqId>,
    reqs: HashMap<ReqId, Req>,
    next_id: ReqId,
    last: Instant,
    counters: ModelCounters,
    totals: Totals,
}

// === impl Model ===

impl Model {
    pub fn new(cfg: ModelConfig, now: Instant) -> Model {
        let slots = cfg.slots.max(1);
        Model {
            speed: 1.0,
            slots: vec![None; slots],
            cache: PromptCache::new(slots, cfg.cache),
            deferred: VecDeque::new(),
            reqs: HashMap::new(),
            next_id: 0,
            last: now,
            counters: ModelCounters::default(),
            totals: Totals::default(),
            cfg,
        }
    }

    /// A new request arrives: it takes a free slot or waits FIFO.
    pub fn submit(&mut self, now: Instant, spec: RequestSpec) -> (ReqId, Vec<Event>) {
        let mut events = self.advance(now);
        let id = self.next_id;
        self.next_id += 1;
        self.counters.received += 1;
        self.reqs.insert(
            id,
            Req {
                spec,
                phase: Phase::Deferred,
                slot: 0,
                cached: 0,
                prompt_done: 0.0,
                gen_done: 0.0,
                emitted: 0,
                started: None,
                prompt_end: None,
                abandoned_at: None,
            },
        );
        self.deferred.push_back(id);
        self.schedule(now, &mut events);
        // A zero-cost request may finish at once.
        events.extend(self.advance(now));
        (id, events)
    }

    /// The client of `id` went away.
    pub fn cancel(&mut self, now: Instant, id: ReqId) -> Vec<Event> {
        let mut events = self.advance(now);
        let Some(req) = self.reqs.get_mut(&id) else {
            return events;
        };
        match req.phase {
            Phase::Deferred => {
                if req.abandoned_at.is_none() {
                    req.abandoned_at = Some(now);
                }
                if !self.cfg.keep_abandoned_deferred && self.cfg.abandon_delay.is_zero() {
                    self.drop_deferred(id, &mut events);
                }
            }
            Phase::Prompt | Phase::Generating => {
                let slot = req.slot;
                let (kept, generated) = (req.prompt_in_kv(), req.emitted);
                let tokens = req.spec.tokens.clone();
                self.reqs.remove(&id);
                self.slots[slot] = None;
                self.cache.release(slot, tokens, kept as usize, generated);
                self.counters.cancelled += 1;
                self.schedule(now, &mut events);
            }
        }
        events.extend(self.advance(now));
        events
    }

    /// Changes the speed of every rate (1.0 = nominal, 0.5 = half speed).
    pub fn set_speed(&mut self, now: Instant, speed: f64) -> Vec<Event> {
        let events = self.advance(now);
        if speed.is_finite() && speed > 0.0 {
            self.speed = speed;
        }
        events
    }

    /// Runs the model up to `now`.
    pub fn advance(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        if now < self.last {
            return events;
        }
        // Every iteration applies at least one transition, and there are at
        // most a few per request; the bound only guards against float traps.
        let mut guard = 4 * self.reqs.len() + 16;
        loop {
            let next = self.next_transition();
            match next {
                Some(t) if t <= now && guard > 0 => {
                    guard -= 1;
                    self.integrate(t);
                    self.apply_transitions(t, &mut events);
                }
                _ => {
                    self.integrate(now);
                    break;
                }
            }
        }
        self.emit_tokens(&mut events);
        events
    }

    pub fn counters(&self) -> ModelCounters {
        self.counters
    }

    /// A restart of the server: every prompt cache is empty again.
    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(slots: usize) -> ModelConfig {
        ModelConfig {
            slots,
            prompt_tps: 1000.0,
            gen_tps: 100.0,
            curve: ThroughputCurve::Power { exponent: 1.0 },
            keep_abandoned_deferred: false,
            abandon_delay: Duration::from_secs(1),
            n_ctx: 2048,
            cache: CacheParams::default(),
        }
    }

    fn spec(prompt: u32, n: u32) -> RequestSpec {
        RequestSpec {
            prompt_tokens: prompt,
            n_predict: n,
            ..RequestSpec::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn finished(ev: &[Event]) -> Vec<ReqId> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Finished { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn processing_never_exceeds_slots_and_deferred_counts_waiters() {
        let t0 = Instant::now();
        let mut m = Model::new(cfg(2), t0);
        for _ in 0..8 {
            m.submit(t0, spec(10, 100));
        }
        let c = m.counters();
        assert_eq!((c.processing_now, c.deferred_now), (2, 6));
        assert_eq!(c.received, 8);
        assert_eq!(c.started, 2);
        // Each request: 10 ms prompt + 1 s generation (100 tok/s per slot
        // with a linear curve). Pairs finish together.
        let mut seen = Vec::new();
        for step in 1..=50 {
            m.advance(t0 + ms(step * 100));
            let c = m.counters();
            assert!(c.processing_now <= 2);
            seen.push(c.deferred_now);
        }
        let mut steps: Vec<usize> = seen.clone();
        steps.dedup();
        assert_eq!(steps, vec![6, 4, 2, 0], "{seen:?}");
        let c = m.counters();
        assert_eq!((c.completed, c.processing_now), (8, 0));
    }

    fn timings_of(ev: &[Event]) -> Option<Timings> {
        ev.iter().find_map(|e| match e {
            Event::Finished { timings, .. } => Some(*timings),
            _ => None,
        })
    }

    #[test]
    fn a_cached_prefix_is_not_processed_again() {
        let t0 = Instant::now();
        let mut m = Model::new(cfg(2), t0);
        let tokens: Arc<[Token]> = (0..500).collect();
        let turn = |n: usize, reuse: bool| RequestSpec {
            prompt_tokens: n as u32,
            n_predict: 10,
            tokens: tokens[..n].into(),
            cache_prompt: reuse,
        };
        m.submit(t0, turn(400, true));
        // 400 prompt tokens at 1000 tok/s + 10 tokens at 100 tok/s.
        let first = timings_of(&m.advance(t0 + ms(500))).unwrap();
        assert_eq!((first.cache_n, first.prompt_n), (0, 400));
        assert!((first.prompt_ms - 400.0).abs() < 1e-6);
        let t1 = t0 + ms(500);
        m.submit(t1, turn(500, true));
        let second = timings_of(&m.advance(t1 + ms(500))).unwrap();
        assert_eq!((second.cache_n, second.prompt_n), (400, 100));
        assert!((second.prompt_ms - 100.0).abs() < 1e-6, "{second:?}");
        let t2 = t1 + ms(500);
        m.submit(t2, turn(500, false));
        let third = timings_of(&m.advance(t2 + ms(1000))).unwrap();
        assert_eq!((third.cache_n, third.prompt_n), (0, 500));
        let (snap, _) = m.scrape(t2 + ms(1000));
        assert_eq!(snap.prompt_tokens_total, 1000);
        assert_eq!(snap.prompt_tokens_cached_total, 400);
        m.clear_cache();
        m.submit(t2 + ms(1000), turn(500, true));
        let fourth = timings_of(&m.advance(t2 + ms(2000))).unwrap();
        assert_eq!(fourth.cache_n, 0, "a restart forgets the cache");
    }

    #[test]
    fn finish_time_is_exact_at_high_rates() {
        let t0 = Instant::now();
        let mut c = cfg(4);
        c.gen_tps = 2000.0;
        let mut m = Model::new(c, t0);
        let (id, _) = m.submit(t0, spec(1, 100));
        let due = m.next_transition().unwrap();
        assert_eq!(due, t0 + ms(1)); // prompt: 1 token at 1000 tok/s
        m.advance(due);
        let done = m.next_transition().unwrap();
        assert!(((done - t0).as_secs_f64() - 0.051).abs() < 1e-6);
        let ev = m.advance(done);
        assert_eq!(finished(&ev), vec![id]);
        let tokens: u32 = ev
            .iter()
            .map(|e| match e {
                Event::Tokens { count, .. } => *count,
                _ => 0,
            })
            .sum();
        assert_eq!(tokens, 100);
    }

    #[test]
    fn counters_move_only_on_completion() {
        let t0 = Instant::now();
        let mut m = Model::new(cfg(1), t0);
        m.submit(t0, spec(100, 50)); // 0.1 s prompt + 0.5 s generation
        let (s, _) = m.scrape(t0 + ms(300));
        assert_eq!(s.tokens_predicted_total, 0);
        assert_eq!(s.prompt_tokens_total, 0);
        assert!(s.n_decode_total > 0, "decode steps move while generating");
        let (s, _) = m.scrape(t0 + ms(700));
        assert_eq!(s.tokens_predicted_total, 50);
        assert_eq!(s.prompt_tokens_total, 100);
        assert!((s.prompt_seconds_total - 0.1).abs() < 1e-6);
        assert!((s.tokens_predicted_seconds_total - 0.5).abs() < 1e-6);
        assert_eq!(s.n_tokens_max, 150);
    }

    #[test]
    fn throughput_gauges_reset_per_scrape() {
        let t0 = Instant::now();
        let mut m = Model::new(cfg(1), t0);
        m.submit(t0, spec(100, 50));
        let (s, _) = m.scrape(t0 + ms(700));
        assert!((s.predicted_tokens_seconds - 100.0).abs() < 1e-6);
        assert!((s.prompt_tokens_seconds - 1000.0).abs() < 1e-3);
        let (s, _) = m.scrape(t0 + ms(800));
        assert_eq!(s.predicted_tokens_seconds, 0.0);
        assert_eq!(s.prompt_tokens_seconds, 0.0);
        assert_eq!(s.tokens_predicted_total, 50, "counters do not reset");
    }

    #[test]
    fn aggregate_throughput_follows_curve() {
        let t0 = Instant::now();
        let mut c = cfg(2);
        c.gen_tps = 120.0;
        c.curve = ThroughputCurve::default();
        let mut m = Model::new(c, t0);
        m.submit(t0, spec(1, 190));
        m.submit(t0, spec(1, 190));
        // Two slots together ~190 tok/s: 190 tokens each take ~2 s.
        let ev = m.advance(t0 + ms(1990));
        assert!(finished(&ev).is_empty());
        let ev = m.advance(t0 + ms(2010));
        assert_eq!(finished(&ev).len(), 2);
    }

    #[test]
    fn cancel_processing_frees_slot_for_next() {
        let t0 = Instant::now();
        let mut m = Model::new(cfg(1), t0);
        let (a, _) = m.submit(t0, spec(1, 100));
        let (b, _) = m.submit(t0, spec(1, 100));
        let ev = m.cancel(t0 + ms(100), a);
        assert!(ev.contains(&Event::Started { id: b, slot: 0 }));
        let c = m.counters();
        assert_eq!((c.cancelled, c.processing_now, c.deferred_now), (1, 1, 0));
        let (s, _) = m.scrape(t0 + ms(150));
        assert_eq!(s.tokens_predicted_total, 0, "cancelled work is not counted");
    }

    #[test]
    fn abandoned_deferred_is_dropped_after_delay_recent() {
        let t0 = Instant::now();
        let mut m = Model::new(cfg(1), t0);
        m.submit(t0, spec(1, 1000));
        let (b, _) = m.submit(t0, spec(1, 10));
        m.cancel(t0 + ms(100), b);
        assert_eq!(m.counters().deferred_now, 1, "still queued until noticed");
        let ev = m.advance(t0 + ms(1100));
        assert!(ev.contains(&Event::Dropped { id: b }));
        let c = m.counters();
        assert_eq!((c.deferred_now, c.dropped_deferred), (0, 1));
        assert_eq!(c.started, 1);
    }

    #[test]
    fn abandoned_deferred_runs_without_reader_b4748() {
        let t0 = Instant::now();
        let mut c = cfg(1);
        c.keep_abandoned_deferred = true;
        let mut m = Model::new(c, t0);
        m.submit(t0, spec(1, 10));
        let (b, _) = m.submit(t0, spec(1, 10));
        m.cancel(t0 + ms(10), b);
        let ev = m.advance(t0 + ms(5000));
        assert!(finished(&ev).contains(&b));
        let c = m.counters();
        assert_eq!(
            (c.completed, c.completed_without_reader, c.dropped_deferred),
            (2, 1, 0)
        );
    }

    #[test]
    fn deferred_integral_is_time_weighted() {
        let t0 = Instant::now();
        let mut m = Model::new(cfg(1), t0);
        // Each takes 1 ms of prompt + 0.99 s of generation = 0.991 s.
        m.submit(t0, spec(1, 99));
        m.submit(t0, spec(1, 99));
        m.submit(t0, spec(1, 99));
        m.advance(t0 + ms(3000));
        // 2 waiting for 0.991 s, then 1 waiting for 0.991 s.
        assert!((m.counters().deferred_integral - 2.973).abs() < 1e-6);
        assert_eq!(m.counters().max_deferred_seen, 2);
        // In the system (processing + deferred): 3, then 2, then 1.
        assert!((m.counters().load_integral - 5.946).abs() < 1e-6);
    }

    #[test]
    fn zero_length_generation_finishes_after_prompt() {
        let t0 = Instant::now();
        let mut m = Model::new(cfg(1), t0);
        let (id, _) = m.submit(t0, spec(2, 0));
        let ev = m.advance(t0 + ms(2));
        assert_eq!(finished(&ev), vec![id]);
    }

    #[test]
    fn slow_down_stretches_time() {
        let t0 = Instant::now();
        let mut m = Model::new(cfg(1), t0);
        m.set_speed(t0, 0.5);
        m.submit(t0, spec(1, 50));
        assert!(finished(&m.advance(t0 + ms(900))).is_empty());
        assert_eq!(finished(&m.advance(t0 + ms(1010))).len(), 1);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Submit(u32, u32),
            Cancel(u64),
            Advance(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u32..50, 0u32..200).prop_map(|(p, n)| Op::Submit(p, n)),
                (0u64..40).prop_map(Op::Cancel),
                (0u64..500).prop_map(Op::Advance),
            ]
        }

        proptest! {
            #[test]
            fn bookkeeping_invariants_hold(
                ops in proptest::collection::vec(op(), 1..120),
                slots in 1usize..5,
                keep in any::<bool>(),
            ) {
                let t0 = Instant::now();
                let mut c = cfg(slots);
                c.keep_abandoned_deferred = keep;
                c.abandon_delay = ms(300);
                let mut m = Model::new(c, t0);
                let mut now = t0;
                for op in ops {
                    match op {
                        Op::Submit(p, n) => { m.submit(now, spec(p, n)); }
                        Op::Cancel(id) => { m.cancel(now, id); }
                        Op::Advance(d) => { now += ms(d); m.advance(now); }
                    }
                    let c = m.counters();
                    prop_assert!(c.processing_now <= slots);
                    prop_assert_eq!(c.received, c.started + c.deferred_now as u64 + c.dropped_deferred);
                    prop_assert_eq!(c.started, c.completed + c.cancelled + c.processing_now as u64);
                    // Work never waits while a slot is free (unless abandoned).
                    if c.processing_now < slots && !keep {
                        prop_assert!(m.deferred.iter().all(|id| m.reqs[id].abandoned_at.is_some()));
                    }
                    if keep {
                        prop_assert!(c.processing_now == slots || c.deferred_now == 0);
                    }
                }
                // Everything drains.
                m.advance(now + Duration::from_secs(100_000));
                let c = m.counters();
                prop_assert_eq!((c.processing_now, c.deferred_now), (0, 0));
            }
        }
    }
}
