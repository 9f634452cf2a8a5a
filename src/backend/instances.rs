//! The fleet's router sub-backends ([`super::router`]): one per model a
//! llama-server router has loaded (or is loading for a request), added and
//! removed as its `/models` changes, and the router that takes a request
//! for a model none has loaded.
//!
//! A sub-backend is an ordinary [`Backend`] in the fleet's list (named
//! `router/model`, the router's address), so admission, the breaker, the
//! limiter, `/status` and `/metrics` treat each loaded model as its own
//! capacity without knowing about routers.

use std::sync::Arc;

use tokio::time::Instant;

use super::breaker::BreakerState;
use super::fleet::{Fleet, Unavailable};
use super::observed::Health;
use super::router::{
    instance_config, is_child, RouterModel, RouterView, Status, UnloadedModel, LOAD_WAITERS,
};
use super::state::{Backend, Permit};

fn child_of(b: &Backend, parent: &Backend) -> bool {
    is_child(&b.config, &parent.config)
}

impl Fleet {
    /// Matches `parent`'s sub-backends to its `/models` (`None`: not a
    /// router, so none): one per loaded model; one made for a load on
    /// demand stays while its model loads or requests are in flight there.
    /// A sub-backend that stays keeps its state; a removed one gets no new
    /// requests (those in flight finish on their permits) and its series go.
    pub fn sync_instances(&self, parent: &Backend, router: Option<&RouterView>) {
        if parent.config.instance.is_some() {
            return;
        }
        let models: &[RouterModel] = router.map_or(&[], |r| &r.models);
        let keep = |b: &Backend| {
            b.in_flight() > 0
                || models.iter().any(|m| {
                    b.config.instance.as_ref().is_some_and(|i| i.model == m.id)
                        && matches!(m.status, Status::Loaded | Status::Loading)
                })
        };
        let _writing = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.backends();
        // The parent may have been removed by a reload meanwhile.
        if !current.iter().any(|b| b.id == parent.id) {
            return;
        }
        let mut next: Vec<Arc<Backend>> = Vec::with_capacity(current.len() + models.len());
        let mut changed = false;
        for b in current.iter() {
            if child_of(b, parent) && !keep(b) {
                changed = true;
                self.metrics.forget_backend(b.name());
                tracing::info!(
                    backend = b.name(),
                    "router model unloaded: sub-backend removed"
                );
                continue;
            }
            next.push(Arc::clone(b));
        }
        for m in models.iter().filter(|m| m.status == Status::Loaded) {
            let present = current.iter().any(|b| {
                child_of(b, parent) && b.config.instance.as_ref().is_some_and(|i| i.model == m.id)
            });
            if !present {
                changed = true;
                let c = instance_config(&parent.config, m);
                tracing::info!(backend = c.name, "router model loaded: sub-backend added");
                next.push(self.make(&c));
            }
        }
        if changed {
            self.backends.store(Arc::new(next));
            self.released.changed();
        }
    }

    /// `parent`'s sub-backend for `m`, made now if there is none.
    fn instance_of(&self, parent: &Backend, m: &RouterModel) -> Arc<Backend> {
        let _writing = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.backends();
        let found = current.iter().find(|b| {
            child_of(b, parent) && b.config.instance.as_ref().is_some_and(|i| i.model == m.id)
        });
        if let Some(b) = found {
            return Arc::clone(b);
        }
        let b = self.make(&instance_config(&parent.config, m));
        tracing::info!(
            backend = b.name(),
            "router model requested: sub-backend added to load it"
        );
        let mut next = current.as_ref().clone();
        next.push(Arc::clone(&b));
        self.backends.store(Arc::new(next));
        b
    }

    /// A request for `model`, which routers `routers` (indices into
    /// `backends`) list but none has loaded: refused, or sent to the router
    /// loading it already, else the least busy one, which loads it on
    /// demand (`routing.unloaded_model`). It goes through that model's
    /// sub-backend (made now if needed), so requests waiting for one
    /// model's load never take another model's room.
    pub(super) fn load_on_demand(
        &self,
        backends: &[Arc<Backend>],
        routers: &[usize],
        model: &str,
        skip: impl Fn(&Backend) -> bool,
        now: Instant,
    ) -> Result<Permit, Unavailable> {
        if self.rules.unloaded_model == UnloadedModel::Refuse {
            return Err(Unavailable::ModelNotLoaded {
                stale_after: self.rules.stale_after,
            });
        }
        let mut any_alive = false;
        let mut best: Option<(bool, u32, &Arc<Backend>, RouterModel)> = None;
        for &i in routers {
            let b = &backends[i];
            let obs = b.observed();
            let usable = obs.health == Health::Ok
                && !b.is_draining()
                && !matches!(b.breaker_state(now), BreakerState::Open { .. })
                && !skip(b);
            if !usable {
                continue;
            }
            any_alive = true;
            let Some(view) = obs.router.as_ref().filter(|r| r.autoload) else {
                // `--no-models-autoload`: it would not load the model.
                continue;
            };
            let Some(entry) = view.models.iter().find(|m| {
                let mut names = vec![m.id.clone()];
                names.extend(m.aliases.iter().cloned());
                super::models::matches(&names, model)
            }) else {
                continue;
            };
            let waiting = backends
                .iter()
                .filter(|c| child_of(c, b))
                .map(|c| c.in_flight())
                .sum::<u32>();
            let key = (entry.status != Status::Loading, waiting);
            if best.as_ref().is_none_or(|(l, n, _, _)| key < (*l, *n)) {
                best = Some((key.0, key.1, b, entry.clone()));
            }
        }
        let Some((_, _, router, entry)) = best else {
            if any_alive {
                // Up, but none loads models on demand.
                return Err(Unavailable::ModelNotLoaded {
                    stale_after: self.rules.stale_after,
                });
            }
            return Err(self.no_backend(false, now));
        };
        let b = self.instance_of(router, &entry);
        if skip(&b) {
            // A retry after this sub-backend failed: no other router has it.
            return Err(Unavailable::Busy);
        }
        let cap = router.max_in_flight().unwrap_or(LOAD_WAITERS);
        let Some(p) = b.try_acquire(cap, now, None) else {
            return Err(Unavailable::Busy);
        };
        let (ok, fx) = b.breaker_admits(now);
        self.effects_of(&b, fx);
        if ok {
            Ok(p)
        } else {
            Err(Unavailable::Busy)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;
    use crate::backend::eligibility::Rules;
    use crate::backend::load::LoadSnapshot;
    use crate::backend::observed::Observed;
    use crate::backend::spec::{BackendConfig, PolicyParams};
    use crate::telemetry::Metrics;

    fn fleet(unloaded_model: UnloadedModel) -> Fleet {
        let rules = Rules {
            max_deferred: 0,
            stale_after: Duration::from_millis(1500),
            slow_scrape: Duration::from_secs(1),
            unloaded_model,
        };
        let b = BackendConfig {
            name: "r".into(),
            url: "http://127.0.0.1:1".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            weight: 1,
            max_in_flight: None,
            drain: false,
            models: Vec::new(),
            instance: None,
        };
        Fleet::new(
            rules,
            PolicyParams::default(),
            &[b],
            Arc::new(Metrics::new()),
        )
    }

    fn model(id: &str, status: Status) -> RouterModel {
        RouterModel {
            id: id.into(),
            aliases: Vec::new(),
            status,
        }
    }

    /// The router `r` lists `tiny-a` with `a`, `tiny-b` and `tiny-c` unloaded.
    fn router_says(f: &Fleet, a: Status) -> Vec<RouterModel> {
        router_with(f, a, true)
    }

    fn router_with(f: &Fleet, a: Status, autoload: bool) -> Vec<RouterModel> {
        let list = vec![
            model("tiny-a", a),
            model("tiny-b", Status::Unloaded),
            model("tiny-c", Status::Unloaded),
        ];
        let r = f.by_name("r").unwrap();
        r.publish(Observed {
            health: Health::Ok,
            models: Some(Arc::new(vec![
                "tiny-a".into(),
                "tiny-b".into(),
                "tiny-c".into(),
            ])),
            router: Some(Arc::new(RouterView {
                models: list.clone(),
                autoload,
            })),
            ..Default::default()
        });
        let view = r.observed().router.clone().unwrap();
        f.sync_instances(&r, Some(&view));
        list
    }

    fn serving(b: &Backend, now: Instant) {
        b.publish(Observed {
            health: Health::Ok,
            load: Some((LoadSnapshot::default(), now)),
            slots: Some(2),
            metrics_latency: Some(Duration::from_millis(1)),
            ..Default::default()
        });
    }

    fn names(f: &Fleet) -> Vec<String> {
        f.backends().iter().map(|b| b.name().to_string()).collect()
    }

    #[test]
    fn loaded_models_become_sub_backends_and_leave_when_unloaded() {
        let f = fleet(UnloadedModel::Wait);
        let now = Instant::now();
        let mut rng = SmallRng::seed_from_u64(3);
        router_says(&f, Status::Loaded);
        assert_eq!(names(&f), ["r", "r/tiny-a"]);
        let a = f.by_name("r/tiny-a").unwrap();
        assert_eq!(a.config.models, ["tiny-a"]);
        // Loaded but not scraped yet: busy (the request queues), not down.
        let e = f
            .admit_with(&[], wants("tiny-a"), now, &mut rng)
            .unwrap_err();
        assert_eq!(e, Unavailable::Busy);
        serving(&a, now);
        // A loaded model goes to its instance, never to the router itself.
        let held: Vec<_> = (0..2)
            .map(|_| f.admit_with(&[], wants("tiny-a"), now, &mut rng).unwrap())
            .collect();
        assert!(held.iter().all(|p| p.backend().name() == "r/tiny-a"));
        // Its two slots are taken: busy, not sent to the router.
        let e = f
            .admit_with(&[], wants("tiny-a"), now, &mut rng)
            .unwrap_err();
        assert_eq!(e, Unavailable::Busy);
        drop(held);
        // Draining the router drains its models.
        f.by_name("r").unwrap().set_draining(true);
        assert!(f.admit_with(&[], wants("tiny-a"), now, &mut rng).is_err());
        f.by_name("r").unwrap().set_draining(false);
        assert!(f.admit_with(&[], wants("tiny-a"), now, &mut rng).is_ok());
        // The same sub-backend stays across syncs (its in-flight count too).
        router_says(&f, Status::Loaded);
        assert_eq!(f.by_name("r/tiny-a").unwrap().id, a.id);
        router_says(&f, Status::Unloaded);
        assert_eq!(names(&f), ["r"]);
        // A reload keeping the router keeps its sub-backend, with the
        // router's new settings; one removing it removes both.
        router_says(&f, Status::Loaded);
        let a = f.by_name("r/tiny-a").unwrap();
        let mut c = f.by_name("r").unwrap().config.clone();
        c.weight = 3;
        f.reconfigure(std::slice::from_ref(&c));
        assert_eq!(f.by_name("r/tiny-a").unwrap().id, a.id);
        assert_eq!(a.weight(), 3);
        c.name = "other".into();
        f.reconfigure(&[c]);
        assert_eq!(names(&f), ["other"]);
        let f = fleet(UnloadedModel::Wait);
        // Not a router any more: nothing to keep.
        router_says(&f, Status::Loaded);
        f.sync_instances(&f.by_name("r").unwrap(), None);
        assert_eq!(names(&f), ["r"]);
    }

    fn wants(model: &str) -> crate::backend::choice::Wants<'_> {
        crate::backend::choice::Wants {
            model: Some(model),
            ..Default::default()
        }
    }

    #[test]
    fn an_unloaded_model_waits_at_a_router_or_is_refused() {
        let now = Instant::now();
        let mut rng = SmallRng::seed_from_u64(3);
        let f = fleet(UnloadedModel::Wait);
        router_says(&f, Status::Loaded);
        serving(&f.by_name("r/tiny-a").unwrap(), now);
        let held: Vec<_> = (0..LOAD_WAITERS)
            .map(|_| {
                let p = f.admit_with(&[], wants("tiny-b"), now, &mut rng).unwrap();
                // Through tiny-b's own sub-backend, made for the load.
                assert_eq!(p.backend().name(), "r/tiny-b");
                p
            })
            .collect();
        assert_eq!(names(&f), ["r", "r/tiny-a", "r/tiny-b"]);
        // At most LOAD_WAITERS wait inside the router; more queue here.
        let e = f
            .admit_with(&[], wants("tiny-b"), now, &mut rng)
            .unwrap_err();
        assert_eq!(e, Unavailable::Busy);
        // ... without taking another model's room.
        let c = f.admit_with(&[], wants("tiny-c"), now, &mut rng).unwrap();
        assert_eq!(c.backend().name(), "r/tiny-c");
        // While tiny-b loads (or requests wait there) its sub-backend stays
        // and is no candidate of the ordinary choice; tiny-c, unloaded with
        // nothing in flight, goes.
        drop(c);
        router_says(&f, Status::Loaded);
        assert_eq!(names(&f), ["r", "r/tiny-a", "r/tiny-b"]);
        drop(held);
        router_says(&f, Status::Loaded);
        assert_eq!(names(&f), ["r", "r/tiny-a"]);
        let e = f.admit_with(&[], wants("nope"), now, &mut rng).unwrap_err();
        assert_eq!(e, Unavailable::UnknownModel);

        let f = fleet(UnloadedModel::Refuse);
        router_says(&f, Status::Loaded);
        serving(&f.by_name("r/tiny-a").unwrap(), now);
        let e = f
            .admit_with(&[], wants("tiny-b"), now, &mut rng)
            .unwrap_err();
        assert_eq!(
            e,
            Unavailable::ModelNotLoaded {
                stale_after: Duration::from_millis(1500)
            }
        );
        assert_eq!(r_in_flight(&f), 0);
        // A router started with --no-models-autoload is never sent a
        // request to wait for a load, whatever the policy.
        let f = fleet(UnloadedModel::Wait);
        router_with(&f, Status::Loaded, false);
        serving(&f.by_name("r/tiny-a").unwrap(), now);
        let e = f
            .admit_with(&[], wants("tiny-b"), now, &mut rng)
            .unwrap_err();
        assert!(matches!(e, Unavailable::ModelNotLoaded { .. }), "{e:?}");
        assert_eq!(r_in_flight(&f), 0);
        assert!(f.admit_with(&[], wants("tiny-a"), now, &mut rng).is_ok());
    }

    fn r_in_flight(f: &Fleet) -> u32 {
        f.by_name("r").unwrap().in_flight()
    }
}
