//! Token budgets per key: tokens per minute, charged an estimate when a
//! request is admitted and reconciled from the response's `usage`.
//!
//! ## Why estimate, then reconcile
//!
//! The real cost of a completion (prompt + generated tokens) is known only
//! at the end, but the decision must be made at the start. So admission
//! charges an estimate (the caller's: prompt length / 4 + `max_tokens`, say),
//! and [`TokenBudget::reconcile`] refunds the difference or charges the
//! excess once `usage` arrives. A failed request is reconciled with 0 used.
//!
//! ## The bucket
//!
//! Each key has a bucket of `burst` tokens refilling at
//! `tokens_per_minute / 60` per second. A request is admitted when the
//! bucket holds its estimate, or, for an estimate larger than the whole
//! burst, when the bucket is full (otherwise it could never pass); the
//! charge may then take the level below zero, down to `-max_debt`. Debt is
//! honest accounting for requests that cost more than estimated; bounding
//! it keeps one huge mistaken estimate from locking a key out for hours.
//!
//! A key absent from the map has a full bucket, so a key whose bucket has
//! refilled is indistinguishable from a fresh one and
//! [`TokenBudget::evict_idle`] drops it: memory stays bounded by the keys
//! active within about one refill period. Between sweeps the map holds at
//! most `max_keys` keys: a new key that finds it full first sweeps idle
//! keys out (at most once a second), and if it is still full shares one
//! overflow bucket with every other such key (`overflow` in the outcomes,
//! for a metric).
//!
//! Pure: time is passed in, no locks (the caller wraps it in a `Mutex`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

// === Config ===

/// Budget for one key or the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenQuota {
    /// Sustained tokens per minute (also the `x-ratelimit-limit-tokens`).
    pub tokens_per_minute: u64,
    /// Bucket size: tokens that may be spent at once.
    pub burst: u64,
    /// Largest debt after reconciliation.
    pub max_debt: u64,
}

/// Budget parameters, validated in [`TokenBudget::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Budget for keys without an override. Default 200 000 tokens per
    /// minute, burst and max debt the same: several long-context requests
    /// at once, while one key cannot hold a small fleet (a 4-slot backend
    /// processes on the order of 10^5 prompt+generated tokens per minute)
    /// for minutes on its own.
    pub default: TokenQuota,
    /// Keys with their own budget.
    pub overrides: HashMap<String, TokenQuota>,
    /// Most keys held at once (see the module docs).
    pub max_keys: usize,
}

/// Default most keys held.
pub const DEFAULT_MAX_KEYS: usize = 65_536;
/// The bucket new keys share once the map is full (no key name or `ip:`
/// key contains a NUL).
const OVERFLOW_KEY: &str = "\0overflow";
/// Longest pause between sweeps a full map triggers.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(1);

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            default: TokenQuota {
                tokens_per_minute: 200_000,
                burst: 200_000,
                max_debt: 200_000,
            },
            overrides: HashMap::new(),
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

/// A configuration value that cannot work; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidBudgetConfig(pub String);

impl fmt::Display for InvalidBudgetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidBudgetConfig {}

impl TokenQuota {
    fn validate(&self, field: &str) -> Result<(), InvalidBudgetConfig> {
        // 10^12 tokens per minute is beyond any fleet and keeps f64 exact.
        const MAX: u64 = 1_000_000_000_000;
        for (name, v, min) in [
            ("tokens_per_minute", self.tokens_per_minute, 1),
            ("burst", self.burst, 1),
            ("max_debt", self.max_debt, 0),
        ] {
            if v < min || v > MAX {
                return Err(InvalidBudgetConfig(format!(
                    "{field}.{name} = {v} is not valid: must be in [{min}, {MAX}]"
                )));
            }
        }
        Ok(())
    }

    fn per_sec(&self) -> f64 {
        self.tokens_per_minute as f64 / 60.0
    }
}

impl BudgetConfig {
    /// Checks every quota; the error names the first bad field and value.
    pub fn validate(&self) -> Result<(), InvalidBudgetConfig> {
        self.default.validate("budget")?;
        if self.max_keys == 0 {
            return Err(InvalidBudgetConfig(
                "token_budget.max_tracked_keys = 0 is not valid: must be at least 1".into(),
            ));
        }
        for (key, q) in &self.overrides {
            q.validate(&format!("budget.overrides.\"{key}\""))?;
        }
        Ok(())
    }
}

/// A [`BudgetConfig`] that passed [`BudgetConfig::validate`]: what budgets
/// are built from, so building them cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetParams(BudgetConfig);

impl BudgetParams {
    pub fn new(cfg: BudgetConfig) -> Result<Self, InvalidBudgetConfig> {
        cfg.validate()?;
        Ok(Self(cfg))
    }

    pub fn config(&self) -> &BudgetConfig {
        &self.0
    }
}

// === Outcomes ===

/// An admitted charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charged {
    /// The key's tokens per minute.
    pub limit: u64,
    /// Tokens left after the charge (0 when in debt).
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset: Duration,
    /// Charged to the shared overflow bucket (the map was full).
    pub overflow: bool,
}

/// A refusal (429) for lack of tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetExceeded {
    /// Time until the estimate would fit.
    pub retry_after: Duration,
    /// The key's tokens per minute.
    pub limit: u64,
    /// Tokens available now.
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset: Duration,
    /// Counted against the shared overflow bucket (the map was full).
    pub overflow: bool,
}

// === TokenBudget ===

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens available as of `at`; negative is debt.
    level: f64,
    at: Instant,
}

/// Token buckets per key. See the module docs.
#[derive(Debug, Clone)]
pub struct TokenBudget {
    cfg: BudgetConfig,
    buckets: HashMap<String, Bucket>,
    /// When a full map last swept idle keys.
    last_full_sweep: Option<Instant>,
}

// === impl TokenBudget ===

impl TokenBudget {
    /// Empty budgets (every key starts full); checks `cfg` first (tests).
    pub fn new(cfg: BudgetConfig) -> Result<Self, InvalidBudgetConfig> {
        Ok(Self::with_params(BudgetParams::new(cfg)?))
    }

    /// Empty budgets from checked parameters.
    pub fn with_params(params: BudgetParams) -> Self {
        Self {
            cfg: params.0,
            buckets: HashMap::new(),
            last_full_sweep: None,
        }
    }

    /// Budgets with new parameters that keep what every key has spent
    /// (a reload): levels above a smaller new burst are capped as they
    /// are read.
    pub fn with_params_keeping(params: BudgetParams, old: &TokenBudget) -> Self {
        let mut b = Self::with_params(params);
        b.buckets = old.buckets.clone();
        b
    }

    /// The bucket `key` counts in: its own, or when the map is full (after
    /// a sweep of idle keys) the shared overflow bucket.
    fn bucket_key<'k>(&mut self, key: &'k str, now: Instant) -> (Cow<'k, str>, bool) {
        if self.buckets.contains_key(key) || self.buckets.len() < self.cfg.max_keys {
            return (Cow::Borrowed(key), false);
        }
        let due = self
            .last_full_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= FULL_SWEEP_EVERY);
        if due {
            self.last_full_sweep = Some(now);
            self.evict_idle(now);
            if self.buckets.len() < self.cfg.max_keys {
                return (Cow::Borrowed(key), false);
            }
        }
        (Cow::Owned(OVERFLOW_KEY.to_string()), true)
    }

    /// Charges `estimate` tokens to `key` if its budget allows.
    pub fn charge(
        &mut self,
        key: &str,
        estimate: u64,
        now: Instant,
    ) -> Result<Charged, BudgetExceeded> {
        let (key, overflow) = self.bucket_key(key, now);
        let key = key.as_ref();
        let q = self.quota(key);
        let level = self.level(key, &q, now);
        let need = estimate.min(q.burst) as f64;
        if level < need {
            let wait = (need - level) / q.per_sec();
            return Err(BudgetExceeded {
                retry_after: secs(wait),
                limit: q.tokens_per_minute,
                remaining: level.max(0.0) as u64,
                reset: reset(&q, level),
                overflow,
            });
        }
        let after = (level - estimate as f64).max(-(q.max_debt as f64));
        self.store(key, after, now);
        Ok(Charged {
            limit: q.tokens_per_minute,
            remaining: after.max(0.0) as u64,
            reset: reset(&q, after),
            overflow,
        })
    }

    /// Settles a charge once the real usage is known: refunds
    /// `estimated − actual`, or charges the excess (debt bounded by
    /// `max_debt`). Pass `actual = 0` for a request that failed.
    pub fn reconcile(&mut self, key: &str, estimated: u64, actual: u64, now: Instant) {
        let (key, _) = self.bucket_key(key, now);
        let key = key.as_ref();
        let q = self.quota(key);
        let level = self.level(key, &q, now);
        let delta = estimated as f64 - actual as f64;
        let after = (level + delta).clamp(-(q.max_debt as f64), q.burst as f64);
        self.store(key, after, now);
    }

    /// Tokens `key` could spend now (0 when in debt).
    pub fn remaining(&self, key: &str, now: Instant) -> u64 {
        let q = self.quota(key);
        self.level(key, &q, now).max(0.0) as u64
    }

    /// Drops every key whose bucket has refilled (same as a fresh key);
    /// returns how many. Call periodically.
    pub fn evict_idle(&mut self, now: Instant) -> usize {
        let before = self.buckets.len();
        let cfg = &self.cfg;
        self.buckets.retain(|key, b| {
            let q = cfg.overrides.get(key).unwrap_or(&cfg.default);
            refill(b, q, now) < q.burst as f64
        });
        before - self.buckets.len()
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn quota(&self, key: &str) -> TokenQuota {
        *self.cfg.overrides.get(key).unwrap_or(&self.cfg.default)
    }

    fn level(&self, key: &str, q: &TokenQuota, now: Instant) -> f64 {
        self.buckets
            .get(key)
            .map_or(q.burst as f64, |b| refill(b, q, now))
    }

    fn store(&mut self, key: &str, level: f64, now: Instant) {
        match self.buckets.get_mut(key) {
            Some(b) => {
                b.level = level;
                b.at = b.at.max(now);
            }
            None => {
                self.buckets
                    .insert(key.to_owned(), Bucket { level, at: now });
            }
        }
    }
}

fn refill(b: &Bucket, q: &TokenQuota, now: Instant) -> f64 {
    let dt = now.saturating_duration_since(b.at).as_secs_f64();
    (b.level + dt * q.per_sec()).min(q.burst as f64)
}

fn reset(q: &TokenQuota, level: f64) -> Duration {
    secs((q.burst as f64 - level).max(0.0) / q.per_sec())
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quota(tpm: u64, burst: u64, debt: u64) -> TokenQuota {
        TokenQuota {
            tokens_per_minute: tpm,
            burst,
            max_debt: debt,
        }
    }

    fn budget(q: TokenQuota) -> TokenBudget {
        TokenBudget::new(BudgetConfig {
            default: q,
            overrides: HashMap::new(),
            max_keys: DEFAULT_MAX_KEYS,
        })
        .unwrap()
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn invalid_config_names_field_and_value() {
        let err = TokenBudget::new(BudgetConfig {
            default: quota(0, 10, 0),
            overrides: HashMap::new(),
            max_keys: DEFAULT_MAX_KEYS,
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "budget.tokens_per_minute = 0 is not valid: must be in [1, 1000000000000]"
        );
        TokenBudget::new(BudgetConfig::default()).unwrap();
    }

    #[test]
    fn charges_until_empty_then_refuses_with_retry_after() {
        let t = Instant::now();
        // 6000/min = 100 tokens per second.
        let mut b = budget(quota(6000, 1000, 1000));
        let c = b.charge("k", 600, t).unwrap();
        assert_eq!((c.limit, c.remaining), (6000, 400));
        assert_eq!(c.reset, s(6));
        let r = b.charge("k", 600, t).unwrap_err();
        assert_eq!(r.retry_after, s(2));
        assert_eq!(r.remaining, 400);
        assert!(b.charge("k", 600, t + s(2)).is_ok());
        assert!(b.charge("other", 1000, t).is_ok(), "keys are independent");
    }

    #[test]
    fn reconcile_refunds_and_charges_extra() {
        let t = Instant::now();
        let mut b = budget(quota(6000, 1000, 500));
        b.charge("k", 800, t).unwrap();
        b.reconcile("k", 800, 300, t);
        assert_eq!(b.remaining("k", t), 700);
        // Underestimated: 100 estimated, 1100 used → 600 − 1000 = −400.
        b.charge("k", 100, t).unwrap();
        b.reconcile("k", 100, 1100, t);
        assert_eq!(b.remaining("k", t), 0);
        let r = b.charge("k", 1, t).unwrap_err();
        // From −400 to +1 at 100/s: 4.01 s.
        assert!((r.retry_after.as_secs_f64() - 4.01).abs() < 1e-6);
        // Debt is bounded at −500.
        b.reconcile("k", 0, 5000, t);
        let r = b.charge("k", 1, t).unwrap_err();
        assert!((r.retry_after.as_secs_f64() - 5.01).abs() < 1e-6);
        // A refund never overfills the bucket.
        b.reconcile("k", 10_000, 0, t);
        assert_eq!(b.remaining("k", t), 1000);
    }

    #[test]
    fn estimate_above_burst_passes_from_full_bucket_into_debt() {
        let t = Instant::now();
        let mut b = budget(quota(6000, 1000, 1000));
        let c = b.charge("k", 5000, t).unwrap();
        assert_eq!(c.remaining, 0);
        assert_eq!(c.reset, s(20), "from -1000 to 1000 at 100/s");
        let r = b.charge("k", 5000, t).unwrap_err();
        assert_eq!(r.retry_after, s(20));
    }

    #[test]
    fn overrides_apply() {
        let t = Instant::now();
        let mut cfg = BudgetConfig {
            default: quota(60, 10, 0),
            overrides: HashMap::new(),
            max_keys: DEFAULT_MAX_KEYS,
        };
        cfg.overrides.insert("big".into(), quota(60_000, 10_000, 0));
        let mut b = TokenBudget::new(cfg).unwrap();
        assert!(b.charge("small", 100, t).is_ok(), "above burst from full");
        assert!(b.charge("small", 1, t).is_err());
        let c = b.charge("big", 5000, t).unwrap();
        assert_eq!((c.limit, c.remaining), (60_000, 5000));
    }

    #[test]
    fn a_full_map_sweeps_idle_keys_then_shares_one_overflow_bucket() {
        let t = Instant::now();
        let mut cfg = BudgetConfig {
            default: quota(6000, 1000, 1000),
            overrides: HashMap::new(),
            max_keys: 10,
        };
        let mut b = TokenBudget::new(cfg.clone()).unwrap();
        for i in 0..10 {
            assert!(!b.charge(&format!("ip:{i}"), 500, t).unwrap().overflow);
        }
        let c = b.charge("ip:new-1", 600, t).unwrap();
        assert!(c.overflow);
        // The overflow bucket is shared: a second new key finds it spent.
        let r = b.charge("ip:new-2", 600, t).unwrap_err();
        assert!(r.overflow);
        assert!(
            !b.charge("ip:3", 100, t).unwrap().overflow,
            "held keys keep theirs"
        );
        assert_eq!(b.len(), 11);
        // Later, every held bucket has refilled: a sweep makes room.
        let c = b.charge("ip:new-3", 100, t + s(30)).unwrap();
        assert!(!c.overflow);
        assert!(b.len() <= 2, "{}", b.len());
        for i in 0..20_000 {
            let _ = b.charge(&format!("churn-{i}"), 10, t + s(31));
            assert!(b.len() <= 11);
        }
        cfg.max_keys = 0;
        assert!(TokenBudget::new(cfg)
            .unwrap_err()
            .to_string()
            .contains("max_tracked_keys"));
    }

    #[test]
    fn evict_idle_drops_refilled_keys() {
        let t = Instant::now();
        let mut b = budget(quota(6000, 1000, 1000));
        for i in 0..100 {
            b.charge(&format!("k{i}"), 500, t).unwrap();
        }
        b.charge("busy", 500, t + s(4)).unwrap();
        assert_eq!(b.len(), 101);
        assert_eq!(b.evict_idle(t + s(4)), 0);
        assert_eq!(b.evict_idle(t + s(5)), 100);
        assert_eq!(b.len(), 1);
        assert!(!b.is_empty());
    }

    proptest! {
        #[test]
        fn prop_level_bounded_and_no_panic(
            ops in proptest::collection::vec((0u8..3, 0u64..5_000, 0u64..5_000, 0u64..3_000), 1..300),
        ) {
            let q = quota(6000, 1000, 500);
            let mut b = budget(q);
            let mut now = Instant::now();
            for (op, x, y, dt) in ops {
                now += Duration::from_millis(dt);
                match op {
                    0 => { let _ = b.charge("k", x, now); }
                    1 => b.reconcile("k", x, y, now),
                    _ => { b.evict_idle(now); }
                }
                let level = b.level("k", &q, now);
                prop_assert!((-500.0..=1000.0).contains(&level), "level {}", level);
            }
        }
    }
}
