//! The rate limits' parameters: quotas per key, their validation, and the
//! governor quotas computed once from them.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;

use governor::Quota;

use super::DEFAULT_MAX_KEYS;

/// Requests per minute and burst for one key or the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyQuota {
    /// Sustained requests per minute (also the `x-ratelimit-limit` value).
    pub requests_per_minute: u32,
    /// Requests allowed at once from a full bucket.
    pub burst: u32,
}

/// Rate-limit parameters, validated in [`RateLimits::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Quota for every key without an override. Default 600 requests per
    /// minute (10/s sustained) with a burst of 60: far above what one
    /// interactive user sends, low enough to stop a runaway script from
    /// filling the queue on its own.
    pub default: KeyQuota,
    /// Keys with their own quota.
    pub overrides: HashMap<String, KeyQuota>,
    /// Most keys held for the default quota (see the module docs).
    pub max_keys: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            default: KeyQuota {
                requests_per_minute: 600,
                burst: 60,
            },
            overrides: HashMap::new(),
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

/// A configuration value that cannot work; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRateLimitConfig(pub String);

impl fmt::Display for InvalidRateLimitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidRateLimitConfig {}

impl KeyQuota {
    fn to_quota(self, field: &str) -> Result<Quota, InvalidRateLimitConfig> {
        let rpm = NonZeroU32::new(self.requests_per_minute).ok_or_else(|| {
            InvalidRateLimitConfig(format!(
                "{field}.requests_per_minute = 0 is not valid: must be at least 1"
            ))
        })?;
        let burst = NonZeroU32::new(self.burst).ok_or_else(|| {
            InvalidRateLimitConfig(format!(
                "{field}.burst = 0 is not valid: must be at least 1"
            ))
        })?;
        Ok(Quota::per_minute(rpm).allow_burst(burst))
    }
}

/// A [`RateLimitConfig`] whose quotas were checked and converted: what
/// limits are built from, so building them cannot fail.
#[derive(Debug, Clone)]
pub struct RateLimitParams {
    pub(super) cfg: RateLimitConfig,
    pub(super) default: Quota,
    pub(super) overrides: HashMap<String, (KeyQuota, Quota)>,
}

impl RateLimitParams {
    /// Checks every quota; the error names the first bad field.
    pub fn new(cfg: RateLimitConfig) -> Result<Self, InvalidRateLimitConfig> {
        let default = cfg.default.to_quota("rate_limit")?;
        if cfg.max_keys == 0 {
            return Err(InvalidRateLimitConfig(
                "rate_limit.max_tracked_keys = 0 is not valid: must be at least 1".into(),
            ));
        }
        let mut overrides = HashMap::with_capacity(cfg.overrides.len());
        for (key, q) in &cfg.overrides {
            let quota = q.to_quota(&format!("rate_limit.overrides.\"{key}\""))?;
            overrides.insert(key.clone(), (*q, quota));
        }
        Ok(Self {
            cfg,
            default,
            overrides,
        })
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.cfg
    }
}

impl PartialEq for RateLimitParams {
    fn eq(&self, other: &Self) -> bool {
        self.cfg == other.cfg
    }
}
