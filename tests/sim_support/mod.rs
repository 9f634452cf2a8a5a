//! Helpers shared by the `sim_*` integration tests: a loopback HTTP client
//! and readers for SSE and metrics text.
#![allow(dead_code)]

use std::time::Duration;

use sluice::backend::promtext;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(8))
        .build()
        .expect("client")
}

pub async fn get(base: &str, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("GET");
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, h, r.text().await.expect("body"))
}

pub async fn post(base: &str, path: &str, body: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, h, r.text().await.expect("body"))
}

/// The payloads of the `data:` events in an SSE text.
pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|ev| ev.trim().strip_prefix("data: ").map(str::to_string))
        .collect()
}

/// Reads SSE events from a streaming response until it ends or errors.
/// Returns the events and whether the stream ended cleanly.
pub async fn read_sse(resp: &mut reqwest::Response) -> (Vec<String>, bool) {
    let mut buf = String::new();
    let clean = loop {
        match resp.chunk().await {
            Ok(Some(c)) => buf.push_str(&String::from_utf8_lossy(&c)),
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    (sse_data(&buf), clean)
}

/// One unlabelled sample from `/metrics` text.
pub fn metric(text: &str, name: &str) -> f64 {
    let fams = promtext::parse(text).expect("metrics parse");
    fams.iter()
        .find(|f| f.name == name)
        .and_then(|f| f.samples.first())
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("no {name} in metrics"))
}

pub async fn proc_deferred(base: &str) -> (f64, f64) {
    let (_, _, m) = get(base, "/metrics").await;
    (
        metric(&m, "llamacpp:requests_processing"),
        metric(&m, "llamacpp:requests_deferred"),
    )
}

/// Polls `cond` every 10 ms until it holds or `within` passes.
pub async fn eventually<F: FnMut() -> bool>(within: Duration, mut cond: F) -> bool {
    let end = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
