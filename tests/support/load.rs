//! Load generation and statistics for the overload scenarios: an open-loop
//! Poisson generator (seeded, piecewise-constant rate), a closed-loop one for
//! unloaded reference figures, a `/status` poller, percentiles and a figures
//! table. Everything runs in the harness's tokio runtime.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::MissedTickBehavior;

/// One request as the client saw it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was sent, from the start of the run.
    pub at: Duration,
    /// HTTP status; 0 when the request failed at the transport level.
    pub status: u16,
    /// Send to the end of the response body (or the transport error).
    pub latency: Duration,
    pub retry_after: bool,
    /// `x-sluice-reason` of a rejection.
    pub reason: Option<String>,
    /// `x-sluice-backend`: which backend served it.
    pub backend: Option<String>,
    /// Transport error text, when `status` is 0.
    pub error: Option<String>,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.status == 200
    }

    /// Shed by admission: a 503 or 429 with a reason from the gateway.
    pub fn shed(&self) -> bool {
        matches!(self.status, 503 | 429)
    }

    /// Neither served nor shed: what a client would call an error.
    pub fn error(&self) -> bool {
        !self.ok() && !self.shed()
    }

    /// Sent in `[from, to)` (offsets from the start of the run).
    pub fn sent_in(&self, from: Duration, to: Duration) -> bool {
        self.at >= from && self.at < to
    }

    /// Answered in `[from, to)`.
    pub fn done_in(&self, from: Duration, to: Duration) -> bool {
        let done = self.at + self.latency;
        done >= from && done < to
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub body: String,
    /// `x-sluice-deadline` (the request's wait budget at the gateway).
    pub deadline: Option<String>,
    /// Client-side timeout of one request.
    pub timeout: Duration,
}

impl Request {
    /// A `/completion` request of `n_predict` tokens, or (`None`) of the
    /// length the simulator draws from its `gen_length` range.
    pub fn completion(n_predict: Option<u32>) -> Request {
        let body = match n_predict {
            Some(n) => {
                serde_json::json!({"prompt": "Hello there", "n_predict": n, "ignore_eos": true})
            }
            None => serde_json::json!({"prompt": "Hello there"}),
        };
        Request {
            path: "/completion".into(),
            body: body.to_string(),
            deadline: None,
            timeout: Duration::from_secs(15),
        }
    }

    pub fn with_deadline(mut self, d: Duration) -> Request {
        self.deadline = Some(format!("{}ms", d.as_millis()));
        self
    }
}

async fn send(client: &reqwest::Client, url: &str, req: &Request, start: Instant) -> Sample {
    let t = Instant::now();
    let mut rb = client
        .post(url)
        .header("content-type", "application/json")
        .timeout(req.timeout)
        .body(req.body.clone());
    if let Some(d) = &req.deadline {
        rb = rb.header("x-sluice-deadline", d);
    }
    let at = t.saturating_duration_since(start);
    match rb.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let h = r.headers();
            let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
            let retry_after = h.get("retry-after").is_some();
            let reason = get("x-sluice-reason");
            let backend = get("x-sluice-backend");
            let (status, error) = match r.bytes().await {
                Ok(_) => (status, None),
                Err(e) => (0, Some(format!("body after {status}: {e}"))),
            };
            Sample {
                at,
                status,
                latency: t.elapsed(),
                retry_after,
                reason,
                backend,
                error,
            }
        }
        Err(e) => Sample {
            at,
            status: 0,
            latency: t.elapsed(),
            retry_after: false,
            reason: None,
            backend: None,
            error: Some(format!("{e:?}")),
        },
    }
}

/// Arrival offsets of a Poisson process whose rate is `phases[i].1`
/// requests/s during `phases[i].0`, one phase after the other.
pub fn poisson_arrivals(phases: &[(Duration, f64)], seed: u64) -> Vec<Duration> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut phase_start = 0.0;
    for &(len, rate) in phases {
        let end = phase_start + len.as_secs_f64();
        let mut t = phase_start;
        if rate > 0.0 {
            loop {
                let u: f64 = rng.random();
                t += -(1.0 - u).ln() / rate;
                if t >= end {
                    break;
                }
                out.push(Duration::from_secs_f64(t));
            }
        }
        phase_start = end;
    }
    out
}

/// Open loop: sends `req` at each Poisson arrival regardless of how earlier
/// requests fare, and returns every sample once all have finished. `start`
/// is the run's time origin (so other observers can share it).
pub async fn open_loop(
    client: reqwest::Client,
    base: String,
    req: Request,
    phases: Vec<(Duration, f64)>,
    seed: u64,
    start: Instant,
) -> Vec<Sample> {
    let url = format!("{base}{}", req.path);
    let req = Arc::new(req);
    let mut tasks = Vec::new();
    for at in poisson_arrivals(&phases, seed) {
        tokio::time::sleep_until((start + at).into()).await;
        let (c, u, r) = (client.clone(), url.clone(), Arc::clone(&req));
        tasks.push(tokio::spawn(async move { send(&c, &u, &r, start).await }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

/// Closed loop: `workers` clients each sending one request after the other
/// for `duration`.
pub async fn closed_loop(
    client: reqwest::Client,
    base: String,
    req: Request,
    workers: usize,
    duration: Duration,
) -> Vec<Sample> {
    let url = format!("{base}{}", req.path);
    let req = Arc::new(req);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (c, u, r) = (client.clone(), url.clone(), Arc::clone(&req));
        tasks.push(tokio::spawn(async move {
            let mut v = Vec::new();
            while start.elapsed() < duration {
                v.push(send(&c, &u, &r, start).await);
            }
            v
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.expect("worker task"));
    }
    out.sort_by_key(|s| s.at);
    out
}

// === /status poller ===

/// One backend in one `/status` reading.
#[derive(Debug, Clone)]
pub struct BackendSnap {
    pub name: String,
    pub eligible: bool,
    pub reason: Option<String>,
    pub breaker: String,
    pub in_flight: u64,
    /// The adaptive limit (or the static cap when there is none yet).
    pub limit: Option<u64>,
    pub deferred: Option<u64>,
}

/// One `/status` reading.
#[derive(Debug, Clone)]
pub struct Snap {
    pub at: Duration,
    pub queue_depth: u64,
    pub backends: Vec<BackendSnap>,
}

fn parse_status(at: Duration, v: &serde_json::Value) -> Snap {
    let backends = v["backends"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| BackendSnap {
                    name: b["name"].as_str().unwrap_or("?").to_string(),
                    eligible: b["eligible"] == true,
                    reason: b["ineligible_reason"].as_str().map(str::to_string),
                    breaker: b["breaker"].as_str().unwrap_or("?").to_string(),
                    in_flight: b["in_flight"].as_u64().unwrap_or(0),
                    limit: b["adaptive_limit"].as_u64(),
                    deferred: b["requests_deferred"].as_u64(),
                })
                .collect()
        })
        .unwrap_or_default();
    Snap {
        at,
        queue_depth: v["queue_depth"].as_u64().unwrap_or(0),
        backends,
    }
}

/// A task that takes one reading every `every` until stopped, and hands
/// back the readings (`None`: nothing usable this time).
pub struct Sampler<T> {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<T>>,
}

impl<T: Send + 'static> Sampler<T> {
    pub fn spawn<F, Fut>(
        rt: &tokio::runtime::Runtime,
        every: Duration,
        missed: tokio::time::MissedTickBehavior,
        mut read: F,
    ) -> Sampler<T>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Option<T>> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let task = rt.spawn(async move {
            let mut out = Vec::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(missed);
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Some(v) = read().await {
                    out.push(v);
                }
            }
            out
        });
        Sampler { stop, task }
    }

    pub fn stop(self, rt: &tokio::runtime::Runtime) -> Vec<T> {
        self.stop.store(true, Ordering::Relaxed);
        rt.block_on(self.task).expect("sampler task")
    }
}

/// Reads `/status` every `every` until stopped.
pub fn status_poller(
    rt: &tokio::runtime::Runtime,
    client: reqwest::Client,
    admin: String,
    every: Duration,
    start: Instant,
) -> Sampler<Snap> {
    let url = format!("{admin}/status");
    Sampler::spawn(rt, every, MissedTickBehavior::Delay, move || {
        let r = client.get(&url).timeout(Duration::from_secs(2)).send();
        async move {
            let text = r.await.ok()?.text().await.ok()?;
            let v = serde_json::from_str::<serde_json::Value>(&text).ok()?;
            Some(parse_status(start.elapsed(), &v))
        }
    })
}

// === the gateway's own answer time ===

/// Sends a request the gateway refuses before admission (a `400` for an
/// unreadable `x-sluice-deadline`) every `every`, and records how long the
/// answer took: the floor of any answer the gateway gives at that moment on
/// this machine (client, loopback and the proxy thread, no admission). A
/// shed that takes much longer than this did work it should not have.
pub fn reject_probe(
    rt: &tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
    every: Duration,
) -> Sampler<Duration> {
    let url = format!("{base}/completion");
    Sampler::spawn(rt, every, MissedTickBehavior::Burst, move || {
        let t = Instant::now();
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-sluice-deadline", "never")
            .timeout(Duration::from_secs(5))
            .body("{}")
            .send();
        async move {
            let r = r.await.ok()?;
            let status = r.status().as_u16();
            (r.bytes().await.is_ok() && status == 400).then(|| t.elapsed())
        }
    })
}

/// CPU time this process has used (user + system), from `/proc/self/stat`;
/// zero where that file does not exist.
pub fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, in clock ticks
    // (100 per second on Linux).
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

// === statistics ===

/// The `q` quantile (0..=1) of `v` by nearest rank; zero when empty.
pub fn percentile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// Latencies of the samples that pass `f`.
pub fn latencies(samples: &[Sample], f: impl Fn(&Sample) -> bool) -> Vec<Duration> {
    samples.iter().filter(|s| f(s)).map(|s| s.latency).collect()
}

/// Served requests per backend name.
pub fn shares(samples: &[Sample]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in samples.iter().filter(|s| s.ok()) {
        *m.entry(s.backend.clone().unwrap_or_else(|| "-".into()))
            .or_insert(0) += 1;
    }
    m
}

/// Rejections per `x-sluice-reason` (or status, when absent).
pub fn reasons(samples: &[Sample]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in samples.iter().filter(|s| !s.ok()) {
        let k = s
            .reason
            .clone()
            .unwrap_or_else(|| format!("status {}", s.status));
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A figures table printed to stderr (`--nocapture` shows it).
pub struct Table {
    title: String,
    rows: Vec<(String, String)>,
}

impl Table {
    pub fn new(title: &str) -> Table {
        Table {
            title: title.to_string(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Table {
        self.rows.push((name.to_string(), value.to_string()));
        self
    }

    pub fn print(&self) {
        let w = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let mut s = format!("\n== {} ==\n", self.title);
        for (k, v) in &self.rows {
            s += &format!("  {k:<w$}  {v}\n");
        }
        eprint!("{s}");
    }
}
