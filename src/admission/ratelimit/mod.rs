//! Request rate limits per key (API key name or client address): GCRA from
//! `governor`, one state per key, with per-key overrides.
//!
//! ## Why governor's GCRA
//!
//! GCRA keeps one timestamp per key (the theoretical arrival time), answers
//! in constant time without locks on the hot path (`DashMap` shards), and its
//! refusal carries the exact time until the next conforming request, which
//! is the honest `Retry-After`.
//!
//! ## Overrides
//!
//! A governor keyed limiter has one quota for all keys. Keys with their own
//! quota (from config, so a fixed set) get their own direct limiter; every
//! other key shares the keyed default. Memory for overrides is bounded by
//! the config; memory for the default is bounded by
//! [`RateLimits::retain_recent`], which drops every key whose state is the
//! same as a fresh one (its bucket has refilled). Call it periodically
//! (e.g. every 60 s).
//!
//! ## A cap on keys
//!
//! Between sweeps the keyed store holds at most `max_keys` keys (default
//! 65,536): a client that sends from ever new addresses cannot grow it
//! further. A new key that finds the store full first triggers a sweep of
//! idle keys (at most one a second); if the store is still full, the key
//! shares one overflow bucket with every other such key ([`Allowed::overflow`],
//! [`RateLimited::overflow`] say so, for a metric). Known keys keep their
//! own state throughout.
//!
//! ## Time
//!
//! The clock is a type parameter. The gate uses a [`GivenClock`]: it knows
//! only the times it is told, and the gate tells it each request's arrival
//! time ([`RateLimits::check_at`]), so rate limits read no clock and follow
//! the one the rest of the gateway uses (tokio's, pausable in tests).
//! [`governor::clock::FakeRelativeClock`] serves the unit tests here, which
//! advance it by hand and never sleep.
//!
//! ## Header data
//!
//! Both outcomes carry what the `x-ratelimit-*` headers need: `limit` (the
//! key's requests per minute), `remaining` (requests that would pass right
//! now), `reset` (time until the bucket is full again), and on refusal
//! `retry_after` (time until one request would pass).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{NotUntil, RateLimiter};

/// Default most keys held for the default quota.
pub const DEFAULT_MAX_KEYS: usize = 65_536;
/// The key every new key shares once the store is full (no configured key
/// name or `ip:` key can contain a NUL).
const OVERFLOW_KEY: &str = "\0overflow";
/// Longest pause between sweeps a full store triggers (clock nanoseconds).
const FULL_SWEEP_EVERY: u64 = 1_000_000_000;

mod clock;
mod config;

pub use clock::GivenClock;
pub use config::{InvalidRateLimitConfig, KeyQuota, RateLimitConfig, RateLimitParams};

// === Outcomes ===

/// A request that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    /// The key's requests per minute.
    pub limit: u32,
    /// Requests that would still pass right now.
    pub remaining: u32,
    /// Time until the bucket is full again.
    pub reset: Duration,
    /// Counted against the shared overflow bucket (the store was full).
    pub overflow: bool,
}

/// A request refused with 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// Time until one request would pass (sent as `Retry-After` by the
    /// gate's one rule, [`crate::admission::retry_after::RetryAfter`]).
    pub retry_after: Duration,
    /// The key's requests per minute.
    pub limit: u32,
    /// Always 0.
    pub remaining: u32,
    /// Time until the bucket is full again.
    pub reset: Duration,
    /// Counted against the shared overflow bucket (the store was full).
    pub overflow: bool,
}

// === The keyed store ===

/// governor's `DashMap` store, shared with [`RateLimits`] so that it can see
/// which keys are held and how many (the limiter does not expose its store).
#[derive(Debug, Default, Clone)]
struct SharedStore(Arc<DashMapStateStore<String>>);

impl StateStore for SharedStore {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<String> for SharedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&*self.0, drop_below)
    }

    fn shrink_to_fit(&self) {
        self.0.shrink_to_fit()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// === RateLimits ===

type Keyed<C> = RateLimiter<String, SharedStore, C, StateInformationMiddleware>;
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

/// Per-key request rate limits. `check` takes `&self` (governor is
/// lock-free), so one instance can be shared behind an `Arc`.
pub struct RateLimits<C: Clock = DefaultClock> {
    default_quota: KeyQuota,
    default: Keyed<C>,
    /// The keyed store `default` counts in.
    store: SharedStore,
    max_keys: usize,
    /// Nanoseconds since `start` of the last sweep a full store caused.
    last_full_sweep: AtomicU64,
    overrides: HashMap<String, (KeyQuota, Direct<C>)>,
    clock: C,
    start: C::Instant,
}

impl<C: Clock> fmt::Debug for RateLimits<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimits")
            .field("default", &self.default_quota)
            .field("overrides", &self.overrides.len())
            .field("keys", &self.default.len())
            .finish()
    }
}

// === impl RateLimits ===

impl RateLimits<DefaultClock> {
    /// Limits on the production clock; checks `cfg` first (tests).
    pub fn new(cfg: &RateLimitConfig) -> Result<Self, InvalidRateLimitConfig> {
        Self::with_clock(cfg, DefaultClock::default())
    }

    /// Limits on the production clock, from checked parameters.
    pub fn with_params(params: &RateLimitParams) -> Self {
        Self::with_params_and_clock(params, DefaultClock::default())
    }
}

impl RateLimits<GivenClock> {
    /// Counts one request for `key` that arrived at `now`.
    pub fn check_at(&self, key: &str, now: Instant) -> Result<Allowed, RateLimited> {
        self.clock.set(now);
        self.check(key)
    }

    /// [`RateLimits::retain_recent`] as of `now`.
    pub fn retain_recent_at(&self, now: Instant) {
        self.clock.set(now);
        self.retain_recent();
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    /// Limits on a given clock (tests pass a `FakeRelativeClock`).
    pub fn with_clock(cfg: &RateLimitConfig, clock: C) -> Result<Self, InvalidRateLimitConfig> {
        Ok(Self::with_params_and_clock(
            &RateLimitParams::new(cfg.clone())?,
            clock,
        ))
    }

    /// Limits on a given clock, from checked parameters.
    pub fn with_params_and_clock(params: &RateLimitParams, clock: C) -> Self {
        let overrides = params
            .overrides
            .iter()
            .map(|(key, (q, quota))| {
                let lim = RateLimiter::direct_with_clock(*quota, clock.clone())
                    .with_middleware::<StateInformationMiddleware>();
                (key.clone(), (*q, lim))
            })
            .collect();
        let store = SharedStore::default();
        let default: Keyed<C> = RateLimiter::new(params.default, store.clone(), clock.clone());
        Self {
            default_quota: params.cfg.default,
            default,
            store,
            max_keys: params.cfg.max_keys,
            last_full_sweep: AtomicU64::new(0),
            overrides,
            start: clock.now(),
            clock,
        }
    }

    /// Counts one request for `key`; refuses it if over the key's quota.
    pub fn check(&self, key: &str) -> Result<Allowed, RateLimited> {
        let mut overflow = false;
        let (quota, result) = match self.overrides.get(key) {
            Some((q, lim)) => (*q, lim.check()),
            None => {
                overflow = !self.has_room_for(key);
                let key = if overflow { OVERFLOW_KEY } else { key };
                (self.default_quota, self.default.check_key(&key.to_owned()))
            }
        };
        match result {
            Ok(snapshot) => Ok(Allowed {
                overflow,
                ..allowed(quota, &snapshot)
            }),
            Err(not_until) => Err(RateLimited {
                overflow,
                ..self.limited(quota, &not_until)
            }),
        }
    }

    /// Whether `key` has (or may get) state of its own: it is held, or the
    /// store is under its cap, or a sweep of idle keys made room.
    fn has_room_for(&self, key: &str) -> bool {
        let store = &self.store.0;
        if store.contains_key(key) || store.len() < self.max_keys {
            return true;
        }
        let now = self.clock.now().duration_since(self.start).as_u64();
        let last = self.last_full_sweep.load(Ordering::Relaxed);
        // 0: never swept.
        let due = last == 0 || now.saturating_sub(last) >= FULL_SWEEP_EVERY;
        if due
            && self
                .last_full_sweep
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.default.retain_recent();
        }
        store.len() < self.max_keys
    }

    /// Drops keys whose state equals a fresh one; call periodically.
    pub fn retain_recent(&self) {
        self.default.retain_recent();
        self.default.shrink_to_fit();
    }

    /// Most keys held for the default quota (plus the overflow bucket).
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Keys held for the default quota (overrides not counted).
    pub fn len(&self) -> usize {
        self.default.len()
    }

    /// Whether no default-quota key is held.
    pub fn is_empty(&self) -> bool {
        self.default.is_empty()
    }

    fn limited(&self, quota: KeyQuota, not_until: &NotUntil<C::Instant>) -> RateLimited {
        let retry_after = not_until.wait_time_from(self.clock.now());
        let interval = not_until.quota().replenish_interval();
        let refill_rest = interval.saturating_mul(quota.burst.saturating_sub(1));
        RateLimited {
            retry_after,
            limit: quota.requests_per_minute,
            remaining: 0,
            reset: retry_after.saturating_add(refill_rest),
            overflow: false,
        }
    }
}

fn allowed(quota: KeyQuota, snapshot: &StateSnapshot) -> Allowed {
    let remaining = snapshot.remaining_burst_capacity();
    let interval = snapshot.quota().replenish_interval();
    Allowed {
        limit: quota.requests_per_minute,
        remaining,
        reset: interval.saturating_mul(quota.burst.saturating_sub(remaining)),
        overflow: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::retry_after::RetryAfter;
    use governor::clock::FakeRelativeClock;

    fn cfg(rpm: u32, burst: u32) -> RateLimitConfig {
        RateLimitConfig {
            default: KeyQuota {
                requests_per_minute: rpm,
                burst,
            },
            overrides: HashMap::new(),
            max_keys: DEFAULT_MAX_KEYS,
        }
    }

    fn limits(c: &RateLimitConfig) -> (RateLimits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimits::with_clock(c, clock.clone()).unwrap(), clock)
    }

    #[test]
    fn invalid_config_names_field_and_value() {
        let err = RateLimits::new(&cfg(0, 5)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rate_limit.requests_per_minute = 0 is not valid: must be at least 1"
        );
        let mut c = cfg(60, 5);
        c.overrides.insert(
            "team-a".into(),
            KeyQuota {
                requests_per_minute: 10,
                burst: 0,
            },
        );
        assert_eq!(
            RateLimits::new(&c).unwrap_err().to_string(),
            "rate_limit.overrides.\"team-a\".burst = 0 is not valid: must be at least 1"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_given_clock_follows_the_times_given_and_never_goes_back() {
        let rl = RateLimits::with_clock(&cfg(60, 1), GivenClock::default()).unwrap();
        let t = Instant::now();
        rl.check_at("k", t).unwrap();
        let r = rl
            .check_at("k", t + Duration::from_millis(400))
            .unwrap_err();
        assert_eq!(r.retry_after, Duration::from_millis(600));
        // An earlier `now` from a slower thread does not move it back.
        let r = rl.check_at("k", t).unwrap_err();
        assert_eq!(r.retry_after, Duration::from_millis(600));
        rl.check_at("k", t + Duration::from_secs(1)).unwrap();
        // No clock read: real or paused time passing changes nothing.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(rl.check("k").is_err());
    }

    #[test]
    fn burst_then_refusal_with_retry_after() {
        // 60/min = one per second, burst 3.
        let (rl, clock) = limits(&cfg(60, 3));
        let a = rl.check("k").unwrap();
        assert_eq!((a.limit, a.remaining), (60, 2));
        assert_eq!(a.reset, Duration::from_secs(1));
        rl.check("k").unwrap();
        let a = rl.check("k").unwrap();
        assert_eq!(a.remaining, 0);
        assert_eq!(a.reset, Duration::from_secs(3));
        let r = rl.check("k").unwrap_err();
        assert_eq!(r.retry_after, Duration::from_secs(1));
        assert_eq!(RetryAfter::default().secs(r.retry_after), 1);
        assert_eq!((r.limit, r.remaining), (60, 0));
        assert_eq!(r.reset, Duration::from_secs(3));
        clock.advance(Duration::from_millis(400));
        let r = rl.check("k").unwrap_err();
        assert_eq!(r.retry_after, Duration::from_millis(600));
        clock.advance(Duration::from_millis(600));
        assert_eq!(rl.check("k").unwrap().remaining, 0);
    }

    #[test]
    fn keys_are_independent() {
        let (rl, _clock) = limits(&cfg(60, 1));
        rl.check("a").unwrap();
        assert!(rl.check("a").is_err());
        assert!(rl.check("b").is_ok());
    }

    #[test]
    fn overrides_have_their_own_quota() {
        let mut c = cfg(60, 1);
        c.overrides.insert(
            "batch".into(),
            KeyQuota {
                requests_per_minute: 6,
                burst: 3,
            },
        );
        let (rl, clock) = limits(&c);
        for left in [2, 1, 0] {
            let a = rl.check("batch").unwrap();
            assert_eq!((a.limit, a.remaining), (6, left));
        }
        let r = rl.check("batch").unwrap_err();
        assert_eq!(r.retry_after, Duration::from_secs(10));
        assert_eq!(r.limit, 6);
        clock.advance(Duration::from_secs(10));
        assert!(rl.check("batch").is_ok());
        assert_eq!(rl.len(), 0, "overrides are not in the keyed store");
    }

    #[test]
    fn retain_recent_evicts_idle_keys() {
        let (rl, clock) = limits(&cfg(60, 5));
        for i in 0..1000 {
            rl.check(&format!("client-{i}")).unwrap();
        }
        assert_eq!(rl.len(), 1000);
        rl.retain_recent();
        assert_eq!(
            rl.len(),
            1000,
            "fresh state still differs from a full bucket"
        );
        clock.advance(Duration::from_secs(2));
        rl.check("active").unwrap();
        rl.retain_recent();
        assert_eq!(rl.len(), 1);
        assert!(!rl.is_empty());
    }

    #[test]
    fn a_full_store_sweeps_idle_keys_then_shares_one_overflow_bucket() {
        let mut c = cfg(60, 2);
        c.max_keys = 100;
        let (rl, clock) = limits(&c);
        for i in 0..100 {
            assert!(!rl.check(&format!("ip:10.0.0.{i}")).unwrap().overflow);
        }
        assert_eq!(rl.len(), 100);
        // Full: new keys share the overflow bucket (burst 2), held ones not.
        let a = rl.check("ip:192.0.2.1").unwrap();
        assert!(a.overflow);
        assert!(rl.check("ip:192.0.2.2").unwrap().overflow);
        let r = rl.check("ip:192.0.2.3").unwrap_err();
        assert!(r.overflow, "the shared bucket ran out");
        assert!(!rl.check("ip:10.0.0.5").unwrap().overflow);
        assert_eq!(rl.len(), 101, "the cap plus the one overflow bucket");
        // Once the held keys are idle (bucket refilled), a new key sweeps
        // them out and gets state of its own.
        clock.advance(Duration::from_secs(5));
        assert!(!rl.check("ip:192.0.2.4").unwrap().overflow);
        assert!(rl.len() <= 3, "idle keys evicted: {}", rl.len());
        let mut bad = c.clone();
        bad.max_keys = 0;
        assert!(RateLimits::new(&bad)
            .unwrap_err()
            .to_string()
            .contains("max_tracked_keys"));
    }

    #[test]
    fn churn_of_keys_never_grows_the_store_past_the_cap() {
        let mut c = cfg(600, 60);
        c.max_keys = 1000;
        let (rl, clock) = limits(&c);
        for i in 0..20_000u32 {
            let _ = rl.check(&format!("ip:{i}"));
            if i % 100 == 0 {
                clock.advance(Duration::from_millis(10));
            }
            assert!(rl.len() <= 1001, "{} keys after {i}", rl.len());
        }
    }

    #[test]
    fn default_config_is_valid() {
        let rl = RateLimits::new(&RateLimitConfig::default()).unwrap();
        assert_eq!(rl.check("x").unwrap().limit, 600);
    }
}
