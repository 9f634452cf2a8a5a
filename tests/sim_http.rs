//! The simulator over HTTP: endpoints, streaming, queueing and client
//! disconnects, on loopback port 0 in real (but short) time.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::sim::{self, Dialect, SimOptions, ThroughputCurve};
use support::sim::*;

fn fast(slots: usize) -> SimOptions {
    SimOptions {
        slots,
        gen_tps: 1000.0,
        prompt_tps: 100_000.0,
        ..SimOptions::default()
    }
}

#[tokio::test]
async fn health_props_models_and_unknown_path() {
    let s = sim::spawn(SimOptions::default()).await.unwrap();
    let (st, h, body) = get(&s.url(), "/health").await;
    assert_eq!((st, body.as_str()), (200, r#"{"status":"ok"}"#));
    assert_eq!(h["server"], "llama.cpp");
    assert_eq!(h["content-type"], "application/json; charset=utf-8");
    let (_, _, props) = get(&s.url(), "/props").await;
    let v: Value = serde_json::from_str(&props).unwrap();
    assert_eq!(v["total_slots"], 4);
    assert_eq!(v["default_generation_settings"]["n_ctx"], 2048);
    assert_eq!(v["build_info"], "b1-0c1e570");
    let (st, _, models) = get(&s.url(), "/v1/models").await;
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(v["data"][0]["id"], "models/tiny.gguf");
    let (st, _, body) = get(&s.url(), "/nope").await;
    assert_eq!(st, 404);
    assert!(body.contains("File Not Found"));
    s.shutdown();
}

#[tokio::test]
async fn bad_input_answers_like_llama_server_and_wedges_nothing() {
    let s = sim::spawn(fast(1)).await.unwrap();
    let (st, _, body) = post(&s.url(), "/completion", "{b").await;
    assert_eq!(st, 500);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(v["error"]["code"], 500);
    for (path, body) in [
        ("/completion", "{}"),
        ("/completion", r#"{"prompt": 5}"#),
        ("/v1/chat/completions", r#"{"messages": "hi"}"#),
        ("/v1/completions", "[1,2,3]"),
        ("/completion", ""),
    ] {
        let (st, _, _) = post(&s.url(), path, body).await;
        assert!(st == 400 || st == 500, "{path} {body}: {st}");
    }
    // Wrong types of optional fields are ignored; the one slot still works.
    let (st, _, _) = post(
        &s.url(),
        "/completion",
        r#"{"prompt":"hi","n_predict":"x","stream":3,"max_tokens":2}"#,
    )
    .await;
    assert_eq!(st, 200);
    let c = s.counters();
    assert_eq!(
        (c.processing_now, c.deferred_now, c.bad_requests),
        (0, 0, 6)
    );
    s.shutdown();
}

#[tokio::test]
async fn load_time_answers_loading_then_ok() {
    let s = sim::spawn(SimOptions {
        load_time: Duration::from_millis(300),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    for path in ["/health", "/metrics", "/props"] {
        let (st, _, body) = get(&s.url(), path).await;
        assert_eq!(st, 503, "{path}");
        assert_eq!(
            body,
            r#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#
        );
    }
    let (st, _, _) = post(&s.url(), "/completion", r#"{"prompt":"hi"}"#).await;
    assert_eq!(st, 503);
    assert!(eventually(Duration::from_millis(400), || !s.is_loading()).await);
    assert_eq!(get(&s.url(), "/health").await.0, 200);
    s.shutdown();
}

#[tokio::test]
async fn non_streaming_shapes_and_precise_fast_timing() {
    // 2000 tok/s: 100 tokens take ~50 ms.
    let s = sim::spawn(SimOptions {
        gen_tps: 2000.0,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let t = Instant::now();
    let (st, _, body) = post(
        &s.url(),
        "/completion",
        r#"{"prompt":"hi","n_predict":100}"#,
    )
    .await;
    let took = t.elapsed();
    assert_eq!(st, 200);
    assert!(
        took >= Duration::from_millis(45) && took < Duration::from_millis(400),
        "{took:?}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tokens_predicted"], 100);
    assert_eq!(v["tokens_evaluated"], 2);
    assert_eq!(v["stop_type"], "limit");
    let ms = v["timings"]["predicted_ms"].as_f64().unwrap();
    assert!((ms - 50.0).abs() < 1.0, "predicted_ms {ms}");

    let (_, _, body) = post(
        &s.url(),
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hello"}],"max_tokens":5}"#,
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));

    let (_, _, body) = post(
        &s.url(),
        "/v1/completions",
        r#"{"prompt":"hello","max_tokens":3}"#,
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    // Without a length, a seeded one is drawn from the default range.
    let (_, _, body) = post(&s.url(), "/completion", r#"{"prompt":"x"}"#).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let n = v["tokens_predicted"].as_u64().unwrap();
    assert!((32..=256).contains(&n), "{n}");
    assert_eq!(v["stop_type"], "eos");
    s.shutdown();
}

#[tokio::test]
async fn streams_send_headers_at_once_even_while_deferred() {
    let s = sim::spawn(SimOptions {
        slots: 1,
        gen_tps: 200.0,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let base = s.url();
    // Occupies the only slot for ~500 ms.
    let busy = tokio::spawn(async move {
        post(&base, "/completion", r#"{"prompt":"a","n_predict":100}"#).await
    });
    assert!(eventually(Duration::from_secs(2), || s.counters().processing_now == 1).await);
    let t = Instant::now();
    let mut resp = client()
        .post(format!("{}/v1/chat/completions", s.url()))
        .body(r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true}"#)
        .send()
        .await
        .unwrap();
    let head = t.elapsed();
    assert!(head < Duration::from_millis(300), "headers took {head:?}");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    assert_eq!(s.counters().deferred_now, 1);
    let (events, clean) = read_sse(&mut resp).await;
    assert!(
        t.elapsed() > Duration::from_millis(150),
        "first data only after the slot frees"
    );
    assert!(clean);
    // role delta, 4 tokens, final chunk, [DONE]
    assert_eq!(events.len(), 7, "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let last: Value = serde_json::from_str(&events[5]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert!(last["timings"]["predicted_n"] == 4);
    assert!(busy.await.unwrap().0 == 200);
    s.shutdown();
}

#[tokio::test]
async fn native_stream_and_usage_chunk() {
    let s = sim::spawn(fast(2)).await.unwrap();
    let mut resp = client()
        .post(format!("{}/completion", s.url()))
        .body(r#"{"prompt":"hi","n_predict":4,"stream":true}"#)
        .send()
        .await
        .unwrap();
    let (ev, _) = read_sse(&mut resp).await;
    assert_eq!(ev.len(), 5);
    assert!(!ev.iter().any(|e| e == "[DONE]"));
    let last: Value = serde_json::from_str(&ev[4]).unwrap();
    assert_eq!(
        (last["stop"].as_bool(), last["tokens_predicted"].as_u64()),
        (Some(true), Some(4))
    );
    let mut resp = client()
        .post(format!("{}/v1/chat/completions", s.url()))
        .body(r#"{"messages":[],"max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}"#)
        .send()
        .await
        .unwrap();
    let (ev, _) = read_sse(&mut resp).await;
    let usage: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
    assert_eq!(usage["choices"], serde_json::json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    s.shutdown();
}

#[tokio::test]
async fn two_slots_eight_requests_step_down_in_pairs() {
    let s = sim::spawn(SimOptions {
        slots: 2,
        gen_tps: 800.0,
        curve: ThroughputCurve::Power { exponent: 1.0 },
        ..SimOptions::default()
    })
    .await
    .unwrap();
    // Each pair takes ~125 ms (100 tokens at 800 tok/s per slot).
    let mut reqs = Vec::new();
    for _ in 0..8 {
        let base = s.url();
        reqs.push(tokio::spawn(async move {
            post(
                &base,
                "/completion",
                r#"{"prompt":"long one","n_predict":100}"#,
            )
            .await
        }));
    }
    assert!(eventually(Duration::from_secs(2), || s.counters().received == 8).await);
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        let (p, d) = proc_deferred(&s.url()).await;
        assert!(p <= 2.0);
        seen.push((p as u32, d as u32));
        if (p, d) == (0.0, 0.0) {
            break;
        }
        // The sampling period of the /metrics readings, not a wait.
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let mut steps = seen.clone();
    steps.dedup();
    // The invariants: both slots busy while anything waits, the queue only
    // shrinks, and it passes through every pair's step. The pairs' steps
    // are timing: the two requests of a pair arrived a moment apart, so on
    // a busy machine their ends can fall into two samples (an odd step,
    // e.g. (2, 3), between (2, 4) and (2, 2)); that alone is tolerated.
    assert!(steps.iter().all(|&(p, d)| d == 0 || p == 2), "{seen:?}");
    assert!(steps.windows(2).all(|w| w[1].1 <= w[0].1), "{seen:?}");
    let even: Vec<(u32, u32)> = steps.iter().copied().filter(|(_, d)| d % 2 == 0).collect();
    assert_eq!(
        even,
        vec![(2, 6), (2, 4), (2, 2), (2, 0), (0, 0)],
        "{seen:?}"
    );
    let odd = steps.len() - even.len();
    assert!(odd <= 3, "{odd} odd steps: {seen:?}");
    for r in reqs {
        assert_eq!(r.await.unwrap().0, 200);
    }
    let (_, _, m) = get(&s.url(), "/metrics").await;
    assert_eq!(metric(&m, "llamacpp:tokens_predicted_total"), 800.0);
    let c = s.counters();
    assert_eq!((c.completed, c.max_deferred_seen), (8, 6));
    s.shutdown();
}

#[tokio::test]
async fn deferred_client_gone_recent_drops_it() {
    let s = sim::spawn(SimOptions {
        slots: 1,
        gen_tps: 100.0,
        abandon_delay: Duration::from_millis(200),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let base = s.url();
    let busy = tokio::spawn(async move {
        post(&base, "/completion", r#"{"prompt":"a","n_predict":60}"#).await
    });
    assert!(eventually(Duration::from_secs(2), || s.counters().processing_now == 1).await);
    let mut waiting = Vec::new();
    for stream in [false, true, false] {
        let base = s.url();
        let body = format!(r#"{{"prompt":"b","n_predict":5,"stream":{stream}}}"#);
        waiting.push(tokio::spawn(async move {
            let r = client()
                .post(format!("{base}/completion"))
                .body(body)
                .send()
                .await;
            if let Ok(mut r) = r {
                let _ = r.chunk().await;
            }
        }));
    }
    assert!(eventually(Duration::from_secs(2), || s.counters().deferred_now == 3).await);
    for w in waiting {
        w.abort();
    }
    // Still queued until the server notices (abandon_delay), then dropped.
    assert!(
        eventually(Duration::from_secs(2), || s.counters().dropped_deferred
            == 3)
        .await
    );
    assert_eq!(s.counters().deferred_now, 0);
    assert_eq!(busy.await.unwrap().0, 200);
    let c = s.counters();
    assert_eq!(
        (c.started, c.completed),
        (1, 1),
        "no tokens for dropped requests"
    );
    s.shutdown();
}

#[tokio::test]
async fn deferred_client_gone_b4748_runs_without_reader() {
    let s = sim::spawn(SimOptions {
        slots: 1,
        gen_tps: 500.0,
        dialect: Dialect::B4748,
        keep_abandoned_deferred: true,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let base = s.url();
    let busy = tokio::spawn(async move {
        post(&base, "/completion", r#"{"prompt":"a","n_predict":50}"#).await
    });
    assert!(eventually(Duration::from_secs(2), || s.counters().processing_now == 1).await);
    let base = s.url();
    let gone = tokio::spawn(async move {
        post(&base, "/completion", r#"{"prompt":"b","n_predict":20}"#).await
    });
    assert!(eventually(Duration::from_secs(2), || s.counters().deferred_now == 1).await);
    gone.abort();
    let _ = busy.await;
    assert!(eventually(Duration::from_secs(3), || s.counters().completed == 2).await);
    let c = s.counters();
    assert_eq!((c.completed_without_reader, c.dropped_deferred), (1, 0));
    s.shutdown();
}

#[tokio::test]
async fn processing_client_gone_is_cancelled() {
    let s = sim::spawn(SimOptions {
        slots: 1,
        gen_tps: 100.0,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    for stream in [false, true] {
        let base = s.url();
        let body = format!(r#"{{"prompt":"a","n_predict":500,"stream":{stream}}}"#);
        let t = tokio::spawn(async move {
            let mut r = client()
                .post(format!("{base}/completion"))
                .body(body)
                .send()
                .await
                .unwrap();
            while let Ok(Some(_)) = r.chunk().await {}
        });
        assert!(eventually(Duration::from_secs(2), || s.counters().processing_now == 1).await);
        // Load pattern: the client reads for a while, then goes away.
        tokio::time::sleep(Duration::from_millis(50)).await;
        t.abort();
        assert!(
            eventually(Duration::from_secs(2), || s.counters().processing_now == 0).await,
            "stream={stream}"
        );
    }
    let c = s.counters();
    assert_eq!((c.cancelled, c.completed), (2, 0));
    s.shutdown();
}

#[tokio::test]
async fn records_headers_request_ids_and_late_arrivals() {
    let s = sim::spawn(fast(2)).await.unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    for (id, deadline) in [("r-1", now_ms - 1000), ("r-2", now_ms + 60_000)] {
        let r = client()
            .post(format!("{}/completion", s.url()))
            .header("x-request-id", id)
            .header("x-sluice-deadline-ms", deadline.to_string())
            .body(r#"{"prompt":"hi","n_predict":1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let c = s.counters();
    assert_eq!(c.request_ids, vec!["r-1".to_string(), "r-2".to_string()]);
    assert_eq!(c.late_arrivals, 1);
    assert_eq!(c.last_headers["x-request-id"], "r-2");
    assert_eq!(c.received, 2);
    s.shutdown();
}

#[tokio::test]
async fn fleet_and_control_counters() {
    let fleet = sim::spawn_fleet(3, fast(1)).await.unwrap();
    assert_eq!(fleet.len(), 3);
    let mut ports: Vec<u16> = fleet.iter().map(|h| h.addr().port()).collect();
    ports.dedup();
    assert_eq!(ports.len(), 3);
    let (st, _, body) = get(&fleet[0].url(), "/sim/counters").await;
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["received"], 0);
    for h in &fleet {
        h.shutdown();
    }
}

/// On a paused tokio clock the simulator runs in virtual time: ten
/// simulated seconds of generation take no real time.
#[tokio::test(start_paused = true)]
async fn runs_on_a_paused_clock() {
    let s = sim::spawn(SimOptions {
        slots: 1,
        gen_tps: 10.0,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let wall = Instant::now();
    // No client timeout: it would fire in virtual time too.
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = c
        .post(format!("{}/completion", s.url()))
        .body(r#"{"prompt":"hi","n_predict":100}"#)
        .send()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let ms = v["timings"]["predicted_ms"].as_f64().unwrap();
    assert!((ms - 10_000.0).abs() < 50.0, "{ms}");
    assert!(wall.elapsed() < Duration::from_secs(5));
    s.shutdown();
}
