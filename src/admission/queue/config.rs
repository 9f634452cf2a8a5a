//! The queue's parameters, their defaults and why, and their validation.

use std::fmt;
use std::time::Duration;

// === Config ===

/// Queue parameters, validated in [`AdmissionQueue::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Most entries waiting at once. Default 256: at typical drain rates of
    /// tens of requests per second this is several seconds of work; more
    /// only waits longer to be shed.
    pub capacity: usize,
    /// Largest share of `capacity` one tenant may hold while others wait, in
    /// (0, 1]. Default 0.5: one noisy key cannot take the whole queue.
    pub max_tenant_share: f64,
    /// Wait above which the queue counts as standing. Default 1 s: a chat
    /// user notices a second; a burst at normal load drains faster.
    pub target_wait: Duration,
    /// How long the wait must stay above target before LIFO. Default 1 s:
    /// a standing queue is served newest first soon, so the calls that
    /// arrive during an overload (and SDK retries told when to return) are
    /// served at near their unloaded latency while the backlog drains
    /// (measured with the real OpenAI SDK: p50 1.1× unloaded against 2.3×
    /// with 5 s, `loadtest/RESULTS.md`, issue 15).
    pub overload_interval: Duration,
    /// In overload, entries that waited longer are dropped as stale.
    /// Default 25 s: within the OpenAI SDKs' default patience (their
    /// timeouts are minutes; `x-stainless-read-timeout` says so), so a
    /// patient client's call is served late rather than refused, while a
    /// queue that stood this long is cut.
    pub overload_max_wait: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 256,
            max_tenant_share: 0.5,
            target_wait: Duration::from_secs(1),
            overload_interval: Duration::from_secs(1),
            overload_max_wait: Duration::from_secs(25),
        }
    }
}

/// A configuration value that cannot work; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidQueueConfig(pub String);

impl fmt::Display for InvalidQueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidQueueConfig {}

impl QueueConfig {
    /// Checks every field; the error names the first bad one and its value.
    pub fn validate(&self) -> Result<(), InvalidQueueConfig> {
        let bad = |field: &str, value: String, why: &str| {
            Err(InvalidQueueConfig(format!(
                "queue.{field} = {value} is not valid: {why}"
            )))
        };
        if self.capacity == 0 {
            return bad("capacity", "0".into(), "must be at least 1");
        }
        if !(self.max_tenant_share > 0.0 && self.max_tenant_share <= 1.0) {
            return bad(
                "max_tenant_share",
                self.max_tenant_share.to_string(),
                "must be in (0, 1]",
            );
        }
        if self.target_wait.is_zero() {
            return bad("target_wait", "0s".into(), "must be positive");
        }
        if self.overload_max_wait < self.target_wait {
            return bad(
                "overload_max_wait",
                format!("{:?}", self.overload_max_wait),
                "must not be less than target_wait",
            );
        }
        Ok(())
    }

    /// Entries one tenant may hold while others wait (at least 1).
    pub fn tenant_cap(&self) -> usize {
        ((self.max_tenant_share * self.capacity as f64).floor() as usize).max(1)
    }
}

/// A [`QueueConfig`] that passed [`QueueConfig::validate`]: what a queue is
/// built from, so building one cannot fail.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueParams(pub(super) QueueConfig);

impl QueueParams {
    pub fn new(cfg: QueueConfig) -> Result<Self, InvalidQueueConfig> {
        cfg.validate()?;
        Ok(Self(cfg))
    }

    pub fn config(&self) -> &QueueConfig {
        &self.0
    }
}

impl Default for QueueParams {
    /// The documented defaults (valid: `config` tests check them).
    fn default() -> Self {
        Self(QueueConfig::default())
    }
}
