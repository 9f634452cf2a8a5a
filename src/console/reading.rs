//! One moment's figures, read from what the gateway already keeps: its
//! Prometheus registry (cumulative counters and histograms), the fleet's
//! published backend state and the gate's queue. The sampler reads one a
//! second; nothing here runs on the request path, and nothing here is new
//! bookkeeping: a figure the gateway does not keep is not shown.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::proto::MetricFamily;
use tokio::time::Instant;

use crate::admission::gate::Gate;
use crate::backend::fleet::Fleet;
use crate::telemetry::Metrics;

/// The series the console reads, by their registered names (the test below
/// fills a real [`Metrics`] and reads it back, so a renamed series fails it).
const REQUESTS: &str = "sluice_requests_total";
const DURATION: &str = "sluice_request_duration_seconds";
const REJECT_TIME: &str = "sluice_reject_seconds";
const KEY_REQUESTS: &str = "sluice_key_requests_total";
const KEY_TOKENS: &str = "sluice_key_tokens_total";

/// A cumulative histogram: `counts[i]` observations at most `bounds[i]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    /// All observations (the `+Inf` bucket).
    pub total: u64,
}

/// One API key's counters (key names are bounded by the configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyTotals {
    pub requests: u64,
    pub rejected: u64,
    pub tokens: u64,
}

/// One backend now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendReading {
    pub name: String,
    pub in_flight: u32,
    pub limit: u32,
    /// `requests_processing` at the last scrape (busy slots).
    pub busy: Option<u32>,
    pub slots: Option<u32>,
    pub deferred: Option<u32>,
    /// `tokens_predicted_total` at the last scrape (a counter).
    pub tokens_predicted: Option<f64>,
}

/// Cumulative counters and current gauges at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Finished requests by outcome (`served`, `rejected`, `failed`, ...).
    pub finished: BTreeMap<String, u64>,
    /// Refused requests by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Request duration, summed over backends.
    pub latency: Buckets,
    /// Time to a refusal.
    pub reject_time: Buckets,
    pub keys: BTreeMap<String, KeyTotals>,
    pub queue_depth: usize,
    pub oldest_wait: Option<Duration>,
    pub backends: Vec<BackendReading>,
}

impl Reading {
    /// Reads the gateway's figures now.
    pub fn take(fleet: &Fleet, gate: &Gate, metrics: &Metrics, now: Instant) -> Reading {
        let mut r = Reading::from_families(&metrics.registry.gather());
        r.queue_depth = gate.queue_len();
        r.oldest_wait = gate.oldest_wait(now);
        r.backends = fleet
            .backends()
            .iter()
            .map(|b| {
                let obs = b.observed();
                let load = obs.load.as_ref().map(|(l, _)| l);
                BackendReading {
                    name: b.name().to_string(),
                    in_flight: b.in_flight(),
                    limit: b.cap(&obs),
                    busy: load.map(|l| l.processing),
                    slots: obs.slots,
                    deferred: load.map(|l| l.deferred),
                    tokens_predicted: load.and_then(|l| l.tokens_predicted_total),
                }
            })
            .collect();
        r
    }

    /// The registry part of a reading (counters and histograms).
    pub fn from_families(families: &[MetricFamily]) -> Reading {
        let mut r = Reading::default();
        for f in families {
            match f.name() {
                REQUESTS => {
                    for m in &f.metric {
                        let n = m.counter.value() as u64;
                        let outcome = label(m, "outcome");
                        *r.finished.entry(outcome.to_string()).or_default() += n;
                        if outcome == "rejected" {
                            *r.rejected
                                .entry(label(m, "reason").to_string())
                                .or_default() += n;
                        }
                    }
                }
                DURATION => {
                    for m in &f.metric {
                        add_histogram(&mut r.latency, &m.histogram);
                    }
                }
                REJECT_TIME => {
                    for m in &f.metric {
                        add_histogram(&mut r.reject_time, &m.histogram);
                    }
                }
                KEY_REQUESTS => {
                    for m in &f.metric {
                        let k = r.keys.entry(label(m, "key").to_string()).or_default();
                        let n = m.counter.value() as u64;
                        k.requests += n;
                        if label(m, "outcome") == "rejected" {
                            k.rejected += n;
                        }
                    }
                }
                KEY_TOKENS => {
                    for m in &f.metric {
                        let k = r.keys.entry(label(m, "key").to_string()).or_default();
                        k.tokens += m.counter.value() as u64;
                    }
                }
                _ => {}
            }
        }
        r
    }
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    m.label
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

/// Adds one histogram into a sum of histograms with the same buckets.
fn add_histogram(into: &mut Buckets, h: &prometheus::proto::Histogram) {
    if into.bounds.is_empty() {
        into.bounds = h.bucket.iter().map(|b| b.upper_bound()).collect();
        into.counts = vec![0; into.bounds.len()];
    }
    for (c, b) in into.counts.iter_mut().zip(&h.bucket) {
        *c += b.cumulative_count();
    }
    into.total += h.sample_count();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_outcomes_reasons_keys_and_summed_histograms() {
        let m = Metrics::new();
        m.request("inference", "served", "2xx");
        m.request("inference", "served", "2xx");
        m.request("inference", "rejected", "queue_full");
        m.request("passthrough", "rejected", "rate_limited");
        m.key_request("alice", "served");
        m.key_request("alice", "rejected");
        m.key_tokens("alice", 5, 7);
        m.backend("b0").duration.observe(0.3);
        m.backend("b1").duration.observe(3.0);
        m.reject_seconds.observe(0.002);
        let r = Reading::from_families(&m.registry.gather());
        assert_eq!(r.finished["served"], 2);
        assert_eq!(r.finished["rejected"], 2);
        assert_eq!(r.rejected["queue_full"], 1);
        assert_eq!(r.rejected["rate_limited"], 1);
        assert_eq!(
            r.keys["alice"],
            KeyTotals {
                requests: 2,
                rejected: 1,
                tokens: 12
            }
        );
        assert_eq!(r.latency.total, 2);
        let at_half = r.latency.bounds.iter().position(|b| *b == 0.5).unwrap();
        assert_eq!(r.latency.counts[at_half], 1);
        assert_eq!(r.reject_time.total, 1);
    }
}
