//! Helpers of the `sim_*` integration tests: a loopback HTTP client, and
//! readers for SSE and metrics text. `use support::sim::*` brings them and
//! [`eventually`] in.

use std::time::Duration;

use sluice::backend::promtext;

#[allow(unused_imports)] // used by the sim_* tests, not by every binary
pub use super::eventually;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(8))
        .build()
        .expect("client")
}

/// [`super::get`] with a fresh [`client`], as a tuple.
pub async fn get(base: &str, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    super::get(&client(), base, path).await.parts()
}

/// [`super::post`] with a fresh [`client`], as a tuple.
pub async fn post(base: &str, path: &str, body: &str) -> (u16, reqwest::header::HeaderMap, String) {
    super::post(&client(), base, path, body).await.parts()
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
