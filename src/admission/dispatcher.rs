//! The dispatcher: wakes when a permit returns or a scrape lands (and every
//! few milliseconds regardless) and lets the [`Gate`] hand free capacity to
//! queued requests; once a minute it evicts idle rate-limit keys so memory
//! stays bounded under key churn.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::gate::Gate;
use crate::backend::fleet::Fleet;

/// Also pump on a timer: a deadline can pass with nothing else happening.
const TICK: Duration = Duration::from_millis(20);
const EVICT_EVERY: Duration = Duration::from_secs(60);

pub struct Dispatcher {
    pub gate: Arc<Gate>,
    pub fleet: Arc<Fleet>,
}

#[async_trait]
impl BackgroundService for Dispatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last_evict = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.fleet.released.notify.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
            // The glue reads the clock; the gate only calls it.
            self.gate.pump(Instant::now);
            let now = Instant::now();
            if now.duration_since(last_evict) >= EVICT_EVERY {
                self.gate.evict_idle_keys(now);
                last_evict = now;
            }
        }
    }
}
