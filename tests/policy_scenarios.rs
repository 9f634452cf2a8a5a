//! Scenario tests for the adaptive limit: a small discrete-event model of a
//! llama-server fleet driven by the real `AimdLimiter`, in virtual time with a
//! seeded rng (no sleeping, reproducible).
//!
//! The model: 4 backends × 4 slots; a request takes an exponential service
//! time (mean 2 s) once it holds a slot; requests beyond the slots wait
//! inside the backend (`requests_deferred`) in FIFO. The gateway holds its
//! own bounded FIFO and dispatches to the backend with the lowest
//! in-flight / limit among those under their limit. Each backend is scraped
//! every 500 ms (staggered); the limiter sees the gauges only then, so its
//! view is stale by up to 500 ms. Responses report their latency, their
//! in-server wait, and a per-token time that grows mildly with batch size.
//!
//! Run with `--nocapture` to see the measured figures.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sluice::backend::limiter::{AimdLimiter, LimiterConfig, ResponseSample};

const BACKENDS: usize = 4;
const SLOTS: u32 = 4;
const SCRAPE_EVERY_MS: u64 = 500;
const NET_DELAY_MS: u64 = 5;
const GATEWAY_QUEUE: usize = 64;

/// Capacity of the fleet in requests per second.
fn capacity(mean_service_s: f64) -> f64 {
    (BACKENDS as f64 * f64::from(SLOTS)) / mean_service_s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrival,
    /// A request reaches backend `b` (after the network delay).
    Reach {
        b: usize,
        id: u64,
    },
    /// Request `id` finishes its work on backend `b`.
    Finish {
        b: usize,
        id: u64,
    },
    /// The response reaches the gateway.
    Response {
        b: usize,
        id: u64,
    },
    Scrape {
        b: usize,
    },
}

#[derive(Debug, Clone, Copy)]
struct Req {
    sent_ms: u64,
    reached_ms: u64,
    started_ms: u64,
    service_ms: u64,
}

struct Backend {
    limiter: AimdLimiter,
    in_flight: u32,
    processing: Vec<u64>,
    deferred: VecDeque<u64>,
    /// ∫ deferred dt, in request·ms.
    deferred_area: u128,
    /// ∫ limit dt after warm-up, in ms.
    limit_area: u128,
    last_change_ms: u64,
    min_limit_after_warmup: u32,
    max_limit_after_warmup: u32,
    min_limit_in_window: u32,
}

struct Report {
    mean_deferred: Vec<f64>,
    mean_limit: Vec<f64>,
    min_limit: Vec<u32>,
    max_limit: Vec<u32>,
    min_limit_in_window: Vec<u32>,
    final_limit: Vec<u32>,
    served: u64,
    shed: u64,
}

/// Offered load as a multiple of capacity at virtual time `t_ms`.
type Load = fn(u64) -> f64;

struct Scenario {
    seed: u64,
    load: Load,
    /// Mean service time once a request holds a slot.
    mean_service_s: f64,
    total_ms: u64,
    warmup_ms: u64,
    /// Interval in which the lowest limit is recorded.
    window: (u64, u64),
}

fn simulate(sc: &Scenario) -> Report {
    let Scenario {
        seed,
        load,
        mean_service_s,
        total_ms,
        warmup_ms,
        window,
    } = *sc;
    let mut rng = SmallRng::seed_from_u64(seed);
    let base = Instant::now();
    let at = |ms: u64| base + Duration::from_millis(ms);
    let mut backends: Vec<Backend> = (0..BACKENDS)
        .map(|_| Backend {
            limiter: AimdLimiter::new(LimiterConfig::default(), SLOTS).unwrap(),
            in_flight: 0,
            processing: Vec::new(),
            deferred: VecDeque::new(),
            deferred_area: 0,
            limit_area: 0,
            last_change_ms: 0,
            min_limit_after_warmup: u32::MAX,
            max_limit_after_warmup: 0,
            min_limit_in_window: u32::MAX,
        })
        .collect();
    let mut reqs: Vec<Req> = Vec::new();
    let mut queue: VecDeque<u64> = VecDeque::new();
    let mut events: BinaryHeap<Reverse<(u64, u64, Ev)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |events: &mut BinaryHeap<Reverse<(u64, u64, Ev)>>, t: u64, ev: Ev| {
        seq += 1;
        events.push(Reverse((t, seq, ev)));
    };
    push(&mut events, 0, Ev::Arrival);
    for b in 0..BACKENDS {
        push(
            &mut events,
            (b as u64 * SCRAPE_EVERY_MS) / BACKENDS as u64,
            Ev::Scrape { b },
        );
    }
    let (mut served, mut shed) = (0u64, 0u64);

    // Integrates the deferred gauge and limit of backend `b` up to `now`.
    fn account(bk: &mut Backend, now: u64, warmup: u64, window: (u64, u64)) {
        let dt = u128::from(now.saturating_sub(bk.last_change_ms));
        bk.deferred_area += dt * bk.deferred.len() as u128;
        let limit = bk.limiter.limit();
        if now > warmup {
            bk.limit_area += dt * u128::from(limit);
            bk.min_limit_after_warmup = bk.min_limit_after_warmup.min(limit);
            bk.max_limit_after_warmup = bk.max_limit_after_warmup.max(limit);
        }
        if now >= window.0 && now <= window.1 {
            bk.min_limit_in_window = bk.min_limit_in_window.min(limit);
        }
        bk.last_change_ms = now;
    }

    while let Some(Reverse((now, _, ev))) = events.pop() {
        if now > total_ms {
            break;
        }
        match ev {
            Ev::Arrival => {
                let rate = capacity(mean_service_s) * load(now);
                let gap_s = -(1.0 - rng.random::<f64>()).ln() / rate;
                push(
                    &mut events,
                    now + (gap_s * 1000.0).ceil() as u64,
                    Ev::Arrival,
                );
                if queue.len() >= GATEWAY_QUEUE {
                    shed += 1;
                } else {
                    let service_s = -(1.0 - rng.random::<f64>()).ln() * mean_service_s;
                    reqs.push(Req {
                        sent_ms: 0,
                        reached_ms: 0,
                        started_ms: 0,
                        service_ms: ((service_s * 1000.0) as u64).max(50),
                    });
                    queue.push_back(reqs.len() as u64 - 1);
                }
            }
            Ev::Reach { b, id } => {
                let bk = &mut backends[b];
                account(bk, now, warmup_ms, window);
                reqs[id as usize].reached_ms = now;
                if bk.processing.len() < SLOTS as usize {
                    bk.processing.push(id);
                    reqs[id as usize].started_ms = now;
                    push(
                        &mut events,
                        now + reqs[id as usize].service_ms,
                        Ev::Finish { b, id },
                    );
                } else {
                    bk.deferred.push_back(id);
                }
            }
            Ev::Finish { b, id } => {
                let bk = &mut backends[b];
                account(bk, now, warmup_ms, window);
                bk.processing.retain(|&x| x != id);
                if let Some(next) = bk.deferred.pop_front() {
                    bk.processing.push(next);
                    reqs[next as usize].started_ms = now;
                    push(
                        &mut events,
                        now + reqs[next as usize].service_ms,
                        Ev::Finish { b, id: next },
                    );
                }
                push(&mut events, now + NET_DELAY_MS, Ev::Response { b, id });
            }
            Ev::Response { b, id } => {
                let bk = &mut backends[b];
                account(bk, now, warmup_ms, window);
                let r = reqs[id as usize];
                bk.in_flight -= 1;
                let busy = bk.processing.len() as u64;
                bk.limiter.on_response(
                    ResponseSample {
                        latency: Duration::from_millis(now - r.sent_ms),
                        ttft: None,
                        per_token: Some(Duration::from_millis(20 + 3 * busy)),
                        in_server_wait: Some(Duration::from_millis(r.started_ms - r.reached_ms)),
                    },
                    bk.in_flight,
                    at(now),
                );
                served += 1;
            }
            Ev::Scrape { b } => {
                let bk = &mut backends[b];
                account(bk, now, warmup_ms, window);
                bk.limiter.on_scrape(
                    bk.deferred.len() as u32,
                    bk.processing.len() as u32,
                    SLOTS,
                    bk.in_flight,
                    at(now),
                );
                push(&mut events, now + SCRAPE_EVERY_MS, Ev::Scrape { b });
            }
        }
        // Dispatch as much of the gateway queue as the limits allow.
        while let Some(&id) = queue.front() {
            let pick = (0..BACKENDS)
                .filter(|&b| backends[b].in_flight < backends[b].limiter.limit())
                .min_by(|&a, &b| {
                    let ua =
                        f64::from(backends[a].in_flight) / f64::from(backends[a].limiter.limit());
                    let ub =
                        f64::from(backends[b].in_flight) / f64::from(backends[b].limiter.limit());
                    ua.total_cmp(&ub)
                });
            let Some(b) = pick else { break };
            queue.pop_front();
            let bk = &mut backends[b];
            account(bk, now, warmup_ms, window);
            bk.in_flight += 1;
            bk.limiter.on_dispatch(bk.in_flight);
            reqs[id as usize].sent_ms = now;
            push(&mut events, now + NET_DELAY_MS, Ev::Reach { b, id });
        }
    }
    for bk in &mut backends {
        account(bk, total_ms, warmup_ms, window);
    }
    let measured = (total_ms - warmup_ms) as f64;
    Report {
        mean_deferred: backends
            .iter()
            .map(|b| b.deferred_area as f64 / total_ms as f64)
            .collect(),
        mean_limit: backends
            .iter()
            .map(|b| b.limit_area as f64 / measured)
            .collect(),
        min_limit: backends.iter().map(|b| b.min_limit_after_warmup).collect(),
        max_limit: backends.iter().map(|b| b.max_limit_after_warmup).collect(),
        min_limit_in_window: backends.iter().map(|b| b.min_limit_in_window).collect(),
        final_limit: backends.iter().map(|b| b.limiter.limit()).collect(),
        served,
        shed,
    }
}

fn print(name: &str, r: &Report) {
    eprintln!(
        "{name}: served {} shed {} | mean deferred {:?} | mean limit {:?} | limit range after warm-up {:?}..{:?} | min in window {:?} | final {:?}",
        r.served,
        r.shed,
        r.mean_deferred.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>(),
        r.mean_limit.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>(),
        r.min_limit,
        r.max_limit,
        r.min_limit_in_window,
        r.final_limit,
    );
}

fn check_steady(name: &str, load: Load, mean_service_s: f64) {
    let max = SLOTS + LimiterConfig::default().lookahead;
    let (total_ms, warmup_ms) = (600_000, 60_000);
    for seed in [1, 2, 3] {
        let r = simulate(&Scenario {
            seed,
            load,
            mean_service_s,
            total_ms,
            warmup_ms,
            window: (warmup_ms, total_ms),
        });
        print(&format!("{name} seed {seed}"), &r);
        for b in 0..BACKENDS {
            assert!(
                r.min_limit[b] >= SLOTS - 1 && r.max_limit[b] <= max,
                "{name} seed {seed} backend {b}: limit left [{}, {max}]: {}..{}",
                SLOTS - 1,
                r.min_limit[b],
                r.max_limit[b]
            );
            assert!(
                r.mean_deferred[b] <= 0.5,
                "{name} seed {seed} backend {b}: mean deferred {:.3} > 0.5",
                r.mean_deferred[b]
            );
        }
        // Overloaded throughout: the fleet must run at (nearly) capacity.
        let goodput = r.served as f64 / (total_ms as f64 / 1000.0);
        assert!(
            goodput >= 0.95 * capacity(mean_service_s),
            "{name} seed {seed}: goodput {goodput:.2}/s below 95 % of capacity {:.2}/s",
            capacity(mean_service_s)
        );
    }
}

#[test]
fn poisson_at_twice_capacity_settles() {
    check_steady("2x", |_| 2.0, 2.0);
}

#[test]
fn poisson_at_three_times_capacity_settles() {
    check_steady("3x", |_| 3.0, 2.0);
}

#[test]
fn short_requests_at_twice_capacity_settle() {
    // 300 ms requests: the change gate sits on its 1 s floor, two scrapes.
    check_steady("2x short", |_| 2.0, 0.3);
}

#[test]
fn ten_times_spike_for_ten_seconds_keeps_limit_near_slots() {
    fn load(t: u64) -> f64 {
        if (60_000..70_000).contains(&t) {
            10.0
        } else {
            0.8
        }
    }
    for seed in [1, 2, 3] {
        let r = simulate(&Scenario {
            seed,
            load,
            mean_service_s: 2.0,
            total_ms: 120_000,
            warmup_ms: 30_000,
            window: (60_000, 90_000),
        });
        print(&format!("spike seed {seed}"), &r);
        for b in 0..BACKENDS {
            assert!(
                r.min_limit_in_window[b] >= SLOTS - 1,
                "spike seed {seed} backend {b}: limit fell to {}",
                r.min_limit_in_window[b]
            );
        }
    }
}
