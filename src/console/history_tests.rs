use std::time::Duration;

use super::*;
use crate::console::reading::{BackendReading, KeyTotals};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A reading after `served` served and `shed` refused requests in all.
fn reading(served: u64, shed: u64) -> Reading {
    let mut r = Reading::default();
    r.finished.insert("served".into(), served);
    r.finished.insert("rejected".into(), shed);
    r.rejected.insert("queue_full".into(), shed);
    r
}

#[test]
fn the_ring_keeps_at_most_its_capacity_and_numbers_points() {
    let t = Instant::now();
    let mut h = History::with_capacity(t, 5);
    for i in 0..20u64 {
        h.record(reading(i * 3, i), t + secs(i));
    }
    assert_eq!(h.len(), 5);
    assert_eq!(h.last_seq(), 19);
    let seqs: Vec<u64> = h.since(0).map(|p| p.seq).collect();
    assert_eq!(seqs, [15, 16, 17, 18, 19]);
    let newer: Vec<u64> = h.since(17).map(|p| p.seq).collect();
    assert_eq!(newer, [18, 19]);
    assert_eq!(h.since(19).count(), 0);
}

#[test]
fn the_default_ring_is_fifteen_minutes_and_stays_there() {
    let t = Instant::now();
    let mut h = History::new(t);
    for i in 0..2000u64 {
        h.record(reading(i, 0), t + secs(i));
    }
    assert_eq!(h.len(), CAPACITY);
    assert_eq!(CAPACITY, 15 * 60);
    assert_eq!(h.readings.len(), WINDOW + 1);
}

#[test]
fn rates_per_second_from_counter_differences() {
    let t = Instant::now();
    let mut h = History::new(t);
    h.record(reading(0, 0), t);
    assert!(h.is_empty(), "one reading gives no rate yet");
    h.record(reading(30, 10), t + secs(2));
    let p = h.since(0).last().unwrap();
    assert_eq!(p.admitted_per_s, 15.0);
    assert_eq!(p.shed_per_s, 5.0);
    assert_eq!(h.now().shed_reasons, [("queue_full".to_string(), 5.0)]);
    // A clock that does not move on is ignored, not divided by.
    h.record(reading(99, 99), t + secs(2));
    assert_eq!(h.len(), 1);
}

#[test]
fn tokens_per_second_and_backend_figures_per_point() {
    let t = Instant::now();
    let mut h = History::new(t);
    for i in 0..5u64 {
        let mut r = reading(0, 0);
        r.backends.push(BackendReading {
            name: "b0".into(),
            in_flight: 3,
            limit: 4,
            busy: Some(2),
            deferred: Some(1),
            tokens_predicted: Some(100.0 * i as f64),
            ..BackendReading::default()
        });
        h.record(r, t + secs(i));
    }
    let b = &h.since(0).last().unwrap().backends[0];
    assert_eq!(b.name, "b0");
    assert_eq!(
        (b.in_flight, b.limit, b.busy, b.deferred),
        (3, 4, Some(2), Some(1))
    );
    assert_eq!(b.tokens_per_s, Some(100.0));
}

#[test]
fn top_keys_are_the_busiest_ten() {
    let t = Instant::now();
    let mut h = History::new(t);
    let keys = |scale: u64| {
        let mut r = reading(0, 0);
        for k in 0..15u64 {
            r.keys.insert(
                format!("key-{k:02}"),
                KeyTotals {
                    requests: k * scale,
                    rejected: 0,
                    tokens: 0,
                },
            );
        }
        r
    };
    h.record(keys(0), t);
    h.record(keys(1), t + secs(1));
    let top: Vec<&str> = h.now().top_keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(top.len(), TOP_KEYS);
    assert_eq!(top[0], "key-14");
    assert_eq!(top[9], "key-05");
    assert_eq!(h.now().top_keys[0].requests_per_s, 14.0);
}
