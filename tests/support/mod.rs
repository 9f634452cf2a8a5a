//! The one support module of the integration tests, all on loopback:
//!
//! - this file: a gateway (pre-picked free ports) in front of simulated
//!   backends (port 0), torn down on drop ([`Harness`]); one HTTP reply type
//!   and its `get`/`post`; bounded waits for a condition ([`wait_until`],
//!   [`eventually`]) instead of sleeping;
//! - [`sim`]: helpers of the `sim_*` tests (a client, SSE and metrics-text
//!   readers);
//! - [`load`]: load generation, pollers and statistics of the overload
//!   scenarios;
//! - [`replay`]: a backend that replays a real llama-server capture;
//! - [`redis`]: a real `redis-server` on a free loopback port (cluster tests);
//! - [`dns`]: a real `dnsmasq` answering a hosts file the test rewrites
//!   (discovered fleets).
#![allow(dead_code)]

pub mod dns;
pub mod load;
pub mod redis;
pub mod replay;
pub mod sim;

use std::time::{Duration, Instant};

use sluice::config::Config;
use sluice::gateway::{free_port, RunningGateway};
use sluice::sim::{SimHandle, SimOptions};

/// A fast simulated server: `slots` slots, ~2,000 tokens/s per request.
pub fn fast(slots: usize) -> SimOptions {
    SimOptions {
        slots,
        gen_tps: 2000.0,
        prompt_tps: 100_000.0,
        ..SimOptions::default()
    }
}

pub struct Harness {
    pub gw: Option<RunningGateway>,
    pub sims: Vec<SimHandle>,
    pub client: reqwest::Client,
    pub rt: tokio::runtime::Runtime,
}

impl Harness {
    /// Starts the sims and a gateway; `extra` is TOML added to the config,
    /// `weights` one per sim (or empty for all 1).
    pub fn start(sims: Vec<SimOptions>, extra: &str, weights: &[u32]) -> Harness {
        Harness::start_full(sims, extra, weights, "")
    }

    /// Like [`Harness::start`], with extra keys in the `[admin]` table.
    pub fn start_with_admin(sims: Vec<SimOptions>, admin_extra: &str) -> Harness {
        Harness::start_full(sims, "", &[], admin_extra)
    }

    /// Like [`Harness::start`], with extra keys in the `[server]` table.
    pub fn start_with_server(sims: Vec<SimOptions>, server_extra: &str, extra: &str) -> Harness {
        Harness::start_keys(sims, server_extra, extra, &[], "")
    }

    fn start_full(
        sims: Vec<SimOptions>,
        extra: &str,
        weights: &[u32],
        admin_extra: &str,
    ) -> Harness {
        Harness::start_keys(sims, "", extra, weights, admin_extra)
    }

    fn start_keys(
        sims: Vec<SimOptions>,
        server_extra: &str,
        extra: &str,
        weights: &[u32],
        admin_extra: &str,
    ) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handles: Vec<SimHandle> = rt.block_on(async {
            let mut v = Vec::new();
            for o in sims {
                v.push(sluice::sim::spawn(o).await.unwrap());
            }
            v
        });
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\nthreads = 1\n{server_extra}\n[admin]\nlisten = \"127.0.0.1:{}\"\n{admin_extra}\
             [scrape]\ninterval = \"100ms\"\ntimeout = \"500ms\"\n{extra}\n",
            free_port(),
            free_port()
        );
        for (i, s) in handles.iter().enumerate() {
            let w = weights.get(i).copied().unwrap_or(1);
            text += &format!(
                "[[backends]]\nname = \"b{i}\"\nurl = \"{}\"\nweight = {w}\n",
                s.url()
            );
        }
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let gw = RunningGateway::start(&config).unwrap();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        Harness {
            gw: Some(gw),
            sims: handles,
            client,
            rt,
        }
    }

    pub fn gw(&self) -> &RunningGateway {
        self.gw.as_ref().unwrap()
    }

    pub fn status(&self) -> serde_json::Value {
        let r = self
            .rt
            .block_on(get(&self.client, &self.gw().admin_url(), "/status"));
        serde_json::from_str(&r.body).unwrap()
    }

    pub fn backend_status(&self, i: usize) -> serde_json::Value {
        self.status()["backends"][i].clone()
    }

    /// Waits until `f` holds, or panics naming `what` and the last status.
    pub fn wait_until(&self, what: &str, timeout: Duration, f: impl Fn(&Harness) -> bool) {
        if !poll(timeout, || f(self)) {
            panic!("timed out waiting for {what}; status: {:#}", self.status());
        }
    }

    /// Waits until every backend is eligible.
    pub fn wait_all_eligible(&self) {
        self.wait_until("all backends eligible", Duration::from_secs(10), |h| {
            h.status()["backends"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["eligible"] == true)
        });
    }

    /// POSTs JSON through the gateway; returns status, headers, body.
    pub fn post(&self, path: &str, body: serde_json::Value) -> Reply {
        self.rt
            .block_on(post(&self.client, &self.gw().proxy_url(), path, body))
    }
}

/// An HTTP answer as the tests read it.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Status, headers and body, for destructuring.
    pub fn parts(self) -> (u16, reqwest::header::HeaderMap, String) {
        (self.status, self.headers, self.body)
    }

    async fn read(r: reqwest::Response) -> Reply {
        Reply {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap_or_default(),
        }
    }
}

/// GETs `base + path`; panics when the server cannot be reached.
pub async fn get(client: &reqwest::Client, base: &str, path: &str) -> Reply {
    let r = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {base}{path}: {e}"));
    Reply::read(r).await
}

/// POSTs `body` (JSON: a `serde_json::Value` or a `&str`) to `base + path`;
/// panics when the server cannot be reached.
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: impl std::fmt::Display,
) -> Reply {
    let url = format!("{base}{path}");
    post_with(client, &url, body, &[("content-type", "application/json")]).await
}

/// POSTs `body` to `url` with exactly these headers (a test of what the
/// gateway does with one header or another).
pub async fn post_with(
    client: &reqwest::Client,
    url: &str,
    body: impl std::fmt::Display,
    headers: &[(&str, &str)],
) -> Reply {
    let mut r = client.post(url).body(body.to_string());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
    Reply::read(r).await
}

// === waiting for a condition ===

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` until it holds (true) or `timeout` passes (false), on this
/// thread: for tests that drive a runtime with `block_on`.
pub fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until `cond` holds, or panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(
        poll(timeout, cond),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// Polls `cond` until it holds (true) or `within` passes (false), inside an
/// async test: yields to the runtime between looks, so a simulator on the
/// same runtime keeps running (and a paused clock advances).
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

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.stop();
        }
        for s in &self.sims {
            s.shutdown();
        }
    }
}

/// Starts a gateway from TOML text and waits until a backend can take work.
pub fn start_ready(config_text: &str) -> RunningGateway {
    let config = Config::parse(config_text).unwrap_or_else(|e| panic!("{e}\n{config_text}"));
    let gw = RunningGateway::start(&config).unwrap();
    wait_until("a backend eligible", Duration::from_secs(5), || {
        gw.shared.fleet.ready(tokio::time::Instant::now())
    });
    gw
}

pub fn completion(n_predict: u32) -> serde_json::Value {
    serde_json::json!({"prompt": "Hello there", "n_predict": n_predict, "ignore_eos": true})
}
