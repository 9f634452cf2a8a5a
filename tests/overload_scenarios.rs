//! The overload scenarios of issue 4, end to end: the real gateway in front
//! of four simulated llama-servers × 4 slots, driven by open-loop Poisson
//! load (seeded), on loopback.
//!
//! Time is compressed: a request generates 100..300 tokens (uniform, drawn
//! by the simulator) at 500 tokens/s, so it takes 200..600 ms, 400 ms on
//! average; scrapes run every 100 ms; a scenario lasts a few seconds. The
//! simulated slots are independent (linear throughput curve): a request
//! takes as long on a full backend as on an idle one, so every latency above
//! the unloaded figure is the gateway's doing (queueing), not batching.
//! Lengths vary so that completions do not fall into lock-step.
//!
//! Capacity is what the fleet completes per second with every slot busy:
//! `BACKENDS × SLOTS / mean service time` = 40 requests/s. Request rates are
//! kept low enough (at most 400/s, in the spike) that a debug build on a
//! shared 2-core machine keeps up.
//!
//! The scenarios run one at a time (they measure latency);
//! `cargo test --test overload_scenarios -- --nocapture` prints the figures
//! of each. Bounds are the where the figure is a ratio measured in
//! the same run. The time to reject is bounded by 25 ms (p99), or, on a
//! machine so busy that the gateway cannot answer anything that fast, by
//! twice the p99 answer time of requests it refuses before admission,
//! measured alongside (`load::reject_probe`). When even those take over 50 ms the
//! machine is too busy for timings to describe the gateway.
//!
//! Each scenario therefore checks in two parts:
//!
//! 1. **Invariants, on every machine, always, first**: no request reaches a
//!    backend after its deadline (on a busy machine: none later than the
//!    machine takes to carry an answer), every 503/429 carries `Retry-After`, no
//!    client error (where the scenario promises none), limits, shares, no
//!    requests queued inside a backend.
//! 2. **Timing bounds** (goodput, latency ratios, time to reject, how soon
//!    something happened), collected in a [`Timing`]: asserted on a quiet
//!    machine; on a busy one (`BUSY_FLOOR`) relaxed, and the test prints
//!    which bounds it relaxed and the figures that missed them.

mod support;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice::sim::{Fault, GenLength, SimCounters, SimOptions, ThroughputCurve};
use support::load::{self, latencies, ms, percentile, Request, Sample, Snap, Table};
use support::Harness;

const BACKENDS: usize = 4;
const SLOTS: usize = 4;
const GEN_TPS: f64 = 500.0;
const GEN_MIN: u32 = 100;
const GEN_MAX: u32 = 300;
/// `/status` poll period.
const POLL: Duration = Duration::from_millis(50);
/// The time-to-reject target is 5 ms (p99); on a shared 2-core
/// machine running a debug build this is the honest bound.
const REJECT_BOUND: Duration = Duration::from_millis(25);
/// How many times the gateway's fastest answer at the time a shed may take.
const REJECT_OVER_FLOOR: u32 = 2;
/// When the gateway needs longer than this (p99) to answer a request it
/// refuses before admission, the machine is too busy for timings to say
/// anything about the gateway: the timing-bound checks (goodput, latency
/// ratios, time to reject, how fast something happened) are reported but
/// not asserted. Measured floors: 2-10 ms alone, up to ~25 ms next to other
/// test binaries, 100-600 ms while release builds run alongside.
const BUSY_FLOOR: Duration = Duration::from_millis(50);

static SERIAL: Mutex<()> = Mutex::new(());

/// One scenario at a time; a failed one must not block the rest.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
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

/// Mean service time of one request, on an idle or a busy slot alike.
fn service() -> Duration {
    Duration::from_secs_f64(f64::from(GEN_MIN + GEN_MAX) / 2.0 / GEN_TPS)
}

/// Completions per second with every slot of the fleet busy.
fn capacity() -> f64 {
    (BACKENDS * SLOTS) as f64 / service().as_secs_f64()
}

fn start(extra: &str) -> Harness {
    start_with(extra, (0..BACKENDS as u64).map(sim).collect())
}

fn start_with(extra: &str, sims: Vec<SimOptions>) -> Harness {
    let h = Harness::start(sims, extra, &[]);
    h.wait_all_eligible();
    h
}

fn req(wait: Duration) -> Request {
    Request::completion(None).with_deadline(wait)
}

/// What one load run produced.
struct Run {
    samples: Vec<Sample>,
    snaps: Vec<Snap>,
    elapsed: Duration,
    /// Answer times of requests refused before admission (`load::reject_probe`).
    floor: Vec<Duration>,
    before: Vec<SimCounters>,
    after: Vec<SimCounters>,
    /// CPU time the whole test process used during the run.
    cpu: Duration,
}

impl Run {
    fn sent_in(&self, from: Duration, to: Duration) -> Vec<Sample> {
        self.samples
            .iter()
            .filter(|s| s.sent_in(from, to))
            .cloned()
            .collect()
    }

    /// Completions per second answered in `[from, to)`.
    fn served_rate(&self, from: Duration, to: Duration) -> f64 {
        let n = self
            .samples
            .iter()
            .filter(|s| s.ok() && s.done_in(from, to))
            .count();
        n as f64 / (to - from).as_secs_f64()
    }

    fn late(&self) -> u64 {
        self.after.iter().map(|c| c.late_arrivals).sum::<u64>()
            - self.before.iter().map(|c| c.late_arrivals).sum::<u64>()
    }

    /// Cores this process kept busy (gateway, simulators and clients), and
    /// the gateway's answer time before admission (how busy the machine was).
    fn cores(&self) -> String {
        format!(
            "{:.2} cores; 400 before admission p99 {}",
            self.cpu.as_secs_f64() / self.elapsed.as_secs_f64(),
            ms(self.floor_p99())
        )
    }

    /// p99 answer time of requests refused before admission.
    fn floor_p99(&self) -> Duration {
        percentile(&self.floor, 0.99)
    }

    fn errors(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.error()).collect()
    }

    /// (rejections with Retry-After, rejections)
    fn retry_after(&self) -> (usize, usize) {
        let shed: Vec<_> = self.samples.iter().filter(|s| s.shed()).collect();
        (shed.iter().filter(|s| s.retry_after).count(), shed.len())
    }

    /// Min and max of backend `i`'s limit over the readings in `[from, to)`.
    fn limit_range(&self, i: usize, from: Duration, to: Duration) -> (u64, u64) {
        let v: Vec<u64> = self
            .snaps
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .filter_map(|s| s.backends.get(i).and_then(|b| b.limit))
            .collect();
        (
            v.iter().copied().min().unwrap_or(0),
            v.iter().copied().max().unwrap_or(0),
        )
    }

    /// The timing bounds of this run: strict when timings describe the
    /// gateway (see `BUSY_FLOOR`), relaxed when the machine is too busy.
    fn timing(&self) -> Timing {
        Timing {
            busy: self.busy(),
            relaxed: Vec::new(),
        }
    }

    /// `Some(p99 answer time before admission)` when the machine is too
    /// busy for timings to describe the gateway (see `BUSY_FLOOR`).
    fn busy(&self) -> Option<Duration> {
        let p99 = self.floor_p99();
        (p99 > BUSY_FLOOR).then_some(p99)
    }

    /// Invariants of every run, on every machine: every 503/429 says when
    /// to retry, and no request reached a backend after its deadline.
    ///
    /// The gateway checks the deadline just before it sends a request on;
    /// a machine so busy that carrying the request over loopback takes
    /// longer than the gateway's margin makes it arrive late without the
    /// gateway's doing. So on a busy machine (and only there) a request may
    /// arrive late by no more than the slowest answer the gateway gave, in
    /// the same run, to a request it refuses before admission; the test
    /// says so when that happens.
    fn assert_invariants(&self) {
        let (ra, n) = self.retry_after();
        assert_eq!(ra, n, "a 503/429 without Retry-After");
        let late = self.late();
        let latest = self
            .after
            .iter()
            .map(|c| c.max_late)
            .max()
            .unwrap_or_default();
        let slack = match self.busy() {
            Some(_) => percentile(&self.floor, 1.0),
            None => Duration::ZERO,
        };
        if late > 0 && slack > Duration::ZERO {
            eprintln!(
                "  !! machine too busy: {late} requests reached a backend after their \
                 deadline, the latest by {latest:?}; allowed up to {} (the slowest 400 \
                 before admission)",
                ms(slack)
            );
        }
        assert!(
            late == 0 || latest <= slack,
            "{late} requests reached a backend after their deadline, the latest by \
             {latest:?} (the gateway's 400 before admission: p99 {})",
            ms(self.floor_p99())
        );
    }

    /// [`Run::assert_invariants`], and no client saw an error.
    fn assert_clean(&self) {
        let errs = self.errors();
        assert!(
            errs.is_empty(),
            "{} client errors, first: {:?}",
            errs.len(),
            errs[0]
        );
        self.assert_invariants();
    }
}

/// The timing bounds of one run. Each [`Timing::bound`] is checked at once;
/// on a busy machine a missed bound is recorded instead of failing, and
/// [`Timing::finish`] prints what was relaxed.
#[must_use = "call finish() to report relaxed bounds"]
struct Timing {
    /// `Some(p99 answer time before admission)` when the machine is too busy
    /// for timings to describe the gateway.
    busy: Option<Duration>,
    relaxed: Vec<String>,
}

impl Timing {
    /// Asserts `holds` on a quiet machine; records `what` on a busy one.
    fn bound(&mut self, holds: bool, what: impl FnOnce() -> String) {
        if holds {
            return;
        }
        let what = what();
        assert!(self.busy.is_some(), "{what}");
        self.relaxed.push(what);
    }

    /// Prints whether (and which) timing bounds were relaxed.
    fn finish(self) {
        let Some(p99) = self.busy else { return };
        eprintln!(
            "  !! machine too busy: the gateway took {} (p99) to answer a 400; \
             timing bounds relaxed (reported, not asserted): {} missed",
            ms(p99),
            self.relaxed.len()
        );
        for r in &self.relaxed {
            eprintln!("  !! relaxed: {r}");
        }
    }
}

/// Runs `phases` of Poisson load in the background while `during` runs on
/// this thread (fault injection) with the run's time origin.
fn run_load(
    h: &Harness,
    r: Request,
    phases: Vec<(Duration, f64)>,
    seed: u64,
    during: impl FnOnce(&Harness, Instant),
) -> Run {
    let before = counters(h);
    let cpu0 = load::process_cpu();
    let start = Instant::now();
    let floor = load::reject_probe(
        &h.rt,
        h.client.clone(),
        h.gw().proxy_url(),
        Duration::from_millis(20),
    );
    let poller = load::status_poller(&h.rt, h.client.clone(), h.gw().admin_url(), POLL, start);
    let task = h.rt.spawn(load::open_loop(
        h.client.clone(),
        h.gw().proxy_url(),
        r,
        phases,
        seed,
        start,
    ));
    during(h, start);
    let samples = h.rt.block_on(task).expect("load task");
    let elapsed = start.elapsed();
    let snaps = poller.stop(&h.rt);
    let floor = floor.stop(&h.rt);
    Run {
        samples,
        snaps,
        elapsed,
        floor,
        before,
        after: counters(h),
        cpu: load::process_cpu().saturating_sub(cpu0),
    }
}

/// Sleeps until `at` after `start`: the scenario's script (a fault switched
/// on or off at a fixed moment of the load), not a wait for a condition.
fn sleep_until(start: Instant, at: Duration) {
    let now = start.elapsed();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// Unloaded reference: eight clients one request after the other (half the
/// slots busy, nothing ever waits). Returns p50, p99 and the sample count.
fn unloaded(h: &Harness) -> (Duration, Duration, usize) {
    let s = h.rt.block_on(load::closed_loop(
        h.client.clone(),
        h.gw().proxy_url(),
        Request::completion(None),
        8,
        Duration::from_secs(2),
    ));
    assert!(s.iter().all(Sample::ok), "unloaded run had failures");
    let l = latencies(&s, |_| true);
    (percentile(&l, 0.5), percentile(&l, 0.99), l.len())
}

fn counters(h: &Harness) -> Vec<SimCounters> {
    h.sims.iter().map(|s| s.counters()).collect()
}

fn share_of(samples: &[Sample], backend: &str) -> f64 {
    let ok = samples.iter().filter(|s| s.ok()).count().max(1);
    let n = samples
        .iter()
        .filter(|s| s.ok() && s.backend.as_deref() == Some(backend))
        .count();
    n as f64 / ok as f64
}

fn fmt_map(m: std::collections::BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn fmt_shares(samples: &[Sample]) -> String {
    fmt_map(load::shares(samples))
}

fn fmt_reasons(samples: &[Sample]) -> String {
    fmt_map(load::reasons(samples))
}

/// First reading at or after `from` where `f` holds for backend `i`, as an
/// offset from `from`.
fn first_after(
    snaps: &[Snap],
    i: usize,
    from: Duration,
    f: impl Fn(&load::BackendSnap) -> bool,
) -> Option<Duration> {
    snaps
        .iter()
        .find(|s| s.at >= from && f(&s.backends[i]))
        .map(|s| s.at - from)
}

/// At 2× capacity the limits settle at the slot count and nothing waits
/// inside llama-server.
#[test]
fn discovery_at_2x_settles_limits_at_the_slot_count() {
    let _g = serial();
    let h = start("");
    let dur = Duration::from_secs(5);
    let run = run_load(
        &h,
        req(Duration::from_millis(500)),
        vec![(dur, 2.0 * capacity())],
        21,
        |_, _| {},
    );
    let warm = Duration::from_secs(1);
    let secs = run.elapsed.as_secs_f64();
    let mut t = Table::new("discovery at 2x capacity");
    t.row("capacity", format!("{:.0} req/s", capacity()))
        .row(
            "offered",
            format!("{} requests in {dur:?}", run.samples.len()),
        )
        .row(
            "served",
            format!("{:.1} req/s (1 s .. 5 s)", run.served_rate(warm, dur)),
        );
    let mut checks = Vec::new();
    for i in 0..BACKENDS {
        let (lo, hi) = run.limit_range(i, warm, run.elapsed);
        let mean_def = (run.after[i].deferred_integral - run.before[i].deferred_integral) / secs;
        t.row(
            &format!("b{i}"),
            format!(
                "limit [{lo}, {hi}]  mean deferred {mean_def:.3}  max deferred {}",
                run.after[i].max_deferred_seen
            ),
        );
        checks.push((i, lo, hi, mean_def));
    }
    t.row("shares", fmt_shares(&run.samples))
        .row("rejections", fmt_reasons(&run.samples))
        .row(
            "400 before admission",
            format!("p99 {}", ms(run.floor_p99())),
        )
        .row("late arrivals", run.late())
        .row("process CPU", run.cores())
        .print();
    for (i, lo, hi, mean_def) in checks {
        assert!(
            lo + 1 >= SLOTS as u64 && hi <= SLOTS as u64,
            "b{i} limit left [slots - 1, slots + lookahead]: [{lo}, {hi}]"
        );
        assert!(
            mean_def <= 0.5,
            "b{i} time-weighted mean deferred {mean_def:.3} > 0.5"
        );
    }
    run.assert_clean();
}

/// 3× capacity, Poisson, each request with a short wait budget: the fleet
/// stays busy, admitted requests barely wait, the rest are refused at once,
/// and nothing reaches a backend after its deadline.
#[test]
fn overload_3x_keeps_goodput_and_latency_and_sheds_fast() {
    let _g = serial();
    let h = start("");
    let (u50, u99, un) = unloaded(&h);
    let budget = service() / 3;
    let dur = Duration::from_secs(5);
    let run = run_load(
        &h,
        req(budget),
        vec![(dur, 3.0 * capacity())],
        31,
        |_, _| {},
    );
    // Measure after the first second (the fleet fills, estimates warm up).
    let from = Duration::from_secs(1);
    let window = run.sent_in(from, dur);
    // Good: answered within the wait budget plus the unloaded p99 service
    // time (+25 %), and (checked below) sent upstream before the deadline.
    let good_by = budget + u99.mul_f64(1.25);
    let done_from = from + service();
    let good = run
        .samples
        .iter()
        .filter(|s| s.ok() && s.latency <= good_by && s.done_in(done_from, dur))
        .count();
    let goodput = good as f64 / (dur - done_from).as_secs_f64() / capacity();
    let adm = latencies(&window, Sample::ok);
    let (a50, a99) = (percentile(&adm, 0.5), percentile(&adm, 0.99));
    let immediate = latencies(&window, |s| {
        s.shed() && s.reason.as_deref() != Some("queue_timeout")
    });
    let timed_out = latencies(&window, |s| s.reason.as_deref() == Some("queue_timeout"));
    let reject99 = percentile(&immediate, 0.99);
    let reject_bound = REJECT_BOUND.max(run.floor_p99() * REJECT_OVER_FLOOR);
    let (ra, nshed) = run.retry_after();
    let mut t = Table::new("overload at 3x capacity");
    t.row("capacity", format!("{:.0} req/s", capacity()))
        .row(
            "unloaded",
            format!("p50 {} p99 {} (n={un})", ms(u50), ms(u99)),
        )
        .row("wait budget", ms(budget))
        .row(
            "offered",
            format!(
                "{:.0} req/s",
                window.len() as f64 / (dur - from).as_secs_f64()
            ),
        )
        .row(
            "goodput",
            format!(
                "{:.1} % of capacity (done within {} of sending)",
                goodput * 100.0,
                ms(good_by)
            ),
        )
        .row(
            "admitted latency",
            format!(
                "p50 {} ({:.2}x unloaded) p99 {} ({:.2}x)",
                ms(a50),
                a50.as_secs_f64() / u50.as_secs_f64(),
                ms(a99),
                a99.as_secs_f64() / u99.as_secs_f64()
            ),
        )
        .row(
            "time to reject",
            format!(
                "p50 {} p99 {} max {} (n={}, immediate rejections; bound {})",
                ms(percentile(&immediate, 0.5)),
                ms(reject99),
                ms(percentile(&immediate, 1.0)),
                immediate.len(),
                ms(reject_bound)
            ),
        )
        .row(
            "queue timeouts",
            format!(
                "n={} after p50 {} p99 {}",
                timed_out.len(),
                ms(percentile(&timed_out, 0.5)),
                ms(percentile(&timed_out, 0.99))
            ),
        )
        .row(
            "400 before admission",
            format!(
                "p50 {} p99 {} (n={}, the gateway's floor)",
                ms(percentile(&run.floor, 0.5)),
                ms(run.floor_p99()),
                run.floor.len()
            ),
        )
        .row("Retry-After", format!("{ra} of {nshed} rejections"))
        .row("rejections", fmt_reasons(&window))
        .row("shares", fmt_shares(&window))
        .row("late arrivals", run.late())
        .row("process CPU", run.cores())
        .print();
    assert!(immediate.len() >= 100, "3x overload shed only {nshed}");
    run.assert_clean();
    let mut timing = run.timing();
    timing.bound(goodput >= 0.90, || {
        format!("goodput {goodput:.3} of capacity")
    });
    timing.bound(a50.as_secs_f64() <= 1.5 * u50.as_secs_f64(), || {
        format!("admitted p50 {a50:?} vs unloaded {u50:?}")
    });
    timing.bound(a99.as_secs_f64() <= 3.0 * u99.as_secs_f64(), || {
        format!("admitted p99 {a99:?} vs unloaded {u99:?}")
    });
    timing.bound(reject99 <= reject_bound, || {
        format!("p99 time to reject {reject99:?} > {reject_bound:?}")
    });
    // A queued request that runs out of budget hears so when it does.
    let timeout99 = percentile(&timed_out, 0.99);
    timing.bound(timeout99 <= budget + reject_bound, || {
        format!("queue timeouts answered {timeout99:?} after sending (budget {budget:?})")
    });
    timing.finish();
}

/// What the gateway's queue did, from its `/metrics`: entries served from
/// the queue, and those that waited out their budget (`expired`) or were
/// refused early because they could no longer make it (`unmeetable`).
#[derive(Debug, Clone, Copy, Default)]
struct QueueCounts {
    served: f64,
    expired: f64,
    unmeetable: f64,
    other_drops: f64,
}

impl QueueCounts {
    fn read(h: &Harness) -> QueueCounts {
        let m =
            h.rt.block_on(support::get(&h.client, &h.gw().admin_url(), "/metrics"));
        let mut c = QueueCounts::default();
        for line in m.body.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let v: f64 = value.parse().unwrap_or(0.0);
            match name {
                "sluice_queue_wait_seconds_count" => c.served = v,
                "sluice_queue_drops_total{reason=\"expired\"}" => c.expired = v,
                "sluice_queue_drops_total{reason=\"unmeetable\"}" => c.unmeetable = v,
                n if n.starts_with("sluice_queue_drops_total{reason=\"stale\"")
                    || n.starts_with("sluice_queue_drops_total{reason=\"displaced\"") =>
                {
                    c.other_drops += v
                }
                _ => {}
            }
        }
        c
    }

    /// Every entry that was queued (clients that left aside).
    fn queued(&self) -> f64 {
        self.served + self.expired + self.unmeetable + self.other_drops
    }

    /// Share of the queued entries that waited out their whole budget.
    fn timed_out_share(&self) -> f64 {
        self.expired / self.queued().max(1.0)
    }
}

/// Sustained 3× overload with a wait budget longer than a request (1 s,
/// as loadtest/bench scenario 3 gives): the queue could hold a whole
/// budget of work, but it stands, so it is held short. Invariants: nothing
/// reaches a backend after its deadline, every refusal carries
/// `Retry-After`, and few queued requests wait out their budget (at most
/// 15 % on any machine: a predictor that admitted past the deadlines would
/// time out most of the excess). Timing bounds: at most 3 % timed out (the
/// whole run, the first fill before the drain rate is known included;
/// loadtest/bench scenario 3 measures the 1 % on a release build),
/// goodput, admitted p50 ≤ 1.5× unloaded, and the time to every refusal.
#[test]
fn sustained_overload_3x_refuses_on_arrival_not_after_waiting() {
    let _g = serial();
    let h = start("");
    let (u50, _, un) = unloaded(&h);
    let budget = Duration::from_secs(1);
    let dur = Duration::from_secs(6);
    let q0 = QueueCounts::read(&h);
    let run = run_load(
        &h,
        req(budget),
        vec![(dur, 3.0 * capacity())],
        33,
        |_, _| {},
    );
    let q1 = QueueCounts::read(&h);
    let q = QueueCounts {
        served: q1.served - q0.served,
        expired: q1.expired - q0.expired,
        unmeetable: q1.unmeetable - q0.unmeetable,
        other_drops: q1.other_drops - q0.other_drops,
    };
    // After the standing signal had time to rise (two typical durations,
    // at least overload_interval = 1 s, plus a budget of queue already in).
    let from = Duration::from_millis(2500);
    let window = run.sent_in(from, dur);
    let adm = latencies(&window, Sample::ok);
    let a50 = percentile(&adm, 0.5);
    let refusals = latencies(&window, Sample::shed);
    let reject99 = percentile(&refusals, 0.99);
    let reject_bound = REJECT_BOUND.max(run.floor_p99() * REJECT_OVER_FLOOR);
    let served = run.served_rate(Duration::from_secs(1), dur) / capacity();
    let share = q.timed_out_share();
    let mut t = Table::new("sustained 3x overload, 1 s budgets");
    t.row("unloaded", format!("p50 {} (n={un})", ms(u50)))
        .row("served", format!("{:.1} % of capacity", served * 100.0))
        .row(
            "admitted p50",
            format!(
                "{} ({:.2}x unloaded, from {from:?})",
                ms(a50),
                a50.as_secs_f64() / u50.as_secs_f64()
            ),
        )
        .row(
            "time to every refusal",
            format!(
                "p50 {} p99 {} (n={}, queue timeouts included; bound {})",
                ms(percentile(&refusals, 0.5)),
                ms(reject99),
                refusals.len(),
                ms(reject_bound)
            ),
        )
        .row(
            "queued",
            format!(
                "{} served, {} timed out ({:.2} %), {} refused early, {} other drops",
                q.served,
                q.expired,
                share * 100.0,
                q.unmeetable,
                q.other_drops
            ),
        )
        .row("rejections", fmt_reasons(&window))
        .row("late arrivals", run.late())
        .row("process CPU", run.cores())
        .print();
    assert!(
        refusals.len() >= 100,
        "3x overload refused only {}",
        refusals.len()
    );
    assert!(q.queued() >= 50.0, "only {} requests queued", q.queued());
    run.assert_clean();
    assert!(
        share <= 0.15,
        "{} of {} queued requests waited out their budget",
        q.expired,
        q.queued()
    );
    let mut timing = run.timing();
    timing.bound(share <= 0.03, || {
        format!("{:.2} % of queued requests timed out", share * 100.0)
    });
    timing.bound(served >= 0.95, || format!("served {served:.3} of capacity"));
    timing.bound(a50.as_secs_f64() <= 1.5 * u50.as_secs_f64(), || {
        format!("admitted p50 {a50:?} vs unloaded {u50:?}")
    });
    timing.bound(reject99 <= reject_bound, || {
        format!("p99 time to a refusal {reject99:?} > {reject_bound:?}")
    });
    timing.finish();
}

/// A 10× spike for 3 s: limits hold at the slot count, and the queue is
/// empty soon after the spike ends.
#[test]
fn spike_10x_keeps_limits_and_the_queue_drains() {
    let _g = serial();
    let h = start("");
    let budget = Duration::from_secs(1);
    let (pre, spike, post) = (
        Duration::from_secs(1),
        Duration::from_secs(3),
        Duration::from_secs(3),
    );
    let base = 0.3;
    let run = run_load(
        &h,
        req(budget),
        vec![
            (pre, base * capacity()),
            (spike, 10.0 * capacity()),
            (post, base * capacity()),
        ],
        41,
        |_, _| {},
    );
    let spike_end = pre + spike;
    let min_limit = (0..BACKENDS)
        .map(|i| run.limit_range(i, Duration::ZERO, run.elapsed).0)
        .min()
        .unwrap_or(0);
    let max_queue = run.snaps.iter().map(|s| s.queue_depth).max().unwrap_or(0);
    // The queue holds at most a wait budget of work and drains at capacity
    // minus the load that keeps arriving.
    let drain_bound = budget.div_f64(1.0 - base) + Duration::from_millis(500);
    let empty_at = run
        .snaps
        .iter()
        .rev()
        .take_while(|s| s.queue_depth == 0)
        .last()
        .map(|s| s.at);
    let drained_after = empty_at.map(|t| t.saturating_sub(spike_end));
    let in_spike = run.sent_in(pre, spike_end);
    let immediate = latencies(&in_spike, |s| {
        s.shed() && s.reason.as_deref() != Some("queue_timeout")
    });
    let (ra, nshed) = run.retry_after();
    let mut t = Table::new("10x spike for 3 s (0.3x before and after)");
    t.row("offered", format!("{} requests", run.samples.len()))
        .row(
            "served in spike",
            format!(
                "{:.1} req/s (capacity {:.0})",
                run.served_rate(pre + service(), spike_end),
                capacity()
            ),
        )
        .row("lowest limit", min_limit)
        .row("largest queue", max_queue)
        .row(
            "queue empty",
            format!(
                "{:?} after the spike (bound {drain_bound:?})",
                drained_after.unwrap_or(Duration::MAX)
            ),
        )
        .row(
            "time to reject",
            format!(
                "p50 {} p99 {} (n={}, immediate rejections in the spike)",
                ms(percentile(&immediate, 0.5)),
                ms(percentile(&immediate, 0.99)),
                immediate.len()
            ),
        )
        .row(
            "400 before admission",
            format!("p99 {}", ms(run.floor_p99())),
        )
        .row("Retry-After", format!("{ra} of {nshed} rejections"))
        .row("rejections", fmt_reasons(&run.samples))
        .row("late arrivals", run.late())
        .row("process CPU", run.cores())
        .print();
    assert!(
        min_limit + 1 >= SLOTS as u64,
        "a limit fell to {min_limit} during the spike"
    );
    assert!(max_queue > 0, "the spike never queued anything");
    let drained = drained_after.expect("the queue was never empty after the spike");
    run.assert_clean();
    let mut timing = run.timing();
    timing.bound(drained <= drain_bound, || {
        format!("queue still held requests {drained:?} after the spike")
    });
    timing.finish();
}

/// One backend stops accepting connections under load and comes back: no
/// client sees an error, its breaker opens at once, then probes, then slow
/// start back to the slot count.
#[test]
fn a_backend_refusing_connections_costs_clients_nothing() {
    let _g = serial();
    let h = start("[breaker]\nbase_backoff = \"300ms\"\n");
    let (down, up) = (Duration::from_millis(1500), Duration::from_millis(3500));
    let dur = Duration::from_secs(7);
    // When the listener and every connection were closed.
    let dead = std::cell::Cell::new(down);
    let run = run_load(
        &h,
        req(Duration::from_secs(1)),
        vec![(dur, 0.6 * capacity())],
        51,
        |h, start| {
            sleep_until(start, down);
            h.rt.block_on(h.sims[0].stop_listening());
            dead.set(start.elapsed());
            sleep_until(start, up);
            h.rt.block_on(h.sims[0].resume_listening()).unwrap();
        },
    );
    let dead = dead.get();
    let opened = first_after(&run.snaps, 0, down, |b| b.breaker != "closed");
    let half_open = first_after(&run.snaps, 0, up, |b| b.breaker == "half_open");
    let closed_low = first_after(&run.snaps, 0, up, |b| {
        b.breaker == "closed" && b.limit.unwrap_or(99) < SLOTS as u64
    });
    let back_full = closed_low.and_then(|c| {
        first_after(&run.snaps, 0, up + c, |b| {
            b.breaker == "closed" && b.limit == Some(SLOTS as u64)
        })
        .map(|d| c + d)
    });
    let while_down = run.sent_in(down + Duration::from_millis(100), up);
    // Requests running on b0 when it died were cut off with it (the
    // simulator closes every connection, like a killed process); the
    // gateway retries those only if the connection was a pooled one. What
    // the scenario is about: refused connections cost nobody anything.
    let (cut, errs): (Vec<&Sample>, Vec<&Sample>) = run
        .errors()
        .into_iter()
        .partition(|s| s.at < dead && s.at + s.latency >= down);
    let mut t = Table::new("b0 refuses connections from 1.5 s to 3.5 s, load 0.6x");
    t.row("offered", format!("{} requests", run.samples.len()))
        .row("client errors", errs.len())
        .row("cut off running on b0 when it died", cut.len())
        .row("breaker open after", format!("{opened:?}"))
        .row("half-open after restart", format!("{half_open:?}"))
        .row(
            "closed with limit < slots after restart",
            format!("{closed_low:?}"),
        )
        .row(
            "limit back at slots after restart",
            format!("{back_full:?}"),
        )
        .row(
            "b0 share while down",
            format!("{:.3}", share_of(&while_down, "b0")),
        )
        .row("shares", fmt_shares(&run.samples))
        .row("rejections", fmt_reasons(&run.samples))
        .row("late arrivals", run.late())
        .row("process CPU", run.cores())
        .print();
    for e in errs.iter().chain(&cut) {
        eprintln!("  error: {e:?}");
    }
    assert!(errs.is_empty(), "clients saw {} errors", errs.len());
    assert!(
        cut.len() <= SLOTS,
        "{} requests cut off by b0's death",
        cut.len()
    );
    run.assert_invariants();
    let opened = opened.expect("b0's breaker never opened");
    assert!(
        run.samples
            .iter()
            .any(|s| s.ok() && s.at > up && s.backend.as_deref() == Some("b0")),
        "b0 served nothing after its restart"
    );
    let mut timing = run.timing();
    timing.bound(opened <= Duration::from_millis(500), || {
        format!("breaker opened {opened:?} after the backend died")
    });
    timing.bound(closed_low.is_some(), || {
        format!("no slow start after the restart (half-open after {half_open:?})")
    });
    timing.finish();
}

/// One backend hangs: it is ejected (first-byte timeouts, and its scrapes
/// time out too) and the rest of the fleet keeps most of the goodput.
#[test]
fn a_hanging_backend_is_ejected_and_goodput_holds() {
    let _g = serial();
    // Lengths within ±10 % of the mean: the goodput after the fault is
    // compared with capacity over a few seconds, and widely varying lengths
    // alone move a 3.5 s completion count by ±3 %.
    let sims = (0..BACKENDS as u64)
        .map(|i| SimOptions {
            gen_length: GenLength { min: 180, max: 220 },
            ..sim(i)
        })
        .collect();
    // Above the longest generation: a non-streaming response sends nothing
    // until it is complete.
    let h = start_with("[routing]\nread_timeout = \"1500ms\"\n", sims);
    let hang_at = Duration::from_millis(2500);
    let dur = Duration::from_millis(6500);
    let run = run_load(
        &h,
        req(Duration::from_millis(500)),
        vec![(dur, 1.5 * capacity())],
        61,
        |h, start| {
            sleep_until(start, hang_at);
            h.sims[3].set_fault(Fault::Hang);
        },
    );
    let ejected = |b: &load::BackendSnap| !b.eligible && b.reason.as_deref() != Some("full");
    let out = first_after(&run.snaps, 3, hang_at, ejected);
    let out_reason = out.and_then(|d| {
        run.snaps
            .iter()
            .find(|s| s.at >= hang_at + d)
            .and_then(|s| s.backends[3].reason.clone())
    });
    let opened = first_after(&run.snaps, 3, hang_at, |b| b.breaker != "closed");
    // Capacity as this fleet sustained it in this run before the fault
    // (saturated at 1.5x), and goodput after the fault has settled.
    let sustained = run.served_rate(Duration::from_secs(1), hang_at);
    let after = run.served_rate(hang_at + Duration::from_millis(500), dur);
    let reference = sustained.min(capacity());
    let goodput = after / reference;
    let errs: Vec<Sample> = run.errors().into_iter().cloned().collect();
    let after_hang = run.sent_in(hang_at + Duration::from_secs(1), dur);
    let mut t = Table::new("b3 hangs from 2.5 s, load 1.5x, read_timeout 1.5 s");
    t.row(
        "sustained before",
        format!(
            "{sustained:.1} req/s (capacity {:.0})",
            capacity()
        ),
    )
    .row(
        "goodput after",
        format!(
            "{after:.1} req/s = {:.1} % of sustained ({:.1} % of capacity; 75 % is all 3 healthy backends)",
            goodput * 100.0,
            after / capacity() * 100.0
        ),
    )
    .row(
        "b3 ejected after",
        format!("{out:?} ({})", out_reason.as_deref().unwrap_or("-")),
    )
    .row("b3 breaker open after", format!("{opened:?}"))
    .row(
        "client errors",
        format!("{} ({})", errs.len(), fmt_reasons(&errs)),
    )
    .row("shares from 1 s after", fmt_shares(&after_hang))
    .row("rejections", fmt_reasons(&run.samples))
    .row("late arrivals", run.late())
    .row("process CPU", run.cores())
    .print();
    for e in &errs {
        eprintln!("  error: {e:?}");
    }
    let out = out.expect("b3 was never ejected");
    assert!(opened.is_some(), "b3's breaker never opened");
    assert_eq!(share_of(&after_hang, "b3"), 0.0, "b3 served while hung");
    // Requests running on b3 when it hung time out (printed above); the
    // invariants hold for all of them.
    run.assert_invariants();
    let mut timing = run.timing();
    timing.bound(goodput >= 0.70, || {
        format!("goodput {after:.1} req/s is {goodput:.3} of the {reference:.1} sustained before")
    });
    timing.bound(out <= Duration::from_secs(1), || {
        format!("b3 ejected only {out:?} after it hung")
    });
    timing.finish();
}

/// One backend becomes 3× slower: it gets clearly less than a fair share,
/// and requests served elsewhere keep their latency.
#[test]
fn a_slow_backend_gets_less_and_others_keep_their_latency() {
    let _g = serial();
    let h = start("");
    let slow_at = Duration::from_millis(2500);
    let dur = Duration::from_millis(7000);
    let run = run_load(
        &h,
        req(Duration::from_secs(1)),
        vec![(dur, 0.6 * capacity())],
        71,
        |h, start| {
            sleep_until(start, slow_at);
            h.sims[3].set_fault(Fault::Slow(3.0));
        },
    );
    // Before: answered before the fault (which also slows requests that
    // are running on b3 when it starts).
    let base: Vec<Sample> = run
        .sent_in(Duration::from_millis(300), slow_at)
        .into_iter()
        .filter(|s| s.done_in(Duration::ZERO, slow_at))
        .collect();
    let slow = run.sent_in(slow_at + Duration::from_millis(500), dur);
    let bl = latencies(&base, Sample::ok);
    let (b50, b99) = (percentile(&bl, 0.5), percentile(&bl, 0.99));
    let others = latencies(&slow, |s| s.ok() && s.backend.as_deref() != Some("b3"));
    let (o50, o99) = (percentile(&others, 0.5), percentile(&others, 0.99));
    let s3 = latencies(&slow, |s| s.ok() && s.backend.as_deref() == Some("b3"));
    let share = share_of(&slow, "b3");
    let fair = 1.0 / BACKENDS as f64;
    let mut t = Table::new("b3 3x slower from 2.5 s, load 0.6x");
    t.row(
        "before",
        format!("p50 {} p99 {} (n={})", ms(b50), ms(b99), bl.len()),
    )
    .row(
        "served elsewhere after",
        format!(
            "p50 {} p99 {} ({:.2}x the p99 before, n={})",
            ms(o50),
            ms(o99),
            o99.as_secs_f64() / b99.as_secs_f64(),
            others.len()
        ),
    )
    .row(
        "served by b3 after",
        format!("p50 {} (n={})", ms(percentile(&s3, 0.5)), s3.len()),
    )
    .row("b3 share after", format!("{share:.3} (fair {fair:.2})"))
    .row("shares after", fmt_shares(&slow))
    .row("rejections", fmt_reasons(&run.samples))
    .row("late arrivals", run.late())
    .row("process CPU", run.cores())
    .print();
    assert!(
        share <= 0.6 * fair,
        "the slow backend got {share:.3} of the work (fair {fair})"
    );
    run.assert_clean();
    let mut timing = run.timing();
    timing.bound(o99.as_secs_f64() <= 1.5 * b99.as_secs_f64(), || {
        format!("p99 elsewhere {o99:?} vs {b99:?} before")
    });
    timing.finish();
}

/// One backend's `/metrics` stalls for 3.5 s: it is set aside without its
/// limit collapsing, the others share its work evenly (no herding), and it
/// is not swamped when its figures come back.
#[test]
fn stale_metrics_neither_collapse_the_limit_nor_herd() {
    let _g = serial();
    let h = start("");
    let (stall, clear) = (Duration::from_millis(1500), Duration::from_millis(5000));
    let dur = Duration::from_millis(7500);
    let run = run_load(
        &h,
        req(Duration::from_secs(1)),
        vec![(dur, 0.6 * capacity())],
        81,
        |h, start| {
            sleep_until(start, stall);
            h.sims[3].set_fault(Fault::MetricsDelay(Duration::from_secs(5)));
            sleep_until(start, clear);
            h.sims[3].clear_faults();
        },
    );
    let (lo3, hi3) = run.limit_range(3, Duration::ZERO, run.elapsed);
    let set_aside = first_after(&run.snaps, 3, stall, |b| {
        !b.eligible && b.reason.as_deref() != Some("full")
    });
    let stale = run.sent_in(stall + Duration::from_millis(500), clear);
    let after = run.sent_in(clear + Duration::from_millis(500), dur);
    let stale_shares: Vec<f64> = (0..3).map(|i| share_of(&stale, &format!("b{i}"))).collect();
    let after3 = share_of(&after, "b3");
    let max_def3 = run.after[3].max_deferred_seen;
    let mut t = Table::new("b3's /metrics stalls from 1.5 s to 5 s, load 0.6x");
    t.row("b3 limit", format!("[{lo3}, {hi3}] over the run"))
        .row("b3 set aside after", format!("{set_aside:?}"))
        .row(
            "shares while stale",
            format!("{} (b3 {:.3})", fmt_shares(&stale), share_of(&stale, "b3")),
        )
        .row(
            "shares after",
            format!("{} (b3 {after3:.3})", fmt_shares(&after)),
        )
        .row("b3 max deferred", max_def3)
        .row("rejections", fmt_reasons(&run.samples))
        .row("late arrivals", run.late())
        .row("process CPU", run.cores())
        .print();
    assert!(
        lo3 + 1 >= SLOTS as u64,
        "b3's limit collapsed to {lo3} while its metrics were stale"
    );
    assert!(set_aside.is_some(), "b3 stayed eligible with stale figures");
    assert!(
        share_of(&stale, "b3") <= 0.05,
        "b3 got work on stale figures"
    );
    for (i, s) in stale_shares.iter().enumerate() {
        assert!(
            (0.22..=0.45).contains(s),
            "b{i} got {s:.3} of the work while b3 was stale (herding)"
        );
    }
    assert!(
        after3 <= 0.45,
        "b3 got {after3:.3} of the work once its figures were back"
    );
    assert_eq!(max_def3, 0, "b3 queued requests internally");
    run.assert_clean();
}
