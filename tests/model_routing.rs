//! Routing by `model` in a multi-model fleet: one backend serves coder-7b,
//! two serve chat-8b (as `/v1/models` lists them). Requests go only to
//! backends serving their model, an unknown model is refused at the gateway,
//! `/v1/models` lists the fleet's models once each, and a queued request for
//! one model never holds up another model's.

mod support;

use std::time::Duration;

use serde_json::json;
use sluice::sim::SimOptions;
use support::{fast, Harness};

fn serving(model: &str, slots: usize) -> SimOptions {
    SimOptions {
        model: format!("models/{model}.gguf"),
        ..fast(slots)
    }
}

fn ask(model: Option<&str>, n: u32) -> serde_json::Value {
    let mut v = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": n});
    if let Some(m) = model {
        v["model"] = json!(m);
    }
    v
}

#[test]
fn requests_naming_no_model_go_to_the_configured_default() {
    let h = Harness::start(
        vec![serving("coder-7b", 2), serving("chat-8b", 2)],
        "[routing]\ndefault_model = \"chat-8b\"\n",
        &[],
    );
    h.wait_all_eligible();
    for _ in 0..20 {
        let r = h.post("/v1/chat/completions", ask(None, 2));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-sluice-backend"), Some("b1"));
        let r = h.post("/v1/chat/completions", ask(Some("coder-7b"), 2));
        assert_eq!(r.header("x-sluice-backend"), Some("b0"));
    }
}

#[test]
fn requests_reach_only_backends_serving_their_model() {
    let h = Harness::start(
        vec![
            serving("coder-7b", 2),
            serving("chat-8b", 2),
            serving("chat-8b", 2),
        ],
        "",
        &[],
    );
    h.wait_all_eligible();
    for _ in 0..30 {
        let r = h.post("/v1/chat/completions", ask(Some("coder-7b"), 2));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-sluice-backend"), Some("b0"));
        let r = h.post("/v1/chat/completions", ask(Some("models/chat-8b.gguf"), 2));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_ne!(r.header("x-sluice-backend"), Some("b0"));
    }
    let before: u64 = h.sims.iter().map(|s| s.counters().received).sum();
    let r = h.post("/v1/chat/completions", ask(Some("gpt-unknown"), 2));
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.header("x-sluice-reason"), Some("model_not_found"));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    let after: u64 = h.sims.iter().map(|s| s.counters().received).sum();
    assert_eq!(before, after, "an unknown model reached a backend");
    // No model named: any backend.
    let r = h.post("/v1/chat/completions", ask(None, 2));
    assert_eq!(r.status, 200, "{}", r.body);

    let list =
        h.rt.block_on(support::get(&h.client, &h.gw().proxy_url(), "/v1/models"));
    assert_eq!(list.status, 200, "{}", list.body);
    let v: serde_json::Value = serde_json::from_str(&list.body).unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["models/coder-7b.gguf", "models/chat-8b.gguf"]);

    // Metrics count requests by the fleet's spelling of the model, whatever
    // the client wrote; unknown names share one label.
    for odd in ["a/coder-7b.gguf", "b/coder-7b.gguf", "nope-1", "nope-2"] {
        h.post("/v1/chat/completions", ask(Some(odd), 2));
    }
    let value = |m: &str, model: &str, outcome: &str| -> f64 {
        let head =
            format!("sluice_model_requests_total{{model=\"{model}\",outcome=\"{outcome}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&head))
            .map_or(0.0, |v| v.parse().unwrap())
    };
    // A request is counted when it ends, just after its answer is sent.
    let mut m = String::new();
    support::poll(Duration::from_secs(5), || {
        m =
            h.rt.block_on(support::get(&h.client, &h.gw().admin_url(), "/metrics"))
                .body;
        value(&m, "other", "rejected") >= 3.0 && value(&m, "models/coder-7b.gguf", "served") >= 32.0
    });
    let count = |model: &str, outcome: &str| value(&m, model, outcome);
    assert_eq!(count("models/coder-7b.gguf", "served"), 32.0, "{m}");
    assert_eq!(count("models/chat-8b.gguf", "served"), 30.0);
    assert_eq!(count("other", "rejected"), 3.0);
    assert_eq!(count("none", "served"), 1.0);
    let labels = m
        .lines()
        .filter(|l| l.starts_with("sluice_model_requests_total{"))
        .count();
    assert_eq!(labels, 4, "{m}");
}

#[test]
fn a_full_model_does_not_hold_up_another() {
    let h = Harness::start(
        vec![serving("coder-7b", 1), serving("chat-8b", 2)],
        "[queue]\nmax_wait = \"10s\"\n",
        &[],
    );
    h.wait_all_eligible();
    let base = h.gw().proxy_url();
    // The coder backend busy for a while, and a coder request queued.
    let long: Vec<_> = (0..2)
        .map(|_| {
            let (c, base) = (h.client.clone(), base.clone());
            h.rt.spawn(async move {
                support::post(
                    &c,
                    &base,
                    "/v1/chat/completions",
                    ask(Some("coder-7b"), 3000),
                )
                .await
            })
        })
        .collect();
    support::wait_until("coder busy and one queued", Duration::from_secs(5), || {
        h.status()["queue_depth"] == 1
    });
    // Chat requests are served meanwhile, not queued behind it.
    for _ in 0..5 {
        let r = h.post("/v1/chat/completions", ask(Some("chat-8b"), 2));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-sluice-backend"), Some("b1"));
    }
    let done = h.rt.block_on(async {
        let mut v = Vec::new();
        for t in long {
            v.push(t.await.unwrap().status);
        }
        v
    });
    assert_eq!(done, [200, 200], "both coder requests served in turn");
}

#[test]
fn configured_aliases_route_and_show_in_status() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sims: Vec<_> = rt.block_on(async {
        vec![
            sluice::sim::spawn(serving("coder-7b", 2)).await.unwrap(),
            sluice::sim::spawn(serving("chat-8b", 2)).await.unwrap(),
        ]
    });
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
         [scrape]\ninterval = \"100ms\"\n\
         [[backends]]\nname = \"b0\"\nurl = \"{}\"\nmodels = [\"coder\"]\n\
         [[backends]]\nname = \"b1\"\nurl = \"{}\"\n",
        sluice::gateway::free_port(),
        sluice::gateway::free_port(),
        sims[0].url(),
        sims[1].url()
    );
    let gw = support::start_ready(&text);
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let r = rt.block_on(support::post(
            &client,
            &gw.proxy_url(),
            "/v1/chat/completions",
            ask(Some("coder"), 2),
        ));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-sluice-backend"), Some("b0"));
    }
    let status = rt.block_on(support::get(&client, &gw.admin_url(), "/status"));
    let v: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(
        v["backends"][0]["models"][0], "models/coder-7b.gguf",
        "{v:#}"
    );
    assert_eq!(
        v["backends"][1]["models"][0], "models/chat-8b.gguf",
        "{v:#}"
    );
    gw.stop();
}

/// A chat body of about `kib` KiB naming `model`, its bulk in the prompt.
fn large_chat(model: &str, kib: usize) -> String {
    let text = "lorem ipsum ".repeat(kib * 1024 / 12);
    json!({"model": model, "max_tokens": 2,
           "messages": [{"role": "user", "content": text}]})
    .to_string()
}

#[test]
fn bodies_larger_than_the_retry_buffer_are_read_ahead_and_routed_by_model() {
    let quick = |model: &str| SimOptions {
        prompt_tps: 10_000_000.0,
        n_ctx: 65_536,
        ..serving(model, 2)
    };
    let h = Harness::start(
        vec![quick("chat-8b"), quick("coder-7b")],
        "[routing]\nmax_body_bytes = 1048576\ndefault_model = \"chat-8b\"\n",
        &[],
    );
    h.wait_all_eligible();
    let base = h.gw().proxy_url();
    let post = |body: String| {
        h.rt.block_on(support::post(
            &h.client,
            &base,
            "/v1/chat/completions",
            body,
        ))
    };
    let received = || -> Vec<u64> { h.sims.iter().map(|s| s.counters().received).collect() };
    // 200 KiB naming the model only b1 serves: read whole, routed by its
    // model (not to the default), and sent on unchanged.
    for _ in 0..3 {
        let body = large_chat("coder-7b", 200);
        assert!(body.len() > 200 * 1024);
        let r = post(body.clone());
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-sluice-backend"), Some("b1"));
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
        assert!(
            prompt as usize >= body.len() / 4 - 64,
            "the backend saw the whole prompt: {prompt} tokens of a {} byte body",
            body.len()
        );
    }
    assert_eq!(received(), [0, 3]);
    // 200 KiB that is not JSON: 400 at the gateway, no backend asked.
    let mut bad = large_chat("coder-7b", 200);
    bad.truncate(bad.len() - 3);
    let r = post(bad);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.header("x-sluice-reason"),
        Some("invalid_json"),
        "{}",
        r.body
    );
    // Over routing.max_body_bytes: 413, no backend asked.
    let r = post(large_chat("coder-7b", 1100));
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(received(), [0, 3], "a refused body reached a backend");
    // Just under 64 KiB still takes the buffer's own path.
    let r = post(large_chat("coder-7b", 60));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-sluice-backend"), Some("b1"));
}
