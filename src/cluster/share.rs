//! The fallback while Redis is slow or down (`on_redis_down = "share"`):
//! each replica enforces its share of every limit, the limit divided by
//! the live replicas it last saw, in local state of its own. With `n`
//! replicas each admitting `limit ÷ n`, the sum stays at about the limit
//! (a little under: shares round down, and never below one request).
//!
//! Built when first needed after Redis went away, from the limits in force
//! then and the last replica count; dropped when Redis is back, so the
//! next outage starts from fresh figures. Pure: time is passed in.

use std::sync::Mutex;

use tokio::time::Instant;

use crate::admission::budget::{
    BudgetConfig, BudgetExceeded, BudgetParams, Charged, TokenBudget, TokenQuota,
};
use crate::admission::ratelimit::{
    Allowed, GivenClock, KeyQuota, RateLimitConfig, RateLimitParams, RateLimited, RateLimits,
};

/// One replica's share of every limit.
pub struct Share {
    /// The live replicas the limits were divided by.
    pub replicas: u32,
    rate: Option<RateLimits<GivenClock>>,
    budget: Option<Mutex<TokenBudget>>,
}

impl Share {
    /// `rate` and `budget` divided by `replicas` (at least 1).
    pub fn new(
        replicas: u32,
        rate: Option<&RateLimitConfig>,
        budget: Option<&BudgetConfig>,
    ) -> Share {
        let n = replicas.max(1);
        let rate = rate.and_then(|c| {
            let cfg = RateLimitConfig {
                default: split_rate(c.default, n),
                overrides: c
                    .overrides
                    .iter()
                    .map(|(k, q)| (k.clone(), split_rate(*q, n)))
                    .collect(),
                max_keys: c.max_keys,
            };
            let p = RateLimitParams::new(cfg).ok()?;
            Some(RateLimits::with_params_and_clock(&p, GivenClock::default()))
        });
        let budget = budget.and_then(|c| {
            let cfg = BudgetConfig {
                default: split_tokens(c.default, n),
                overrides: c
                    .overrides
                    .iter()
                    .map(|(k, q)| (k.clone(), split_tokens(*q, n)))
                    .collect(),
                max_keys: c.max_keys,
            };
            let p = BudgetParams::new(cfg).ok()?;
            Some(Mutex::new(TokenBudget::with_params(p)))
        });
        Share {
            replicas: n,
            rate,
            budget,
        }
    }

    /// `None`: no rate limits.
    pub fn rate_check(&self, key: &str, now: Instant) -> Option<Result<Allowed, RateLimited>> {
        Some(self.rate.as_ref()?.check_at(key, now))
    }

    /// `None`: no token budgets.
    pub fn charge(
        &self,
        key: &str,
        estimate: u64,
        now: Instant,
    ) -> Option<Result<Charged, BudgetExceeded>> {
        let b = self.budget.as_ref()?;
        let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
        Some(b.charge(key, estimate, now))
    }

    pub fn reconcile(&self, key: &str, estimated: u64, actual: u64, now: Instant) {
        if let Some(b) = &self.budget {
            let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
            b.reconcile(key, estimated, actual, now);
        }
    }
}

fn split_rate(q: KeyQuota, n: u32) -> KeyQuota {
    KeyQuota {
        requests_per_minute: (q.requests_per_minute / n).max(1),
        burst: (q.burst / n).max(1),
    }
}

fn split_tokens(q: TokenQuota, n: u32) -> TokenQuota {
    let n = u64::from(n);
    TokenQuota {
        tokens_per_minute: (q.tokens_per_minute / n).max(1),
        burst: (q.burst / n).max(1),
        max_debt: q.max_debt / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn each_replica_admits_its_share() {
        let rate = RateLimitConfig {
            default: KeyQuota {
                requests_per_minute: 600,
                burst: 30,
            },
            overrides: HashMap::new(),
            max_keys: 100,
        };
        let s = Share::new(3, Some(&rate), None);
        let t = Instant::now();
        // Burst 30 ÷ 3 = 10 at once, then 200/min = one per 0.3 s.
        let passed = (0..50)
            .filter(|_| s.rate_check("k", t).unwrap().is_ok())
            .count();
        assert_eq!(passed, 10);
        let later = t + Duration::from_secs(3);
        let passed = (0..50)
            .filter(|_| s.rate_check("k", later).unwrap().is_ok())
            .count();
        assert_eq!(passed, 10);
        assert!(s.charge("k", 1, t).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn budgets_split_and_settle_locally() {
        let budget = BudgetConfig {
            default: TokenQuota {
                tokens_per_minute: 60,
                burst: 1000,
                max_debt: 1000,
            },
            overrides: HashMap::new(),
            max_keys: 100,
        };
        let s = Share::new(4, None, Some(&budget));
        let t = Instant::now();
        assert!(s.charge("k", 250, t).unwrap().is_ok());
        assert!(s.charge("k", 10, t).unwrap().is_err());
        s.reconcile("k", 250, 50, t);
        assert!(s.charge("k", 200, t).unwrap().is_ok());
        assert!(s.rate_check("k", t).is_none());
    }
}
