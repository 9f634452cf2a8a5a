//! The gateway's own Prometheus series, and the re-export of every scraped
//! `llamacpp:*` series with a `backend` label.
//!
//! Each gateway has its own [`Registry`] (several gateways can share a test
//! process). Per-backend handles are resolved once at start, so the request
//! path does no label lookups. Gauges that mirror shared state (in-flight,
//! cap, eligibility, scrape age) are set when `/metrics` is rendered.
//!
//! Why re-export: llama-server's `*_tokens_seconds` gauges are averages since
//! the *previous* `/metrics` call, so a second scraper (Prometheus) and the
//! gateway would reset each other's figures. The gateway scrapes; Prometheus
//! scrapes only the gateway, and takes rates from the `*_total` counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::backend::breaker::BreakerState;
use crate::backend::fleet::Fleet;
use crate::backend::promtext::Kind;

/// Latency buckets (seconds) for LLM requests: 5 ms to 10 minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Scrape buckets: a healthy scrape takes milliseconds; seconds mean swamped.
const SCRAPE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Handles for one backend's series.
#[derive(Clone)]
pub struct BackendMetrics {
    pub ttft: Histogram,
    pub duration: Histogram,
    pub scrape_duration: Histogram,
    scrape_errors: IntCounterVec,
    name: String,
}

impl BackendMetrics {
    pub fn scrape_error(&self, kind: &str) {
        self.scrape_errors
            .with_label_values(&[self.name.as_str(), kind])
            .inc();
    }
}

pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    ttft: HistogramVec,
    duration: HistogramVec,
    scrape_duration: HistogramVec,
    scrape_errors: IntCounterVec,
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
    queue_drops: IntCounterVec,
    key_requests: IntCounterVec,
    key_tokens: IntCounterVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Metrics {
    /// The gateway's series; backends get theirs from [`Metrics::backend`].
    pub fn new() -> Metrics {
        let r = Registry::new();
        let requests = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "sluice_requests_total",
                    "Requests finished by the gateway, by route class, outcome and reason.",
                ),
                &["class", "outcome", "reason"],
            )
            .unwrap(),
        );
        let ttft = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "sluice_ttft_seconds",
                    "Time from request arrival to the first response body byte, in seconds.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["backend"],
            )
            .unwrap(),
        );
        let duration = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "sluice_request_duration_seconds",
                    "Time from request arrival to the end of the response, in seconds.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["backend"],
            )
            .unwrap(),
        );
        let scrape_duration = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "sluice_scrape_duration_seconds",
                    "Duration of each backend /metrics scrape, in seconds.",
                )
                .buckets(SCRAPE_BUCKETS.to_vec()),
                &["backend"],
            )
            .unwrap(),
        );
        let scrape_errors = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "sluice_scrape_errors_total",
                    "Failed backend scrapes, by endpoint and kind of failure.",
                ),
                &["backend", "kind"],
            )
            .unwrap(),
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
        let breaker_transitions = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "sluice_breaker_transitions_total",
                    "Circuit breaker transitions, by new state and cause.",
                ),
                &["backend", "to", "cause"],
            )
            .unwrap(),
        );
        let limit_changes = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "sluice_limit_changes_total",
                    "Changes of the adaptive concurrency limit, by reason.",
                ),
                &["backend", "reason"],
            )
            .unwrap(),
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
        let queue_drops = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "sluice_queue_drops_total",
                    "Requests that left the gateway queue unserved, by reason.",
                ),
                &["reason"],
            )
            .unwrap(),
        );
        let key_requests = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "sluice_key_requests_total",
                    "Inference requests by API key name (or \"anonymous\") and outcome.",
                ),
                &["key", "outcome"],
            )
            .unwrap(),
        );
        let key_tokens = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "sluice_key_tokens_total",
                    "Tokens by API key name and kind (prompt or completion), from the responses' usage.",
                ),
                &["key", "kind"],
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
            queue_drops,
            key_requests,
            key_tokens,
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

    /// Counts one finished request.
    pub fn request(&self, class: &str, outcome: &str, reason: &str) {
        self.requests
            .with_label_values(&[class, outcome, reason])
            .inc();
    }

    /// The whole `/metrics` text: own series, then re-exported backend series.
    pub fn render(&self, fleet: &Fleet, now: Instant) -> String {
        for b in fleet.backends().iter() {
            let n = [b.name()];
            let obs = b.observed();
            let (a, cap) = fleet.assess(b, now);
            self.in_flight
                .with_label_values(&n)
                .set(i64::from(b.in_flight()));
            self.cap.with_label_values(&n).set(i64::from(cap));
            self.eligible
                .with_label_values(&n)
                .set(i64::from(a.verdict.is_ok()));
            self.up.with_label_values(&n).set(i64::from(
                obs.health == crate::backend::observed::Health::Ok,
            ));
            self.breaker_state
                .with_label_values(&n)
                .set(match b.breaker_state(now) {
                    BreakerState::Closed => 0,
                    BreakerState::HalfOpen => 1,
                    BreakerState::Open { .. } => 2,
                });
            self.scrape_age.with_label_values(&n).set(
                obs.load_age(now)
                    .map_or(-1.0, |d: Duration| d.as_secs_f64()),
            );
        }
        self.ready.set(i64::from(fleet.ready(now)));
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut out = String::from_utf8(buf).unwrap_or_default();
        reexport(fleet, &mut out);
        out
    }
}

/// Appends every backend's scraped families, merged by name, with a
/// `backend` label. One HELP/TYPE per family, as the format requires.
fn reexport(fleet: &Fleet, out: &mut String) {
    struct Merged {
        kind: Kind,
        help: String,
        lines: Vec<String>,
    }
    let mut merged: BTreeMap<String, Merged> = BTreeMap::new();
    for b in fleet.backends().iter() {
        let obs = b.observed();
        for fam in obs.families.iter() {
            let m = merged.entry(fam.name.clone()).or_insert_with(|| Merged {
                kind: fam.kind,
                help: fam.help.clone(),
                lines: Vec::new(),
            });
            for s in &fam.samples {
                let mut labels = format!("backend=\"{}\"", escape(b.name()));
                for (k, v) in &s.labels {
                    if k != "backend" {
                        let _ = write!(labels, ",{k}=\"{}\"", escape(v));
                    }
                }
                m.lines
                    .push(format!("{}{{{labels}}} {}", fam.name, s.value));
            }
        }
    }
    for (name, m) in merged {
        let _ = writeln!(out, "# HELP {name} {}", m.help.replace('\n', " "));
        let _ = writeln!(out, "# TYPE {name} {}", m.kind.as_str());
        for l in m.lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Sets up `tracing` output (text or JSON), honouring `RUST_LOG`.
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,pingora=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
