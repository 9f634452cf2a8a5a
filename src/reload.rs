//! Configuration reload on SIGHUP, without dropping work.
//!
//! The file is read and validated whole; an invalid file is refused with
//! every problem logged, and the running configuration stays, all of it.
//! A valid one is applied in place ([`Live::apply`]):
//!
//! - the backend list, through the [`Roster`] that also holds the
//!   DNS-discovered members (so neither undoes the other), into
//!   [`Fleet::reconfigure`]: backends added start being
//!   scraped, removed ones get no new requests while their in-flight
//!   requests and streams finish, and weight, `max_in_flight` and `drain`
//!   changes apply at once;
//! - API keys, `auth.require_key`, rate limits, token budgets and the
//!   completion estimate ([`Gate::reconfigure`]): swapped whole, read
//!   without a lock on the request path; a revoked key is refused from the
//!   next request on, while requests in flight or queued are untouched;
//! - the admin token ([`AdminToken::set`]).
//!
//! Settings that need new sockets or threads (listeners, worker threads) or
//! rebuild the queue and backend policies are named in a warning: apply
//! them with a graceful upgrade (`sluice run --upgrade`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::AdminToken;
use crate::admission::gate::{Gate, GateParams, KeyRing};
use crate::backend::discovery::Roster;
use crate::backend::fleet::{Fleet, FleetChanges};
use crate::config::Config;

/// The parts of a running gateway a reload changes in place.
#[derive(Clone)]
pub struct Live {
    pub fleet: Arc<Fleet>,
    pub gate: Arc<Gate>,
    pub admin_token: Arc<AdminToken>,
    /// Owns the fleet's list (configured backends and discovered members).
    pub roster: Arc<Roster>,
}

impl Live {
    /// Applies what a reload can apply of `new` (see the module docs).
    pub fn apply(&self, new: &Config) -> FleetChanges {
        self.gate.reconfigure(&new.admission.gate);
        self.admin_token.set(new.admin.token.as_deref());
        self.roster.configure(&new.backends, &new.discovery.entries)
    }
}

pub struct Reloader {
    pub path: PathBuf,
    pub live: Live,
    /// The configuration in effect (restart-only parts as started).
    pub running: Mutex<Config>,
}

/// The gate's parameters that a reload cannot apply (the queue, wait
/// budgets, drain estimate): `p` without the reloadable ones.
fn restart_only_gate(p: &GateParams) -> GateParams {
    GateParams {
        rate_limit: None,
        token_budget: None,
        completion_estimate: 0,
        api_keys: KeyRing::default(),
        require_key: false,
        ..p.clone()
    }
}

/// Keys whose change a reload cannot apply in place.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.server != new.server {
        keys.push("server");
    }
    if old.admin.listen != new.admin.listen {
        keys.push("admin.listen");
    }
    if old.scrape != new.scrape {
        keys.push("scrape");
    }
    if old.routing != new.routing {
        keys.push("routing");
    }
    if restart_only_gate(&old.admission.gate) != restart_only_gate(&new.admission.gate) {
        keys.push("queue");
    }
    if old.admission.policy != new.admission.policy {
        keys.push("breaker/limiter");
    }
    if old.discovery.nameservers != new.discovery.nameservers {
        keys.push("discovery.nameservers");
    }
    if old.cluster != new.cluster {
        keys.push("cluster");
    }
    keys
}

impl Reloader {
    pub fn new(path: PathBuf, live: Live, running: Config) -> Reloader {
        Reloader {
            path,
            live,
            running: Mutex::new(running),
        }
    }

    /// Reads the file and applies what can be applied; returns whether the
    /// new file was valid (if not, nothing changed).
    pub fn reload(&self) -> bool {
        let new = match Config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                for p in &e.problems {
                    tracing::error!(file = %self.path.display(), problem = %p, "reload refused");
                }
                tracing::error!(
                    file = %self.path.display(),
                    "reload refused: the new configuration is invalid; the running one stays"
                );
                return false;
            }
        };
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for key in restart_only_changes(&running, &new) {
            tracing::warn!(
                section = key,
                "changed, but takes effect only after a restart or graceful upgrade"
            );
        }
        let changes = self.live.apply(&new);
        tracing::info!(
            added = ?changes.added,
            removed = ?changes.removed,
            updated = ?changes.updated,
            keys = ?self.live.gate.key_names(),
            require_key = new.admission.gate.require_key,
            "configuration reloaded"
        );
        let gate = &mut running.admission.gate;
        let n = &new.admission.gate;
        gate.api_keys = n.api_keys.clone();
        gate.require_key = n.require_key;
        gate.rate_limit = n.rate_limit.clone();
        gate.token_budget = n.token_budget.clone();
        gate.completion_estimate = n.completion_estimate;
        running.admin.token = new.admin.token;
        running.backends = new.backends;
        running.discovery.entries = new.discovery.entries;
        true
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload is unavailable");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup.recv() => {
                    tracing::info!(file = %self.path.display(), "SIGHUP: reloading configuration");
                    self.reload();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n";

    #[test]
    fn keys_auth_limits_and_budgets_are_not_restart_only() {
        let old = Config::parse(B).unwrap();
        let new = Config::parse(&format!(
            "{B}[[api_keys]]\nname = \"k\"\nkey = \"sk-0123456789\"\n[auth]\nrequire_key = true\n\
             [rate_limit]\nenabled = true\n[token_budget]\nenabled = true\ncompletion_estimate = 9\n"
        ))
        .unwrap();
        assert_eq!(restart_only_changes(&old, &new), Vec::<&str>::new());
        let queue = Config::parse(&format!("{B}[queue]\ncapacity = 3\n")).unwrap();
        assert_eq!(restart_only_changes(&old, &queue), vec!["queue"]);
    }
}
