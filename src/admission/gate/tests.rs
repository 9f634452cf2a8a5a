//! The gate on a paused clock: admission, queueing, displacement, time-outs,
//! clients leaving, permits handed to waiters, the dispatch margin, and one
//! `Retry-After` per reason. Fake backends are published observations; time
//! only moves by `tokio::time::advance`, so each test takes milliseconds.

use super::*;
use crate::backend::breaker::Outcome;
use crate::backend::load::LoadSnapshot;
use crate::backend::observed::{Health, Observed};
use crate::config::Config;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::time::advance;

const BUDGET: Duration = Duration::from_secs(5);

/// A fleet of `n` backends never scraped, and its gate. `extra` comes
/// first in the config.
fn build(n: usize, extra: &str) -> (Arc<Fleet>, Gate) {
    let mut text = String::from(extra);
    for i in 0..n {
        text += &format!(
            "\n[[backends]]\nname = \"b{i}\"\nurl = \"http://127.0.0.1:{}\"\n",
            1000 + i
        );
    }
    let config = Config::parse(&text).unwrap();
    let fleet = crate::gateway::fleet(&config, Arc::new(crate::telemetry::Metrics::new()));
    let gate = Gate::new(Arc::clone(&fleet), config.admission.gate.clone());
    gate.seed_rng(7);
    (fleet, gate)
}

/// Backends with these slot counts, published healthy and fresh.
fn setup(slots: &[u32], extra: &str) -> (Arc<Fleet>, Gate) {
    let (fleet, gate) = build(slots.len(), extra);
    for (b, &n) in fleet.backends().iter().zip(slots) {
        publish(b, n);
    }
    (fleet, gate)
}

fn publish(b: &crate::backend::state::Backend, slots: u32) {
    b.publish(Observed {
        health: Health::Ok,
        load: Some((LoadSnapshot::default(), Instant::now())),
        slots: Some(slots),
        metrics_latency: Some(Duration::from_millis(1)),
        ..Default::default()
    });
}

/// Fresh scrapes of every backend (time moved on; load ages).
fn refresh(fleet: &Fleet, slots: u32) {
    for b in fleet.backends().iter() {
        publish(b, slots);
    }
}

/// A sender of its own tenant, entitled to every priority (these tests
/// are about the queue; entitlements are tested below and in `identity`).
fn someone(_gate: &Gate, who: &str) -> Identity {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    who.hash(&mut h);
    Identity {
        name: who.into(),
        rate_key: who.into(),
        tenant: h.finish(),
        max_priority: Priority::Critical,
    }
}

fn ready(t: Result<Ticket, Reject>) -> Permit {
    match t {
        Ok(Ticket::Ready(p)) => p,
        Ok(Ticket::Queued { .. }) => panic!("queued, expected a permit"),
        Err(r) => panic!("refused: {r:?}"),
    }
}

fn queued(t: Result<Ticket, Reject>) -> (EntryId, oneshot::Receiver<Handoff>, Instant) {
    match t {
        Ok(Ticket::Queued { id, rx, deadline }) => (id, rx, deadline),
        Ok(Ticket::Ready(_)) => panic!("got a permit, expected to queue"),
        Err(r) => panic!("refused: {r:?}"),
    }
}

fn in_flight(fleet: &Fleet) -> u32 {
    fleet.backends().iter().map(|b| b.in_flight()).sum()
}

// === admit ===

#[tokio::test(start_paused = true)]
async fn admits_at_once_while_a_slot_is_free() {
    let (fleet, gate) = setup(&[2], "");
    let id = someone(&gate, "a");
    let now = Instant::now();
    let p1 = ready(gate.admit(&id, BUDGET, Priority::Normal, now));
    let p2 = ready(gate.admit(&id, BUDGET, Priority::Normal, now));
    assert_eq!(in_flight(&fleet), 2);
    assert_eq!(gate.queue_len(), 0);
    drop((p1, p2));
    assert_eq!(in_flight(&fleet), 0);
}

#[tokio::test(start_paused = true)]
async fn queues_when_every_slot_is_taken() {
    let (fleet, gate) = setup(&[1], "");
    let id = someone(&gate, "a");
    let now = Instant::now();
    let _held = ready(gate.admit(&id, BUDGET, Priority::Normal, now));
    let (_, mut rx, deadline) = queued(gate.admit(&id, BUDGET, Priority::Normal, now));
    assert_eq!(deadline, now + BUDGET);
    // The one count, as the wake-up logic, /status and the gauge read it.
    assert_eq!(gate.queue_len(), 1);
    assert_eq!(fleet.released.waiting(), 1);
    // No barging: with someone waiting, a newcomer queues behind it even
    // if a slot is free.
    gate.pump(Instant::now);
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(in_flight(&fleet), 1);
}

#[tokio::test(start_paused = true)]
async fn without_a_queue_a_busy_fleet_sheds_at_once() {
    let (_fleet, gate) = setup(&[1], "[queue]\ncapacity = 0\n");
    let id = someone(&gate, "a");
    let now = Instant::now();
    let _held = ready(gate.admit(&id, BUDGET, Priority::Normal, now));
    let r = gate
        .admit(&id, BUDGET, Priority::Normal, now)
        .err()
        .unwrap();
    assert_eq!(
        r,
        Reject::Saturated {
            retry_after: Hint::secs(1)
        }
    );
}

// === the queue ===

#[tokio::test(start_paused = true)]
async fn a_returned_permit_goes_to_the_waiter() {
    let (fleet, gate) = setup(&[1], "");
    let id = someone(&gate, "a");
    let now = Instant::now();
    let held = ready(gate.admit(&id, BUDGET, Priority::Normal, now));
    let (_, mut rx, _) = queued(gate.admit(&id, BUDGET, Priority::Normal, now));
    drop(held);
    assert_eq!(in_flight(&fleet), 0);
    advance(Duration::from_millis(30)).await;
    gate.pump(Instant::now);
    let permit = rx.try_recv().unwrap().unwrap().permit;
    assert_eq!(permit.backend().id, fleet.backends()[0].id);
    assert_eq!(in_flight(&fleet), 1);
    assert_eq!(gate.queue_len(), 0);
    assert_eq!(fleet.released.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_higher_priority_arrival_displaces_a_lower_one_from_a_full_queue() {
    let (_fleet, gate) = setup(&[1], "[queue]\ncapacity = 1\n");
    let id = someone(&gate, "a");
    let now = Instant::now();
    let _held = ready(gate.admit(&id, BUDGET, Priority::Normal, now));
    let (_, mut low, _) = queued(gate.admit(&id, BUDGET, Priority::Sheddable, now));
    // Full, and nothing below Normal... except the sheddable one.
    let (_, mut high, _) = queued(gate.admit(&id, BUDGET, Priority::Critical, now));
    assert_eq!(gate.queue_len(), 1);
    match low.try_recv().unwrap() {
        Err(Reject::Displaced { retry_after }) => assert!(retry_after.millis() >= 1),
        other => panic!("expected Displaced, got {other:?}"),
    }
    assert_eq!(high.try_recv().unwrap_err(), TryRecvError::Empty);
    // A full queue of Critical entries: a Normal arrival is refused.
    let r = gate
        .admit(&id, BUDGET, Priority::Normal, now)
        .err()
        .unwrap();
    assert_eq!(r.reason(), "queue_full");
}

#[tokio::test(start_paused = true)]
async fn an_entry_whose_budget_runs_out_is_answered_queue_timeout() {
    let (fleet, gate) = setup(&[1], "");
    let id = someone(&gate, "a");
    let now = Instant::now();
    let _held = ready(gate.admit(&id, BUDGET, Priority::Normal, now));
    let (_, mut rx, deadline) = queued(gate.admit(&id, BUDGET, Priority::Normal, now));
    advance(BUDGET - DISPATCH_MARGIN - Duration::from_millis(1)).await;
    gate.pump(Instant::now);
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    advance(Duration::from_millis(1)).await;
    assert!(Instant::now() < deadline);
    gate.pump(Instant::now);
    match rx.try_recv().unwrap() {
        Err(Reject::QueueTimeout { retry_after }) => {
            // The same value the proxy's own timeout answer carries.
            assert_eq!(
                Reject::QueueTimeout { retry_after },
                gate.timed_out(Instant::now())
            );
        }
        other => panic!("expected QueueTimeout, got {other:?}"),
    }
    assert_eq!(gate.queue_len(), 0);
    assert_eq!(fleet.released.waiting(), 0);
}

/// Issue 13: a burst on a fleet that had only run one request at a time.
/// Its auto budget (four durations) came from requests that ran alone;
/// the first full batch to end takes 2.6× as long, and the entry queued
/// with the old budget waits on by the new one. One that named its budget
/// keeps it.
#[tokio::test(start_paused = true)]
async fn an_auto_budget_is_raised_by_a_full_batch_ending() {
    let (fleet, gate) = setup(&[2], "");
    let id = someone(&gate, "a");
    let b = &fleet.backends()[0];
    b.observe_duration(Duration::from_millis(150));
    let auto = gate.default_wait();
    assert_eq!(auto, Duration::from_millis(600));
    let now = Instant::now();
    let call = |default_wait| Call {
        wait: auto,
        client: ClientHeaders::default(),
        default_wait,
    };
    let held = [
        ready(gate.admit_call(&id, call(true), Priority::Normal, Wants::default(), now)),
        ready(gate.admit_call(&id, call(true), Priority::Normal, Wants::default(), now)),
    ];
    let (waiting, mut rx, deadline) =
        queued(gate.admit_call(&id, call(true), Priority::Normal, Wants::default(), now));
    let (_, mut named, _) =
        queued(gate.admit_call(&id, call(false), Priority::Normal, Wants::default(), now));
    assert_eq!(deadline, now + auto);
    // The batch of two ends after 390 ms, both slots taken.
    advance(Duration::from_millis(390)).await;
    b.observe_duration(Duration::from_millis(390));
    assert_eq!(gate.default_wait(), Duration::from_millis(1560));
    advance(auto - Duration::from_millis(390)).await;
    gate.pump(Instant::now);
    assert_eq!(
        rx.try_recv().unwrap_err(),
        TryRecvError::Empty,
        "still waiting"
    );
    assert!(matches!(
        named.try_recv(),
        Ok(Err(Reject::QueueTimeout { .. }))
    ));
    let later = gate.queued_deadline(waiting, Instant::now()).unwrap();
    assert_eq!(later, now + Duration::from_millis(1560));
    // A slot frees within the new budget: served, told the new deadline.
    drop(held);
    gate.pump(Instant::now);
    let given = rx.try_recv().unwrap().unwrap();
    assert_eq!(given.deadline, later);
    assert_eq!(in_flight(&fleet), 1);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_is_never_handed_a_permit() {
    let (fleet, gate) = setup(&[1], "");
    let a = someone(&gate, "a");
    let now = Instant::now();
    let held = ready(gate.admit(&a, BUDGET, Priority::Normal, now));
    let (entry, mut rx, _) = queued(gate.admit(&a, BUDGET, Priority::Normal, now));
    gate.cancel(entry);
    assert_eq!(gate.queue_len(), 0);
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Closed);
    drop(held);
    gate.pump(Instant::now);
    assert_eq!(in_flight(&fleet), 0, "a permit went to a cancelled entry");
    // The slot is there for the next request.
    let _p = ready(gate.admit(&a, BUDGET, Priority::Normal, Instant::now()));
}

// === the dispatch margin ===

#[tokio::test(start_paused = true)]
async fn no_dispatch_within_the_margin_of_a_deadline() {
    let (fleet, gate) = setup(&[1], "");
    let id = someone(&gate, "a");
    let now = Instant::now();
    // At once: a budget of at most the margin is refused, however idle.
    let r = gate.admit(&id, DISPATCH_MARGIN, Priority::Normal, now);
    assert_eq!(r.err().unwrap().reason(), "deadline_unmeetable");
    assert_eq!(
        gate.admit(&id, Duration::ZERO, Priority::Critical, now)
            .err()
            .unwrap()
            .reason(),
        "deadline_unmeetable"
    );
    assert_eq!(in_flight(&fleet), 0);
    let held = ready(gate.admit(
        &id,
        DISPATCH_MARGIN + Duration::from_millis(1),
        Priority::Normal,
        now,
    ));
    // From the queue: a slot frees exactly at deadline - margin.
    let wait = Duration::from_secs(2);
    let (_, mut rx, deadline) = queued(gate.admit(&id, wait, Priority::Normal, now));
    advance(wait - DISPATCH_MARGIN).await;
    refresh(&fleet, 1);
    drop(held);
    gate.pump(Instant::now);
    assert!(Instant::now() < deadline);
    match rx.try_recv().unwrap() {
        Err(Reject::QueueTimeout { .. }) => {}
        other => panic!("expected QueueTimeout, got {other:?}"),
    }
    assert_eq!(in_flight(&fleet), 0);
}

#[tokio::test(start_paused = true)]
async fn a_budget_the_queue_cannot_meet_is_refused_at_once() {
    let (_fleet, gate) = setup(&[1], "");
    let id = someone(&gate, "a");
    let now = Instant::now();
    let _held = ready(gate.admit(&id, BUDGET, Priority::Normal, now));
    // The drain prior is one completion a second: 1 s + margin is needed.
    let r = gate.admit(&id, Duration::from_secs(1), Priority::Normal, now);
    assert_eq!(
        r.err().unwrap(),
        Reject::DeadlineUnmeetable {
            retry_after: Hint::secs(1)
        }
    );
    let (_, _rx, _) = queued(gate.admit(
        &id,
        Duration::from_secs(1) + DISPATCH_MARGIN + Duration::from_millis(1),
        Priority::Normal,
        now,
    ));
}

// === one Retry-After per reason ===

#[tokio::test(start_paused = true)]
async fn busy_carries_one_value_on_every_path() {
    let (fleet, gate) = setup(&[1, 1], "[queue]\ncapacity = 0\n");
    let id = someone(&gate, "a");
    let _a = ready(gate.admit(&id, BUDGET, Priority::Normal, Instant::now()));
    let _b = ready(gate.admit(&id, BUDGET, Priority::Normal, Instant::now()));
    // The measured rate has decayed to almost nothing (one completion a
    // minute ago); the fleet's figures say 2 slots per 3.5 s, so one frees
    // in 1.75 s.
    gate.completed(Instant::now());
    advance(Duration::from_secs(60)).await;
    refresh(&fleet, 1);
    for b in fleet.backends().iter() {
        b.observe_duration(Duration::from_millis(3500));
    }
    let now = Instant::now();
    let at_admission = gate
        .admit(&id, BUDGET, Priority::Normal, now)
        .err()
        .unwrap();
    // Precisely: 1.75 s, sent as retry-after-ms 1750 and Retry-After 2.
    assert_eq!(
        at_admission,
        Reject::Saturated {
            retry_after: Hint::from_millis(1750, true)
        }
    );
    assert_eq!(at_admission.retry_after(), Some(2));
    let on_retry = gate.readmit(&[], now).err().unwrap();
    assert_eq!(on_retry, at_admission);
    assert_eq!(gate.retry_after_now(now).secs_rounded_up(), 2);
    assert_eq!(gate.refusal(Unavailable::Busy, now), at_admission);
}

#[tokio::test(start_paused = true)]
async fn busy_queue_refusals_share_the_drain_estimate() {
    let (_fleet, gate) = setup(&[1], "[queue]\ncapacity = 2\n");
    let id = someone(&gate, "a");
    let now = Instant::now();
    let _held = ready(gate.admit(&id, BUDGET, Priority::Normal, now));
    let (_, _r1, _) = queued(gate.admit(&id, BUDGET, Priority::Normal, now));
    let (_, _r2, _) = queued(gate.admit(&id, BUDGET, Priority::Normal, now));
    // Two waiting at the prior's one a second: 2 s, whatever the reason.
    let full = gate
        .admit(&id, BUDGET, Priority::Normal, now)
        .err()
        .unwrap();
    assert_eq!(
        full,
        Reject::QueueFull {
            retry_after: Hint::secs(2)
        }
    );
    let short = gate.admit(&id, Duration::from_millis(500), Priority::Normal, now);
    assert_eq!(
        short.err().unwrap(),
        Reject::DeadlineUnmeetable {
            retry_after: Hint::secs(2)
        }
    );
    assert_eq!(
        gate.timed_out(now),
        Reject::QueueTimeout {
            retry_after: Hint::secs(2)
        }
    );
    assert_eq!(
        gate.refusal(Unavailable::Busy, now),
        Reject::Saturated {
            retry_after: Hint::secs(2)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn unhealthy_carries_one_value_on_every_path() {
    // Never scraped: not healthy, no breaker open. One stale window.
    let (_fleet, gate) = build(1, "[scrape]\nstale_after = \"2500ms\"\n");
    let id = someone(&gate, "a");
    let now = Instant::now();
    let want = Reject::NoHealthyBackend {
        retry_after: Hint::from_millis(2500, true),
    };
    assert_eq!(want.retry_after(), Some(3));
    assert_eq!(
        gate.admit(&id, BUDGET, Priority::Normal, now)
            .err()
            .unwrap(),
        want
    );
    assert_eq!(gate.readmit(&[], now).err().unwrap(), want);
    assert_eq!(gate.passthrough(now).err().unwrap(), want);
    assert_eq!(gate.retry_after_now(now).secs_rounded_up(), 3);
}

#[tokio::test(start_paused = true)]
async fn open_breakers_answer_with_the_time_to_the_first_probe() {
    let (fleet, gate) = setup(&[1], "");
    let id = someone(&gate, "a");
    let now = Instant::now();
    // A refused connection opens the breaker for 2 s ± 20 %.
    fleet.report(&fleet.backends()[0], Outcome::ConnectError, None, now);
    let remaining = fleet.all_open_remaining(now).expect("breaker open");
    let want = Reject::NoHealthyBackend {
        retry_after: RetryAfter::default().hint(remaining),
    };
    assert!((2..=3).contains(&want.retry_after().unwrap()));
    assert_eq!(
        gate.admit(&id, BUDGET, Priority::Normal, now)
            .err()
            .unwrap(),
        want
    );
    assert_eq!(gate.readmit(&[], now).err().unwrap(), want);
    assert_eq!(gate.passthrough(now).err().unwrap(), want);
    assert_eq!(gate.retry_after_now(now), want.hint().unwrap());
    // Time passes: the value follows the breaker, on every path alike.
    advance(Duration::from_millis(1500)).await;
    let now = Instant::now();
    refresh(&fleet, 1);
    let later = gate.passthrough(now).err().unwrap();
    assert_eq!(
        gate.admit(&id, BUDGET, Priority::Normal, now)
            .err()
            .unwrap(),
        later
    );
    assert!(later.retry_after() <= want.retry_after());
}

#[tokio::test(start_paused = true)]
async fn rate_limit_and_budget_refusals_use_the_same_rule() {
    let (_fleet, gate) = setup(
        &[8],
        "[rate_limit]\nenabled = true\nrequests_per_minute = 1\nburst = 1\n\
         [token_budget]\nenabled = true\ntokens_per_minute = 120\nburst = 120\n",
    );
    let id = someone(&gate, "a");
    let now = Instant::now();
    gate.rate_check(&id, now).unwrap();
    match gate.rate_check(&id, now).unwrap_err() {
        // One request a minute: 60 s to the next, at the cap.
        Reject::RateLimited { retry_after, .. } => assert_eq!(retry_after.secs_rounded_up(), 60),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // The limit follows the time given: 59.5 s later, half a second.
    let later = now + Duration::from_millis(59_500);
    match gate.rate_check(&id, later).unwrap_err() {
        Reject::RateLimited { retry_after, .. } => assert_eq!(retry_after.secs_rounded_up(), 1),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    gate.rate_check(&id, now + Duration::from_secs(60)).unwrap();
    assert_eq!(gate.charge_tokens(&id, 120, now).unwrap(), Some(120));
    match gate.charge_tokens(&id, 10, now).unwrap_err() {
        // 10 tokens at 2 a second: 5 s.
        Reject::TokenBudget { retry_after, .. } => assert_eq!(retry_after.secs_rounded_up(), 5),
        other => panic!("expected TokenBudget, got {other:?}"),
    }
}

// === entitlements, bounded identities, reconfiguration ===

const KEYS: &str =
    "[[api_keys]]\nname = \"ops\"\nkey = \"sk-ops-0123456789\"\nmax_priority = \"critical\"\n\
                    [[api_keys]]\nname = \"team\"\nkey = \"sk-team-0123456789\"\n";

fn from(ip: &str) -> Option<IpAddr> {
    Some(ip.parse().unwrap())
}

#[tokio::test(start_paused = true)]
async fn an_anonymous_critical_ask_displaces_no_one_a_critical_key_does() {
    let (fleet, gate) = setup(
        &[1],
        &format!("[queue]\ncapacity = 2\ntenant_share = 1.0\n{KEYS}"),
    );
    let client = gate.identify(None, from("192.0.2.1")).unwrap();
    let now = Instant::now();
    let _held = ready(gate.admit(&client, BUDGET, Priority::Normal, now));
    let (_, mut first, _) = queued(gate.admit(&client, BUDGET, Priority::Normal, now));
    let (_, mut second, _) = queued(gate.admit(&client, BUDGET, Priority::Normal, now));
    assert_eq!(gate.queue_len(), 2);
    // Anonymous, from another address, asking for critical: lowered to
    // normal, so it cannot push anyone out of the full queue.
    let anon = gate
        .identify(Some("sk-guessed"), from("192.0.2.2"))
        .unwrap();
    let r = gate
        .admit(&anon, BUDGET, Priority::Critical, now)
        .err()
        .unwrap();
    assert_eq!(r.reason(), "queue_full");
    assert_eq!(first.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(second.try_recv().unwrap_err(), TryRecvError::Empty);
    let m = fleet.metrics.encode();
    assert!(m.contains("sluice_priority_lowered_total 1"), "{m}");
    // A key entitled to critical displaces the newest normal entry.
    let ops = gate
        .identify(Some("sk-ops-0123456789"), from("192.0.2.3"))
        .unwrap();
    let (_, mut high, _) = queued(gate.admit(&ops, BUDGET, Priority::Critical, now));
    assert!(matches!(
        second.try_recv(),
        Ok(Err(Reject::Displaced { .. }))
    ));
    assert_eq!(first.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(high.try_recv().unwrap_err(), TryRecvError::Empty);
    // A normal key asking critical is lowered too.
    let team = gate.identify(Some("sk-team-0123456789"), None).unwrap();
    assert_eq!(team.entitled(Priority::Critical), (Priority::Normal, true));
}

#[tokio::test(start_paused = true)]
async fn rotating_tokens_and_addresses_never_grow_the_per_key_state_past_its_cap() {
    let (fleet, gate) = setup(
        &[8],
        "[rate_limit]\nenabled = true\nrequests_per_minute = 600\nburst = 60\nmax_tracked_keys = 1000\n\
         [token_budget]\nenabled = true\nmax_tracked_keys = 1000\n",
    );
    let now = Instant::now();
    // 20,000 random tokens from one address: one identity, one key.
    for i in 0..20_000u32 {
        let token = format!("sk-{:016x}", rand::random::<u64>() ^ u64::from(i));
        let id = gate.identify(Some(&token), from("198.51.100.7")).unwrap();
        assert_eq!(&*id.name, "anonymous");
        assert_eq!(&*id.rate_key, "ip:198.51.100.7");
        let _ = gate.rate_check(&id, now);
    }
    assert_eq!(gate.tracked_keys().0, 1);
    // 20,000 addresses: at most the cap, plus the shared overflow bucket.
    for i in 0..20_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
        let id = gate.identify(None, Some(IpAddr::V4(ip))).unwrap();
        let _ = gate.rate_check(&id, now);
        let _ = gate.charge_tokens(&id, 100, now);
    }
    let (rate, budget) = gate.tracked_keys();
    assert!(
        rate <= 1001 && budget <= 1001,
        "rate {rate}, budget {budget}"
    );
    let m = fleet.metrics.encode();
    assert!(
        m.contains("sluice_key_store_overflow_total{store=\"rate_limit\"}"),
        "{m}"
    );
    assert!(
        !m.contains("sluice_key_store_overflow_total{store=\"rate_limit\"} 0"),
        "{m}"
    );
    // Idle keys go at the periodic sweep.
    gate.evict_idle_keys(now + Duration::from_secs(120));
    assert_eq!(gate.tracked_keys(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn reconfigure_swaps_keys_and_limits_and_leaves_the_queue_alone() {
    let a = "[[api_keys]]\nname = \"a\"\nkey = \"sk-a-0123456789\"\n[auth]\nrequire_key = true\n\
             [rate_limit]\nenabled = true\nrequests_per_minute = 60\nburst = 1\n";
    let (_fleet, gate) = setup(&[1], a);
    let now = Instant::now();
    let id_a = gate.identify(Some("sk-a-0123456789"), None).unwrap();
    gate.rate_check(&id_a, now).unwrap();
    let _held = ready(gate.admit(&id_a, BUDGET, Priority::Normal, now));
    let (_, mut waiting, _) = queued(gate.admit(&id_a, BUDGET, Priority::Normal, now));
    // Same limits, key b instead of a.
    let b = Config::parse(
        "[[api_keys]]\nname = \"b\"\nkey = \"sk-b-0123456789\"\n[auth]\nrequire_key = true\n\
         [rate_limit]\nenabled = true\nrequests_per_minute = 60\nburst = 1\n\
         [[backends]]\nname = \"b0\"\nurl = \"http://127.0.0.1:1000\"\n",
    )
    .unwrap();
    gate.reconfigure(&b.admission.gate);
    assert_eq!(
        gate.identify(Some("sk-a-0123456789"), None),
        Err(Reject::Unauthorized)
    );
    let id_b = gate.identify(Some("sk-b-0123456789"), None).unwrap();
    assert_eq!(&*id_b.name, "b");
    assert_eq!(gate.key_names(), vec!["b".to_string()]);
    // The queued request of a is untouched; unchanged limits kept their state.
    assert_eq!(waiting.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(gate.queue_len(), 1);
    assert!(gate.rate_check(&id_a, now).is_err(), "rate state kept");
    // Auth off, limits off: anyone, any rate.
    let open =
        Config::parse("[[backends]]\nname = \"b0\"\nurl = \"http://127.0.0.1:1000\"\n").unwrap();
    gate.reconfigure(&open.admission.gate);
    let anon = gate.identify(Some("sk-a-0123456789"), None).unwrap();
    assert_eq!(&*anon.name, "anonymous");
    for _ in 0..10 {
        gate.rate_check(&anon, now).unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_changes_budgets_keeps_what_each_key_spent() {
    let budget = |tpm: u32| {
        format!("[token_budget]\nenabled = true\ntokens_per_minute = {tpm}\nburst = 1000\n")
    };
    let (_fleet, gate) = setup(&[1], &budget(600));
    let now = Instant::now();
    let id = gate.identify(None, from("192.0.2.9")).unwrap();
    assert_eq!(gate.charge_tokens(&id, 900, now).unwrap(), Some(900));
    let text = format!(
        "{}[[backends]]\nname = \"b0\"\nurl = \"http://127.0.0.1:1000\"\n",
        budget(1200)
    );
    gate.reconfigure(&Config::parse(&text).unwrap().admission.gate);
    // 100 tokens left of the 1000: a charge of 500 waits (400 at 20/s).
    match gate.charge_tokens(&id, 500, now).unwrap_err() {
        Reject::TokenBudget {
            retry_after, limit, ..
        } => {
            assert_eq!((retry_after.secs_rounded_up(), limit), (20, 1200));
        }
        other => panic!("expected TokenBudget, got {other:?}"),
    }
}

mod client;
mod precise;
