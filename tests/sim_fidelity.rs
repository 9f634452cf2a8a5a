//! Fidelity: the simulator's `/metrics`, `/props`, `/slots`, `/v1/models`,
//! response bodies and stream chunks, parsed with the same code as the real
//! captures in `tests/fixtures/llama-server/`, show the same names, types
//! and shapes, for both dialects.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use sluice::backend::promtext;
use sluice::sim::{self, Dialect, SimHandle, SimOptions};
use support::sim::*;

fn fixture(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llama-server")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The body of a capture, without the HTTP head when there is one.
fn capture_body(rel: &str) -> String {
    let text = fixture(rel).replace("\r\n", "\n");
    if text.starts_with("HTTP/") {
        text.split_once("\n\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    } else {
        text
    }
}

fn capture_header(rel: &str, name: &str) -> Option<String> {
    let text = fixture(rel).replace("\r\n", "\n");
    let head = text.split_once("\n\n")?.0.to_string();
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// Every key path of a JSON value with its type: `a.b[]:number`.
fn shape(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, path: String, out: &mut BTreeSet<String>) {
        let t = match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(items) => {
                for it in items {
                    walk(it, format!("{path}[]"), out);
                }
                "array"
            }
            Value::Object(m) => {
                for (k, it) in m {
                    walk(it, format!("{path}.{k}"), out);
                }
                "object"
            }
        };
        out.insert(format!("{path}:{t}"));
    }
    let mut out = BTreeSet::new();
    walk(v, String::new(), &mut out);
    out
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn assert_same_shape(what: &str, sim: &Value, real: &Value) {
    let (s, r) = (shape(sim), shape(real));
    let missing: Vec<_> = r.difference(&s).collect();
    let extra: Vec<_> = s.difference(&r).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, extra {extra:?}"
    );
}

/// (name, type, help) of every family.
fn families(text: &str) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = promtext::parse(text)
        .expect("parse")
        .into_iter()
        .map(|f| (f.name, f.kind.as_str().to_string(), f.help))
        .collect();
    v.sort();
    v
}

async fn sim(dialect: Dialect) -> SimHandle {
    sim::spawn(SimOptions {
        slots: 2,
        dialect,
        gen_tps: 2000.0,
        keep_abandoned_deferred: dialect == Dialect::B4748,
        ..SimOptions::default()
    })
    .await
    .unwrap()
}

fn dir(d: Dialect) -> &'static str {
    match d {
        Dialect::B4748 => "b4748",
        Dialect::Recent => "2026-10",
    }
}

#[tokio::test]
async fn metrics_same_families_types_help_and_content_type() {
    for (d, captures) in [
        (
            Dialect::B4748,
            [
                "b4748/metrics-idle-fresh.txt",
                "b4748/metrics-under-load.txt",
            ],
        ),
        (
            Dialect::Recent,
            ["2026-10/metrics-idle.txt", "2026-10/metrics-after-load.txt"],
        ),
    ] {
        let s = sim(d).await;
        post(&s.url(), "/completion", r#"{"prompt":"hi","n_predict":8}"#).await;
        let (st, h, text) = get(&s.url(), "/metrics").await;
        assert_eq!(st, 200);
        assert_eq!(h["content-type"], "text/plain; version=0.0.4");
        let mine = families(&text);
        for c in captures {
            assert_eq!(mine, families(&capture_body(c)), "{c}");
        }
        assert_eq!(
            capture_header("b4748/metrics-idle-fresh.txt", "content-type").as_deref(),
            Some("text/plain; version=0.0.4")
        );
        s.shutdown();
    }
}

#[tokio::test]
async fn props_slots_models_health_same_shape() {
    for d in [Dialect::B4748, Dialect::Recent] {
        let s = sim(d).await;
        for (path, capture) in [
            ("/props", "props.json"),
            ("/slots", "slots-idle.json"),
            ("/v1/models", "v1-models.json"),
        ] {
            let (st, _, body) = get(&s.url(), path).await;
            assert_eq!(st, 200);
            let real = json(&capture_body(&format!("{}/{capture}", dir(d))));
            assert_same_shape(&format!("{d:?} {path}"), &json(&body), &real);
        }
        let (_, _, body) = get(&s.url(), "/health").await;
        assert_eq!(body, capture_body("2026-10/health.txt").trim());
        s.shutdown();
    }
}

#[tokio::test]
async fn busy_slots_b4748_same_shape() {
    let s = sim(Dialect::B4748).await;
    let base = s.url();
    let t = tokio::spawn(async move {
        post(
            &base,
            "/completion",
            r#"{"prompt":"busy","n_predict":1000}"#,
        )
        .await
    });
    assert!(
        eventually(std::time::Duration::from_secs(2), || s
            .counters()
            .processing_now
            == 1)
        .await
    );
    let (_, _, body) = get(&s.url(), "/slots").await;
    let sim_slots = json(&body);
    let busy = sim_slots
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["is_processing"] == true)
        .unwrap()
        .clone();
    let real_line = capture_body("b4748/slots-busy.jsonl");
    let real = json(real_line.lines().next().unwrap());
    // The busy capture was taken with a smaller jq projection: every key it
    // has must be in ours, with the same type.
    let (mine, theirs) = (shape(&busy), shape(&real));
    let missing: Vec<_> = theirs.difference(&mine).collect();
    assert!(missing.is_empty(), "{missing:?}");
    assert!(busy["next_token"]["n_remain"].as_i64().unwrap() > 0);
    t.abort();
    s.shutdown();
}

#[tokio::test]
async fn non_streaming_bodies_same_shape() {
    let cases = [
        (
            Dialect::B4748,
            "/completion",
            r#"{"prompt":"hi","n_predict":4}"#,
            "b4748/completion.json",
        ),
        (
            Dialect::B4748,
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#,
            "b4748/chat.txt",
        ),
        (
            Dialect::B4748,
            "/v1/completions",
            r#"{"prompt":"hi","max_tokens":4}"#,
            "b4748/v1-completions.json",
        ),
        (
            Dialect::Recent,
            "/completion",
            r#"{"prompt":"hi","n_predict":4}"#,
            "2026-10/completion.txt",
        ),
        (
            Dialect::Recent,
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#,
            "2026-10/chat.txt",
        ),
        (
            Dialect::Recent,
            "/v1/completions",
            r#"{"prompt":"hi","max_tokens":4}"#,
            "2026-10/v1-completions.txt",
        ),
    ];
    for (d, path, body, capture) in cases {
        let s = sim(d).await;
        let (st, h, text) = post(&s.url(), path, body).await;
        assert_eq!(st, 200);
        assert_eq!(
            Some(h["content-type"].to_str().unwrap().to_string()),
            capture_header(&format!("{}/chat.txt", dir(d)), "content-type")
        );
        assert_same_shape(capture, &json(&text), &json(&capture_body(capture)));
        s.shutdown();
    }
}

#[tokio::test]
async fn invalid_json_same_shape() {
    let s = sim(Dialect::Recent).await;
    let (st, _, text) = post(&s.url(), "/completion", "{b").await;
    assert_eq!(st, 500);
    let real = json(&capture_body("2026-10/invalid-json.txt"));
    assert_same_shape("invalid json", &json(&text), &real);
    s.shutdown();
}

/// The SSE events of a stream request against the simulator.
async fn sim_stream(
    s: &SimHandle,
    path: &str,
    body: &str,
) -> (reqwest::header::HeaderMap, Vec<String>) {
    let mut r = client()
        .post(format!("{}{path}", s.url()))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let h = r.headers().clone();
    let (ev, clean) = read_sse(&mut r).await;
    assert!(clean);
    (h, ev)
}

/// Compares streams event by event by role: first, a token chunk, final,
/// and the `[DONE]` terminator.
fn assert_same_stream(what: &str, sim: &[String], real: &[String]) {
    let done = |v: &[String]| v.last().is_some_and(|e| e == "[DONE]");
    assert_eq!(done(sim), done(real), "{what}: [DONE]");
    let body = |v: &[String]| -> Vec<Value> {
        v.iter()
            .filter(|e| *e != "[DONE]")
            .map(|e| json(e))
            .collect()
    };
    let (s, r) = (body(sim), body(real));
    assert!(s.len() >= 3 && r.len() >= 3, "{what}: too short");
    assert_same_shape(&format!("{what} first"), &s[0], &r[0]);
    assert_same_shape(&format!("{what} token"), &s[1], &r[1]);
    assert_same_shape(&format!("{what} last"), &s[s.len() - 1], &r[r.len() - 1]);
}

#[tokio::test]
async fn stream_chunks_same_shape() {
    let cases = [
        (
            Dialect::B4748,
            "/completion",
            r#"{"prompt":"hi","n_predict":3,"stream":true}"#,
            "b4748/completion-stream.txt",
        ),
        (
            Dialect::B4748,
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}"#,
            "b4748/chat-stream.txt",
        ),
        (
            Dialect::Recent,
            "/completion",
            r#"{"prompt":"hi","n_predict":4,"stream":true}"#,
            "2026-10/completion-stream.txt",
        ),
        (
            Dialect::Recent,
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}"#,
            "2026-10/chat-stream.txt",
        ),
    ];
    for (d, path, body, capture) in cases {
        let s = sim(d).await;
        let (h, ev) = sim_stream(&s, path, body).await;
        let real_text = capture_body(capture);
        assert_same_stream(capture, &ev, &sse_data(&real_text));
        assert_eq!(h["content-type"], "text/event-stream");
        let accel = h
            .get("x-accel-buffering")
            .map(|v| v.to_str().unwrap().to_string());
        let real_accel =
            capture_header(&format!("{}/chat-stream.txt", dir(d)), "x-accel-buffering");
        assert_eq!(accel, real_accel, "{capture}");
        s.shutdown();
    }
    // include_usage: the usage chunk (choices []) before [DONE].
    let s = sim(Dialect::Recent).await;
    let (_, ev) = sim_stream(
        &s,
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .await;
    let real = sse_data(&capture_body("2026-10/chat-stream-usage.txt"));
    assert_eq!(ev.last().unwrap(), "[DONE]");
    assert_same_shape(
        "usage chunk",
        &json(&ev[ev.len() - 2]),
        &json(&real[real.len() - 2]),
    );
    s.shutdown();
}
