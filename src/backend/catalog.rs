//! The fleet's models: which backends serve a name (configured aliases,
//! discovered lists, a router's loaded models), the fleet's list for
//! `/v1/models`, and the bounded metrics label of a requested name.

use std::sync::Arc;

use super::fleet::Fleet;
use super::observed::Observed;
use super::state::Backend;

/// Does `b` serve `model`? Its configured names (`backends[].models`)
/// first, then what `/v1/models` listed; with neither known yet it may (the
/// first scrape round runs before the proxy serves).
pub(super) fn serves(b: &Backend, model: &str) -> bool {
    let pinned = &b.config.models;
    if super::models::matches(pinned, model) {
        return true;
    }
    match &b.observed().models {
        Some(m) => super::models::matches(m, model),
        None => pinned.is_empty(),
    }
}

/// Does `parent`'s `/models` give `model` this status?
pub(super) fn has_status(parent: &Backend, model: &str, wanted: &[super::router::Status]) -> bool {
    parent.observed().router.as_ref().is_some_and(|r| {
        r.models
            .iter()
            .any(|m| m.id == model && wanted.contains(&m.status))
    })
}

/// Is `b` an ordinary backend, or a sub-backend whose model its router
/// lists as loaded? (A sub-backend made for a load on demand is not, until
/// the load is done.)
pub(super) fn loaded(backends: &[Arc<Backend>], b: &Backend) -> bool {
    let Some(i) = &b.config.instance else {
        return true;
    };
    backends.iter().any(|p| {
        super::router::is_child(&b.config, &p.config)
            && has_status(p, &i.model, &[super::router::Status::Loaded])
    })
}

/// The names a backend answers to: configured ones, then discovered ones.
pub(super) fn names(b: &Backend) -> Vec<String> {
    let mut all = b.config.models.clone();
    for m in b.observed().models.iter().flat_map(|m| m.iter()) {
        if !all.contains(m) {
            all.push(m.clone());
        }
    }
    all
}

impl Fleet {
    /// Does the fleet serve more than one model (by what `/v1/models`
    /// listed)? Only then does a request's `model` restrict the choice.
    pub(super) fn multi_model(&self, backends: &[Arc<Backend>]) -> bool {
        // On the request path: compares in place, allocates nothing.
        fn listed(o: &Observed) -> &[String] {
            o.models.as_deref().map_or(&[][..], |m| m.as_slice())
        }
        let mut first: Option<(&Backend, Arc<Observed>)> = None;
        for b in backends {
            let o = b.observed();
            if o.router.is_some() {
                // A router's models are routed by name.
                return true;
            }
            if b.config.models.is_empty() && listed(&o).is_empty() {
                continue;
            }
            match &first {
                None => first = Some((b, o)),
                Some((fb, fo)) => {
                    if fb.config.models != b.config.models || listed(fo) != listed(&o) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Every model name the fleet's backends list, once each, in fleet order.
    pub fn models(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for b in self.backends().iter() {
            for m in names(b) {
                if !all.contains(&m) {
                    all.push(m);
                }
            }
        }
        all
    }

    /// The metrics label for a request naming `model`: the fleet's own
    /// spelling of the name it matched (configured or discovered), `"other"`
    /// when no backend answers to it, `"none"` without a name. Bounded by the
    /// fleet's names, whatever clients send.
    pub fn model_label(&self, model: Option<&str>) -> String {
        let Some(wanted) = model else {
            return "none".to_string();
        };
        for b in self.backends().iter() {
            let o = b.observed();
            let listed = o.models.as_deref().map_or(&[][..], |m| m.as_slice());
            for names in [&b.config.models[..], listed] {
                if let Some(n) = names
                    .iter()
                    .find(|n| super::models::matches(std::slice::from_ref(n), wanted))
                {
                    return n.clone();
                }
            }
        }
        "other".to_string()
    }
}
