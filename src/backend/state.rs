//! One backend's shared state: its config, what was scraped, what is in flight.
//!
//! Shared by the scrape loop (writes [`Observed`]), the request path (reads it,
//! counts in-flight requests) and the admin listener (reads everything).
//! In-flight is an exact local count; a [`Permit`] holds one unit of it and
//! gives it back when dropped, whatever way the request ended. This atomic
//! is its only home: the limiter is handed the count at each decision
//! rather than keeping a copy. The breaker's state is read only through
//! [`Backend::breaker_state`], which resolves an open period that has run
//! out, so admission, `/status`, metrics and `Retry-After` agree.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use super::breaker::BreakerState;
use super::observed::Observed;
use super::policy::{BackendPolicy, Effects, PolicyView};
use super::running::Running;
use super::spec::BackendConfig;
use super::speed::{Speed, Work};
use crate::telemetry::BackendMetrics;

/// Weight of the newest sample in the duration average (1/8: smooth over
/// roughly the last eight requests).
const EWMA_SHIFT: u32 = 3;

pub struct Backend {
    /// Unique for the life of the process (backends come and go on reload).
    pub id: usize,
    /// Identity: name, URL and address never change for one `Backend`.
    pub config: BackendConfig,
    /// Reloadable settings.
    weight: AtomicU32,
    /// 0 = no cap beyond the slot count.
    max_in_flight: AtomicU32,
    pub metrics: BackendMetrics,
    observed: ArcSwap<Observed>,
    in_flight: AtomicU32,
    /// Operator drain: no new requests, in-flight ones finish.
    draining: AtomicBool,
    /// EWMA of request durations in microseconds (0 = no sample yet), from
    /// dispatch to end (a wait in the gateway queue is not the backend's):
    /// which `Retry-After`, the wait budgets and the standing bound scale
    /// by. Its only home. The limiter keeps a different figure for its
    /// change gate (successes only, configured weight and starting value),
    /// not a copy of this one.
    mean_duration_us: AtomicU64,
    /// The same average over the requests that ended while every slot this
    /// gateway may use here was taken (0 = none yet): how long a request
    /// takes in a full batch, which is how the slots free when a burst or
    /// an overload fills them ([`Backend::loaded_duration`]).
    full_duration_us: AtomicU64,
    /// Breaker and adaptive limit; locked briefly by the scrape loop, by
    /// request ends, and by admission only while the breaker is not closed.
    policy: Mutex<BackendPolicy>,
    /// The policy's latest view, read lock-free on the request path.
    view: ArcSwap<PolicyView>,
    /// Wakes the queue dispatcher when a permit returns and someone waits.
    released: Arc<Wake>,
    /// Measured per-token times, from completed requests' `timings`.
    speed: Mutex<Speed>,
    /// When each held request was dispatched and what it was expected to
    /// take (one entry per counted permit): when the next slots free.
    running: Mutex<Running>,
}

/// Wakes the queue dispatcher: on every returned permit while requests
/// wait in the queue (otherwise a wake per request would cost a cross-thread
/// hop on the hot path for nothing), and on any change of eligibility.
#[derive(Default)]
pub struct Wake {
    pub notify: Notify,
    /// Requests waiting in the gateway queue: the one count, published by
    /// the gate under its queue lock after every change, read here, by
    /// `/status` and by the `sluice_queue_depth` gauge.
    waiting: AtomicUsize,
}

impl Wake {
    /// Requests waiting in the gateway queue now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Publishes the queue length (the gate, holding its queue lock).
    pub fn set_waiting(&self, n: usize) {
        self.waiting.store(n, Ordering::Release);
    }

    /// A permit came back.
    pub fn released(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.notify.notify_one();
        }
    }

    /// Something changed that may let queued requests through.
    pub fn changed(&self) {
        self.notify.notify_one();
    }
}

impl Backend {
    pub fn new(
        id: usize,
        config: BackendConfig,
        policy: BackendPolicy,
        released: Arc<Wake>,
        metrics: BackendMetrics,
    ) -> Backend {
        let view = policy.view();
        Backend {
            id,
            weight: AtomicU32::new(config.weight),
            max_in_flight: AtomicU32::new(config.max_in_flight.unwrap_or(0)),
            draining: AtomicBool::new(config.drain),
            config,
            metrics,
            observed: ArcSwap::from_pointee(Observed::default()),
            in_flight: AtomicU32::new(0),
            mean_duration_us: AtomicU64::new(0),
            full_duration_us: AtomicU64::new(0),
            policy: Mutex::new(policy),
            view: ArcSwap::from_pointee(view),
            released,
            speed: Mutex::new(Speed::default()),
            running: Mutex::new(Running::default()),
        }
    }

    /// Learns per-token times from a completed request's `timings`; `busy`
    /// counts the requests it shared the backend with, itself included.
    pub fn observe_speed(&self, gen_ms: Option<f64>, prompt_ms: Option<f64>, busy: u32) {
        let mut s = self.speed.lock().unwrap_or_else(|e| e.into_inner());
        s.observe(gen_ms, prompt_ms, busy);
    }

    /// What `work` costs here beside `load` other requests, in milliseconds:
    /// its own time and the slowdown it brings them ([`Speed::marginal`];
    /// `None` until a completed request reported its speed).
    pub fn cost(&self, work: Work, load: u32) -> Option<f64> {
        let s = self.speed.lock().unwrap_or_else(|e| e.into_inner());
        s.marginal(work, load)
    }

    /// The measured speed (for `/status`).
    pub fn speed(&self) -> Speed {
        *self.speed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The policy's published view (limit, breaker state).
    pub fn view(&self) -> PolicyView {
        **self.view.load()
    }

    /// The breaker's state at `now`, as every reader must see it: an open
    /// period that has run out reads as half-open (see [`PolicyView::breaker`]).
    pub fn breaker_state(&self, now: Instant) -> BreakerState {
        self.view().breaker(now)
    }

    /// Runs `f` on the policy and publishes its new view.
    pub fn with_policy<R>(&self, f: impl FnOnce(&mut BackendPolicy) -> R) -> R {
        let mut p = self.policy.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut p);
        self.view.store(Arc::new(p.view()));
        r
    }

    /// Asks the breaker whether a request may go here now (takes a probe
    /// slot when half-open); a closed breaker answers without a lock.
    pub fn breaker_admits(&self, now: Instant) -> (bool, Effects) {
        if self.breaker_state(now) == BreakerState::Closed {
            return (true, Effects::default());
        }
        self.with_policy(|p| p.admit(now))
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn max_in_flight(&self) -> Option<u32> {
        match self.max_in_flight.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Applies the reloadable settings of a new configuration of the same
    /// backend (same name and address); in-flight requests are untouched.
    pub fn reconfigure(&self, c: &BackendConfig) {
        self.weight.store(c.weight, Ordering::Relaxed);
        self.max_in_flight
            .store(c.max_in_flight.unwrap_or(0), Ordering::Relaxed);
        self.draining.store(c.drain, Ordering::Relaxed);
    }

    pub fn observed(&self) -> Arc<Observed> {
        self.observed.load_full()
    }

    pub fn publish(&self, observed: Observed) {
        self.observed.store(Arc::new(observed));
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
    }

    /// The most requests this gateway may hold here: the adaptive limit
    /// (never above `max_in_flight`), else `max_in_flight`, else the slots.
    pub fn cap(&self, observed: &Observed) -> u32 {
        let fixed = self.max_in_flight().or(observed.slots);
        match (self.view().limit, self.max_in_flight()) {
            (Some(l), Some(m)) => l.min(m),
            (Some(l), None) => l,
            (None, _) => fixed.unwrap_or(1),
        }
        .max(1)
    }

    /// Takes one unit of in-flight if fewer than `cap` are taken.
    pub fn try_acquire(
        self: &Arc<Self>,
        cap: u32,
        now: Instant,
        expected: Option<Duration>,
    ) -> Option<Permit> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        let running = self.running().start(now, expected);
        Some(Permit {
            backend: Arc::clone(self),
            counted: true,
            running,
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long requests here took ÷ the choice's estimates of them (1
    /// until one with an estimate ended): a real duration ÷ this is the
    /// same duration in the estimates' units.
    pub fn cost_scale(&self) -> f64 {
        self.running().scale().filter(|s| *s > 0.0).unwrap_or(1.0)
    }

    /// When each request this gateway holds here was dispatched (the
    /// admission queue's slot schedule reads them).
    pub fn dispatched_at(&self) -> Vec<Instant> {
        self.running().dispatched_at().collect()
    }

    /// How long from `now` until the `n`-th slot here frees, judged from
    /// the ages of the requests held ([`Running::nth_free`]; `period`: what
    /// each request after those takes).
    pub fn nth_free(&self, n: usize, now: Instant, period: Duration) -> Option<Duration> {
        self.running()
            .nth_free(n, now, self.mean_duration(), period)
    }

    /// A pass to this backend that takes no in-flight unit: cheap
    /// passthrough reads occupy no slot, so they never count against the
    /// limit inference is admitted by (their own pool caps them).
    pub fn pass(self: &Arc<Self>) -> Permit {
        Permit {
            backend: Arc::clone(self),
            counted: false,
            running: 0,
        }
    }

    /// Records how long a completed request took, called while it still
    /// holds its permit: into the typical duration, and into the duration
    /// in a full batch when every slot this gateway may use here is taken.
    pub fn observe_duration(&self, d: Duration) {
        let sample = d.as_micros().min(u64::MAX as u128) as u64;
        ewma(&self.mean_duration_us, sample);
        if self.in_flight() >= self.cap(&self.observed.load()) {
            ewma(&self.full_duration_us, sample);
        }
    }

    /// The typical request duration here, if any request finished yet.
    pub fn mean_duration(&self) -> Option<Duration> {
        micros(&self.mean_duration_us)
    }

    /// How long a request takes here when the backend is full: the average
    /// over requests that ended in a full batch, never below the typical
    /// duration; the typical duration until a full batch was seen. A batch
    /// slows every request in it (on a CPU-bound server, two requests at
    /// once took 2.6× one alone), so this, not the typical duration, says
    /// how fast the slots free once a burst has filled them.
    pub fn loaded_duration(&self) -> Option<Duration> {
        let mean = self.mean_duration()?;
        Some(micros(&self.full_duration_us).map_or(mean, |f| f.max(mean)))
    }
}

/// Moves an EWMA of microseconds (0 = no sample: the first sets it)
/// towards `sample` by 1/2^[`EWMA_SHIFT`].
fn ewma(avg: &AtomicU64, sample: u64) {
    let _ = avg.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
        Some(if m == 0 {
            sample.max(1)
        } else {
            (m - (m >> EWMA_SHIFT) + (sample >> EWMA_SHIFT)).max(1)
        })
    });
}

/// An EWMA of microseconds as a duration (`None` before any sample).
fn micros(avg: &AtomicU64) -> Option<Duration> {
    match avg.load(Ordering::Relaxed) {
        0 => None,
        us => Some(Duration::from_micros(us)),
    }
}

/// One unit of a backend's in-flight count, returned on drop (or a
/// passthrough pass, which holds none).
pub struct Permit {
    backend: Arc<Backend>,
    /// Holds one unit of the backend's in-flight count (inference); a
    /// passthrough pass holds none.
    counted: bool,
    /// Its entry in the backend's [`Running`] table (counted permits).
    running: u64,
}

impl Permit {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Returns the permit of a request that ran to its end at `now`: its
    /// duration teaches the backend's table of requests held how long
    /// requests take against their estimates. Dropped without this (a
    /// client that left, a failure), it teaches nothing: a request cut
    /// short would read as faster than estimated.
    pub fn finish(self, now: Instant) {
        if self.counted {
            self.backend.running().end(self.running, now);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.counted {
            // Gone already if `finish` ran.
            self.backend.running().forget(self.running);
            self.backend.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.backend.released.released();
        }
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Permit({})", self.backend.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> Arc<Backend> {
        use crate::backend::breaker::BreakerConfig;
        use crate::backend::limiter::LimiterConfig;
        Arc::new(Backend::new(
            0,
            BackendConfig {
                name: "a".into(),
                url: "http://127.0.0.1:1".into(),
                addr: "127.0.0.1:1".parse().unwrap(),
                weight: 1,
                max_in_flight: None,
                drain: false,
                models: Vec::new(),
                instance: None,
            },
            BackendPolicy::new(BreakerConfig::default(), LimiterConfig::default(), true, 0),
            Arc::new(Wake::default()),
            crate::telemetry::Metrics::new().backend("a"),
        ))
    }

    #[test]
    fn permits_respect_the_cap_and_return_on_drop() {
        let b = backend();
        let p1 = b.try_acquire(2, Instant::now(), None).unwrap();
        let p2 = b.try_acquire(2, Instant::now(), None).unwrap();
        assert!(b.try_acquire(2, Instant::now(), None).is_none());
        assert_eq!(b.in_flight(), 2);
        drop(p1);
        assert_eq!(b.in_flight(), 1);
        let _p3 = b.try_acquire(2, Instant::now(), None).unwrap();
        drop(p2);
        assert_eq!(b.in_flight(), 1);
    }

    #[test]
    fn breaker_state_reads_an_elapsed_open_period_as_half_open() {
        use crate::backend::breaker::Outcome;
        let b = backend();
        let t0 = Instant::now();
        assert_eq!(b.breaker_state(t0), BreakerState::Closed);
        b.with_policy(|p| p.on_outcome(Outcome::ConnectError, None, true, 0, t0));
        let BreakerState::Open { until } = b.breaker_state(t0) else {
            panic!("{:?}", b.breaker_state(t0));
        };
        // Nothing has moved the breaker on; the published view reads right.
        assert_eq!(b.breaker_state(until), BreakerState::HalfOpen);
        assert!(b.breaker_admits(until).0, "a probe may go");
    }

    #[test]
    fn duration_average_moves_towards_samples() {
        let b = backend();
        assert_eq!(b.mean_duration(), None);
        b.observe_duration(Duration::from_millis(800));
        assert_eq!(b.mean_duration(), Some(Duration::from_millis(800)));
        for _ in 0..50 {
            b.observe_duration(Duration::from_millis(100));
        }
        let m = b.mean_duration().unwrap();
        assert!(m < Duration::from_millis(110), "{m:?}");
    }

    #[test]
    fn loaded_duration_counts_only_requests_that_ended_in_a_full_batch() {
        let b = backend();
        b.publish(Observed {
            slots: Some(2),
            ..Observed::default()
        });
        let now = Instant::now();
        assert_eq!(b.loaded_duration(), None);
        // Alone: the typical duration, and no full batch yet.
        let one = b.try_acquire(2, now, None).unwrap();
        b.observe_duration(Duration::from_millis(150));
        assert_eq!(b.loaded_duration(), Some(Duration::from_millis(150)));
        // Both slots taken: the slower request counts as loaded.
        let two = b.try_acquire(2, now, None).unwrap();
        b.observe_duration(Duration::from_millis(390));
        assert_eq!(b.loaded_duration(), Some(Duration::from_millis(390)));
        let mean = b.mean_duration().unwrap();
        assert!(mean < Duration::from_millis(200), "{mean:?}");
        // Alone again: the full-batch figure stays.
        drop(two);
        b.observe_duration(Duration::from_millis(150));
        assert_eq!(b.loaded_duration(), Some(Duration::from_millis(390)));
        drop(one);
        // Never below the typical duration.
        for _ in 0..40 {
            b.observe_duration(Duration::from_millis(900));
        }
        assert!(b.loaded_duration().unwrap() >= b.mean_duration().unwrap());
    }
}
