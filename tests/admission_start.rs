//! Issue 13 item 3, the start transient: an overload that starts from an
//! idle fleet fills every slot at once, so the slots free together, in
//! rounds one typical request duration apart, not spread over it as the
//! completion rate assumes. A queue admitted by the rate alone holds
//! entries the next-but-one round cannot reach, and they wait out their
//! whole budget (slow `queue_timeout` 503s: the p99 time to reject of a
//! short overload). Admitted by when the fleet's slots free, every queued
//! entry is served, and the rest are refused at once, with `Retry-After`.
//!
//! Two simulated llama-servers × 4 slots; every request generates 40
//! tokens at 100 tokens/s on an idle or a full slot alike (linear curve):
//! 400 ms, so the rounds come at 0.4, 0.8, 1.2 and 1.6 s.

mod support;

use std::time::Duration;

use sluice::sim::{SimOptions, ThroughputCurve};
use support::{completion, Harness, Reply};

const SLOTS: usize = 4;
const BACKENDS: usize = 2;
const TOKENS: u32 = 40;

fn sim(seed: u64) -> SimOptions {
    SimOptions {
        slots: SLOTS,
        gen_tps: 100.0,
        prompt_tps: 100_000.0,
        curve: ThroughputCurve::Power { exponent: 1.0 },
        seed,
        ..SimOptions::default()
    }
}

/// `n` requests sent at once, each with `headers`; the replies in order.
fn at_once(h: &Harness, n: usize, headers: &'static [(&'static str, &'static str)]) -> Vec<Reply> {
    let url = format!("{}/completion", h.gw().proxy_url());
    h.rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (c, url) = (h.client.clone(), url.clone());
                tokio::spawn(async move {
                    support::post_with(&c, &url, completion(TOKENS), headers).await
                })
            })
            .collect();
        let mut v = Vec::new();
        for t in tasks {
            v.push(t.await.unwrap());
        }
        v
    })
}

/// A `sluice_queue_drops_total` reason's count.
fn drops(h: &Harness, reason: &str) -> u64 {
    let m =
        h.rt.block_on(support::get(&h.client, &h.gw().admin_url(), "/metrics"));
    let series = format!("sluice_queue_drops_total{{reason=\"{reason}\"}}");
    m.body
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap_or(0.0) as u64)
}

/// The gateway counts no request in flight and none queued.
fn idle(h: &Harness) -> bool {
    let s = h.status();
    s["queue_depth"] == 0
        && s["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["in_flight"] == 0)
}

/// 48 requests at once on 8 idle slots, 1.6 s budgets. By the completion
/// rate (20 a second), 31 fit in the queue; but the slots free in rounds
/// of 8 at 0.4, 0.8, 1.2 and 1.6 s, so the 7 queued behind the third
/// round cannot be served before their deadline. Invariants, on every
/// machine: no queued entry waits out its budget, every refusal carries
/// `Retry-After`, nothing reaches a backend late or waits inside one, and
/// the three rounds the budget reaches are served (24 requests or more).
#[test]
fn an_overload_from_idle_refuses_at_once_what_the_rounds_cannot_reach() {
    let h = Harness::start((0..BACKENDS as u64).map(sim).collect(), "", &[]);
    h.wait_all_eligible();
    // The typical duration is learnt from requests served: two full rounds.
    for _ in 0..2 {
        for r in at_once(&h, BACKENDS * SLOTS, &[]) {
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
    h.wait_until("the fleet idle again", Duration::from_secs(5), idle);
    let before = (drops(&h, "expired"), drops(&h, "unmeetable"));
    let replies = at_once(&h, 48, &[("x-sluice-deadline", "1600ms")]);
    let served = replies.iter().filter(|r| r.status == 200).count();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status != 200).collect();
    let reason = |r: &Reply| r.header("x-sluice-reason").unwrap_or("").to_string();
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for r in &refused {
        *reasons.entry(reason(r)).or_default() += 1;
    }
    let expired = drops(&h, "expired") - before.0;
    let unmeetable = drops(&h, "unmeetable") - before.1;
    println!(
        "48 at once on {} idle slots, 1.6 s budgets: {served} served, refused {reasons:?}, \
         queue drops: {expired} expired, {unmeetable} unmeetable",
        BACKENDS * SLOTS
    );
    assert!(
        refused.iter().all(|r| r.status == 503),
        "a refusal other than 503: {:?}",
        refused.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        refused.iter().all(|r| r.header("retry-after").is_some()),
        "a 503 without Retry-After"
    );
    assert_eq!(
        reasons.get("queue_timeout"),
        None,
        "queued requests waited out their budget: {reasons:?}"
    );
    assert_eq!(expired, 0, "queue entries expired");
    assert!(served >= 3 * BACKENDS * SLOTS, "served only {served}");
    for s in &h.sims {
        let c = s.counters();
        assert_eq!(c.late_arrivals, 0, "a request reached a backend late");
        assert_eq!(
            c.max_deferred_seen, 0,
            "llama-server queued requests itself"
        );
    }
}
