//! `sluice demo`: three simulated llama-servers of different speeds, the
//! gateway in front of them on an embedded default config, a burst of load
//! that overloads the fleet, and a live terminal view of what happens.
//!
//! Everything runs in this process on free loopback ports. After the burst
//! the fleet and gateway keep running (until Ctrl-C) so the printed `curl`
//! line can be tried; `--exit` stops after the burst instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::gateway::{free_port, RunningGateway};
use crate::sim::{SimHandle, SimOptions};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// How long the overload burst lasts, in seconds.
    #[arg(long, default_value_t = 20)]
    pub burst_secs: u64,
    /// Concurrent clients during the burst (the fleet has 12 slots).
    #[arg(long, default_value_t = 36)]
    pub clients: usize,
    /// Exit after the burst instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
    /// Print one plain summary line per second instead of redrawing the screen.
    #[arg(long)]
    pub plain: bool,
}

/// Generation speeds (tokens/s for one busy slot) of the three backends.
const SPEEDS: [f64; 3] = [600.0, 400.0, 200.0];
const SLOTS: usize = 4;

/// The embedded default configuration, with the ports filled in.
pub fn demo_config(proxy: u16, admin: u16, backends: &[String]) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{proxy}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [scrape]\ninterval = \"250ms\"\n"
    );
    for (i, url) in backends.iter().enumerate() {
        text += &format!("[[backends]]\nname = \"llm-{i}\"\nurl = \"{url}\"\n");
    }
    text
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    shed: AtomicU64,
    errors: AtomicU64,
    retry_after_missing: AtomicU64,
    latencies_ms: Mutex<Vec<u64>>,
    reject_ms: Mutex<Vec<u64>>,
}

pub fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let sims: Vec<SimHandle> = rt.block_on(async {
        let mut v = Vec::new();
        for (i, speed) in SPEEDS.iter().enumerate() {
            v.push(
                crate::sim::spawn(SimOptions {
                    slots: SLOTS,
                    gen_tps: *speed,
                    seed: i as u64 + 1,
                    ..SimOptions::default()
                })
                .await?,
            );
        }
        Ok::<_, std::io::Error>(v)
    })?;
    let urls: Vec<String> = sims.iter().map(|s| s.url()).collect();
    let config = Config::parse(&demo_config(free_port(), free_port(), &urls))?;
    let gw = RunningGateway::start(&config)?;
    println!(
        "sluice demo: 3 simulated llama-servers ({} slots each, {:?} tok/s) behind the gateway at {}",
        SLOTS,
        SPEEDS,
        gw.proxy_url()
    );
    println!("console (open in a browser): {}/ui", gw.admin_url());
    // Give the scrape loop a moment to see every backend.
    std::thread::sleep(Duration::from_millis(800));

    let tally = Arc::new(Tally::default());
    let stop_at = Instant::now() + Duration::from_secs(args.burst_secs);
    let proxy = gw.proxy_url();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut tasks = Vec::new();
        for c in 0..args.clients {
            let client = client.clone();
            let tally = Arc::clone(&tally);
            let url = format!("{proxy}/v1/chat/completions");
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < stop_at {
                    n += 1;
                    let max_tokens = 40 + ((c as u64 * 7919 + n * 104_729) % 120);
                    one_request(&client, &url, max_tokens, &tally).await;
                }
            }));
        }
        let started = Instant::now();
        while Instant::now() < stop_at {
            tokio::time::sleep(Duration::from_millis(if args.plain { 1000 } else { 500 })).await;
            draw(&gw, &sims, &tally, started.elapsed(), args.plain);
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    println!("\n{}", summary(&tally));
    println!(
        "\nTry it:\n  curl -s {}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}],\"max_tokens\":16}}'\n  curl -s {}/status\n  curl -s {}/metrics | grep sluice_",
        gw.proxy_url(),
        gw.admin_url(),
        gw.admin_url()
    );
    if !args.exit {
        println!("\nThe fleet keeps running; press Ctrl-C to stop.");
        rt.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
    }
    gw.stop();
    for s in sims {
        s.shutdown();
    }
    Ok(())
}

async fn one_request(client: &reqwest::Client, url: &str, max_tokens: u64, tally: &Tally) {
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": "Tell me about sluices."}],
        "max_tokens": max_tokens,
    });
    let t = Instant::now();
    match client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {
            let _ = r.bytes().await;
            tally.ok.fetch_add(1, Ordering::Relaxed);
            push(&tally.latencies_ms, t.elapsed());
        }
        Ok(r) if r.status().as_u16() == 503 || r.status().as_u16() == 429 => {
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let _ = r.bytes().await;
            push(&tally.reject_ms, t.elapsed());
            tally.shed.fetch_add(1, Ordering::Relaxed);
            match retry {
                // A polite client honours Retry-After (capped for the demo).
                Some(s) => tokio::time::sleep(Duration::from_millis((s * 1000).min(1000))).await,
                None => {
                    tally.retry_after_missing.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        _ => {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn push(v: &Mutex<Vec<u64>>, d: Duration) {
    if let Ok(mut v) = v.lock() {
        v.push(d.as_millis() as u64);
    }
}

fn percentile(v: &Mutex<Vec<u64>>, p: f64) -> Option<u64> {
    let mut v = v.lock().ok()?.clone();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    Some(v[i])
}

fn fmt_ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{v} ms"))
}

fn summary(t: &Tally) -> String {
    format!(
        "gateway: admitted {} | shed {} (p99 time-to-reject {}, without Retry-After {}) | errors {} | latency p50 {} p99 {}",
        t.ok.load(Ordering::Relaxed),
        t.shed.load(Ordering::Relaxed),
        fmt_ms(percentile(&t.reject_ms, 0.99)),
        t.retry_after_missing.load(Ordering::Relaxed),
        t.errors.load(Ordering::Relaxed),
        fmt_ms(percentile(&t.latencies_ms, 0.5)),
        fmt_ms(percentile(&t.latencies_ms, 0.99)),
    )
}

fn draw(gw: &RunningGateway, sims: &[SimHandle], t: &Tally, elapsed: Duration, plain: bool) {
    let now = tokio::time::Instant::now();
    let fleet = &gw.shared.fleet;
    let mut out = String::new();
    if !plain {
        out.push_str("\x1b[2J\x1b[H");
        out.push_str(&format!(
            "sluice demo — overload burst, {:>4.1} s\n\n",
            elapsed.as_secs_f64()
        ));
        out.push_str("backend  speed     processing  deferred  in-flight  limit  eligible\n");
    }
    for (b, sim) in fleet.backends().iter().zip(sims) {
        let c = sim.counters();
        let (a, cap) = fleet.assess(b, now);
        let verdict = match a.verdict {
            Ok(()) => "yes".to_string(),
            Err(r) => format!("no ({})", r.as_str()),
        };
        if plain {
            out.push_str(&format!(
                "{} proc={} def={} inflight={} limit={} eligible={} | ",
                b.name(),
                c.processing_now,
                c.deferred_now,
                b.in_flight(),
                cap,
                verdict
            ));
        } else {
            out.push_str(&format!(
                "{:<8} {:>4} t/s  {:>10}  {:>8}  {:>9}  {:>5}  {}\n",
                b.name(),
                sim.options().gen_tps,
                c.processing_now,
                c.deferred_now,
                b.in_flight(),
                cap,
                verdict
            ));
        }
    }
    if !plain {
        out.push('\n');
    }
    out.push_str(&summary(t));
    println!("{out}");
}
