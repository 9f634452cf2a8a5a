//! The console's memory: a bounded ring of one point a second for the last
//! 15 minutes, and the figures of "now" (rates, percentiles, top keys over
//! the last few seconds). A pure struct: the sampler hands it a
//! [`Reading`] and the time; nothing here reads a clock or locks.
//!
//! ## Why points and not raw readings
//! A reading holds cumulative counters and whole histograms; a point holds
//! the handful of numbers a sparkline draws (rates from the difference of
//! two readings). 900 points of a few numbers each are the whole cost, so
//! the ring's size is fixed by [`CAPACITY`] however long the gateway runs.

use std::collections::VecDeque;

use serde::Serialize;
use tokio::time::Instant;

use super::quantile;
use super::reading::Reading;

/// Points kept: 15 minutes at one a second.
pub const CAPACITY: usize = 900;
/// Readings over which "now" is computed: rates and percentiles of the last
/// 10 seconds (one second is too few requests for a p99).
pub const WINDOW: usize = 10;
/// Most keys shown in the top-users table.
pub const TOP_KEYS: usize = 10;

/// One backend at one second.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BackendPoint {
    pub name: String,
    pub in_flight: u32,
    pub limit: u32,
    pub busy: Option<u32>,
    pub deferred: Option<u32>,
    /// Generated tokens per second (from `tokens_predicted_total`).
    pub tokens_per_s: Option<f64>,
}

/// One second of the gateway, as the sparklines draw it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    pub seq: u64,
    /// Seconds since the console started.
    pub t: f64,
    /// Requests finished past admission (served, failed, client closed) per second.
    pub admitted_per_s: f64,
    /// Requests refused per second.
    pub shed_per_s: f64,
    pub queue_depth: usize,
    pub oldest_wait_s: f64,
    /// Request duration p95 over the window (seconds).
    pub latency_p95: Option<f64>,
    /// Time-to-reject p99 over the window (seconds).
    pub reject_p99: Option<f64>,
    pub backends: Vec<BackendPoint>,
}

/// One API key over the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyRow {
    pub key: String,
    pub requests_per_s: f64,
    pub rejected_per_s: f64,
    pub requests: u64,
    pub rejected: u64,
    pub tokens: u64,
}

/// The gateway over the last [`WINDOW`] seconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Now {
    pub window_s: f64,
    pub admitted_per_s: f64,
    pub shed_per_s: f64,
    /// Refusals per second by reason, most first.
    pub shed_reasons: Vec<(String, f64)>,
    pub queue_depth: usize,
    pub oldest_wait_s: f64,
    pub latency_p50: Option<f64>,
    pub latency_p95: Option<f64>,
    pub latency_p99: Option<f64>,
    pub reject_p50: Option<f64>,
    pub reject_p99: Option<f64>,
    /// At most [`TOP_KEYS`], busiest first.
    pub top_keys: Vec<KeyRow>,
}

pub struct History {
    start: Instant,
    points: VecDeque<Point>,
    capacity: usize,
    /// The last `WINDOW + 1` readings, oldest first.
    readings: VecDeque<(Instant, Reading)>,
    next_seq: u64,
    now: Now,
}

impl History {
    pub fn new(start: Instant) -> History {
        History::with_capacity(start, CAPACITY)
    }

    pub fn with_capacity(start: Instant, capacity: usize) -> History {
        History {
            start,
            points: VecDeque::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
            readings: VecDeque::with_capacity(WINDOW + 1),
            next_seq: 1,
            now: Now::default(),
        }
    }

    /// Takes in one reading: a new point (once there is a previous reading
    /// to take rates against) and a new "now".
    pub fn record(&mut self, reading: Reading, at: Instant) {
        if let Some((prev_at, _)) = self.readings.back() {
            if at <= *prev_at {
                return;
            }
        }
        self.readings.push_back((at, reading));
        while self.readings.len() > WINDOW + 1 {
            self.readings.pop_front();
        }
        if self.readings.len() < 2 {
            return;
        }
        self.now = self.window();
        let point = self.point(at);
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(point);
        self.next_seq += 1;
    }

    /// Points newer than `seq` (0: all kept), oldest first.
    pub fn since(&self, seq: u64) -> impl Iterator<Item = &Point> {
        let skip = self.points.iter().take_while(|p| p.seq <= seq).count();
        self.points.iter().skip(skip)
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The sequence number of the newest point (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn now(&self) -> &Now {
        &self.now
    }

    fn point(&self, at: Instant) -> Point {
        let n = self.readings.len();
        let (t0, a) = &self.readings[n - 2];
        let (t1, b) = &self.readings[n - 1];
        let dt = t1.duration_since(*t0).as_secs_f64();
        let (admitted, shed) = rates(a, b, dt);
        let backends = b
            .backends
            .iter()
            .map(|nb| {
                let tokens_per_s = self.tokens_rate(&nb.name);
                BackendPoint {
                    name: nb.name.clone(),
                    in_flight: nb.in_flight,
                    limit: nb.limit,
                    busy: nb.busy,
                    deferred: nb.deferred,
                    tokens_per_s,
                }
            })
            .collect();
        Point {
            seq: self.next_seq,
            t: at.duration_since(self.start).as_secs_f64(),
            admitted_per_s: admitted,
            shed_per_s: shed,
            queue_depth: b.queue_depth,
            oldest_wait_s: b.oldest_wait.map_or(0.0, |d| d.as_secs_f64()),
            latency_p95: self.now.latency_p95,
            reject_p99: self.now.reject_p99,
            backends,
        }
    }

    /// A backend's generated tokens per second over the window (a scrape
    /// counter: the window smooths the scrape interval away).
    fn tokens_rate(&self, name: &str) -> Option<f64> {
        let tokens = |r: &Reading| {
            r.backends
                .iter()
                .find(|b| b.name == name)
                .and_then(|b| b.tokens_predicted)
        };
        let mut known = self
            .readings
            .iter()
            .filter_map(|(t, r)| tokens(r).map(|v| (*t, v)));
        let (t0, v0) = known.next()?;
        let (t1, v1) = known.next_back()?;
        let dt = t1.duration_since(t0).as_secs_f64();
        // A restarted backend's counter goes back to zero: no rate then.
        (dt > 0.0 && v1 >= v0).then(|| (v1 - v0) / dt)
    }

    fn window(&self) -> Now {
        let (t0, a) = self.readings.front().expect("two readings");
        let (t1, b) = self.readings.back().expect("two readings");
        let dt = t1.duration_since(*t0).as_secs_f64();
        let (admitted, shed) = rates(a, b, dt);
        let mut shed_reasons: Vec<(String, f64)> = b
            .rejected
            .iter()
            .map(|(reason, n)| {
                let before = a.rejected.get(reason).copied().unwrap_or(0);
                (reason.clone(), n.saturating_sub(before) as f64 / dt)
            })
            .filter(|(_, r)| *r > 0.0)
            .collect();
        shed_reasons.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        let mut top_keys: Vec<KeyRow> = b
            .keys
            .iter()
            .map(|(key, k)| {
                let before = a.keys.get(key).copied().unwrap_or_default();
                KeyRow {
                    key: key.clone(),
                    requests_per_s: k.requests.saturating_sub(before.requests) as f64 / dt,
                    rejected_per_s: k.rejected.saturating_sub(before.rejected) as f64 / dt,
                    requests: k.requests,
                    rejected: k.rejected,
                    tokens: k.tokens,
                }
            })
            .collect();
        top_keys.sort_by(|x, y| {
            y.requests_per_s
                .total_cmp(&x.requests_per_s)
                .then(y.requests.cmp(&x.requests))
                .then(x.key.cmp(&y.key))
        });
        top_keys.truncate(TOP_KEYS);
        Now {
            window_s: dt,
            admitted_per_s: admitted,
            shed_per_s: shed,
            shed_reasons,
            queue_depth: b.queue_depth,
            oldest_wait_s: b.oldest_wait.map_or(0.0, |d| d.as_secs_f64()),
            latency_p50: quantile::between(&a.latency, &b.latency, 0.5),
            latency_p95: quantile::between(&a.latency, &b.latency, 0.95),
            latency_p99: quantile::between(&a.latency, &b.latency, 0.99),
            reject_p50: quantile::between(&a.reject_time, &b.reject_time, 0.5),
            reject_p99: quantile::between(&a.reject_time, &b.reject_time, 0.99),
            top_keys,
        }
    }
}

/// (admitted, shed) per second between two readings `dt` seconds apart.
fn rates(a: &Reading, b: &Reading, dt: f64) -> (f64, f64) {
    let total = |r: &Reading| r.finished.values().sum::<u64>();
    let shed = |r: &Reading| r.rejected.values().sum::<u64>();
    let shed_n = shed(b).saturating_sub(shed(a));
    let all_n = total(b).saturating_sub(total(a));
    (all_n.saturating_sub(shed_n) as f64 / dt, shed_n as f64 / dt)
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
