//! The OpenAI client contract on the wire: what an SDK says about itself
//! (`x-stainless-read-timeout`, `x-stainless-timeout`,
//! `x-stainless-retry-count`) sets its wait budget, and every refusal
//! answers with `Retry-After`, `retry-after-ms` and `x-should-retry`.

mod support;

use std::time::{Duration, Instant};

use sluice::sim::SimOptions;
use support::{completion, fast, Harness, Reply};

fn slow(slots: usize) -> SimOptions {
    SimOptions {
        gen_tps: 40.0,
        ..fast(slots)
    }
}

/// Starts one long request through the gateway and waits until it holds
/// the slot.
fn hold_slot(h: &Harness, n_predict: u32) -> tokio::task::JoinHandle<Reply> {
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

fn post_with(h: &Harness, headers: &[(&str, &str)], n_predict: u32) -> Reply {
    let url = format!("{}/completion", h.gw().proxy_url());
    h.rt.block_on(support::post_with(
        &h.client,
        &url,
        completion(n_predict),
        headers,
    ))
}

/// The three retry headers of a refusal: seconds, milliseconds, retry.
fn hint(r: &Reply) -> (u64, u64, bool) {
    let secs = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    let ms: u64 = r
        .header("retry-after-ms")
        .expect("retry-after-ms")
        .parse()
        .unwrap();
    let retry = match r.header("x-should-retry") {
        Some("true") => true,
        Some("false") => false,
        other => panic!("x-should-retry: {other:?}"),
    };
    assert_eq!(secs, ms.div_ceil(1000).max(1), "one rounding rule");
    (secs, ms, retry)
}

fn metrics(h: &Harness) -> String {
    let url = format!("{}/metrics", h.gw().admin_url());
    h.rt.block_on(async {
        h.client
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

#[test]
fn refusals_carry_the_hint_in_milliseconds_and_whether_to_retry() {
    let h = Harness::start(vec![slow(1)], "[queue]\ncapacity = 0\n", &[]);
    h.wait_all_eligible();
    let first = hold_slot(&h, 200); // ~5 s
                                    // A first attempt: told when to come back, and to come back.
    let r = post_with(
        &h,
        &[
            ("x-stainless-read-timeout", "30.0"),
            ("x-stainless-retry-count", "0"),
        ],
        2,
    );
    assert_eq!(r.status, 503, "{}", r.body);
    let (_, ms, retry) = hint(&r);
    assert!(ms >= 100, "{ms}");
    assert!(retry);
    // The last attempt of a default SDK (max_retries = 2): don't.
    let r = post_with(
        &h,
        &[
            ("x-stainless-read-timeout", "30.0"),
            ("X-Stainless-Retry-Count", "2"),
        ],
        2,
    );
    assert_eq!(r.status, 503);
    assert!(!hint(&r).2);
    // A client that says nothing still gets all three.
    let r = post_with(&h, &[], 2);
    assert_eq!(r.status, 503);
    assert!(hint(&r).2);
    let m = metrics(&h);
    assert!(
        m.lines().any(|l| l == "sluice_no_retry_answers_total 1"),
        "{m}"
    );
    drop(first);
}

#[test]
fn bad_sdk_headers_are_400_bad_header() {
    let h = Harness::start(vec![fast(1)], "", &[]);
    h.wait_all_eligible();
    for (name, value) in [
        ("x-stainless-read-timeout", "soon"),
        ("x-stainless-read-timeout", "-3"),
        ("x-stainless-timeout", "NaN"),
        ("x-stainless-retry-count", "one"),
    ] {
        let r = post_with(&h, &[(name, value)], 2);
        assert_eq!(r.status, 400, "{name}: {value}: {}", r.body);
        assert_eq!(r.header("x-sluice-reason"), Some("bad_header"));
        assert!(r.body.contains(name), "{}", r.body);
        assert!(r.header("retry-after").is_none());
    }
    // Good values pass.
    let r = post_with(
        &h,
        &[
            ("x-stainless-timeout", "600"),
            ("x-stainless-retry-count", "0"),
        ],
        2,
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn the_declared_timeout_is_the_wait_budget_and_x_sluice_deadline_wins() {
    let h = Harness::start(vec![slow(1)], "", &[]);
    h.wait_all_eligible();
    // Too little patience for the queue: refused at once.
    let first = hold_slot(&h, 20); // ~0.5 s
    let t = Instant::now();
    let r = post_with(&h, &[("x-stainless-read-timeout", "0.05")], 2);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("x-sluice-reason"), Some("deadline_unmeetable"));
    assert!(t.elapsed() < Duration::from_secs(1));
    // A patient SDK client queues and is served when the slot frees.
    let r = post_with(&h, &[("x-stainless-read-timeout", "20")], 2);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(h.rt.block_on(first).unwrap().status, 200);
    // The same patience, but x-sluice-deadline says 50 ms: refused.
    h.wait_until("slot free", Duration::from_secs(5), |h| {
        h.backend_status(0)["in_flight"].as_u64() == Some(0)
    });
    let first = hold_slot(&h, 20);
    let r = post_with(
        &h,
        &[("x-stainless-timeout", "20"), ("x-sluice-deadline", "50ms")],
        2,
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("x-sluice-reason"), Some("deadline_unmeetable"));
    assert_eq!(h.rt.block_on(first).unwrap().status, 200);
}

#[test]
fn a_retry_that_comes_back_when_told_is_counted_and_served() {
    let h = Harness::start(vec![slow(1)], "", &[]);
    h.wait_all_eligible();
    let first = hold_slot(&h, 40); // ~1 s
    let sdk = |taken: &'static str| {
        [
            ("x-stainless-read-timeout", "30"),
            ("x-stainless-retry-count", taken),
            ("x-sluice-deadline", "20ms"),
        ]
    };
    let r = post_with(&h, &sdk("0"), 2);
    assert_eq!(r.status, 503, "{}", r.body);
    let (_, ms, retry) = hint(&r);
    assert!(retry);
    // Do what the SDK does: wait as told, then retry (with a budget now).
    h.rt.block_on(async { tokio::time::sleep(Duration::from_millis(ms)).await });
    let r = post_with(
        &h,
        &[
            ("x-stainless-read-timeout", "30"),
            ("x-stainless-retry-count", "1"),
        ],
        2,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // A retry count with no hint behind it is not taken at its word.
    let r = post_with(&h, &sdk("1")[..2], 2);
    assert_eq!(r.status, 200, "{}", r.body);
    let m = metrics(&h);
    assert!(
        m.lines()
            .any(|l| l == "sluice_returning_retries_total{when_told=\"true\"} 1"),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l == "sluice_returning_retries_total{when_told=\"false\"} 1"),
        "{m}"
    );
    assert_eq!(h.rt.block_on(first).unwrap().status, 200);
}
