//! Cost-aware choice: with one backend 3× slower than the others, the
//! gateway learns each backend's speed from the `timings` of completed
//! requests and sends work to the slow one only when the fast ones are full.

mod support;

use std::collections::BTreeMap;

use serde_json::json;
use sluice::sim::SimOptions;
use support::{post, Harness};

fn sim(gen_tps: f64) -> SimOptions {
    SimOptions {
        slots: 4,
        gen_tps,
        prompt_tps: 20_000.0,
        ..SimOptions::default()
    }
}

/// `clients` closed-loop clients each sending `per_client` requests of 24
/// tokens; returns how many each backend served.
fn run(h: &Harness, clients: usize, per_client: usize) -> BTreeMap<String, usize> {
    let base = h.gw().proxy_url();
    h.rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (client, base) = (h.client.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..per_client {
                    let body =
                        json!({"prompt": format!("client {c} request {i}"), "n_predict": 24});
                    let r = post(&client, &base, "/completion", body).await;
                    assert_eq!(r.status, 200, "{}", r.body);
                    got.push(r.header("x-sluice-backend").unwrap_or("-").to_string());
                }
                got
            }));
        }
        let mut per = BTreeMap::new();
        for t in tasks {
            for b in t.await.unwrap() {
                *per.entry(b).or_insert(0) += 1;
            }
        }
        per
    })
}

#[test]
fn a_slow_backend_gets_work_only_when_the_fast_ones_are_full() {
    // b0, b1: 600 tokens/s per request; b2: 200 (3x slower).
    let h = Harness::start(vec![sim(600.0), sim(600.0), sim(200.0)], "", &[]);
    h.wait_all_eligible();
    // Warm-up: every backend reports its speed at least once.
    let warm = run(&h, 6, 4);
    assert_eq!(warm.values().sum::<usize>(), 24);
    // 6 concurrent requests fit in the fast backends' 8 slots.
    let per = run(&h, 6, 12);
    let total: usize = per.values().sum();
    let slow = per.get("b2").copied().unwrap_or(0);
    println!("after warm-up {warm:?}: 6 clients x 12 requests, served by {per:?}");
    assert_eq!(total, 72);
    // Balanced by load alone the slow backend took about a third of the
    // requests that were in flight there; by cost only the rare one that
    // arrives while both fast backends hold all their slots.
    assert!(
        slow * 10 <= total,
        "the 3x slower backend served {slow} of {total}: {per:?}"
    );
    // /status shows what was learnt: the slow one about 3x the fast ones.
    let speed = |i: usize| {
        h.backend_status(i)["generation_ms_per_token"]
            .as_f64()
            .unwrap()
    };
    let (f0, f1, s2) = (speed(0), speed(1), speed(2));
    println!("generation ms per token at one slot: {f0:.2} {f1:.2} {s2:.2}");
    assert!(s2 > 2.0 * f0.max(f1), "{f0} {f1} {s2}");
    let (b0, b1) = (
        per.get("b0").copied().unwrap_or(0),
        per.get("b1").copied().unwrap_or(0),
    );
    assert!(
        b0.abs_diff(b1) * 3 <= b0 + b1,
        "the two equal backends split unevenly: {per:?}"
    );
}
