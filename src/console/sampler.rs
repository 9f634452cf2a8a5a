//! The console's sampler: once a second it takes a [`Reading`] of the
//! gateway and records it in the shared [`History`]. Its cost per tick (a
//! registry gather, one queue lock, a walk of the fleet) is measured and
//! shown on the page, so the console's own price is always in view.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::{Instant, MissedTickBehavior};

use super::history::History;
use super::reading::Reading;
use crate::admission::gate::Gate;
use crate::backend::fleet::Fleet;
use crate::telemetry::Metrics;

/// One point a second: the page polls at most that often.
pub const TICK: Duration = Duration::from_secs(1);

/// What the sampler writes and the admin listener reads.
pub struct Console {
    history: Mutex<History>,
    /// How long the last tick took (reading and recording), microseconds.
    last_tick_us: AtomicU64,
}

impl Console {
    pub fn new(start: Instant) -> Console {
        Console {
            history: Mutex::new(History::new(start)),
            last_tick_us: Default::default(),
        }
    }

    pub fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sampler's own cost: the duration of its last tick.
    pub fn last_tick(&self) -> Duration {
        Duration::from_micros(self.last_tick_us.load(Ordering::Relaxed))
    }

    /// Takes one reading now and records it.
    pub fn sample(&self, fleet: &Fleet, gate: &Gate, metrics: &Metrics) {
        let now = Instant::now();
        let reading = Reading::take(fleet, gate, metrics, now);
        self.history().record(reading, now);
        let us = u64::try_from(now.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_tick_us.store(us, Ordering::Relaxed);
    }
}

/// The background service that samples every [`TICK`].
pub struct Sampler {
    pub console: Arc<Console>,
    pub fleet: Arc<Fleet>,
    pub gate: Arc<Gate>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            self.console.sample(&self.fleet, &self.gate, &self.metrics);
        }
    }
}
