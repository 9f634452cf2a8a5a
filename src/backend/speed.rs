//! A backend's measured speed, and what a request is expected to cost on it.
//!
//! Each completed request reports llama-server's own `timings`: milliseconds
//! per processed prompt token and per generated token. They are averaged
//! (EWMA, newest 1/8) after normalising the generation figure to one busy
//! slot: llama.cpp decodes the busy slots as one batch, so a request's
//! per-token time grows with the slots busy beside it, sub-linearly. On the
//! measured servers one request generates 120 tokens/s and two together
//! 190 (95 each): per-token time ∝ `busy^β` with β = log2(240/190) ≈ 1/3.
//!
//! The expected cost of a request on a backend holding `load` requests is
//! `prompt × prompt_ms + generate × gen_ms × (load + 1)^β` milliseconds: a
//! 3× slower backend loses to a fast one even when the fast one is busier,
//! and between equal backends the less loaded wins. A backend that has not
//! reported yet has no cost, and the caller compares by load instead.

/// How per-token generation time grows with the slots decoding together.
pub const BATCH_EXPONENT: f64 = 1.0 / 3.0;

/// Weight of the newest sample (1/8: roughly the last eight requests).
const NEWEST: f64 = 1.0 / 8.0;

/// What a request will ask of a backend, in tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Prompt tokens to process.
    pub prompt: u64,
    /// Tokens to generate: `max_tokens`, or the typical length.
    pub generate: u64,
}

/// One backend's measured per-token times, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Speed {
    /// Per generated token, normalised to one busy slot.
    gen_ms: Option<f64>,
    /// Per processed prompt token.
    prompt_ms: Option<f64>,
}

fn ewma(old: Option<f64>, sample: f64) -> f64 {
    match old {
        Some(o) => o + NEWEST * (sample - o),
        None => sample,
    }
}

fn usable(ms: Option<f64>) -> Option<f64> {
    ms.filter(|v| v.is_finite() && *v > 0.0)
}

impl Speed {
    /// Learns from one completed request: its per-token times and the
    /// requests the backend held while it generated (itself included).
    pub fn observe(&mut self, gen_ms: Option<f64>, prompt_ms: Option<f64>, busy: u32) {
        if let Some(g) = usable(gen_ms) {
            let per_slot = g / f64::from(busy.max(1)).powf(BATCH_EXPONENT);
            self.gen_ms = Some(ewma(self.gen_ms, per_slot));
        }
        if let Some(p) = usable(prompt_ms) {
            self.prompt_ms = Some(ewma(self.prompt_ms, p));
        }
    }

    /// Expected milliseconds of `work` beside `load` other requests, once a
    /// generation speed is known. A missing prompt speed counts as free
    /// (prompt processing is 10–20× faster than generation).
    pub fn cost(&self, work: Work, load: u32) -> Option<f64> {
        let gen = self.gen_ms?;
        let batch = f64::from(load.saturating_add(1)).powf(BATCH_EXPONENT);
        let prompt = self.prompt_ms.unwrap_or(0.0) * work.prompt as f64;
        Some(prompt + gen * batch * work.generate as f64)
    }

    /// What sending `work` here costs the fleet, in milliseconds: its own
    /// time ([`Speed::cost`]) plus the slowdown it brings the `load`
    /// requests already decoding in the same batch (each with, on average,
    /// half of a generation like this one left). Choosing by this rather
    /// than by the request's own time alone stops a fast backend from being
    /// filled to its last slot while a slower one could take the overflow.
    pub fn marginal(&self, work: Work, load: u32) -> Option<f64> {
        let own = self.cost(work, load)?;
        let gen = self.gen_ms?;
        let (n, m) = (f64::from(load), f64::from(load.saturating_add(1)));
        let slower = m.powf(BATCH_EXPONENT) - n.powf(BATCH_EXPONENT);
        Some(own + n * gen * slower * work.generate as f64 / 2.0)
    }

    /// Generation milliseconds per token at one busy slot, if measured
    /// (`/status` shows it as `generation_ms_per_token`).
    pub fn gen_ms(&self) -> Option<f64> {
        self.gen_ms
    }

    /// Milliseconds per processed prompt token, if measured (what a
    /// prompt token weighs in the queue's wait prediction).
    pub fn prompt_ms(&self) -> Option<f64> {
        self.prompt_ms
    }
}

/// A full backend, as [`worth_waiting`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FullBackend {
    /// The caller's identifier (index into its fleet).
    pub id: usize,
    /// The requests it holds (its slots, or its adaptive limit).
    pub cap: u32,
    /// The request's expected milliseconds there once a slot frees.
    pub cost_ms: f64,
}

/// When the `waiting + 1`-th slot frees among full backends, judged from
/// their rates alone: each frees a slot about every `cost / cap`
/// milliseconds, so after `(waiting + 1) / Σ cap/cost`. `None` when none
/// is measured. (A backend whose held requests' ages are known does better:
/// [`super::running`].)
pub fn slot_wait(full: &[FullBackend], waiting: usize) -> Option<f64> {
    let rate: f64 = full
        .iter()
        .filter(|f| f.cost_ms > 0.0)
        .map(|f| f64::from(f.cap) / f.cost_ms)
        .sum();
    (rate.is_finite() && rate > 0.0).then(|| (waiting as f64 + 1.0) / rate)
}

/// The part of its patience a request may spend waiting for a full
/// backend's slot judged from rates alone ([`slot_wait`]): a quarter, so a
/// wrong guess costs little.
pub const WAIT_SHARE: f64 = 0.25;

/// Should a request wait `wait_ms` for a slot on a full backend, then
/// take `after_ms` there, rather than take the cheapest free one now
/// (`cheapest_free_ms`)? Waiting wins when the wait plus the work there is
/// less than the work on the free backend, and only while the wait is at
/// most `share` of the request's patience: this is what keeps a 3× slower
/// backend for the overflow only, and a conversation's later turn on the
/// backend holding its history (where `after_ms` is less: its cache holds
/// the prompt).
pub fn worth_waiting(
    cheapest_free_ms: f64,
    wait_ms: f64,
    after_ms: f64,
    patience_ms: f64,
    share: f64,
) -> bool {
    wait_ms <= patience_ms * share && wait_ms + after_ms < cheapest_free_ms
}

/// What leaving its home costs a later turn, to set against waiting there:
/// the cheapest free backend's time for the whole prompt. But with requests
/// waiting in the gateway queue (`saturated`) the free slot will not stay
/// alone in its batch, and the time it spends processing the history again
/// is time a waiting request needed: then the cost is the history's
/// processing (`saved_ms`: the prompt tokens the home holds at its measured
/// speed, else the difference of the two costs) counted twice, once for
/// this turn and once for whoever that slot would have served.
pub fn leaving_home(
    cheapest_free_ms: f64,
    after_ms: f64,
    saved_ms: Option<f64>,
    saturated: bool,
) -> f64 {
    if !saturated {
        return cheapest_free_ms;
    }
    let saved = saved_ms.unwrap_or(cheapest_free_ms - after_ms).max(0.0);
    cheapest_free_ms.max(after_ms + 2.0 * saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(prompt: u64, generate: u64) -> Work {
        Work { prompt, generate }
    }

    #[test]
    fn waiting_for_a_fast_slot_beats_a_slow_free_one_only_when_it_is_soon() {
        // Two full fast backends of 4 slots, 400 ms per request: a slot frees
        // every 50 ms. The free slow one takes 1,200 ms.
        let f = |id| FullBackend {
            id,
            cap: 4,
            cost_ms: 400.0,
        };
        let fast = [f(0), f(1)];
        let wait = |full: &[FullBackend], waiting| slot_wait(full, waiting).unwrap();
        assert_eq!(wait(&fast, 0), 50.0);
        assert!(worth_waiting(
            1200.0,
            wait(&fast, 0),
            400.0,
            10_000.0,
            WAIT_SHARE
        ));
        // Fifteen already waiting: the 16th slot frees after 800 ms.
        assert_eq!(wait(&fast, 15), 800.0);
        assert!(!worth_waiting(
            1200.0,
            wait(&fast, 15),
            400.0,
            10_000.0,
            WAIT_SHARE
        ));
        // Little patience: take the free one.
        assert!(!worth_waiting(
            1200.0,
            wait(&fast, 0),
            400.0,
            150.0,
            WAIT_SHARE
        ));
        // A free backend as fast as the full ones: never wait...
        assert!(!worth_waiting(
            400.0,
            wait(&fast, 0),
            400.0,
            10_000.0,
            WAIT_SHARE
        ));
        // ... unless the full one holds the prompt in its cache (100 ms of
        // work there, a slot in 100 ms).
        assert!(worth_waiting(
            400.0,
            wait(&fast[..1], 0),
            100.0,
            10_000.0,
            WAIT_SHARE
        ));
        // Nothing full (or nothing measured): nothing to wait for.
        assert_eq!(slot_wait(&[], 0), None);
        let unmeasured = FullBackend {
            id: 0,
            cap: 4,
            cost_ms: 0.0,
        };
        assert_eq!(slot_wait(&[unmeasured], 0), None);
    }

    #[test]
    fn a_saturated_fleet_keeps_a_later_turn_at_home() {
        // Measured on two real llama-servers, 8 chats on 4 slots: the whole
        // prompt elsewhere 2,792 ms, the new part at home 1,895 ms once a
        // slot frees in 2,163 ms; the home's 800 cached tokens at 1.8 ms.
        let (cheapest, after, wait, patience) = (2792.0, 1895.0, 2163.0, 9836.0);
        let saved = Some(800.0 * 1.8);
        // Alone, going elsewhere is sooner for this turn...
        let idle = leaving_home(cheapest, after, saved, false);
        assert!(!worth_waiting(idle, wait, after, patience, 0.5));
        // ... but with others queued the reprocessing is a waiting
        // request's loss too: the turn waits for its home.
        let busy = leaving_home(cheapest, after, saved, true);
        assert_eq!(busy, 1895.0 + 2.0 * 1440.0);
        assert!(worth_waiting(busy, wait, after, patience, 0.5));
        // Never cheaper than the free backend's own time, nor a negative saving.
        assert_eq!(leaving_home(9000.0, 1000.0, Some(100.0), true), 9000.0);
        assert_eq!(leaving_home(500.0, 1000.0, None, true), 1000.0);
    }

    #[test]
    fn unmeasured_has_no_cost() {
        let s = Speed::default();
        assert_eq!(s.cost(work(10, 10), 0), None);
        let mut s = Speed::default();
        s.observe(None, Some(1.0), 1);
        assert_eq!(s.cost(work(10, 10), 0), None);
        s.observe(Some(f64::NAN), None, 1);
        s.observe(Some(-3.0), None, 1);
        s.observe(Some(0.0), None, 1);
        assert_eq!(s.cost(work(10, 10), 0), None);
    }

    #[test]
    fn samples_are_normalised_to_one_slot() {
        // 8 ms per token with 8 busy is 4 ms per token alone (8^(1/3) = 2).
        let mut s = Speed::default();
        s.observe(Some(8.0), None, 8);
        assert!((s.gen_ms().unwrap() - 4.0).abs() < 1e-9);
        // Alone again it costs 4 ms per token; beside 7 others 8 ms.
        assert!((s.cost(work(0, 10), 0).unwrap() - 40.0).abs() < 1e-9);
        assert!((s.cost(work(0, 10), 7).unwrap() - 80.0).abs() < 1e-9);
    }

    #[test]
    fn the_marginal_cost_adds_what_the_batch_loses() {
        let mut s = Speed::default();
        s.observe(Some(1.0), None, 1);
        let w = work(0, 100);
        // Alone: nobody else slows down.
        assert_eq!(s.marginal(w, 0), s.cost(w, 0));
        // Beside 7: 8^(1/3) = 2 for itself; the 7 others go from 7^(1/3)
        // to 2 for their remaining 50 tokens each.
        let want = 200.0 + 7.0 * 50.0 * (2.0 - 7f64.powf(1.0 / 3.0));
        assert!((s.marginal(w, 7).unwrap() - want).abs() < 1e-9);
        assert!(s.marginal(w, 7).unwrap() > s.cost(w, 7).unwrap());
    }

    #[test]
    fn the_average_follows_new_samples() {
        let mut s = Speed::default();
        s.observe(Some(10.0), Some(1.0), 1);
        for _ in 0..50 {
            s.observe(Some(30.0), Some(2.0), 1);
        }
        let g = s.gen_ms().unwrap();
        assert!((29.0..=30.0).contains(&g), "{g}");
        let c = s.cost(work(100, 0), 0).unwrap();
        assert!((195.0..=200.0).contains(&c), "{c}");
    }

    #[test]
    fn a_three_times_slower_backend_loses_to_a_busy_fast_one() {
        let (mut fast, mut slow) = (Speed::default(), Speed::default());
        fast.observe(Some(8.0), Some(1.0), 1);
        slow.observe(Some(24.0), Some(3.0), 1);
        let w = work(50, 32);
        // The fast one holding 3 requests still beats the idle slow one.
        assert!(fast.cost(w, 3).unwrap() < slow.cost(w, 0).unwrap());
        // Between equals, the less loaded wins.
        assert!(fast.cost(w, 1).unwrap() < fast.cost(w, 2).unwrap());
    }
}
