//! A clock for governor that reads no time source: the gate sets it to each
//! request's arrival time, so rate limits run on the same (pausable) clock
//! as the rest of admission.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use governor::clock::Clock;
use tokio::time::Instant;

/// A clock that reads no time source: it stands at the latest instant it
/// was given ([`GivenClock::set`]) and never goes back, so concurrent
/// callers with slightly different `now`s see a monotonic clock.
#[derive(Debug, Clone, Default)]
pub struct GivenClock {
    /// The first instant given; readings count from it.
    epoch: Arc<OnceLock<Instant>>,
    /// Nanoseconds since `epoch` of the latest instant given.
    nanos: Arc<AtomicU64>,
}

impl GivenClock {
    /// Moves the clock to `now` (if later than where it stands).
    pub fn set(&self, now: Instant) {
        let epoch = *self.epoch.get_or_init(|| now);
        let since = now.saturating_duration_since(epoch).as_nanos();
        let since = u64::try_from(since).unwrap_or(u64::MAX);
        self.nanos.fetch_max(since, Ordering::AcqRel);
    }
}

impl Clock for GivenClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}
