//! Configuration reload on SIGHUP, without dropping work.
//!
//! The file is read and validated whole; an invalid file is refused with
//! every problem logged, and the running configuration stays. A valid one
//! replaces the backend list ([`Fleet::reconfigure`]): backends added start
//! being scraped, removed ones get no new requests while their in-flight
//! requests and streams finish, and weight, `max_in_flight` and `drain`
//! changes apply at once. Settings that need new sockets or threads
//! (listeners, worker threads) or rebuild the admission state are named in
//! a warning: apply them with a graceful upgrade (`sluice run --upgrade`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::backend::fleet::Fleet;
use crate::config::Config;

pub struct Reloader {
    pub path: PathBuf,
    pub fleet: Arc<Fleet>,
    pub running: Mutex<Config>,
}

/// Keys whose change a reload cannot apply in place.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.server != new.server {
        keys.push("server");
    }
    if old.admin != new.admin {
        keys.push("admin");
    }
    if old.scrape != new.scrape {
        keys.push("scrape");
    }
    if old.routing != new.routing {
        keys.push("routing");
    }
    if old.admission != new.admission {
        keys.push("queue/rate_limit/breaker/limiter/api_keys/auth");
    }
    keys
}

impl Reloader {
    /// Reads the file and applies what can be applied; returns whether the
    /// new file was valid.
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
        let changes = self.fleet.reconfigure(&new.backends);
        tracing::info!(
            added = ?changes.added,
            removed = ?changes.removed,
            updated = ?changes.updated,
            "configuration reloaded"
        );
        running.backends = new.backends;
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
