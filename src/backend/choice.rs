//! Which backend takes a request, or why none can: model, cache home,
//! expected cost and free slots weighed in one pass over the fleet.
//!
//! Each backend is assessed against the published observations; among the
//! eligible ones serving the request's model, its conversation's home
//! ([`super::homes`]) is preferred unless clearly busier
//! ([`super::affinity`]), else the cheaper of two random choices
//! ([`super::selector`], [`super::speed`]). A request that may queue is told
//! to wait when a faster full backend frees a slot sooner than a slow free
//! one would finish it, or when its full home would finish a later turn
//! sooner than another backend reprocessing the whole history; a queued
//! turn asking for its home only (`Wants::home_only`) takes nothing else.
//! A lost race (another thread took the last unit) just retries the pick.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::affinity;
use super::catalog::{loaded, serves};
use super::eligibility::Ineligible;
use super::fleet::{Fleet, Unavailable};
use super::homes::Place;
use super::selector::{choose, Candidate, Scope};
use super::speed::{leaving_home, slot_wait, worth_waiting, FullBackend, Work, WAIT_SHARE};
use super::state::{Backend, Permit};

/// The part of its patience a later turn may spend waiting for its home,
/// when the wait is judged from the ages of the requests the home holds
/// ([`super::running`]): half. Those estimates firm up as the requests age
/// and the turn is judged again at every freed slot, so it leaves in time
/// if they were wrong; and leaving costs the fleet the whole history's
/// processing again.
const HOME_WAIT_SHARE: f64 = 0.5;

/// What a request asks of the choice, besides a free slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants<'a> {
    /// The `model` it names: only backends serving it (in a multi-model
    /// fleet; a single-model fleet serves any name, as llama-server does).
    pub model: Option<&'a str>,
    /// Its prompt prefix: the cache home is preferred ([`affinity`]).
    pub prefix: Option<u64>,
    /// Its expected tokens: the cheaper of two backends is chosen ([`super::speed`]).
    pub work: Option<Work>,
    /// How long it may wait in the gateway queue, when it may: a request is
    /// told to wait ([`Unavailable::Busy`]) rather than take a much slower
    /// free backend when a faster one frees a slot soon ([`worth_waiting`]).
    pub patience: Option<Duration>,
    /// Prompt tokens its cache home likely holds (a later turn of a chat:
    /// all but what follows the last answer): worth waiting for the home's
    /// next slot rather than processing them again elsewhere.
    pub reuse: Option<u64>,
    /// Only its conversation's home will do (a queued turn that may take
    /// a slot ahead of its turn only there); without a prefix, anything.
    pub home_only: bool,
}

impl Fleet {
    /// Takes a permit on the best eligible backend not in `exclude`.
    pub fn admit<R: Rng + ?Sized>(
        &self,
        exclude: &[usize],
        now: Instant,
        rng: &mut R,
    ) -> Result<Permit, Unavailable> {
        self.admit_with(exclude, Wants::default(), now, rng)
    }

    /// [`Fleet::admit`] for a request whose prompt starts with `prefix`: its
    /// cache home when not clearly busier ([`super::affinity`]), else the
    /// least utilised of two random choices.
    pub fn admit_with<R: Rng + ?Sized>(
        &self,
        exclude: &[usize],
        wants: Wants<'_>,
        now: Instant,
        rng: &mut R,
    ) -> Result<Permit, Unavailable> {
        let backends = self.backends();
        let model = wants.model.filter(|_| self.multi_model(&backends));
        let prefix = wants.prefix;
        let mut refused: Vec<usize> = Vec::new();
        for _ in 0..4 {
            let mut cands = Vec::with_capacity(backends.len());
            let mut full: Vec<FullBackend> = Vec::new();
            // Backends busy now but still a conversation's home.
            let mut busy: Vec<(usize, u32)> = Vec::new();
            let mut any_alive = false;
            let mut any_serves = model.is_none();
            // Does a backend other than a router list the model (then it
            // is loaded somewhere), and which routers list it?
            let mut loaded_somewhere = false;
            let mut routers: Vec<usize> = Vec::new();
            for (i, b) in backends.iter().enumerate() {
                let router = b.observed().router.is_some();
                // A sub-backend made for a load on demand takes requests
                // only through `load_on_demand` until the load is done.
                let pending = !loaded(&backends, b);
                if let Some(m) = model {
                    if !serves(b, m) {
                        continue;
                    }
                    any_serves = true;
                    if router {
                        routers.push(i);
                        continue;
                    }
                    if pending {
                        continue;
                    }
                    loaded_somewhere = true;
                } else if router || pending {
                    // A router itself takes only requests naming a model.
                    continue;
                }
                if exclude.contains(&b.id) || refused.contains(&b.id) {
                    continue;
                }
                let (a, cap) = self.assess(b, now);
                match a.verdict {
                    Ok(()) => {
                        any_alive = true;
                        cands.push(Candidate {
                            id: i,
                            load: a.load,
                            cap,
                            weight: b.weight(),
                            cost_us: wants
                                .work
                                .and_then(|w| b.cost(w, a.load))
                                .map(|ms| (ms * 1000.0).min(u64::MAX as f64) as u64),
                        });
                    }
                    Err(why) if why.is_busy() => {
                        any_alive = true;
                        busy.push((i, cap));
                        let cost = wants.work.and_then(|w| b.cost(w, cap.saturating_sub(1)));
                        if let (Ineligible::Full, Some(cost_ms)) = (why, cost) {
                            full.push(FullBackend {
                                id: i,
                                cap,
                                cost_ms,
                            });
                        }
                    }
                    // A router's model just loaded, not scraped yet: the
                    // request waits in the queue for its first figures.
                    Err(Ineligible::Unknown) if b.config.instance.is_some() => any_alive = true,
                    Err(_) => {}
                }
            }
            if !any_serves {
                return Err(Unavailable::UnknownModel);
            }
            let home = prefix.and_then(|p| {
                let places: Vec<Place> = (cands.iter().map(|c| (c.id, c.cap)))
                    .chain(busy.iter().copied())
                    .map(|(id, slots)| Place {
                        id,
                        name: backends[id].name(),
                        slots,
                    })
                    .collect();
                let mut homes = self.homes.lock().unwrap_or_else(|e| e.into_inner());
                homes.home(p, &places, now)
            });
            if self.better_to_wait(&cands, &full, wants.patience) {
                return Err(Unavailable::Busy);
            }
            if self.better_to_wait_for_home(&backends, &cands, &full, home, wants, now) {
                if let (Some(p), Some(patience)) = (prefix, wants.patience) {
                    let mut homes = self.homes.lock().unwrap_or_else(|e| e.into_inner());
                    homes.wait(p, now + patience);
                }
                return Err(Unavailable::Busy);
            }
            if let (Some(m), false, false) = (model, loaded_somewhere, routers.is_empty()) {
                let skip = |b: &Backend| exclude.contains(&b.id) || refused.contains(&b.id);
                return self.load_on_demand(&backends, &routers, m, skip, now);
            }
            let home = match (wants.home_only, home) {
                (true, Some(h)) if cands.iter().any(|c| c.id == h) => Some(h),
                (true, Some(_)) => return Err(Unavailable::Busy),
                _ => prefix.and_then(|p| affinity::prefer(&cands, |i| backends[i].name(), p, home)),
            };
            // Alone, this gateway's loads are exact: compare them all.
            let scope = match self.replica_share.get().1 {
                0 | 1 => Scope::Alone,
                _ => Scope::Shared,
            };
            let Some(i) = home.or_else(|| choose(&cands, scope, rng)) else {
                return Err(self.no_backend(any_alive, now));
            };
            let chosen = cands.iter().find(|c| c.id == i);
            let cap = chosen.map_or(1, |c| c.cap);
            let expected = chosen.and_then(|c| c.cost_us).map(Duration::from_micros);
            let b = &backends[i];
            if let Some(p) = b.try_acquire(cap, now, expected) {
                // Half-open breakers admit a few probes only.
                let (ok, fx) = b.breaker_admits(now);
                self.effects(b, fx);
                if ok {
                    if let Some(p) = prefix {
                        // The conversation's newest turn, hence its
                        // longest cached prefix, is here now.
                        let mut homes = self.homes.lock().unwrap_or_else(|e| e.into_inner());
                        homes.ran(p, b.name(), now);
                    }
                    let in_flight = b.in_flight();
                    if b.view().limit.is_some() {
                        b.with_policy(|pol| pol.on_in_flight(in_flight));
                    }
                    return Ok(p);
                }
                refused.push(b.id);
            }
        }
        Err(self.no_backend(true, now))
    }

    /// [`worth_waiting`] over the free candidates' and full backends' costs
    /// (all free ones measured, or there is no telling).
    fn better_to_wait(
        &self,
        cands: &[Candidate],
        full: &[FullBackend],
        patience: Option<Duration>,
    ) -> bool {
        let (Some(patience), false) = (patience, full.is_empty() || cands.is_empty()) else {
            return false;
        };
        let costs: Option<Vec<u64>> = cands.iter().map(|c| c.cost_us).collect();
        let Some(cheapest) = costs.and_then(|c| c.into_iter().min()) else {
            return false;
        };
        let Some(wait) = slot_wait(full, self.released.waiting()) else {
            return false;
        };
        let after = full.iter().map(|f| f.cost_ms).fold(f64::INFINITY, f64::min);
        worth_waiting(
            cheapest as f64 / 1000.0,
            wait,
            after,
            patience.as_secs_f64() * 1000.0,
            WAIT_SHARE,
        )
    }

    /// A later turn whose home ([`super::homes`]) is full: [`worth_waiting`]
    /// for the home's next slot, with only the new part of the prompt to
    /// process there, against the whole prompt on the cheapest free backend.
    /// The other turns waiting for the same home are ahead of it there; the
    /// slot it gets is judged from the ages of the requests the home holds
    /// ([`super::running`]: a wave that began with its previous turn ends
    /// about when it did), else from the home's rate.
    fn better_to_wait_for_home(
        &self,
        backends: &[Arc<Backend>],
        cands: &[Candidate],
        full: &[FullBackend],
        home: Option<usize>,
        wants: Wants<'_>,
        now: Instant,
    ) -> bool {
        let (Some(home), Some(prefix), Some(reuse), Some(work), Some(patience)) =
            (home, wants.prefix, wants.reuse, wants.work, wants.patience)
        else {
            return false;
        };
        let Some(f) = full.iter().find(|f| f.id == home) else {
            // The home is free (`affinity::prefer` takes it) or unmeasured.
            return false;
        };
        let costs: Option<Vec<u64>> = cands.iter().map(|c| c.cost_us).collect();
        let Some(cheapest) = costs.and_then(|c| c.into_iter().min()) else {
            return false;
        };
        let new = Work {
            prompt: work.prompt.saturating_sub(reuse),
            ..work
        };
        let Some(after) = backends[home].cost(new, f.cap.saturating_sub(1)) else {
            return false;
        };
        let ahead = {
            let homes = self.homes.lock().unwrap_or_else(|e| e.into_inner());
            homes.waiting_for(backends[home].name(), prefix, now)
        };
        // Those ahead are later turns too: each takes about what this one does.
        let period = Duration::from_secs_f64(after.max(0.0) / 1000.0);
        let (wait, share) = match backends[home].nth_free(ahead + 1, now, period) {
            Some(w) => (w.as_secs_f64() * 1000.0, HOME_WAIT_SHARE),
            None => match slot_wait(std::slice::from_ref(f), ahead) {
                Some(w) => (w, WAIT_SHARE),
                None => return false,
            },
        };
        // The wait and the costs are in the estimates' units; the patience
        // is real time: in those units it is patience ÷ (actual ÷ estimated).
        let patience = patience.as_secs_f64() * 1000.0 / backends[home].cost_scale();
        let saved = backends[home]
            .speed()
            .prompt_ms()
            .map(|ms| ms * reuse as f64);
        let elsewhere = leaving_home(
            cheapest as f64 / 1000.0,
            after,
            saved,
            self.released.waiting() > 0,
        );
        worth_waiting(elsewhere, wait, after, patience, share)
    }

    /// A backend for a cheap read (`/v1/models`, `/props`): healthy and fresh,
    /// however busy, preferring the least loaded.
    pub fn pick_passthrough(&self, now: Instant) -> Result<Permit, Unavailable> {
        self.backends()
            .iter()
            .filter_map(|b| {
                let (a, _) = self.assess(b, now);
                match a.verdict {
                    Ok(()) | Err(Ineligible::Full | Ineligible::Overloaded) => Some((a.load, b)),
                    // A router has no figures of its own but answers reads.
                    Err(Ineligible::Unknown)
                        if b.observed().router.is_some()
                            && b.observed().health == super::observed::Health::Ok =>
                    {
                        Some((b.in_flight(), b))
                    }
                    Err(_) => None,
                }
            })
            .min_by_key(|(load, _)| *load)
            .map(|(_, b)| b.pass())
            .ok_or_else(|| self.no_backend(false, now))
    }
}
