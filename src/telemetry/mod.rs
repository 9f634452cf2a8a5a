//! The gateway's own Prometheus series, and `tracing` set-up. A leaf: it
//! knows series and labels, not backends or policies.
//!
//! Each gateway has its own [`Registry`] (several gateways can share a test
//! process). Per-backend handles are resolved once at start, so the request
//! path does no label lookups. Gauges that mirror shared state (in-flight,
//! cap, eligibility, scrape age) are set when `/metrics` is rendered
//! ([`crate::backend::export`] walks the fleet and re-exports its series).

mod backend;
mod logs;

pub use backend::{BackendGauges, BackendMetrics};
pub use logs::init_tracing;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets (seconds) for LLM requests: 5 ms to 10 minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Signed buckets (seconds) of the queue's prediction error.
const WAIT_ERROR_BUCKETS: &[f64] = &[
    -10.0, -5.0, -2.5, -1.0, -0.5, -0.25, -0.1, -0.05, -0.025, -0.01, 0.0, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Refusal buckets (seconds): a refusal is meant to take about a
/// millisecond (the bound is 5 ms at p99), so the buckets resolve
/// fractions of one; a queued request refused when its budget ran out
/// lands in the long ones.
const REJECT_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];
/// Scrape buckets: a healthy scrape takes milliseconds; seconds mean swamped.
const SCRAPE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    ttft: HistogramVec,
    duration: HistogramVec,
    scrape_duration: HistogramVec,
    scrape_errors: IntCounterVec,
    series_dropped: IntCounterVec,
    in_flight: IntGaugeVec,
    cap: IntGaugeVec,
    eligible: IntGaugeVec,
    scrape_age: prometheus::GaugeVec,
    up: IntGaugeVec,
    pub retries: IntCounter,
    pub ready: IntGauge,
    breaker_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
    limit_changes: IntCounterVec,
    pub queue_depth: IntGauge,
    pub queue_wait: Histogram,
    /// Served queue entries: actual minus predicted wait (issue 13).
    pub queue_wait_error: Histogram,
    /// What wait predictions are scaled by before they are held against a
    /// budget (`admission::calibration`).
    pub queue_wait_margin: prometheus::Gauge,
    /// Time from arrival to the gateway's refusal (rejected requests only).
    pub reject_seconds: Histogram,
    queue_drops: IntCounterVec,
    key_requests: IntCounterVec,
    model_requests: IntCounterVec,
    key_tokens: IntCounterVec,
    priority_lowered: IntCounter,
    returning_retries: IntCounterVec,
    no_retry_answers: IntCounter,
    key_store_overflow: IntCounterVec,
    tracked_keys: IntGaugeVec,
    /// Client connections open now (see `crate::edge`).
    pub connections_open: IntGauge,
    /// Client connections refused at accept, by reason.
    pub connections_refused: IntCounterVec,
    /// Client connections closed because a request header did not arrive
    /// within `server.header_timeout`.
    pub header_timeouts: IntCounter,
}

/// The `store` label values of the per-key state series.
const KEY_STORES: &[&str] = &["rate_limit", "token_budget"];

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn counters(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).unwrap(),
    )
}

/// Histograms per backend.
fn histograms(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    reg(r, HistogramVec::new(opts, &["backend"]).unwrap())
}

impl Metrics {
    /// The gateway's series; backends get theirs from [`Metrics::backend`].
    pub fn new() -> Metrics {
        let r = Registry::new();
        let requests = counters(
            &r,
            "sluice_requests_total",
            "Requests finished by the gateway, by route class, outcome and reason.",
            &["class", "outcome", "reason"],
        );
        let ttft = histograms(
            &r,
            "sluice_ttft_seconds",
            "Time from request arrival to the first response body byte, in seconds.",
            LATENCY_BUCKETS,
        );
        let duration = histograms(
            &r,
            "sluice_request_duration_seconds",
            "Time from request arrival to the end of the response, in seconds.",
            LATENCY_BUCKETS,
        );
        let scrape_duration = histograms(
            &r,
            "sluice_scrape_duration_seconds",
            "Duration of each backend /metrics scrape, in seconds.",
            SCRAPE_BUCKETS,
        );
        let scrape_errors = counters(
            &r,
            "sluice_scrape_errors_total",
            "Failed backend scrapes, by endpoint and kind of failure.",
            &["backend", "kind"],
        );
        let series_dropped = counters(
            &r,
            "sluice_backend_series_dropped_total",
            "Scraped backend samples not re-exported (invalid or reserved names, duplicates), by reason.",
            &["backend", "reason"],
        );
        let gauge = |name: &str, help: &str| {
            reg(
                &r,
                IntGaugeVec::new(Opts::new(name, help), &["backend"]).unwrap(),
            )
        };
        let in_flight = gauge(
            "sluice_backend_in_flight",
            "Requests this gateway has in flight to the backend.",
        );
        let cap = gauge(
            "sluice_backend_limit",
            "Most requests this gateway may have in flight to the backend.",
        );
        let eligible = gauge(
            "sluice_backend_eligible",
            "1 if the backend may take a new request now, else 0.",
        );
        let up = gauge(
            "sluice_backend_up",
            "1 if the backend's /health answered 200 at the last scrape, else 0.",
        );
        let scrape_age = reg(
            &r,
            prometheus::GaugeVec::new(
                Opts::new(
                    "sluice_scrape_age_seconds",
                    "Age of the backend's latest usable /metrics figures, in seconds (-1: never).",
                ),
                &["backend"],
            )
            .unwrap(),
        );
        let retries = reg(
            &r,
            IntCounter::new(
                "sluice_upstream_retries_total",
                "Requests retried on another backend after a connect failure.",
            )
            .unwrap(),
        );
        let ready = reg(
            &r,
            IntGauge::new(
                "sluice_ready",
                "1 if some backend can take work now, else 0.",
            )
            .unwrap(),
        );
        let breaker_state = gauge(
            "sluice_breaker_state",
            "Circuit breaker state of the backend: 0 closed, 1 half-open, 2 open.",
        );
        let breaker_transitions = counters(
            &r,
            "sluice_breaker_transitions_total",
            "Circuit breaker transitions, by new state and cause.",
            &["backend", "to", "cause"],
        );
        let limit_changes = counters(
            &r,
            "sluice_limit_changes_total",
            "Changes of the adaptive concurrency limit, by reason.",
            &["backend", "reason"],
        );
        let queue_depth = reg(
            &r,
            IntGauge::new(
                "sluice_queue_depth",
                "Requests waiting at the gateway for a backend slot.",
            )
            .unwrap(),
        );
        let queue_wait = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_queue_wait_seconds",
                    "Time requests waited in the gateway queue before a backend took them, in seconds.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .unwrap(),
        );
        let queue_wait_error = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_queue_wait_error_seconds",
                    "Queue wait prediction error of served requests: actual minus predicted wait, in seconds (negative: served sooner than predicted).",
                )
                .buckets(WAIT_ERROR_BUCKETS.to_vec()),
            )
            .unwrap(),
        );
        let queue_wait_margin = reg(
            &r,
            prometheus::Gauge::new(
                "sluice_queue_wait_margin",
                "What the queue's wait predictions are multiplied by before they are held against a request's wait budget: the 90th percentile of the latest entries' actual over predicted waits, at least 1.",
            )
            .unwrap(),
        );
        queue_wait_margin.set(1.0);
        let reject_seconds = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_reject_seconds",
                    "Time from request arrival to the gateway's refusal (429/503/...), in seconds.",
                )
                .buckets(REJECT_BUCKETS.to_vec()),
            )
            .unwrap(),
        );
        let queue_drops = counters(
            &r,
            "sluice_queue_drops_total",
            "Requests that left the gateway queue unserved, by reason.",
            &["reason"],
        );
        let key_requests = counters(
            &r,
            "sluice_key_requests_total",
            "Inference requests by API key name (only configured names, or \"anonymous\") and outcome.",
            &["key", "outcome"],
        );
        let model_requests = counters(
            &r,
            "sluice_model_requests_total",
            "Inference requests by the model they named (only names the fleet serves; \"other\" for the rest, \"none\" when none was named) and outcome.",
            &["model", "outcome"],
        );
        let key_tokens = counters(
            &r,
            "sluice_key_tokens_total",
            "Tokens by API key name and kind (prompt or completion), from the responses' usage.",
            &["key", "kind"],
        );
        let returning_retries = counters(
            &r,
            "sluice_returning_retries_total",
            "Retried calls (x-stainless-retry-count > 0), by whether they came back when told (and ranked ahead of first attempts).",
            &["when_told"],
        );
        let no_retry_answers = reg(
            &r,
            IntCounter::new(
                "sluice_no_retry_answers_total",
                "Refusals that told the client not to retry (x-should-retry: false): no retry it can still make was likely to be served.",
            )
            .unwrap(),
        );
        let priority_lowered = reg(
            &r,
            IntCounter::new(
                "sluice_priority_lowered_total",
                "Requests whose x-sluice-priority was above their key's max_priority \
                 (anonymous: normal) and was lowered to it.",
            )
            .unwrap(),
        );
        let key_store_overflow = counters(
            &r,
            "sluice_key_store_overflow_total",
            "Requests of a new key or client address counted against the one shared overflow \
             bucket because the per-key store was full.",
            &["store"],
        );
        let tracked_keys = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "sluice_tracked_keys",
                    "Keys and client addresses with state of their own in the per-key store.",
                ),
                &["store"],
            )
            .unwrap(),
        );
        // Fixed label sets: present from the start, never more lines.
        for store in KEY_STORES {
            key_store_overflow.with_label_values(&[store]);
            tracked_keys.with_label_values(&[store]);
        }
        let connections_open = reg(
            &r,
            IntGauge::new(
                "sluice_client_connections",
                "Client connections open at the proxy listener.",
            )
            .unwrap(),
        );
        let connections_refused = counters(
            &r,
            "sluice_client_connections_refused_total",
            "Client connections refused at accept (server.max_connections*), by reason.",
            &["reason"],
        );
        let header_timeouts = reg(
            &r,
            IntCounter::new(
                "sluice_client_header_timeouts_total",
                "Client connections closed because a request header did not arrive within server.header_timeout.",
            )
            .unwrap(),
        );
        Metrics {
            registry: r,
            requests,
            ttft,
            duration,
            scrape_duration,
            scrape_errors,
            series_dropped,
            in_flight,
            cap,
            eligible,
            scrape_age,
            up,
            retries,
            ready,
            breaker_state,
            breaker_transitions,
            limit_changes,
            queue_depth,
            queue_wait,
            queue_wait_error,
            queue_wait_margin,
            reject_seconds,
            queue_drops,
            key_requests,
            model_requests,
            key_tokens,
            connections_open,
            connections_refused,
            header_timeouts,
            priority_lowered,
            returning_retries,
            no_retry_answers,
            key_store_overflow,
            tracked_keys,
        }
    }

    /// A retried call arrived; `when_told`: it came back when a hint told it
    /// to (and ranks ahead of first attempts).
    pub fn returning_retry(&self, when_told: bool) {
        let label = if when_told { "true" } else { "false" };
        self.returning_retries.with_label_values(&[label]).inc();
    }

    /// A refusal said `x-should-retry: false`.
    pub fn no_retry_answer(&self) {
        self.no_retry_answers.inc();
    }

    /// One request's priority was lowered to its entitlement.
    pub fn priority_lowered(&self) {
        self.priority_lowered.inc();
    }

    /// One request counted against a full store's overflow bucket; `store`
    /// is one of `rate_limit`, `token_budget`.
    pub fn key_store_overflow(&self, store: &str) {
        if KEY_STORES.contains(&store) {
            self.key_store_overflow.with_label_values(&[store]).inc();
        }
    }

    /// Keys held by a per-key store now.
    pub fn tracked_keys(&self, store: &str, n: usize) {
        if KEY_STORES.contains(&store) {
            self.tracked_keys
                .with_label_values(&[store])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn key_tokens(&self, key: &str, prompt: u64, completion: u64) {
        if prompt > 0 {
            self.key_tokens
                .with_label_values(&[key, "prompt"])
                .inc_by(prompt);
        }
        if completion > 0 {
            self.key_tokens
                .with_label_values(&[key, "completion"])
                .inc_by(completion);
        }
    }

    /// Resolved handles for one backend's series.
    pub fn backend(&self, name: &str) -> BackendMetrics {
        BackendMetrics {
            ttft: self.ttft.with_label_values(&[name]),
            duration: self.duration.with_label_values(&[name]),
            scrape_duration: self.scrape_duration.with_label_values(&[name]),
            scrape_errors: self.scrape_errors.clone(),
            series_dropped: self.series_dropped.clone(),
            name: name.to_string(),
        }
    }

    /// Drops a removed backend's gauges (its counters stay until restart, as
    /// counters should).
    pub fn forget_backend(&self, name: &str) {
        for g in [
            &self.in_flight,
            &self.cap,
            &self.eligible,
            &self.up,
            &self.breaker_state,
        ] {
            let _ = g.remove_label_values(&[name]);
        }
        let _ = self.scrape_age.remove_label_values(&[name]);
    }

    pub fn breaker_transition(&self, backend: &str, to: &str, cause: &str) {
        self.breaker_transitions
            .with_label_values(&[backend, to, cause])
            .inc();
    }

    pub fn limit_change(&self, backend: &str, reason: &str) {
        self.limit_changes
            .with_label_values(&[backend, reason])
            .inc();
    }

    pub fn queue_drop(&self, reason: &str) {
        self.queue_drops.with_label_values(&[reason]).inc();
    }

    pub fn key_request(&self, key: &str, outcome: &str) {
        self.key_requests.with_label_values(&[key, outcome]).inc();
    }

    /// Counts one finished inference request by its model label (bounded
    /// by the caller to the names the fleet serves).
    pub fn model_request(&self, model: &str, outcome: &str) {
        self.model_requests
            .with_label_values(&[model, outcome])
            .inc();
    }

    /// Counts one finished request.
    pub fn request(&self, class: &str, outcome: &str, reason: &str) {
        self.requests
            .with_label_values(&[class, outcome, reason])
            .inc();
    }

    /// Sets one backend's gauges that mirror shared state (read when
    /// `/metrics` is rendered, see [`crate::backend::export`]).
    pub fn set_backend_gauges(&self, name: &str, g: &BackendGauges) {
        let n = [name];
        self.in_flight
            .with_label_values(&n)
            .set(i64::from(g.in_flight));
        self.cap.with_label_values(&n).set(i64::from(g.cap));
        self.eligible
            .with_label_values(&n)
            .set(i64::from(g.eligible));
        self.up.with_label_values(&n).set(i64::from(g.up));
        self.breaker_state
            .with_label_values(&n)
            .set(i64::from(g.breaker_state));
        self.scrape_age
            .with_label_values(&n)
            .set(g.scrape_age.map_or(-1.0, |d| d.as_secs_f64()));
    }

    /// The gateway's own series in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cumulative count of `name`'s bucket `le` in the encoded text.
    fn bucket(text: &str, name: &str, le: &str) -> u64 {
        let line = format!("{name}_bucket{{le=\"{le}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} bucket le={le} in\n{text}"))
    }

    #[test]
    fn refusal_times_are_resolved_below_the_5_ms_bound() {
        let m = Metrics::new();
        m.reject_seconds.observe(0.0004);
        m.reject_seconds.observe(0.0018);
        m.reject_seconds.observe(0.0045);
        let t = m.encode();
        let name = "sluice_reject_seconds";
        assert_eq!(bucket(&t, name, "0.0005"), 1);
        assert_eq!(bucket(&t, name, "0.002"), 2);
        assert_eq!(bucket(&t, name, "0.005"), 3);
    }
}
