//! The simulator's prompt cache, and what prefix affinity through the
//! gateway buys with it: multi-turn chats with long system prompts on two
//! 2-slot servers, measured as the share of later turns' prompt tokens
//! served from the cache (`timings.cache_n / (cache_n + prompt_n)`), three
//! ways in the same test: through the gateway with affinity (the default),
//! through the gateway least-busy (`routing.affinity = false`), and pinned
//! (each chat sent straight to one server). Shares are token counts, not
//! timings: they hold on a busy machine.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use sluice::sim::SimOptions;
use support::{post, sim, Harness, Reply};

const CHATS: usize = 16;
const TURNS: usize = 3;
/// Requests in flight at once: half the fleet's 4 slots. (With all 4 busy
/// the bounded-load slack sends some turns away from their home: measured
/// share 0.73-0.79 of pinned's 0.97.)
const CONCURRENCY: usize = 2;

/// Two slots like `-np 2`; fast enough that the test takes a second.
fn server() -> SimOptions {
    SimOptions {
        slots: 2,
        prompt_tps: 50_000.0,
        gen_tps: 2000.0,
        ..SimOptions::default()
    }
}

/// A distinct system prompt of about 600 tokens, or one shared by all.
fn system(chat: usize, shared: bool) -> String {
    let who = if shared {
        "every user".to_string()
    } else {
        format!("customer number {chat}")
    };
    format!("You are the assistant of {who}. ").repeat(70)
}

fn body(chat: usize, turn: usize, shared: bool) -> Value {
    let mut messages = vec![json!({"role": "system", "content": system(chat, shared)})];
    for t in 1..=turn {
        messages.push(json!({"role": "user", "content": format!("chat {chat}: question {t}?")}));
        if t < turn {
            messages.push(json!({"role": "assistant", "content": format!("answer {t}")}));
        }
    }
    json!({"messages": messages, "max_tokens": 8})
}

/// One answered turn: where it ran and what the cache saved.
struct Turn {
    chat: usize,
    turn: usize,
    backend: String,
    cache_n: u64,
    prompt_n: u64,
}

/// Runs every chat turn by turn (the chats of one turn in a shuffled
/// order, `CONCURRENCY` at a time); `base(chat)` is where a chat's request
/// goes.
fn run(h: &Harness, shared: bool, base: impl Fn(usize) -> String) -> Vec<Turn> {
    let mut rng = SmallRng::seed_from_u64(16);
    let mut out = Vec::new();
    for turn in 1..=TURNS {
        let mut order: Vec<usize> = (0..CHATS).collect();
        order.shuffle(&mut rng);
        for wave in order.chunks(CONCURRENCY) {
            let replies: Vec<(usize, Reply)> = h.rt.block_on(async {
                let sends = wave.iter().map(|&c| {
                    let url = base(c);
                    let client = h.client.clone();
                    async move {
                        let b = body(c, turn, shared);
                        (c, post(&client, &url, "/v1/chat/completions", b).await)
                    }
                });
                futures::future::join_all(sends).await
            });
            for (chat, r) in replies {
                assert_eq!(r.status, 200, "{}", r.body);
                let v: Value = serde_json::from_str(&r.body).unwrap();
                let t = &v["timings"];
                out.push(Turn {
                    chat,
                    turn,
                    backend: r.header("x-sluice-backend").unwrap_or("direct").to_string(),
                    cache_n: t["cache_n"].as_u64().unwrap(),
                    prompt_n: t["prompt_n"].as_u64().unwrap(),
                });
                assert_eq!(
                    v["usage"]["prompt_tokens"].as_u64().unwrap(),
                    t["cache_n"].as_u64().unwrap() + t["prompt_n"].as_u64().unwrap()
                );
            }
            // A chat's next turn comes after its user read the reply: the
            // next wave starts once the gateway has counted this one's ends
            // (a permit returns just after the client has the reply; sent
            // at once, the next turn finds its home a request busier than
            // it is and may leave it: a harness race, not the routing).
            // And once a scrape has seen the backends idle: a scrape taken
            // as the wave ended can count a request the server still held
            // and the gateway no longer did, which reads as another
            // client's request on the home for one scrape interval.
            h.wait_until("the wave's requests ended", Duration::from_secs(10), |h| {
                h.status()["backends"].as_array().is_some_and(|bs| {
                    bs.iter()
                        .all(|b| b["in_flight"] == 0 && b["requests_processing"] == 0)
                })
            });
        }
    }
    out
}

/// Share of later turns' prompt tokens that came from the cache.
fn later_share(turns: &[Turn]) -> f64 {
    let (cached, all) = turns
        .iter()
        .filter(|t| t.turn > 1)
        .fold((0u64, 0u64), |(c, a), t| {
            (c + t.cache_n, a + t.cache_n + t.prompt_n)
        });
    cached as f64 / all.max(1) as f64
}

fn homes(turns: &[Turn]) -> BTreeMap<usize, BTreeSet<String>> {
    let mut m: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for t in turns {
        m.entry(t.chat).or_default().insert(t.backend.clone());
    }
    m
}

/// The scenarios run one at a time: each keeps up to 8 requests in flight
/// through a gateway, and one scenario's load delays another's permit
/// returns (which is what sends a turn away from a momentarily full home).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn gateway(extra: &str) -> Harness {
    let h = Harness::start(vec![server(), server()], extra, &[]);
    h.wait_all_eligible();
    h
}

fn pinned(shared: bool) -> f64 {
    let h = gateway("");
    let urls: Vec<String> = h.sims.iter().map(|s| s.url()).collect();
    later_share(&run(&h, shared, |c| urls[c % urls.len()].clone()))
}

#[test]
fn affinity_keeps_the_cache_share_of_pinning_and_least_busy_loses_it() {
    let _serial = one_at_a_time();
    let pinned = pinned(false);
    let h = gateway("");
    let url = h.gw().proxy_url();
    let affine = run(&h, false, |_| url.clone());
    drop(h);
    let h = gateway("[routing]\naffinity = false\n");
    let url = h.gw().proxy_url();
    let busy = run(&h, false, |_| url.clone());
    let (a, b) = (later_share(&affine), later_share(&busy));
    println!(
        "{CHATS} chats x {TURNS} turns, ~600-token system prompts, 2 servers x 2 slots: \
         cache share of later turns pinned {pinned:.3}, affinity {a:.3}, least-busy {b:.3}"
    );
    assert!(
        pinned > 0.8,
        "pinned chats should reuse their prefix: {pinned:.3}"
    );
    assert!(
        a >= 0.9 * pinned,
        "affinity {a:.3} < 0.9 x pinned {pinned:.3}"
    );
    assert!(
        b <= 0.85 * pinned,
        "least-busy {b:.3} kept the cache like pinning {pinned:.3}"
    );
    // A request's permit returns when its end is counted, just after the
    // client has the reply: the next wave can find the home one request
    // busier for a moment and send a turn elsewhere. One such chat in 16 is
    // within what the share above allows; more means affinity is not held.
    let moved = homes(&affine).values().filter(|s| s.len() > 1).count();
    assert!(moved <= 1, "{moved} chats changed backend under affinity");
}

#[test]
fn a_shared_system_prompt_still_splits_the_chats_and_keeps_their_cache() {
    let _serial = one_at_a_time();
    let pinned = pinned(true);
    let h = gateway("");
    let url = h.gw().proxy_url();
    let turns = run(&h, true, |_| url.clone());
    let share = later_share(&turns);
    let per: BTreeMap<String, usize> =
        homes(&turns)
            .values()
            .flatten()
            .fold(BTreeMap::new(), |mut m, b| {
                *m.entry(b.clone()).or_default() += 1;
                m
            });
    println!("one shared system prompt: homes {per:?}, share {share:.3} (pinned {pinned:.3})");
    assert_eq!(
        per.len(),
        2,
        "one shared system prompt piled every chat on one backend"
    );
    assert!(
        share >= 0.9 * pinned,
        "affinity {share:.3} < 0.9 x pinned {pinned:.3}"
    );
}

/// How often a refused turn is sent again (after its `Retry-After`).
const RETRIES: usize = 5;

/// Every chat a conversation of its own, its turns in order as soon as the
/// last is answered, `in_flight` chats at once (a chat keeps its place from
/// its first turn to its last), as `loadtest/prefix-cache` drives the real
/// servers.
fn run_continuous(
    h: &Harness,
    chats: usize,
    in_flight: usize,
    base: impl Fn(usize) -> String,
) -> Vec<Turn> {
    let seats = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
    h.rt.block_on(async {
        let talks = (0..chats).map(|chat| {
            let (url, client, seats) = (base(chat), h.client.clone(), seats.clone());
            async move {
                let _seat = seats.acquire().await.unwrap();
                let mut out = Vec::new();
                for turn in 1..=TURNS {
                    let b = body(chat, turn, false);
                    // A refusal says when to come back, and the client does
                    // (as the OpenAI SDKs and `loadtest/prefix-cache` do).
                    let mut r = post(&client, &url, "/v1/chat/completions", &b).await;
                    for _ in 0..RETRIES {
                        if r.status != 503 {
                            break;
                        }
                        let after: u64 = match r.header("retry-after").map(str::parse) {
                            Some(Ok(s)) => s,
                            _ => panic!("a 503 without Retry-After: {}", r.body),
                        };
                        tokio::time::sleep(Duration::from_secs(after)).await;
                        r = post(&client, &url, "/v1/chat/completions", &b).await;
                    }
                    assert_eq!(r.status, 200, "{}", r.body);
                    let v: Value = serde_json::from_str(&r.body).unwrap();
                    let t = &v["timings"];
                    out.push(Turn {
                        chat,
                        turn,
                        backend: r.header("x-sluice-backend").unwrap_or("direct").to_string(),
                        cache_n: t["cache_n"].as_u64().unwrap(),
                        prompt_n: t["prompt_n"].as_u64().unwrap(),
                    });
                }
                out
            }
        });
        futures::future::join_all(talks)
            .await
            .into_iter()
            .flatten()
            .collect()
    })
}

/// Twice as many chats in flight as the fleet has slots (a chat's home is
/// often full when its next turn comes), with `queue` settings: the cache
/// share of later turns pinned, through affinity, and least-busy.
fn at_full_load(queue: &str) -> (f64, f64, f64) {
    const CHATS_8: usize = 16;
    const IN_FLIGHT: usize = 8;
    let h = gateway(queue);
    let urls: Vec<String> = h.sims.iter().map(|s| s.url()).collect();
    let pinned = later_share(&run_continuous(&h, CHATS_8, IN_FLIGHT, |c| {
        urls[c % urls.len()].clone()
    }));
    drop(h);
    let h = gateway(queue);
    let url = h.gw().proxy_url();
    let affine = later_share(&run_continuous(&h, CHATS_8, IN_FLIGHT, |_| url.clone()));
    drop(h);
    let h = gateway(&format!("{queue}[routing]\naffinity = false\n"));
    let url = h.gw().proxy_url();
    let busy = later_share(&run_continuous(&h, CHATS_8, IN_FLIGHT, |_| url.clone()));
    println!(
        "{CHATS_8} chats, {IN_FLIGHT} in flight on 2 x 2 slots ({queue:?}): cache share of \
         later turns pinned {pinned:.3}, affinity {affine:.3} ({:.2} of pinned), least-busy {busy:.3}",
        affine / pinned
    );
    assert!(
        pinned > 0.8,
        "pinned chats should reuse their prefix: {pinned:.3}"
    );
    assert!(
        affine >= 0.9 * pinned,
        "affinity {affine:.3} < 0.9 x pinned {pinned:.3}"
    );
    assert!(
        busy < affine,
        "least-busy {busy:.3} kept the cache as well as affinity {affine:.3}"
    );
    (pinned, affine, busy)
}

#[test]
fn at_full_load_chats_wait_for_their_home_rather_than_lose_their_cache() {
    let _serial = one_at_a_time();
    // Patient clients: a turn may wait for a slot.
    at_full_load("[queue]\nmax_wait = \"5s\"\n");
}

#[test]
fn at_full_load_the_default_budget_still_keeps_chats_at_home() {
    let _serial = one_at_a_time();
    // No deadline, no declared timeout, the auto budget: a turn's home is
    // judged by the ages of what it holds, and leaving would cost the
    // saturated fleet the history's processing again.
    at_full_load("");
}

// === the simulated server's cache on its own ===

#[test]
fn the_sim_reports_cached_tokens_and_a_restart_forgets_them() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = sluice::sim::spawn(server()).await.unwrap();
        let base = s.url();
        let ask = |turn: usize, extra: Value| {
            let mut b = body(0, turn, false);
            if let (Some(o), Some(e)) = (b.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            let base = base.clone();
            async move {
                let (st, _, text) = sim::post(&base, "/v1/chat/completions", &b.to_string()).await;
                assert_eq!(st, 200, "{text}");
                let v: Value = serde_json::from_str(&text).unwrap();
                let t = v["timings"].clone();
                (
                    t["cache_n"].as_u64().unwrap(),
                    t["prompt_n"].as_u64().unwrap(),
                )
            }
        };
        let (c1, p1) = ask(1, json!({})).await;
        assert_eq!(c1, 0, "an empty server has nothing cached");
        let (c2, p2) = ask(2, json!({})).await;
        assert!(
            c2 >= p1 - 3,
            "turn 2 reuses turn 1's prompt: cache_n {c2}, turn 1 {p1}"
        );
        assert!(p2 < 30, "turn 2 processes only its new tokens: {p2}");
        let (c3, p3) = ask(2, json!({"cache_prompt": false})).await;
        assert_eq!((c3, p3), (0, c2 + p2), "cache_prompt false reuses nothing");
        let (_, headers, metrics) = sim::get(&base, "/metrics").await;
        assert_eq!(
            sim::metric(&metrics, "llamacpp:prompt_tokens_cached_total"),
            c2 as f64
        );
        let processed = sim::metric(&metrics, "llamacpp:prompt_tokens_total");
        assert_eq!(
            processed,
            (p1 + p2 + p3) as f64,
            "processed excludes cached tokens"
        );
        let started: u64 = headers["process-start-time-unix"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        s.restart().await.unwrap();
        let (c4, _) = ask(2, json!({})).await;
        assert_eq!(c4, 0, "a restart empties the prompt cache");
        let (_, headers, _) = sim::get(&base, "/metrics").await;
        let restarted: u64 = headers["process-start-time-unix"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            restarted > started,
            "Process-Start-Time-Unix moves on restart"
        );
        s.shutdown();
    });
}
