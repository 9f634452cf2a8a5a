//! Gateway core against simulated backends: routing, overload, soft fail,
//! failover, streaming and accounting. Loopback only, ports picked at run time.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use sluice::sim::{Fault, MetricsFault, SimOptions};
use support::{completion, fast, Harness};

fn backend_of(r: &support::Reply) -> String {
    r.header("x-sluice-backend").unwrap_or("-").to_string()
}

/// Fires `n` long requests straight at a sim (bypassing the gateway).
fn occupy(h: &Harness, sim: usize, n: usize, n_predict: u32) -> Vec<tokio::task::JoinHandle<()>> {
    let url = h.sims[sim].url();
    (0..n)
        .map(|_| {
            let c = h.client.clone();
            let url = url.clone();
            h.rt.spawn(async move {
                // Errors are fine: the harness may stop while these run.
                let _ = c
                    .post(format!("{url}/completion"))
                    .body(completion(n_predict).to_string())
                    .send()
                    .await;
            })
        })
        .collect()
}

#[test]
fn routes_to_the_least_busy_backend() {
    let slow = SimOptions {
        gen_tps: 40.0,
        ..fast(4)
    };
    let h = Harness::start(vec![slow, fast(4)], "", &[]);
    h.wait_all_eligible();
    let _busy = occupy(&h, 0, 3, 400);
    h.wait_until("b0 busy with 3", Duration::from_secs(5), |h| {
        h.backend_status(0)["requests_processing"] == 3
    });
    for _ in 0..10 {
        let r = h.post("/completion", completion(2));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(backend_of(&r), "b1");
    }
}

#[test]
fn weights_change_the_split() {
    let h = Harness::start(vec![fast(4), fast(4)], "", &[3, 1]);
    h.wait_all_eligible();
    let n = 200;
    let mut b0 = 0;
    for _ in 0..n {
        let r = h.post("/completion", completion(0));
        assert_eq!(r.status, 200, "{}", r.body);
        if backend_of(&r) == "b0" {
            b0 += 1;
        }
    }
    let share = b0 as f64 / n as f64;
    assert!(
        (0.62..0.88).contains(&share),
        "weight-3 backend got {share:.2}"
    );
}

#[test]
fn a_deferring_backend_gets_nothing_until_it_drains() {
    let slow = SimOptions {
        gen_tps: 60.0,
        ..fast(2)
    };
    let h = Harness::start(vec![slow, fast(4)], "", &[]);
    h.wait_all_eligible();
    // 4 direct requests on 2 slots: 2 deferred inside llama-server.
    let _busy = occupy(&h, 0, 4, 40);
    h.wait_until("b0 overloaded", Duration::from_secs(5), |h| {
        let b = h.backend_status(0);
        b["ineligible_reason"] == "overloaded" && b["health"] == "ok"
    });
    for _ in 0..10 {
        let r = h.post("/completion", completion(1));
        assert_eq!(r.status, 200);
        assert_eq!(
            backend_of(&r),
            "b1",
            "sent to a backend with deferred requests"
        );
    }
    h.wait_until("b0 drained", Duration::from_secs(15), |h| {
        let b = h.backend_status(0);
        b["eligible"] == true && b["requests_processing"] == 0
    });
    let back = (0..60).any(|_| backend_of(&h.post("/completion", completion(1))) == "b0");
    assert!(back, "the drained backend never got work again");
}

#[test]
fn a_loading_backend_gets_nothing_until_healthy() {
    let loading = SimOptions {
        load_time: Duration::from_millis(1500),
        ..fast(4)
    };
    let h = Harness::start(vec![loading, fast(4)], "", &[]);
    h.wait_until("b1 eligible", Duration::from_secs(5), |h| {
        h.backend_status(1)["eligible"] == true
    });
    assert_eq!(h.backend_status(0)["health"], "loading");
    for _ in 0..10 {
        assert_eq!(backend_of(&h.post("/completion", completion(0))), "b1");
    }
    h.wait_until("b0 loaded", Duration::from_secs(5), |h| {
        h.backend_status(0)["eligible"] == true
    });
}

#[test]
fn a_saturated_fleet_sheds_with_a_soft_503() {
    let slow = SimOptions {
        gen_tps: 40.0,
        ..fast(1)
    };
    // Without a gateway queue: what cannot start now is refused at once.
    let h = Harness::start(vec![slow], "[queue]\ncapacity = 0\n", &[]);
    h.wait_all_eligible();
    let base = h.gw().proxy_url();
    let c = h.client.clone();
    let long =
        h.rt.spawn(async move { support::post(&c, &base, "/completion", completion(60)).await });
    h.wait_until("slot taken", Duration::from_secs(5), |h| {
        h.backend_status(0)["in_flight"] == 1
    });
    let t = Instant::now();
    let r = h.post(
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    );
    let took = t.elapsed();
    assert_eq!(r.status, 503);
    assert!(took < Duration::from_millis(500), "rejecting took {took:?}");
    let retry: u32 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(r.header("x-sluice-reason"), Some("fleet_saturated"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"]["code"], 503);
    assert_eq!(v["error"]["type"], "unavailable_error");
    assert_eq!(h.rt.block_on(long).unwrap().status, 200);
    // Nothing reached the backend but the admitted request.
    assert_eq!(h.sims[0].counters().received, 1);
}

#[test]
fn a_refusing_backend_causes_no_client_errors() {
    let h = Harness::start(vec![fast(4), fast(4)], "", &[]);
    h.wait_all_eligible();
    h.rt.block_on(h.sims[0].stop_listening());
    // Before the scrape loop notices, requests picked for b0 fail to connect
    // and must be retried on b1.
    for i in 0..30 {
        let r = h.post("/completion", completion(0));
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(backend_of(&r), "b1");
    }
    h.wait_until("b0 down", Duration::from_secs(5), |h| {
        h.backend_status(0)["health"] == "down"
    });
    h.rt.block_on(h.sims[0].resume_listening()).unwrap();
    h.wait_until("b0 back", Duration::from_secs(5), |h| {
        h.backend_status(0)["eligible"] == true
    });
}

#[test]
fn hanging_or_malformed_metrics_make_a_backend_stale() {
    let h = Harness::start(vec![fast(4), fast(4), fast(4)], "", &[]);
    h.wait_all_eligible();
    h.sims[0].set_fault(Fault::MetricsDelay(Duration::from_secs(30)));
    h.sims[1].set_fault(Fault::Metrics(MetricsFault::Malformed));
    h.wait_until("b0 and b1 excluded", Duration::from_secs(5), |h| {
        let s = h.status();
        s["backends"][0]["eligible"] == false && s["backends"][1]["eligible"] == false
    });
    let s = h.status();
    assert!(s["backends"][1]["last_error"]
        .as_str()
        .unwrap()
        .contains("not valid exposition format"));
    for _ in 0..10 {
        assert_eq!(backend_of(&h.post("/completion", completion(0))), "b2");
    }
}

#[test]
fn sse_streams_through_unbuffered_and_byte_identical() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt.block_on(support::replay::spawn(Duration::from_millis(60)));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
         [scrape]\ninterval = \"100ms\"\n[[backends]]\nname = \"real\"\nurl = \"http://{addr}\"\n",
        sluice::gateway::free_port(),
        sluice::gateway::free_port()
    );
    let gw = support::start_ready(&text);
    let client = reqwest::Client::new();
    rt.block_on(async {
        let t = Instant::now();
        let mut r = client
            .post(format!("{}/v1/chat/completions", gw.proxy_url()))
            .body(r#"{"messages":[{"role":"user","content":"hi"}],"stream":true}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut got = Vec::new();
        let mut first = None;
        while let Some(chunk) = r.chunk().await.unwrap() {
            first.get_or_insert(t.elapsed());
            got.extend_from_slice(&chunk);
        }
        let total = t.elapsed();
        let events = support::replay::stream_events();
        assert!(events.len() >= 5);
        assert_eq!(String::from_utf8(got).unwrap(), events.concat());
        let first = first.unwrap();
        // Events leave the backend 60 ms apart; buffering would deliver
        // everything at the end.
        assert!(
            first * 4 < total,
            "first chunk after {first:?} of {total:?}: the stream was buffered"
        );
    });
    gw.stop();
}

#[test]
fn in_flight_is_released_when_the_client_disconnects_mid_stream() {
    let slow = SimOptions {
        gen_tps: 30.0,
        ..fast(4)
    };
    let h = Harness::start(vec![slow], "", &[]);
    h.wait_all_eligible();
    let url = format!("{}/completion", h.gw().proxy_url());
    h.rt.block_on(async {
        let mut r = h
            .client
            .post(url)
            .body(r#"{"prompt":"hi","n_predict":300,"stream":true}"#)
            .send()
            .await
            .unwrap();
        let first = r.chunk().await.unwrap();
        assert!(first.is_some());
        drop(r);
    });
    h.wait_until("in-flight released", Duration::from_secs(5), |h| {
        h.backend_status(0)["in_flight"] == 0
    });
    h.wait_until("backend cancelled it", Duration::from_secs(5), |h| {
        h.sims[0].counters().cancelled == 1
    });
}

#[test]
fn admin_endpoints_report_the_fleet() {
    let h = Harness::start(vec![fast(2), fast(2)], "", &[]);
    h.wait_all_eligible();
    let r = h.post("/completion", completion(3));
    assert_eq!(r.status, 200);
    assert!(r.header("x-request-id").is_some());
    let ids = h.sims[0].counters().request_ids;
    let ids1 = h.sims[1].counters().request_ids;
    assert!(ids
        .iter()
        .chain(ids1.iter())
        .any(|i| Some(i.as_str()) == r.header("x-request-id")));
    let admin = h.gw().admin_url();
    let get = |path: &str| {
        h.rt.block_on(async {
            let r = h.client.get(format!("{admin}{path}")).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    // The request is counted in the logging phase, just after the response.
    h.wait_until("request counted", Duration::from_secs(2), |_| {
        get("/metrics").1.contains("outcome=\"served\"")
    });
    let (_, metrics) = get("/metrics");
    let (ready, _) = get("/readyz");
    assert_eq!(ready, 200);
    for needle in [
        "sluice_requests_total{class=\"inference\",outcome=\"served\",reason=\"2xx\"} 1",
        "sluice_backend_in_flight{backend=\"b0\"} 0",
        "sluice_backend_limit{backend=\"b1\"} 2",
        "# TYPE llamacpp:requests_deferred gauge",
        "llamacpp:requests_deferred{backend=\"b0\"} 0",
        "sluice_scrape_duration_seconds_count{backend=\"b1\"}",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    // The re-exported text parses, colons and all, with one HELP per family.
    let fams = sluice::backend::promtext::parse(&metrics).unwrap();
    let deferred = fams
        .iter()
        .find(|f| f.name == "llamacpp:requests_deferred")
        .unwrap();
    assert_eq!(deferred.samples.len(), 2);
}
