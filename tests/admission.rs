//! Admission control end to end: the gateway queue, wait budgets, clients
//! leaving while queued, rate limits, API keys, breakers and slow start.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::sim::{SimOptions, ThroughputCurve};
use support::{completion, fast, Harness};

fn slow(slots: usize) -> SimOptions {
    SimOptions {
        gen_tps: 40.0,
        ..fast(slots)
    }
}

/// Starts one long request through the gateway and waits until it holds the slot.
fn hold_slot(h: &Harness, n_predict: u32) -> tokio::task::JoinHandle<support::Reply> {
    let base = h.gw().proxy_url();
    let c = h.client.clone();
    let before = h.backend_status(0)["in_flight"].as_u64().unwrap();
    let t = h
        .rt
        .spawn(async move { support::post(&c, &base, "/completion", completion(n_predict)).await });
    h.wait_until("slot taken", Duration::from_secs(5), |h| {
        h.backend_status(0)["in_flight"].as_u64().unwrap() > before
    });
    t
}

fn post_with(h: &Harness, headers: &[(&str, &str)], n_predict: u32) -> support::Reply {
    let url = format!("{}/completion", h.gw().proxy_url());
    h.rt.block_on(support::post_with(
        &h.client,
        &url,
        completion(n_predict),
        headers,
    ))
}

#[test]
fn a_queued_request_is_served_when_a_slot_frees() {
    let h = Harness::start(vec![slow(1)], "", &[]);
    h.wait_all_eligible();
    let first = hold_slot(&h, 20); // ~0.5 s
    let t = Instant::now();
    let r = post_with(&h, &[("x-sluice-deadline", "5s")], 2);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(t.elapsed() > Duration::from_millis(200), "was not queued");
    assert_eq!(h.rt.block_on(first).unwrap().status, 200);
    // Never more than the slot count inside the backend.
    assert_eq!(h.sims[0].counters().max_deferred_seen, 0);
}

/// Issue 13: a burst the fleet clears within a few typical request
/// durations is queued, not refused, by default. Ten requests at once
/// without a deadline header on 2 backends × 2 slots (each ~0.5 s): the
/// last starts after two rounds, within the auto budget of four typical
/// durations (it was half of one, which refused about half of the burst).
#[test]
fn a_burst_without_a_deadline_is_queued_not_refused() {
    burst_after_warm_up(slow(2));
}

/// The same burst where a full batch is far slower than one request alone
/// (two at once: 2.6× the time each, as two real llama-servers on a
/// CPU-bound machine ran): the warm-up ran alone (0.5 s), so the budget
/// the burst arrived with (four of those, 2 s) ends before the third round
/// starts (2.6 s). The first batch to end (1.3 s) raises it; before, the
/// last two were refused `queue_timeout`.
#[test]
fn a_burst_is_queued_when_a_full_batch_is_much_slower_than_one_request() {
    burst_after_warm_up(SimOptions {
        curve: ThroughputCurve::Table(vec![1.0, 0.77]),
        ..slow(2)
    });
}

/// Warms up two backends of `sim` one request at a time, then sends ten
/// at once without a deadline header: all are served, none waits inside a
/// backend.
fn burst_after_warm_up(sim: SimOptions) {
    let h = Harness::start(vec![sim.clone(), sim], "", &[]);
    h.wait_all_eligible();
    // The typical duration is learnt from requests served.
    for _ in 0..4 {
        let r = post_with(&h, &[], 20);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let base = h.gw().proxy_url();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (c, base) = (h.client.clone(), base.clone());
            h.rt.spawn(async move { support::post(&c, &base, "/completion", completion(20)).await })
        })
        .collect();
    let replies: Vec<support::Reply> = tasks
        .into_iter()
        .map(|t| h.rt.block_on(t).unwrap())
        .collect();
    let refused: Vec<_> = replies
        .iter()
        .filter(|r| r.status != 200)
        .map(|r| {
            (
                r.status,
                r.header("x-sluice-reason").unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(refused.is_empty(), "refused in the burst: {refused:?}");
    // And every one waited at the gateway, not inside a backend.
    for s in &h.sims {
        assert_eq!(s.counters().max_deferred_seen, 0);
    }
}

#[test]
fn a_wait_budget_that_cannot_be_met_is_refused_at_once() {
    let h = Harness::start(vec![slow(1)], "", &[]);
    h.wait_all_eligible();
    let _first = hold_slot(&h, 200); // ~5 s
                                     // The drain estimator knows nothing yet (prior: 1 completion/s), so a
                                     // 100 ms budget cannot be met: refused without waiting.
    let t = Instant::now();
    let r = post_with(&h, &[("x-sluice-deadline", "100ms")], 2);
    let took = t.elapsed();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-sluice-reason"), Some("deadline_unmeetable"));
    assert!(r.header("retry-after").unwrap().parse::<u32>().unwrap() >= 1);
    assert!(took < Duration::from_millis(100), "took {took:?}");
    // A budget that can be met but then runs out: 503 queue_timeout.
    let t = Instant::now();
    let r = post_with(&h, &[("x-sluice-deadline", "1.5s")], 2);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("x-sluice-reason"), Some("queue_timeout"));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(2500),
        "took {took:?}"
    );
    assert!(r.header("retry-after").is_some());
    // Bad header values are the client's mistake.
    let r = post_with(&h, &[("x-sluice-deadline", "soon")], 2);
    assert_eq!(r.status, 400);
    let r = post_with(&h, &[("x-sluice-priority", "urgent")], 2);
    assert_eq!(r.status, 400);
    assert_eq!(h.sims[0].counters().late_arrivals, 0);
}

#[test]
fn a_client_that_leaves_while_queued_never_reaches_a_backend() {
    let h = Harness::start(vec![slow(1)], "", &[]);
    h.wait_all_eligible();
    let first = hold_slot(&h, 40); // ~1 s
    let body = completion(2).to_string();
    let mut s = std::net::TcpStream::connect(h.gw().proxy_addr).unwrap();
    write!(
        s,
        "POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-sluice-deadline: 10s\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    h.wait_until("request queued", Duration::from_secs(3), |h| {
        h.status()["queue_depth"] == 1
    });
    drop(s);
    h.wait_until("queue empty", Duration::from_secs(3), |h| {
        h.status()["queue_depth"] == 0
    });
    assert_eq!(h.rt.block_on(first).unwrap().status, 200);
    // Not a wait for a condition: time for a wrongly sent request to arrive.
    std::thread::sleep(Duration::from_millis(300));
    // Only the first request ever reached the backend.
    assert_eq!(h.sims[0].counters().received, 1);
}

#[test]
fn rate_limit_admits_the_burst_then_429_with_retry_after() {
    let h = Harness::start(
        vec![fast(64)],
        "[rate_limit]\nenabled = true\nrequests_per_minute = 60\nburst = 10\n",
        &[],
    );
    h.wait_all_eligible();
    let mut ok = 0;
    let mut limited = Vec::new();
    for _ in 0..50 {
        let r = h.post("/completion", completion(0));
        match r.status {
            200 => ok += 1,
            429 => limited.push(r),
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    // 5× the quota within a second: the burst (10) passes, ± one refill.
    assert!((10..=11).contains(&ok), "admitted {ok}");
    let r = &limited[0];
    assert_eq!(r.header("x-sluice-reason"), Some("rate_limited"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("60"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"]["code"], 429);
    // Load pattern: the client waits out Retry-After.
    std::thread::sleep(Duration::from_secs(retry));
    assert_eq!(
        h.post("/completion", completion(0)).status,
        200,
        "retry after Retry-After"
    );
}

#[test]
fn api_keys_are_required_when_configured_and_named_in_metrics() {
    let h = Harness::start(
        vec![fast(4)],
        "[[api_keys]]\nname = \"team-a\"\nkey = \"sk-test-0123456789\"\n[auth]\nrequire_key = true\n",
        &[],
    );
    h.wait_all_eligible();
    let r = h.post("/completion", completion(0));
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = post_with(&h, &[("authorization", "Bearer wrong-key-123")], 0);
    assert_eq!(r.status, 401);
    let r = post_with(&h, &[("authorization", "Bearer sk-test-0123456789")], 5);
    assert_eq!(r.status, 200);
    let admin = h.gw().admin_url();
    h.wait_until("key counted", Duration::from_secs(2), |h| {
        let m = h.rt.block_on(async {
            h.client
                .get(format!("{admin}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        m.contains("sluice_key_requests_total{key=\"team-a\",outcome=\"served\"} 1")
            && m.contains("sluice_key_tokens_total{key=\"team-a\",kind=\"completion\"} 5")
            && m.contains("sluice_key_tokens_total{key=\"team-a\",kind=\"prompt\"}")
            && !m.contains("sk-test")
    });
}

#[test]
fn a_dead_backend_opens_its_breaker_then_probes_and_slow_starts() {
    let h = Harness::start(
        vec![fast(4), fast(4)],
        "[breaker]\nbase_backoff = \"300ms\"\n",
        &[],
    );
    h.wait_all_eligible();
    h.rt.block_on(h.sims[0].stop_listening());
    for _ in 0..20 {
        assert_eq!(h.post("/completion", completion(0)).status, 200);
    }
    h.wait_until("breaker open", Duration::from_secs(3), |h| {
        h.backend_status(0)["breaker"] != "closed"
    });
    h.rt.block_on(h.sims[0].resume_listening()).unwrap();
    h.wait_until("b0 eligible again", Duration::from_secs(10), |h| {
        h.backend_status(0)["eligible"] == true
    });
    // Probes succeed and close the breaker; the limit restarts low and grows.
    let mut saw_closed_low = false;
    for _ in 0..200 {
        let _ = h.post("/completion", completion(0));
        let b = h.backend_status(0);
        if b["breaker"] == "closed" {
            if b["adaptive_limit"].as_u64().unwrap_or(99) < 4 {
                saw_closed_low = true;
            }
            if saw_closed_low && b["adaptive_limit"].as_u64().unwrap_or(0) >= 4 {
                return;
            }
        }
    }
    panic!(
        "no slow start seen (closed with a low limit: {saw_closed_low}); status {:#}",
        h.status()
    );
}

#[test]
fn overload_never_delivers_a_request_past_its_deadline() {
    let h = Harness::start(vec![slow(2), slow(2)], "", &[]);
    h.wait_all_eligible();
    let base = h.gw().proxy_url();
    let results = h.rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..40 {
            let c = h.client.clone();
            let url = format!("{base}/completion");
            tasks.push(tokio::spawn(async move {
                // Load pattern: one request every 25 ms.
                tokio::time::sleep(Duration::from_millis(i * 25)).await;
                let t = Instant::now();
                let r = c
                    .post(url)
                    .header("x-sluice-deadline", "400ms")
                    .body(completion(8).to_string())
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let retry = r.headers().get("retry-after").is_some();
                let _ = r.bytes().await;
                (status, retry, t.elapsed())
            }));
        }
        let mut v = Vec::new();
        for t in tasks {
            v.push(t.await.unwrap());
        }
        v
    });
    let served = results.iter().filter(|r| r.0 == 200).count();
    let shed: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(served + shed.len(), results.len(), "{results:?}");
    assert!(served >= 8, "served only {served}");
    assert!(
        !shed.is_empty(),
        "40 requests on 4 slow slots should shed some"
    );
    assert!(shed.iter().all(|r| r.1), "a 503 without Retry-After");
    let late: u64 = h.sims.iter().map(|s| s.counters().late_arrivals).sum();
    assert_eq!(late, 0, "requests reached a backend after their deadline");
    let deferred: usize = h.sims.iter().map(|s| s.counters().max_deferred_seen).sum();
    assert_eq!(deferred, 0, "llama-server queued requests itself");
}

#[test]
fn token_budget_charges_an_estimate_and_reconciles_from_usage() {
    // Exactly 40 tokens for a request that names no limit.
    let sim = SimOptions {
        gen_length: sluice::sim::GenLength { min: 40, max: 40 },
        ..fast(4)
    };
    let h = Harness::start(
        vec![sim],
        "[token_budget]\nenabled = true\ntokens_per_minute = 60\nburst = 200\ncompletion_estimate = 170\n",
        &[],
    );
    h.wait_all_eligible();
    // No max_tokens: the estimate is the prompt (3) + completion_estimate
    // (170) = 173 of 200; its usage (≈43 tokens) is settled, refunding the
    // rest.
    let unlimited = json!({"prompt": "Hello there"});
    let r = h.post("/completion", unlimited.clone());
    assert_eq!(r.status, 200, "{}", r.body);
    // The second estimate no longer fits: 429 with the token headers.
    let r = h.post("/completion", unlimited.clone());
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("x-sluice-reason"), Some("token_budget"));
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("60"));
    let remaining: u64 = r
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    // Refunded: without reconciliation only ≈27 would remain.
    assert!(
        remaining > 100,
        "remaining {remaining}: usage was not reconciled"
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    // A refused request is not charged: the same answer again.
    let again = h.post("/completion", unlimited);
    assert_eq!(again.status, 429);
    let remaining2: u64 = again
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(remaining2 >= remaining, "{remaining2} < {remaining}");
}

#[test]
fn token_budget_charges_max_tokens_from_the_body() {
    let h = Harness::start(
        vec![fast(4)],
        "[token_budget]\nenabled = true\ntokens_per_minute = 60\nburst = 200\ncompletion_estimate = 500\n",
        &[],
    );
    h.wait_all_eligible();
    // completion_estimate alone (500) would exceed the budget; the body
    // says 20 tokens at most, and that is what is charged.
    let r = h.post("/completion", completion(20));
    assert_eq!(r.status, 200, "{}", r.body);
    // A body that is not JSON is answered at the gateway.
    let r = h.rt.block_on(support::post(
        &h.client,
        &h.gw().proxy_url(),
        "/completion",
        "{\"prompt\":",
    ));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.header("x-sluice-reason"), Some("invalid_json"));
    let seen: u64 = h.sims.iter().map(|s| s.counters().received).sum();
    assert_eq!(seen, 1, "the invalid body never reached a backend");
}

#[test]
fn a_stream_the_client_cuts_is_billed_the_tokens_it_received() {
    // 40 tokens/s: a 400-token stream runs 10 s; the client leaves after a few.
    let h = Harness::start(
        vec![slow(1)],
        "[[api_keys]]\nname = \"team-a\"\nkey = \"sk-test-0123456789\"\n",
        &[],
    );
    h.wait_all_eligible();
    let url = format!("{}/v1/chat/completions", h.gw().proxy_url());
    let body = json!({
        "messages": [{"role": "user", "content": "tell me a long story"}],
        "max_tokens": 400, "stream": true,
    });
    let events = h.rt.block_on(async {
        let mut r = h
            .client
            .post(url)
            .bearer_auth("sk-test-0123456789")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut events = 0;
        while let Some(chunk) = r.chunk().await.unwrap() {
            events += chunk.windows(5).filter(|w| w == b"data:").count();
            if events >= 12 {
                break;
            }
        }
        events
        // Dropping the stream closes the connection mid-way.
    });
    let metrics = || {
        h.rt.block_on(support::get(&h.client, &h.gw().admin_url(), "/metrics"))
            .body
    };
    let sample = |m: &str, kind: &str| -> Option<f64> {
        let head = format!("sluice_key_tokens_total{{key=\"team-a\",kind=\"{kind}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&head))
            .map(|v| v.parse().unwrap())
    };
    let mut last = String::new();
    let billed = support::poll(Duration::from_secs(5), || {
        last = metrics();
        sample(&last, "completion").is_some()
    });
    assert!(billed, "the cut stream was never counted:\n{last}");
    let completion = sample(&last, "completion").unwrap();
    let prompt = sample(&last, "prompt").unwrap();
    println!("client read {events} events before leaving; billed {completion} completion, {prompt} prompt tokens");
    // Everything the client received (one role-only chunk aside), and not
    // the 400 it asked for.
    assert!(
        completion >= (events - 1) as f64,
        "{completion} < {events} - 1"
    );
    assert!(completion < 400.0, "{completion}");
    assert!(prompt > 0.0, "{prompt}");
}
