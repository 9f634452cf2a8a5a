//! The fleet: every backend, replaced whole on reload; what a request's end
//! and a scrape round teach each backend's breaker and limit; and the
//! fleet-wide estimates (typical duration, capacity rate) refusals use.
//! Which backend takes a request is [`super::choice`]; which serve a model,
//! [`super::catalog`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use arc_swap::ArcSwap;

use super::breaker::{may_eject, BreakerState, Outcome};
use super::eligibility::{assess, Assessment, Ineligible, Rules};
use super::limiter::ResponseSample;
use super::observed::Observed;
use super::policy::{BackendPolicy, Effects};
use super::replica_share::ReplicaShare;
use super::spec::{BackendConfig, PolicyParams};
use super::state::{Backend, Wake};
use crate::telemetry::Metrics;

pub struct Fleet {
    /// The current backends; replaced whole on reload and as a router's
    /// models load and unload ([`super::instances`]).
    pub(super) backends: ArcSwap<Vec<Arc<Backend>>>,
    /// Held by whoever replaces `backends` (reload, router sync), so one
    /// does not lose the other's change.
    pub(super) writers: std::sync::Mutex<()>,
    pub(super) rules: Rules,
    /// Every backend's breaker and limiter settings.
    admission: PolicyParams,
    next_id: AtomicUsize,
    pub metrics: Arc<Metrics>,
    /// Notified whenever a permit returns (see [`Backend`]).
    pub released: Arc<Wake>,
    /// This replica's part of each backend's slots (`[cluster]`).
    pub replica_share: ReplicaShare,
    /// Each live conversation's backend ([`super::homes`]).
    pub(super) homes: std::sync::Mutex<super::homes::Homes>,
}

/// Why no backend could take a request, with the facts a `Retry-After`
/// estimate needs. The fleet only reports; the gate turns this into the
/// client's answer (`admission::retry_after`), so one reason carries one
/// value whichever path asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Some backend is serving, but every one is full or overloaded.
    Busy,
    /// No backend is healthy and fresh.
    Unhealthy {
        /// When every breaker is open (or half-open), the shortest time
        /// until one lets a probe through; `None` while some breaker is
        /// closed (those backends are down for another reason).
        probe_in: Option<Duration>,
        /// `scrape.stale_after`: within it, a recovered backend shows up.
        stale_after: Duration,
    },
    /// The fleet serves several models and none of them is this one.
    UnknownModel,
    /// A router backend lists the model but none has it loaded, and
    /// `routing.unloaded_model = "refuse"`.
    ModelNotLoaded {
        /// `scrape.stale_after`: a model loaded meanwhile shows up within it.
        stale_after: Duration,
    },
}

/// What a reload changed in the fleet.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FleetChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub updated: Vec<String>,
}

impl Fleet {
    /// The fleet of `backends`, judged by `rules`, each with a policy from
    /// `policy`, counting into `metrics`.
    pub fn new(
        rules: Rules,
        policy: PolicyParams,
        backends: &[BackendConfig],
        metrics: Arc<Metrics>,
    ) -> Fleet {
        let fleet = Fleet {
            backends: ArcSwap::from_pointee(Vec::new()),
            writers: std::sync::Mutex::new(()),
            rules,
            admission: policy,
            next_id: AtomicUsize::new(0),
            metrics,
            released: Arc::new(Wake::default()),
            replica_share: ReplicaShare::default(),
            homes: Default::default(),
        };
        let backends = backends.iter().map(|b| fleet.make(b)).collect();
        fleet.backends.store(Arc::new(backends));
        fleet
    }

    pub(super) fn make(&self, b: &BackendConfig) -> Arc<Backend> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let a = &self.admission;
        let policy = BackendPolicy::new(
            a.breaker.clone(),
            a.limiter.clone(),
            a.adaptive,
            rand::random::<u64>() ^ id as u64,
        );
        Arc::new(Backend::new(
            id,
            b.clone(),
            policy,
            Arc::clone(&self.released),
            self.metrics.backend(&b.name),
        ))
    }

    /// The current backends.
    pub fn backends(&self) -> Arc<Vec<Arc<Backend>>> {
        self.backends.load_full()
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<Backend>> {
        self.backends().iter().find(|b| b.name() == name).cloned()
    }

    /// Applies a new backend list: a backend with the same name and address
    /// keeps its state and in-flight requests and takes the new weight, cap
    /// and drain flag; others are added or removed. A removed backend gets
    /// no new requests; those in flight finish (their permits hold it).
    pub fn reconfigure(&self, configs: &[BackendConfig]) -> FleetChanges {
        let _writing = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.backends();
        let mut changes = FleetChanges::default();
        let mut next = Vec::with_capacity(configs.len());
        for c in configs {
            match old
                .iter()
                .find(|b| b.name() == c.name && b.config.addr == c.addr)
            {
                Some(b) => {
                    if b.weight() != c.weight
                        || b.max_in_flight() != c.max_in_flight
                        || b.is_draining() != c.drain
                    {
                        changes.updated.push(c.name.clone());
                    }
                    b.reconfigure(c);
                    next.push(Arc::clone(b));
                }
                None => {
                    changes.added.push(c.name.clone());
                    next.push(self.make(c));
                }
            }
        }
        // A kept router keeps its loaded models' sub-backends, which take
        // its new weight, cap and drain flag.
        let mut kept: Vec<Arc<Backend>> = Vec::new();
        for b in old.iter() {
            if let Some(c) = configs
                .iter()
                .find(|c| super::router::is_child(&b.config, c))
            {
                b.reconfigure(c);
                kept.push(Arc::clone(b));
            }
        }
        next.extend(kept);
        for b in old.iter() {
            if !next.iter().any(|n| n.id == b.id) {
                changes.removed.push(b.name().to_string());
                if !next.iter().any(|n| n.name() == b.name()) {
                    self.metrics.forget_backend(b.name());
                }
            }
        }
        self.backends.store(Arc::new(next));
        self.released.changed();
        changes
    }

    /// The verdict on one backend now.
    pub fn assess(&self, b: &Backend, now: Instant) -> (Assessment, u32) {
        let obs = b.observed();
        let cap = self.replica_cap(b, &obs, now);
        let mut a = assess(&obs, b.in_flight(), cap, &self.rules, now);
        if a.verdict.is_ok() {
            if b.is_draining() || self.router_draining(b) {
                a.verdict = Err(Ineligible::Draining);
            } else if matches!(b.breaker_state(now), BreakerState::Open { .. }) {
                a.verdict = Err(Ineligible::BreakerOpen);
            }
        }
        (a, cap)
    }

    /// This replica's cap on `b`. Alone: the backend's cap (adaptive limit
    /// or slots). With other replicas: its part of the backend's slots
    /// (share and loans, [`ReplicaShare::part`]), not capped by its own
    /// adaptive limit: a replica's in-flight stays below a limit it holds
    /// only part of, so every deferral (another replica's) lowered the
    /// limit and nothing raised it again, and the lowered limit withheld
    /// the loans (3-4 replicas: 89 % goodput, 96 % without the cap, in
    /// `tests/cluster_fleet.rs`). Deferral is answered by the part itself
    /// (no loans, yielding) and by eligibility.
    fn replica_cap(&self, b: &Backend, obs: &Observed, now: Instant) -> u32 {
        let cap = b.cap(obs);
        if self.replica_share.get().1 <= 1 {
            return cap;
        }
        let whole = b.max_in_flight().or(obs.slots).unwrap_or(cap);
        self.replica_share.part(b.name(), whole, obs, now)
    }

    /// Is `b` a router's sub-backend whose router is drained?
    fn router_draining(&self, b: &Backend) -> bool {
        b.config.instance.is_some()
            && self
                .backends()
                .iter()
                .any(|p| p.is_draining() && super::router::is_child(&b.config, &p.config))
    }

    /// Is some backend able to take work now? (`/readyz`)
    pub fn ready(&self, now: Instant) -> bool {
        self.backends()
            .iter()
            .any(|b| self.assess(b, now).0.verdict.is_ok())
    }

    /// Why no backend can take a request: busy if some backend is alive
    /// but full or overloaded, else none is healthy.
    pub fn no_backend(&self, any_alive: bool, now: Instant) -> Unavailable {
        if any_alive {
            Unavailable::Busy
        } else {
            Unavailable::Unhealthy {
                probe_in: self.all_open_remaining(now),
                stale_after: self.rules.stale_after,
            }
        }
    }

    /// A request to `b` ended with `outcome`; feeds its breaker and limit.
    pub fn report(
        &self,
        b: &Backend,
        outcome: Outcome,
        sample: Option<ResponseSample>,
        now: Instant,
    ) {
        if outcome == Outcome::NotCounted
            && b.breaker_state(now) == BreakerState::Closed
            && sample.is_none()
        {
            return;
        }
        let backends = self.backends();
        let open = backends
            .iter()
            .filter(|o| o.breaker_state(now) != BreakerState::Closed)
            .count();
        let eject = may_eject(
            open,
            backends.len(),
            self.admission.breaker.max_ejected_share,
        );
        // Called while this request still holds its permit: it is leaving.
        let in_flight = b.in_flight().saturating_sub(1);
        let fx = b.with_policy(|p| p.on_outcome(outcome, sample, eject, in_flight, now));
        self.effects(b, fx);
    }

    /// A scrape round of `b` was published; feeds its breaker and limit.
    pub fn scraped(&self, b: &Backend, obs: &Observed, metrics_failed: bool, now: Instant) {
        let in_flight = b.in_flight();
        let fx = b.with_policy(|p| p.on_scrape(obs, metrics_failed, in_flight, now));
        self.effects(b, fx);
    }

    /// Counts and logs what a policy event changed.
    pub(super) fn effects_of(&self, b: &Backend, fx: Effects) {
        self.effects(b, fx)
    }

    pub(super) fn effects(&self, b: &Backend, fx: Effects) {
        for t in &fx.transitions {
            self.metrics
                .breaker_transition(b.name(), t.to.as_str(), t.cause.as_str());
            tracing::warn!(
                backend = b.name(),
                from = t.from.as_str(),
                to = t.to.as_str(),
                cause = t.cause.as_str(),
                "circuit breaker"
            );
        }
        if let Some(c) = fx.limit_change {
            self.metrics.limit_change(b.name(), c.reason.as_str());
            tracing::debug!(
                backend = b.name(),
                from = c.from,
                to = c.to,
                reason = c.reason.as_str(),
                "limit changed"
            );
        }
    }

    /// The mean of the backends' typical request durations, once known.
    pub fn typical_duration(&self) -> Option<Duration> {
        mean(self.backends().iter().filter_map(|b| b.mean_duration()))
    }

    /// The mean of the backends' durations in a full batch
    /// ([`Backend::loaded_duration`]), once known: how long a request takes
    /// once a burst has filled the slots.
    pub fn loaded_duration(&self) -> Option<Duration> {
        mean(self.backends().iter().filter_map(|b| b.loaded_duration()))
    }

    /// Calls `f` with each backend that serves (eligible, or refused only
    /// because it is full), its cap, and how long a request takes there in
    /// a full batch, where that is known: what the fleet's capacity figures
    /// ([`Fleet::capacity_rate`], the gate's slot schedule) are made of.
    pub fn each_serving(&self, now: Instant, mut f: impl FnMut(&Backend, u32, Duration)) {
        for b in self.backends().iter() {
            let (a, cap) = self.assess(b, now);
            let serving = a.verdict.is_ok() || a.verdict.is_err_and(Ineligible::is_busy);
            if let (true, Some(d)) = (serving, b.loaded_duration()) {
                f(b, cap, d);
            }
        }
    }

    /// Completions per second the fleet can sustain by its own figures: the
    /// sum over serving backends of cap ÷ the duration in a full batch.
    /// Known from the first completed request on each backend, where the
    /// measured drain rate needs tens of seconds of history.
    pub fn capacity_rate(&self, now: Instant) -> Option<f64> {
        let mut total = None;
        self.each_serving(now, |_, cap, d| {
            *total.get_or_insert(0.0) += f64::from(cap) / d.as_secs_f64().max(1e-3);
        });
        total
    }

    /// Shortest time until an open breaker lets a probe through, when no
    /// backend is closed (every one is open or half-open).
    pub fn all_open_remaining(&self, now: Instant) -> Option<Duration> {
        let mut min: Option<Duration> = None;
        for b in self.backends().iter() {
            match b.breaker_state(now) {
                BreakerState::Closed => return None,
                BreakerState::HalfOpen => return Some(Duration::ZERO),
                BreakerState::Open { until } => {
                    let r = until.saturating_duration_since(now);
                    min = Some(min.map_or(r, |m| m.min(r)));
                }
            }
        }
        min
    }
}

/// The mean of some durations (`None` for none).
fn mean(ds: impl Iterator<Item = Duration>) -> Option<Duration> {
    let (sum, n) = ds.fold((Duration::ZERO, 0u32), |(s, n), d| (s + d, n + 1));
    (n > 0).then(|| sum / n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::load::LoadSnapshot;
    use crate::backend::observed::{Health, Observed};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn fleet(n: usize) -> Fleet {
        let backends: Vec<_> = (0..n)
            .map(|i| BackendConfig {
                name: format!("b{i}"),
                url: format!("http://127.0.0.1:{}", 1000 + i),
                addr: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                weight: 1,
                max_in_flight: None,
                drain: false,
                models: Vec::new(),
                instance: None,
            })
            .collect();
        let rules = Rules {
            max_deferred: 0,
            stale_after: Duration::from_millis(1500),
            slow_scrape: Duration::from_secs(1),
            unloaded_model: Default::default(),
        };
        let policy = PolicyParams::default();
        Fleet::new(rules, policy, &backends, Arc::new(Metrics::new()))
    }

    fn publish(b: &Backend, processing: u32, deferred: u32, slots: u32, now: Instant) {
        b.publish(Observed {
            health: Health::Ok,
            load: Some((
                LoadSnapshot {
                    processing,
                    deferred,
                    ..Default::default()
                },
                now,
            )),
            slots: Some(slots),
            metrics_latency: Some(Duration::from_millis(1)),
            ..Default::default()
        });
    }

    #[test]
    fn fills_to_capacity_then_sheds_saturated() {
        let f = fleet(2);
        let now = Instant::now();
        let mut rng = SmallRng::seed_from_u64(9);
        for b in f.backends().iter() {
            publish(b, 0, 0, 2, now);
        }
        let permits: Vec<_> = (0..4)
            .map(|_| f.admit(&[], now, &mut rng).unwrap())
            .collect();
        assert_eq!(f.backends()[0].in_flight(), 2);
        assert_eq!(f.backends()[1].in_flight(), 2);
        assert_eq!(f.admit(&[], now, &mut rng).unwrap_err(), Unavailable::Busy);
        drop(permits);
        assert!(f.admit(&[], now, &mut rng).is_ok());
    }

    #[test]
    fn unhealthy_fleet_says_so() {
        let f = fleet(1);
        let mut rng = SmallRng::seed_from_u64(9);
        let e = f.admit(&[], Instant::now(), &mut rng).unwrap_err();
        assert_eq!(
            e,
            Unavailable::Unhealthy {
                probe_in: None,
                stale_after: f.rules.stale_after
            }
        );
        assert_eq!(f.pick_passthrough(Instant::now()).unwrap_err(), e);
    }

    #[test]
    fn exclusion_and_capacity_from_durations() {
        let f = fleet(2);
        let now = Instant::now();
        let mut rng = SmallRng::seed_from_u64(1);
        publish(&f.backends()[0], 0, 0, 1, now);
        publish(&f.backends()[1], 0, 0, 1, now);
        let p = f.admit(&[0], now, &mut rng).unwrap();
        assert_eq!(p.backend().id, 1);
        f.backends()[1].observe_duration(Duration::from_millis(4500));
        assert_eq!(f.typical_duration(), Some(Duration::from_millis(4500)));
        // Only b1 has a duration: one slot per 4.5 s.
        let rate = f.capacity_rate(now).unwrap();
        assert!((rate - 1.0 / 4.5).abs() < 1e-9, "rate {rate}");
    }
}
