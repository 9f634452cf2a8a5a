//! The cluster's series, registered into the gateway's registry next to
//! what they measure.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

use crate::telemetry::Metrics;

/// Round trips to a nearby Redis take tens to hundreds of µs; the issue's
/// budget for the added latency is 1 ms.
const ROUND_TRIP_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Failure kinds, present from the start.
pub const ERROR_KINDS: &[&str] = &["timeout", "connection", "script"];

pub struct ClusterMetrics {
    pub redis_up: IntGauge,
    pub replicas: IntGauge,
    pub fallback: IntGauge,
    pub errors: IntCounterVec,
    pub round_trip: Histogram,
    pub settlements_pending: IntGauge,
    pub settlements_dropped: IntCounter,
    pub from_lease: IntCounter,
}

impl ClusterMetrics {
    pub fn new(m: &Metrics) -> ClusterMetrics {
        let r = &m.registry;
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid gauge");
            r.register(Box::new(g.clone())).expect("unique name");
            g
        };
        let redis_up = gauge(
            "sluice_cluster_redis_up",
            "1 while the shared Redis answers this replica, else 0.",
        );
        let replicas = gauge(
            "sluice_cluster_replicas",
            "Live gateway replicas sharing the Redis, as last seen (heartbeats).",
        );
        let fallback = gauge(
            "sluice_cluster_fallback",
            "1 while Redis is slow or down and this replica enforces its share of each limit (or refuses, with on_redis_down = fail_closed).",
        );
        let errors = IntCounterVec::new(
            Opts::new(
                "sluice_cluster_redis_errors_total",
                "Redis calls that failed, by kind (timeout, connection, script).",
            ),
            &["kind"],
        )
        .expect("valid counter");
        r.register(Box::new(errors.clone())).expect("unique name");
        for k in ERROR_KINDS {
            errors.with_label_values(&[k]);
        }
        let round_trip = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_cluster_redis_seconds",
                "Round trip of one limit decision in Redis, in seconds.",
            )
            .buckets(ROUND_TRIP_BUCKETS.to_vec()),
        )
        .expect("valid histogram");
        r.register(Box::new(round_trip.clone()))
            .expect("unique name");
        let settlements_pending = gauge(
            "sluice_cluster_settlements_pending",
            "Token-budget settlements (refunds or extra charges from usage) that Redis did not take, kept to send when it answers again.",
        );
        let settlements_dropped = IntCounter::new(
            "sluice_cluster_settlements_dropped_total",
            "Pending settlements dropped because the ledger was full (10,000 entries).",
        )
        .expect("valid counter");
        r.register(Box::new(settlements_dropped.clone()))
            .expect("unique name");
        let from_lease = IntCounter::new(
            "sluice_cluster_rate_from_lease_total",
            "Requests whose shared rate limit was passed on cells leased ahead from Redis (no round trip on the request's path).",
        )
        .expect("valid counter");
        r.register(Box::new(from_lease.clone()))
            .expect("unique name");
        ClusterMetrics {
            redis_up,
            replicas,
            fallback,
            errors,
            round_trip,
            settlements_pending,
            settlements_dropped,
            from_lease,
        }
    }
}
