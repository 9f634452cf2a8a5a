//! Who may ask and how much: the API keys and `require_key`, rate limits,
//! token budgets and the completion estimate, held as one [`Policy`] that a
//! reload replaces whole (see the module docs of [`super`]).

use super::*;
use crate::admission::budget::{BudgetConfig, BudgetExceeded, TokenQuota};
use crate::admission::ratelimit::{KeyQuota, RateLimitConfig, RateLimited};

/// Who may ask and how much: what a reload replaces (see the module docs).
pub(super) struct Policy {
    keys: Keys,
    rate: Option<Arc<RateLimits<GivenClock>>>,
    rate_params: Option<RateLimitParams>,
    budget: Option<Arc<Mutex<TokenBudget>>>,
    budget_params: Option<BudgetParams>,
    completion_estimate: u64,
}

impl Policy {
    /// The policy `params` describe; with `old`, state whose parameters
    /// did not change is kept, and token budgets keep what was spent.
    pub(super) fn new(params: &GateParams, old: Option<&Policy>) -> Policy {
        let rate = match (old, &params.rate_limit) {
            (_, None) => None,
            (Some(o), Some(p)) if o.rate_params.as_ref() == Some(p) => o.rate.clone(),
            (_, Some(p)) => Some(Arc::new(RateLimits::with_params_and_clock(
                p,
                GivenClock::default(),
            ))),
        };
        let budget = match (old, &params.token_budget) {
            (_, None) => None,
            (Some(o), Some(p)) if o.budget_params.as_ref() == Some(p) => o.budget.clone(),
            (
                Some(Policy {
                    budget: Some(b), ..
                }),
                Some(p),
            ) => Some(Arc::new(Mutex::new(TokenBudget::with_params_keeping(
                p.clone(),
                &lock(b),
            )))),
            (_, Some(p)) => Some(Arc::new(Mutex::new(TokenBudget::with_params(p.clone())))),
        };
        Policy {
            keys: Keys::new(params.api_keys.clone(), params.require_key),
            rate,
            rate_params: params.rate_limit.clone(),
            budget,
            budget_params: params.token_budget.clone(),
            completion_estimate: params.completion_estimate,
        }
    }
}

impl Gate {
    /// Applies a reloaded configuration's keys, `require_key`, rate limits,
    /// token budgets and completion estimate (see the module docs). The
    /// rest of `params` (queue, wait budgets) needs a restart.
    pub fn reconfigure(&self, params: &GateParams) {
        let old = self.policy.load();
        self.policy.store(Arc::new(Policy::new(params, Some(&old))));
        self.publish_tracked_keys();
    }

    /// Completion tokens charged up front when a request is admitted.
    pub fn completion_estimate(&self) -> u64 {
        self.policy.load().completion_estimate
    }

    /// The configured API key names.
    pub fn key_names(&self) -> Vec<String> {
        self.policy
            .load()
            .keys
            .names()
            .map(str::to_string)
            .collect()
    }

    /// Keys held by the rate limiter and the token budgets (tests, metrics).
    pub fn tracked_keys(&self) -> (usize, usize) {
        let p = self.policy.load();
        let rate = p.rate.as_ref().map_or(0, |r| r.len());
        let budget = p.budget.as_ref().map_or(0, |b| lock(b).len());
        (rate, budget)
    }

    fn publish_tracked_keys(&self) {
        let (rate, budget) = self.tracked_keys();
        let m = &self.fleet.metrics;
        m.tracked_keys("rate_limit", rate);
        m.tracked_keys("token_budget", budget);
    }

    /// Names the sender from its bearer token and address.
    pub fn identify(&self, bearer: Option<&str>, ip: Option<IpAddr>) -> Result<Identity, Reject> {
        self.policy.load().keys.identify(bearer, ip)
    }

    /// Counts the request, arrived at `now`, against its key's rate limit.
    pub fn rate_check(&self, id: &Identity, now: Instant) -> Result<(), Reject> {
        let p = self.policy.load();
        let Some(rate) = &p.rate else {
            return Ok(());
        };
        let checked = rate.check_at(&id.rate_key, now);
        let overflow = match &checked {
            Ok(a) => a.overflow,
            Err(l) => l.overflow,
        };
        if overflow {
            self.fleet.metrics.key_store_overflow("rate_limit");
        }
        self.fleet.metrics.tracked_keys("rate_limit", rate.len());
        checked.map(|_| ()).map_err(|l| self.rate_refusal(l))
    }

    /// The 429 for a request over its key's rate (decided here or, for
    /// replicas sharing limits, in `crate::cluster`).
    pub fn rate_refusal(&self, l: RateLimited) -> Reject {
        Reject::RateLimited {
            retry_after: self.retry.hint(l.retry_after),
            limit: l.limit,
            remaining: l.remaining,
            reset: ceil_secs(l.reset),
        }
    }

    /// The 429 for a request over its key's token budget.
    pub fn budget_refusal(&self, e: BudgetExceeded) -> Reject {
        Reject::TokenBudget {
            retry_after: self.retry.hint(e.retry_after),
            limit: e.limit,
            remaining: e.remaining,
            reset: ceil_secs(e.reset),
        }
    }

    /// `key`'s rate quota (`None`: no rate limits).
    pub fn rate_quota(&self, key: &str) -> Option<KeyQuota> {
        let p = self.policy.load();
        let c = p.rate_params.as_ref()?.config();
        Some(*c.overrides.get(key).unwrap_or(&c.default))
    }

    /// `key`'s token quota (`None`: no token budgets).
    pub fn budget_quota(&self, key: &str) -> Option<TokenQuota> {
        let p = self.policy.load();
        let c = p.budget_params.as_ref()?.config();
        Some(*c.overrides.get(key).unwrap_or(&c.default))
    }

    /// The rate-limit and budget settings in force.
    pub fn limit_configs(&self) -> (Option<RateLimitConfig>, Option<BudgetConfig>) {
        let p = self.policy.load();
        (
            p.rate_params.as_ref().map(|r| r.config().clone()),
            p.budget_params.as_ref().map(|b| b.config().clone()),
        )
    }

    /// Charges the key's token budget an estimate; `Ok(Some(charged))`
    /// must later be reconciled with the tokens really used.
    pub fn charge_tokens(
        &self,
        id: &Identity,
        estimate: u64,
        now: Instant,
    ) -> Result<Option<u64>, Reject> {
        let p = self.policy.load();
        let Some(b) = &p.budget else {
            return Ok(None);
        };
        let mut b = lock(b);
        let charged = b.charge(&id.rate_key, estimate, now);
        let held = b.len();
        drop(b);
        let overflow = match &charged {
            Ok(c) => c.overflow,
            Err(e) => e.overflow,
        };
        if overflow {
            self.fleet.metrics.key_store_overflow("token_budget");
        }
        self.fleet.metrics.tracked_keys("token_budget", held);
        charged
            .map(|_| Some(estimate))
            .map_err(|e| self.budget_refusal(e))
    }

    /// Settles a charge with the tokens the response reported (0 if none).
    pub fn reconcile_tokens(&self, id: &Identity, estimated: u64, actual: u64, now: Instant) {
        if let Some(b) = &self.policy.load().budget {
            lock(b).reconcile(&id.rate_key, estimated, actual, now);
        }
    }

    /// Drops idle rate-limit and budget keys (called periodically).
    pub fn evict_idle_keys(&self, now: Instant) {
        let p = self.policy.load();
        if let Some(r) = &p.rate {
            r.retain_recent_at(now);
        }
        if let Some(b) = &p.budget {
            lock(b).evict_idle(now);
        }
        drop(p);
        self.publish_tracked_keys();
    }
}
