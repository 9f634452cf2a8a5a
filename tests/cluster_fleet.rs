//! Replicas sharing one fleet at 3× overload (issue 17, item 2): one
//! replica alone, two replicas that do not know of each other, and two
//! replicas in one `[cluster]` (a real `redis-server`), each run against the
//! same fleet and the same total load. Reports goodput, the backends'
//! `requests_deferred` (time-weighted mean and max, from the simulators'
//! own counters) and time to reject.
//!
//! Invariants are asserted (every refusal fast-pathed with `Retry-After`,
//! no errors); the figures are timing-dependent and printed, and asserted
//! only for the cluster run, and only when the machine is quiet enough
//! (see `BUSY`).

mod support;

use std::time::{Duration, Instant};

use sluice::config::Config;
use sluice::gateway::{free_port, RunningGateway};
use sluice::sim::{GenLength, SimHandle, SimOptions, ThroughputCurve};
use support::load::{open_loop, percentile, Request, Sample};
use support::redis::RedisServer;
use support::{get, poll};

const BACKENDS: usize = 2;
const SLOTS: usize = 4;
const GEN_TPS: f64 = 200.0;
const GEN_MIN: u32 = 80;
const GEN_MAX: u32 = 120;
const RUN: Duration = Duration::from_secs(8);
/// A run whose p99 time to reject exceeds this was starved of CPU: its
/// goodput and deferred figures say nothing about the gateway.
const BUSY: Duration = Duration::from_millis(50);

fn service() -> Duration {
    Duration::from_secs_f64(f64::from(GEN_MIN + GEN_MAX) / 2.0 / GEN_TPS)
}

fn capacity() -> f64 {
    (BACKENDS * SLOTS) as f64 / service().as_secs_f64()
}

fn sim(seed: u64) -> SimOptions {
    SimOptions {
        slots: SLOTS,
        gen_tps: GEN_TPS,
        prompt_tps: 100_000.0,
        curve: ThroughputCurve::Power { exponent: 1.0 },
        gen_length: GenLength {
            min: GEN_MIN,
            max: GEN_MAX,
        },
        seed,
        ..SimOptions::default()
    }
}

struct Figures {
    goodput: f64,
    /// The backends' slots busy, time-weighted (the simulators' own
    /// integrals) over the whole run, its start and drain included.
    busy: f64,
    deferred_mean: f64,
    deferred_max: usize,
    reject_p99: Duration,
    shed: usize,
}

/// `replicas` gateways (with `extra`) in front of a fresh fleet, each sent
/// an equal part of 3× capacity.
fn run(replicas: usize, extra: &str) -> Figures {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sims: Vec<SimHandle> = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..BACKENDS {
            v.push(sluice::sim::spawn(sim(i as u64 + 7)).await.unwrap());
        }
        v
    });
    let mut backends = String::new();
    for (i, s) in sims.iter().enumerate() {
        backends += &format!("[[backends]]\nname = \"b{i}\"\nurl = \"{}\"\n", s.url());
    }
    let gws: Vec<RunningGateway> = (0..replicas)
        .map(|_| {
            let text = format!(
                "[server]\nlisten = \"127.0.0.1:{}\"\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
                 [scrape]\ninterval = \"100ms\"\ntimeout = \"500ms\"\n{extra}\n{backends}",
                free_port(),
                free_port()
            );
            let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            RunningGateway::start(&c).unwrap()
        })
        .collect();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    for g in &gws {
        let ok = poll(Duration::from_secs(15), || {
            let s = rt.block_on(get(&client, &g.admin_url(), "/status"));
            let v: serde_json::Value = serde_json::from_str(&s.body).unwrap();
            let eligible = v["backends"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["eligible"] == true);
            let cluster = v["cluster"].is_null() || v["cluster"]["replicas"] == replicas as u64;
            eligible && cluster
        });
        assert!(ok, "replica not ready");
    }
    let before: Vec<_> = sims.iter().map(|s| s.counters()).collect();
    let budget = service() / 3;
    let req = Request::completion(None).with_deadline(budget);
    let start = Instant::now();
    let rate = 3.0 * capacity() / replicas as f64;
    let samples: Vec<Sample> = rt.block_on(async {
        let loops: Vec<_> = gws
            .iter()
            .enumerate()
            .map(|(i, g)| {
                tokio::spawn(open_loop(
                    client.clone(),
                    g.proxy_url(),
                    req.clone(),
                    vec![(RUN, rate)],
                    100 + i as u64,
                    start,
                ))
            })
            .collect();
        let mut all = Vec::new();
        for l in loops {
            all.extend(l.await.unwrap());
        }
        all
    });
    let elapsed = start.elapsed();
    let after: Vec<_> = sims.iter().map(|s| s.counters()).collect();
    let from = Duration::from_secs(1) + service();
    let good = samples
        .iter()
        .filter(|s| s.ok() && s.done_in(from, RUN))
        .count();
    let goodput = good as f64 / (RUN - from).as_secs_f64() / capacity();
    let secs = elapsed.as_secs_f64();
    let deferred_mean = (0..BACKENDS)
        .map(|i| (after[i].deferred_integral - before[i].deferred_integral) / secs)
        .sum::<f64>()
        / BACKENDS as f64;
    let deferred_max = after.iter().map(|c| c.max_deferred_seen).max().unwrap_or(0);
    let processing: f64 = (0..BACKENDS)
        .map(|i| {
            (after[i].load_integral - before[i].load_integral)
                - (after[i].deferred_integral - before[i].deferred_integral)
        })
        .sum();
    let busy = processing / secs / (BACKENDS * SLOTS) as f64;
    let shed: Vec<&Sample> = samples.iter().filter(|s| s.shed()).collect();
    let errors: Vec<_> = samples.iter().filter(|s| s.error()).collect();
    assert!(
        errors.is_empty(),
        "{} errors, first {:?}",
        errors.len(),
        errors.first()
    );
    assert!(
        shed.iter().all(|s| s.retry_after),
        "a refusal without Retry-After"
    );
    let immediate: Vec<Duration> = shed
        .iter()
        .filter(|s| s.reason.as_deref() != Some("queue_timeout"))
        .map(|s| s.latency)
        .collect();
    for g in gws {
        g.stop();
    }
    for s in &sims {
        s.shutdown();
    }
    Figures {
        goodput,
        busy,
        deferred_mean,
        deferred_max,
        reject_p99: percentile(&immediate, 0.99),
        shed: shed.len(),
    }
}

fn show(name: &str, f: &Figures) {
    eprintln!(
        "{name:<34} goodput {:5.1} %  slots busy {:5.1} %  deferred mean {:.2} max {}  time to reject p99 {:.1} ms (n={})",
        f.goodput * 100.0,
        f.busy * 100.0,
        f.deferred_mean,
        f.deferred_max,
        f.reject_p99.as_secs_f64() * 1e3,
        f.shed
    );
}

#[test]
fn two_replicas_share_one_fleet_at_3x_overload() {
    let redis = RedisServer::start();
    eprintln!(
        "fleet: {BACKENDS} × {SLOTS} slots, capacity {:.1} req/s, offered 3×, wait budget {:.0} ms",
        capacity(),
        (service() / 3).as_secs_f64() * 1e3
    );
    let one = run(1, "");
    show("one replica", &one);
    let blind = run(2, "");
    show("two replicas, no [cluster]", &blind);
    // A key prefix per run: the previous run's replicas are not counted.
    let cluster = |n: usize| {
        format!(
            "[cluster]\nredis_url = \"{}\"\nkey_prefix = \"fleet{n}\"\ntimeout = \"500ms\"\nheartbeat = \"200ms\"\n",
            redis.url()
        )
    };
    let mut shared = Vec::new();
    for n in 2..=4 {
        let f = run(n, &cluster(n));
        show(&format!("{n} replicas, one [cluster]"), &f);
        shared.push((n, f));
    }
    if one.reject_p99 > BUSY || shared.iter().any(|(_, f)| f.reject_p99 > BUSY) {
        eprintln!("machine too busy (time to reject p99 > {BUSY:?}): figures not asserted");
        return;
    }
    for (n, f) in &shared {
        // No replica dispatches into another's slots, however many.
        assert!(
            f.deferred_mean <= 0.5,
            "{n} replicas: deferred mean {:.2}",
            f.deferred_mean
        );
    }
    // 2-4 replicas keep about one replica's goodput (the goal is
    // 95 %; the bound leaves room for the window's counting noise: one
    // replica alone measures 95-101 % here). With 3 and 4 replicas each
    // holds one or two slots per backend; loans of idle slots, lent to
    // every replica from the in-flight exchange (backend::slot_loan,
    // cluster::peers), measured 95-97 % (static shares 82-88 %, loans from
    // scrapes by turns 87-93 %): the bound is above what those reached.
    for (n, f) in &shared {
        assert!(f.goodput >= 0.90, "{n} replicas: goodput {:.3}", f.goodput);
    }
}

/// `sluice sim --count N` (the 100-backend simulation's fleet, see
/// `loadtest/fleet100`): N servers from one process, each on its own port
/// (port 0: free ports), each answering on its own, with its own seed.
#[test]
fn one_sim_process_serves_a_fleet() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--count",
            "3",
            "--slots",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let urls: Vec<String> = (0..3)
        .filter_map(|_| lines.next()?.ok())
        .filter_map(|l| l.rsplit(' ').next().map(str::to_string))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let answers: Vec<(u16, u16)> = urls
        .iter()
        .map(|u| {
            let health = rt.block_on(get(&client, u, "/health")).status;
            let props = rt.block_on(get(&client, u, "/props"));
            let v: serde_json::Value = serde_json::from_str(&props.body).unwrap();
            (health, v["total_slots"].as_u64().unwrap_or(0) as u16)
        })
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(urls.len(), 3, "three listen addresses printed: {urls:?}");
    let mut distinct = urls.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{urls:?}");
    assert_eq!(answers, vec![(200, 2); 3]);
}
