//! The timing model: a fluid approximation of prompt processing and
//! generation. Rates stay constant between transitions (a prompt done, a
//! request finished, an abandoned request dropped), so the state is
//! integrated exactly from one transition to the next and finish times are
//! exact at any token rate; whole tokens are emitted as the fluid passes
//! them.

use std::time::Duration;

use tokio::time::Instant;

use super::{Event, Model, Phase, ReqId};

/// Tokens still to do below this count as done (float rounding).
const EPS: f64 = 1e-6;

// === impl Model: timing ===

impl Model {
    /// The next exact transition (a prompt done, a request finished, an
    /// abandoned deferred request dropped).
    pub fn next_transition(&self) -> Option<Instant> {
        let busy = self.busy();
        let mut best: Option<Instant> = None;
        let mut consider = |t: Instant| {
            best = Some(best.map_or(t, |b: Instant| b.min(t)));
        };
        for id in self.slots.iter().flatten() {
            let Some(r) = self.reqs.get(id) else { continue };
            let left = match r.phase {
                Phase::Prompt => (r.prompt_n() as f64 - r.prompt_done) / self.prompt_rate(),
                Phase::Generating => (r.spec.n_predict as f64 - r.gen_done) / self.gen_rate(busy),
                Phase::Deferred => continue,
            };
            consider(self.last + secs(left));
        }
        if !self.cfg.keep_abandoned_deferred {
            for id in &self.deferred {
                if let Some(at) = self.reqs.get(id).and_then(|r| r.abandoned_at) {
                    consider((at + self.cfg.abandon_delay).max(self.last));
                }
            }
        }
        best
    }

    /// When the next whole token of any generating request falls due.
    pub fn next_token(&self) -> Option<Instant> {
        let rate = self.gen_rate(self.busy());
        self.slots
            .iter()
            .flatten()
            .filter_map(|id| self.reqs.get(id))
            .filter(|r| r.phase == Phase::Generating)
            .map(|r| {
                let next_whole = (r.emitted + 1) as f64;
                self.last + secs((next_whole - r.gen_done).max(0.0) / rate)
            })
            .min()
    }

    pub(super) fn busy(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub(super) fn prompt_rate(&self) -> f64 {
        self.cfg.prompt_tps * self.speed
    }

    /// Per-slot generation rate with `busy` slots busy.
    pub(super) fn gen_rate(&self, busy: usize) -> f64 {
        let n = busy.max(1);
        self.cfg.gen_tps * self.cfg.curve.factor(n) / n as f64 * self.speed
    }

    /// Moves the fluid state from `self.last` to `to` at constant rates.
    pub(super) fn integrate(&mut self, to: Instant) {
        if to <= self.last {
            return;
        }
        let dt = (to - self.last).as_secs_f64();
        let busy = self.busy();
        let (prate, grate) = (self.prompt_rate(), self.gen_rate(busy));
        let mut generating = 0usize;
        for id in self.slots.iter().flatten() {
            let Some(r) = self.reqs.get_mut(id) else {
                continue;
            };
            match r.phase {
                Phase::Prompt => {
                    r.prompt_done = (r.prompt_done + prate * dt).min(r.prompt_n() as f64)
                }
                Phase::Generating => {
                    generating += 1;
                    r.gen_done = (r.gen_done + grate * dt).min(r.spec.n_predict as f64);
                }
                Phase::Deferred => {}
            }
        }
        if generating > 0 {
            // One decode step yields one token for every generating slot.
            let steps = grate * dt;
            self.totals.decode_steps += steps;
            self.totals.busy_slot_steps += steps * generating as f64;
        }
        self.counters.deferred_integral += self.deferred.len() as f64 * dt;
        self.counters.load_integral += (busy + self.deferred.len()) as f64 * dt;
        self.last = to;
    }

    /// Applies every transition due at `now` (the state is integrated to it).
    pub(super) fn apply_transitions(&mut self, now: Instant, events: &mut Vec<Event>) {
        let busy = self.busy();
        let grate = self.gen_rate(busy);
        let prate = self.prompt_rate();
        let mut finished = Vec::new();
        for id in self.slots.iter().flatten() {
            let Some(r) = self.reqs.get_mut(id) else {
                continue;
            };
            if r.phase == Phase::Prompt && r.prompt_n() as f64 - r.prompt_done < EPS * prate {
                r.prompt_done = r.prompt_n() as f64;
                r.phase = Phase::Generating;
                r.prompt_end = Some(now);
                self.totals.decode_steps += 1.0;
                self.totals.busy_slot_steps += 1.0;
            }
            if r.phase == Phase::Generating && r.spec.n_predict as f64 - r.gen_done < EPS * grate {
                r.gen_done = r.spec.n_predict as f64;
                finished.push(*id);
            }
        }
        if !finished.is_empty() {
            self.emit_tokens(events);
        }
        for id in finished {
            self.finish(now, id, events);
        }
        if !self.cfg.keep_abandoned_deferred {
            let expired: Vec<ReqId> = self
                .deferred
                .iter()
                .copied()
                .filter(|id| {
                    self.reqs
                        .get(id)
                        .and_then(|r| r.abandoned_at)
                        .is_some_and(|at| at + self.cfg.abandon_delay <= now)
                })
                .collect();
            for id in expired {
                self.drop_deferred(id, events);
            }
        }
        self.schedule(now, events);
    }

    pub(super) fn emit_tokens(&mut self, events: &mut Vec<Event>) {
        for id in self.slots.iter().flatten() {
            let Some(r) = self.reqs.get_mut(id) else {
                continue;
            };
            if r.phase != Phase::Generating {
                continue;
            }
            let whole = ((r.gen_done + EPS).floor() as u32).min(r.spec.n_predict);
            if whole > r.emitted {
                events.push(Event::Tokens {
                    id: *id,
                    count: whole - r.emitted,
                    total: whole,
                });
                r.emitted = whole;
            }
        }
    }
}

fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s.min(1e9))
    } else {
        Duration::ZERO
    }
}
