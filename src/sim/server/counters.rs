//! What happened inside a simulated server so far: the model's counters and
//! the HTTP layer's, read together for the handle and `GET /sim/counters`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::HeaderMap;

use super::shared::Shared;

/// What happened inside a simulated server so far.
#[derive(Clone, Debug, Default)]
pub struct SimCounters {
    /// Inference requests that arrived (including rejected ones).
    pub received: u64,
    /// Requests that got a slot.
    pub started: u64,
    /// Requests that generated their last token.
    pub completed: u64,
    /// Of `completed`: ran after their client had gone (b4748 mode).
    pub completed_without_reader: u64,
    /// Processing requests whose client went away.
    pub cancelled: u64,
    /// Deferred requests dropped because their client went away.
    pub dropped_deferred: u64,
    pub processing_now: usize,
    pub deferred_now: usize,
    pub max_deferred_seen: usize,
    /// ∫ deferred dt in request·seconds: divide by elapsed time for the
    /// time-weighted mean queue length.
    pub deferred_integral: f64,
    /// ∫ (processing + deferred) dt in request·seconds: divide by elapsed
    /// time for the time-weighted mean load.
    pub load_integral: f64,
    /// Requests whose `x-sluice-deadline-ms` (Unix ms) had already passed.
    pub late_arrivals: u64,
    /// How long after its deadline the latest of `late_arrivals` arrived
    /// (whole milliseconds).
    pub max_late: Duration,
    /// Requests answered with an injected 5xx.
    pub errors_injected: u64,
    /// Connections closed by the reset-after-N-tokens fault.
    pub resets_injected: u64,
    /// Bad input (invalid JSON, missing prompt, context exceeded).
    pub bad_requests: u64,
    pub metrics_scrapes: u64,
    pub connections_accepted: u64,
    /// Headers of the last inference request.
    pub last_headers: HeaderMap,
    /// `x-request-id` of inference requests, in arrival order.
    pub request_ids: Vec<String>,
}

/// Reads the counters of the server behind `shared`.
pub fn read(shared: &Shared) -> SimCounters {
    let m = shared.engine.counters();
    let h = shared.http_stats();
    SimCounters {
        received: h.received,
        started: m.started,
        completed: m.completed,
        completed_without_reader: m.completed_without_reader,
        cancelled: m.cancelled,
        dropped_deferred: m.dropped_deferred,
        processing_now: m.processing_now,
        deferred_now: m.deferred_now,
        max_deferred_seen: m.max_deferred_seen,
        deferred_integral: m.deferred_integral,
        load_integral: m.load_integral,
        late_arrivals: h.late_arrivals,
        max_late: Duration::from_millis(h.max_late_ms),
        errors_injected: h.errors_injected,
        resets_injected: h.resets_injected,
        bad_requests: h.bad_requests,
        metrics_scrapes: h.metrics_scrapes,
        connections_accepted: shared.connections.load(Ordering::Relaxed),
        last_headers: h.last_headers,
        request_ids: h.request_ids,
    }
}

/// `GET /sim/counters`.
pub fn json(shared: &Shared) -> String {
    let c = read(shared);
    serde_json::json!({
        "received": c.received,
        "started": c.started,
        "completed": c.completed,
        "completed_without_reader": c.completed_without_reader,
        "cancelled": c.cancelled,
        "dropped_deferred": c.dropped_deferred,
        "processing_now": c.processing_now,
        "deferred_now": c.deferred_now,
        "max_deferred_seen": c.max_deferred_seen,
        "deferred_integral": c.deferred_integral,
        "load_integral": c.load_integral,
        "late_arrivals": c.late_arrivals,
        "errors_injected": c.errors_injected,
        "resets_injected": c.resets_injected,
        "bad_requests": c.bad_requests,
        "metrics_scrapes": c.metrics_scrapes,
        "connections_accepted": c.connections_accepted,
    })
    .to_string()
}
