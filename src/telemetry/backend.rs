//! One backend's handles into the gateway's series (resolved once, so the
//! request path does no label lookups) and the gauges a `/metrics` render
//! sets from the fleet.

use std::time::Duration;

use prometheus::{Histogram, IntCounterVec};

/// Handles for one backend's series.
#[derive(Clone)]
pub struct BackendMetrics {
    pub ttft: Histogram,
    pub duration: Histogram,
    pub scrape_duration: Histogram,
    pub(super) scrape_errors: IntCounterVec,
    pub(super) series_dropped: IntCounterVec,
    pub(super) name: String,
}

impl BackendMetrics {
    pub fn scrape_error(&self, kind: &str) {
        self.scrape_errors
            .with_label_values(&[self.name.as_str(), kind])
            .inc();
    }

    /// Scraped samples left out of the re-export, by reason.
    pub fn series_dropped(&self, reason: &str, n: u64) {
        self.series_dropped
            .with_label_values(&[self.name.as_str(), reason])
            .inc_by(n);
    }
}

/// One backend's gauges as of a `/metrics` render.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendGauges {
    pub in_flight: u32,
    pub cap: u32,
    pub eligible: bool,
    /// `/health` answered 200 at the last scrape.
    pub up: bool,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker_state: u8,
    /// Age of the latest usable figures; `None`: never scraped.
    pub scrape_age: Option<Duration>,
}
