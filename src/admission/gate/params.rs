//! What the gate is built from, checked once by `config`, with its defaults.

use std::time::Duration;

use super::super::budget::BudgetParams;
use super::super::drain::DrainParams;
use super::super::keys::KeyRing;
use super::super::queue::QueueParams;
use super::super::ratelimit::RateLimitParams;

/// Everything the gate is built from, checked by `config`.
#[derive(Debug, Clone, PartialEq)]
pub struct GateParams {
    /// `None`: no queue, shed at once when the fleet is full.
    pub queue: Option<QueueParams>,
    /// Wait budget of a request that names none (`x-sluice-deadline`);
    /// `None` = auto: four of the fleet's typical request durations.
    pub default_wait: Option<Duration>,
    /// Largest wait budget a client may ask for.
    pub max_wait: Duration,
    pub drain: DrainParams,
    /// `None`: no rate limits.
    pub rate_limit: Option<RateLimitParams>,
    /// `None`: no token budgets.
    pub token_budget: Option<BudgetParams>,
    /// Completion tokens charged up front when a request is admitted (the
    /// prompt is estimated from the body size); reconciled from `usage`.
    pub completion_estimate: u64,
    /// The API keys, as digests.
    pub api_keys: KeyRing,
    /// Refuse requests without a known API key (401).
    pub require_key: bool,
}

impl Default for GateParams {
    /// A queue with its defaults, auto wait budget, no limits, no keys.
    fn default() -> Self {
        GateParams {
            queue: Some(QueueParams::default()),
            default_wait: None,
            // A client may ask to wait up to a minute (batch jobs), no longer.
            max_wait: Duration::from_secs(60),
            drain: DrainParams::default(),
            rate_limit: None,
            token_budget: None,
            // A typical chat answer; requests that generate more pay the
            // difference when their `usage` arrives.
            completion_estimate: 256,
            api_keys: KeyRing::default(),
            require_key: false,
        }
    }
}
