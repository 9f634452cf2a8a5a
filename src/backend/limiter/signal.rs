//! What the limiter is told about a finished response, and what it answers
//! when the limit changes.

use std::time::Duration;

/// What one finished response tells the limiter. Every field but `latency`
/// is optional: non-streaming responses have no TTFT, errors no `timings`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ResponseSample {
    /// Whole request duration, send to end of stream.
    pub latency: Duration,
    /// Time to first token (first `data:` event), if streamed.
    pub ttft: Option<Duration>,
    /// Generation time per token (`timings.predicted_per_token_ms`).
    pub per_token: Option<Duration>,
    /// Time the request waited inside llama-server for a slot.
    pub in_server_wait: Option<Duration>,
}

/// Why the limit changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeReason {
    /// `requests_deferred` above the allowance.
    Deferred,
    /// In-server wait above the threshold.
    InServerWait,
    /// Per-token time far above its baseline.
    PerTokenLatency,
    /// A scrape failed or was too slow.
    ScrapeFailed,
    /// Timeout or reset.
    Failure,
    /// In use, nothing deferred.
    Increase,
    /// Slow start doubled the limit.
    SlowStart,
    /// Restart at 1 after the breaker closed.
    BreakerClosed,
    /// The slot count changed.
    Slots,
}

impl ChangeReason {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeReason::Deferred => "deferred",
            ChangeReason::InServerWait => "in_server_wait",
            ChangeReason::PerTokenLatency => "per_token_latency",
            ChangeReason::ScrapeFailed => "scrape_failed",
            ChangeReason::Failure => "failure",
            ChangeReason::Increase => "increase",
            ChangeReason::SlowStart => "slow_start",
            ChangeReason::BreakerClosed => "breaker_closed",
            ChangeReason::Slots => "slots",
        }
    }
}

/// A change of the integer limit, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitChange {
    /// Integer limit before.
    pub from: u32,
    /// Integer limit after.
    pub to: u32,
    /// Why.
    pub reason: ChangeReason,
}
