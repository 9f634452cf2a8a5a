//! The admission decision for one inference request: who is asking, may they
//! (API key, rate limit), and does a backend take the request now, later
//! (the gateway queue), or not at all (a soft-fail 503 with `Retry-After`).
//!
//! The policy structs ([`AdmissionQueue`], [`DrainEstimator`], [`RateLimits`])
//! do the deciding; this file holds their shared state and hands permits to
//! queued requests: whenever a permit returns or a scrape lands, the
//! dispatcher calls [`Gate::pump`], which takes a permit on the best backend
//! and gives it to the next entry the queue serves. Once a request waits in
//! the queue, newcomers queue behind it instead of taking a slot that just
//! freed (no barging).
//!
//! ## Time, randomness, and what is shared
//!
//! The gate reads no clock: every call takes `now` (or, for [`Gate::pump`],
//! a clock to call). Its random choices (p2c among backends) come from its
//! own generator, seeded once at construction ([`Gate::seed_rng`] makes
//! them reproducible). The queue length is published by the gate alone,
//! whenever its queue lock is released, to the fleet's [`Wake`] count that
//! `/status`, the metrics and the wake-up logic read.
//!
//! ## What a reload swaps
//!
//! Who may ask and how much (the API keys and `require_key`, rate limits,
//! token budgets, the completion estimate) is one [`Policy`], read on the
//! request path through an [`ArcSwap`] (no lock) and replaced whole by
//! [`Gate::reconfigure`] on a reload. The queue, its entries and the
//! permits in flight are untouched; a revoked key is refused from the next
//! request on. Rate-limit state is kept when its parameters did not change
//! (and starts afresh when they did); token budgets keep what every key
//! has spent.
//!
//! ## Refusals
//!
//! Every refusal's hint (`Retry-After`, `retry-after-ms`, `x-should-retry`)
//! comes from one [`RetryAfter`]; the fleet reports *why* it could not take
//! a request ([`Unavailable`]) and [`Gate::refusal`] turns that into the
//! client's answer, whichever path asked (admission, a retry after a
//! connect failure, a passthrough read).
//!
//! ## The client contract
//!
//! A busy refusal tells the client when it is likely to be taken: after the
//! requests queued now *and* the retries already promised a time
//! ([`Returns`]), at the drain rate, so refused clients come back spread
//! out instead of all at once. The promise is recorded for the client's
//! tenant; a retry that comes back when told ranks ahead of first attempts
//! ([`Call::client`] says it is a retry; the promise proves it). When even
//! the client's last retry would come too early, the hint says
//! `x-should-retry: false` ([`RetryAfter::for_client`]).
//!
//! ## Bursts and sustained overload: which default serves which case
//!
//! - **A burst** the fleet can clear within a few typical request durations
//!   is queued, not refused: a request that names no wait budget may wait
//!   [`AUTO_WAIT_FACTOR`] (4) request durations in a full batch
//!   (`queue.max_wait = "auto"`, the default), so ten chats arriving at
//!   once on four slots all wait their turn (the last starts after two
//!   rounds). A fleet that only ever ran one request at a time knows no
//!   full-batch duration yet, and a batch can take far longer (2.6× on
//!   two CPU-bound llama-servers): an entry queued with the auto budget is
//!   re-judged by the budget as it stands while it waits, so the burst's
//!   first batch to end extends the wait of the rest
//!   ([`Gate::queued_deadline`]).
//! - **Sustained overload** is told apart by the standing-queue signal
//!   ([`AdmissionQueue::standing`]): the oldest entry waited longer than
//!   [`STANDING_FACTOR`] (half) of a typical request duration and the queue
//!   has not emptied since, for `queue.overload_interval` or
//!   [`STANDING_DURATIONS`] typical durations, whichever is longer. Then an
//!   arrival is queued only if it is predicted to wait at most that half
//!   duration, whatever its budget: the fleet stays busy (the queue never
//!   runs dry while arrivals outpace it), an admitted request takes at most
//!   about 1.5× its unloaded time, and the rest are refused at once, with
//!   a hint, instead of after waiting out their budgets. Clients whose
//!   budget reaches `queue.overload_max_wait` (patient SDK clients) are
//!   left to the queue's own standing-queue rule (LIFO, cut at
//!   `overload_max_wait`): they asked to wait rather than be refused.
//! - **The start of an overload from idle** fills every slot at once, and
//!   they free together, in rounds a typical duration apart, not spread as
//!   the completion rate assumes. An arrival is queued only if both the
//!   rate and the slots' schedule ([`super::schedule`]: when each permit in
//!   flight was handed out) say it is taken within its budget; the entries
//!   the rounds cannot reach are refused at once, with a hint, instead of
//!   after waiting out their budgets (`tests/admission_start.rs`).
//! - **A fleet slower than learnt** (a server's speed drifts within
//!   minutes; the durations and the drain rate follow over tens of
//!   seconds): the latest entries' actual waits against their predicted
//!   ones scale the prediction an arrival's budget is held against
//!   ([`super::calibration`]), so entries that would wait out their
//!   budgets are refused at once instead.
//! - **Entries that can no longer make it** (the fleet drains slower than
//!   predicted) are refused when the prediction says so by a wide margin
//!   ([`HOPELESS_FACTOR`]), not when their deadline passes.
//!
//! The wait of a place in the queue is predicted from the *work* ahead of
//! it ([`super::predict`]): requests ahead count by their expected tokens
//! against the typical request, at the measured drain rate. Every served
//! entry's error (actual minus predicted wait) goes into
//! `sluice_queue_wait_error_seconds`.
//!
//! Files: `params.rs` (what the gate is built from), `limits.rs` (who may
//! ask and how much: keys, rate limits, token budgets, swapped on reload),
//! `dispatch.rs` (handing free capacity to queued requests), `hints.rs`
//! (the hints of refusals for a known client), this file (admission and
//! refusals).

use std::net::IpAddr;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::budget::{BudgetParams, TokenBudget};
use super::calibration::WaitCalibration;
use super::drain::DrainEstimator;
use super::identity::Keys;
pub use super::keys::{KeyEntry, KeyRing};
use super::predict::{self, work_wait, WorkMix};
use super::queue::returns::Returns;
use super::queue::{AdmissionQueue, DropReason, Dropped, EntryId, NewEntry, Priority, QueueReject};
use super::ratelimit::{GivenClock, RateLimitParams, RateLimits};
use super::retry_after::{busy_wait, ceil_secs, Hint, Retries, RetryAfter};
use super::schedule::Schedule;
use super::DISPATCH_MARGIN;
use crate::backend::choice::Wants;
use crate::backend::eligibility::Ineligible;
use crate::backend::fleet::{Fleet, Unavailable};
use crate::backend::speed::Work;
use crate::backend::state::{Permit, Wake};
use crate::reject::Reject;

mod dispatch;
mod hints;
mod limits;
mod params;

use limits::Policy;

pub use params::GateParams;

pub use super::headers::{parse_client, parse_priority, parse_wait, wait_budget, ClientHeaders};
pub use super::identity::Identity;

/// Auto wait budget = this many typical request durations: a burst the
/// fleet clears within a few request durations is queued, not refused
/// (sustained overload is the standing signal's case, see the module docs).
const AUTO_WAIT_FACTOR: f64 = 4.0;
/// While the queue stands, an arrival is queued only if predicted to wait
/// at most this share of the typical request duration: an admitted request
/// then takes at most about 1.5× its unloaded time.
const STANDING_FACTOR: f64 = 0.5;
/// The queue stands only after this many typical request durations (or
/// `queue.overload_interval`, if longer) above the standing target: a
/// burst is cleared within a few.
const STANDING_DURATIONS: f64 = 2.0;
/// An entry is refused early when its predicted wait is this many times
/// the time it has left: clearly out of reach, not a close call the noise
/// of the prediction could decide either way.
const HOPELESS_FACTOR: f64 = 2.0;
/// ... and only with at least this much work (in typical requests) ahead
/// of it: the next few completions come at random moments (an entry near
/// the head still has a fair chance in half its predicted wait: with 8
/// completions needed and 4 expected, about 5 %).
const HOPELESS_MIN_AHEAD: f64 = 7.0;
/// Floor of the auto budget: below it, queueing cannot absorb any burst.
const AUTO_WAIT_MIN: Duration = Duration::from_millis(50);
/// Auto budget before any request has finished.
const AUTO_WAIT_UNKNOWN: Duration = Duration::from_secs(2);
/// Most promised returns remembered at once (see [`Returns`]).
const MAX_PROMISES: usize = 4096;

/// What a queued request receives: a permit, or why it was dropped.
pub type Handoff = Result<Given, Reject>;

/// A permit handed to a queued request, and the deadline it was served by:
/// later than the one it was queued with if its auto budget was raised
/// meanwhile ([`Gate::queued_deadline`]).
#[derive(Debug)]
pub struct Given {
    pub permit: Permit,
    pub deadline: Instant,
}

type Queue = AdmissionQueue<Waiter>;

/// A queued request, as the gate keeps it: where its permit goes, and the
/// prompt prefix that decides which backend it prefers.
pub struct Waiter {
    tx: oneshot::Sender<Handoff>,
    prefix: Option<u64>,
    /// The model it names (only backends serving it may take it).
    model: Option<Arc<str>>,
    /// Its expected tokens (the cheaper backend is preferred).
    work: Option<Work>,
    /// Its work in generated-token equivalents ([`predict::units`]).
    units: Option<f64>,
    /// The wait predicted when it was queued.
    predicted: Duration,
    /// Prompt tokens its cache home likely holds.
    reuse: Option<u64>,
    /// What its client said of its retries, for the hint if it is dropped.
    client: Retries,
}

/// One inference call as the gate sees it: how long it may wait, and what
/// its client says of its timeout and attempts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Call {
    pub wait: Duration,
    pub client: ClientHeaders,
    /// `wait` is the default budget: the request named none (no
    /// `x-sluice-deadline`, no declared client timeout).
    pub default_wait: bool,
}

/// The outcome of [`Gate::admit`].
pub enum Ticket {
    /// A backend took the request.
    Ready(Permit),
    /// The request waits in the queue until `deadline`.
    Queued {
        id: EntryId,
        rx: oneshot::Receiver<Handoff>,
        deadline: Instant,
    },
}

pub struct Gate {
    fleet: Arc<Fleet>,
    queue: Option<Mutex<Queue>>,
    drain: Mutex<DrainEstimator>,
    policy: ArcSwap<Policy>,
    default_wait: Option<Duration>,
    pub max_wait: Duration,
    retry: RetryAfter,
    /// Returns promised to refused clients.
    returns: Mutex<Returns>,
    /// The typical work of queued requests; locked after the queue.
    mix: Mutex<WorkMix>,
    /// How far the wait predictions fell short lately; locked after the
    /// queue.
    calibration: Mutex<WaitCalibration>,
    /// Seeds a generator per admission; locked only to draw the seed.
    rng: Mutex<SmallRng>,
}

/// The locked queue. Publishes the queue length when released, so the one
/// count everyone else reads ([`Wake::waiting`]) follows every change.
struct Locked<'a> {
    queue: MutexGuard<'a, Queue>,
    wake: &'a Wake,
}

impl Deref for Locked<'_> {
    type Target = Queue;
    fn deref(&self) -> &Queue {
        &self.queue
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Queue {
        &mut self.queue
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Still under the lock: published lengths never go back in time.
        self.wake.set_waiting(self.queue.len());
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// === impl Gate ===

impl Gate {
    pub fn new(fleet: Arc<Fleet>, params: GateParams) -> Gate {
        let max_retry_after = params.drain.config().max_retry_after;
        let policy = ArcSwap::from_pointee(Policy::new(&params, None));
        Gate {
            fleet,
            queue: params
                .queue
                .map(|q| Mutex::new(AdmissionQueue::with_params(q))),
            drain: Mutex::new(DrainEstimator::with_params(params.drain)),
            policy,
            default_wait: params.default_wait,
            max_wait: params.max_wait,
            retry: RetryAfter::new(max_retry_after),
            returns: Mutex::new(Returns::new(MAX_PROMISES)),
            mix: Mutex::new(WorkMix::default()),
            calibration: Mutex::new(WaitCalibration::default()),
            // The one entropy read, at construction.
            rng: Mutex::new(SmallRng::from_os_rng()),
        }
    }

    /// Makes the gate's random choices reproducible (tests, simulations).
    pub fn seed_rng(&self, seed: u64) {
        *lock(&self.rng) = SmallRng::seed_from_u64(seed);
    }

    /// A generator for one decision, so the lock is held only for a draw.
    fn rng(&self) -> SmallRng {
        SmallRng::seed_from_u64(lock(&self.rng).next_u64())
    }

    /// The locked queue, if there is one (see [`Locked`]).
    fn locked(&self) -> Option<Locked<'_>> {
        self.queue.as_ref().map(|q| Locked {
            queue: lock(q),
            wake: &self.fleet.released,
        })
    }

    /// The wait budget of a request that names none. Auto (the default):
    /// [`AUTO_WAIT_FACTOR`] request durations in a full batch
    /// ([`Fleet::loaded_duration`]), so a burst the fleet clears within a
    /// few request durations is queued; under sustained overload the
    /// standing bound ([`Gate::standing_wait`]) holds the queue short
    /// instead. An entry queued with it is re-judged while it waits
    /// ([`Gate::raise_auto`]).
    pub fn default_wait(&self) -> Duration {
        if let Some(w) = self.default_wait {
            return w;
        }
        let auto = match self.fleet.loaded_duration() {
            Some(d) => d.mul_f64(AUTO_WAIT_FACTOR).max(AUTO_WAIT_MIN),
            None => AUTO_WAIT_UNKNOWN,
        };
        auto.min(self.max_wait)
    }

    /// Moves the deadlines of entries queued with the auto budget to the
    /// auto budget as it stands now, where that is later. Their budget was
    /// the gateway's guess from the durations it had seen: a burst on an
    /// idle fleet is judged by requests that ran alone, and its first
    /// full batch to end shows how long the rounds really take (on a
    /// CPU-bound server, 2.6× one request alone).
    fn raise_auto(&self, q: &mut Queue) {
        // Called on every dispatch round: nothing to read with none queued.
        if self.default_wait.is_none() && !q.is_empty() {
            q.raise_auto(self.default_wait());
        }
    }

    /// The deadline of a queued entry whose wait ran out by its deadline as
    /// it was when queued: later if its auto budget was raised since (see
    /// [`Gate::raise_auto`]), `None` if it is no longer queued or its
    /// deadline is within [`DISPATCH_MARGIN`] of `now`.
    pub fn queued_deadline(&self, id: EntryId, now: Instant) -> Option<Instant> {
        let mut q = self.locked()?;
        self.raise_auto(&mut q);
        q.deadline_of(id).filter(|d| *d > now + DISPATCH_MARGIN)
    }

    /// Requests waiting in the queue now.
    pub fn queue_len(&self) -> usize {
        self.fleet.released.waiting()
    }

    /// How long the oldest queued request has waited (read by the console
    /// once a second, not on the request path).
    pub fn oldest_wait(&self, now: Instant) -> Option<Duration> {
        self.locked().and_then(|q| q.oldest_wait(now))
    }

    /// How long a request will likely take once a backend has it (the
    /// fleet's typical request duration; 0 before any finished): what a
    /// declared client timeout leaves as wait budget.
    pub fn service_estimate(&self) -> Duration {
        self.fleet.typical_duration().unwrap_or_default()
    }
}

impl Gate {
    /// A permit now, a place in the queue, or a rejection. `priority` is
    /// what the request asked for; it gets at most its sender's
    /// entitlement ([`Identity::entitled`]: lowered, not refused, and
    /// counted).
    pub fn admit(
        &self,
        id: &Identity,
        wait: Duration,
        priority: Priority,
        now: Instant,
    ) -> Result<Ticket, Reject> {
        self.admit_with(id, wait, priority, Wants::default(), now)
    }

    /// [`Gate::admit`] for a request that names a model and whose prompt
    /// starts with a prefix (model routing and prompt-cache affinity, see
    /// [`Wants`]), now or when the queue hands it a permit.
    pub fn admit_with(
        &self,
        id: &Identity,
        wait: Duration,
        priority: Priority,
        wants: Wants<'_>,
        now: Instant,
    ) -> Result<Ticket, Reject> {
        let call = Call {
            wait,
            ..Call::default()
        };
        self.admit_call(id, call, priority, wants, now)
    }

    /// [`Gate::admit_with`] for a call whose client said what it is (an
    /// OpenAI SDK's timeout and retry count): its refusals carry a hint
    /// for it, and a retry that comes back when told ranks first.
    pub fn admit_call(
        &self,
        id: &Identity,
        call: Call,
        priority: Priority,
        wants: Wants<'_>,
        now: Instant,
    ) -> Result<Ticket, Reject> {
        let (priority, lowered) = id.entitled(priority);
        if lowered {
            self.fleet.metrics.priority_lowered();
        }
        let client = call.client.retries();
        let who = Some((id.tenant, client));
        let returning = match call.client.retries_taken {
            Some(n) if n > 0 => {
                let on_time = lock(&self.returns).claim(id.tenant, now);
                self.fleet.metrics.returning_retry(on_time);
                on_time
            }
            _ => false,
        };
        // No dispatch within the margin of the deadline, not even at once.
        if call.wait <= DISPATCH_MARGIN {
            return Err(Reject::DeadlineUnmeetable {
                retry_after: self.busy_hint(self.queue_len(), who, now),
            });
        }
        if self.queue_len() == 0 {
            // Told to wait for a faster backend only where it can wait.
            let wants = Wants {
                patience: self.queue.is_some().then_some(call.wait),
                ..wants
            };
            match self.fleet.admit_with(&[], wants, now, &mut self.rng()) {
                Ok(p) => return Ok(Ticket::Ready(p)),
                Err(
                    why @ (Unavailable::Unhealthy { .. }
                    | Unavailable::UnknownModel
                    | Unavailable::ModelNotLoaded { .. }),
                ) => return Err(self.refusal_for(why, who, now)),
                Err(why) if self.queue.is_none() => return Err(self.refusal_for(why, who, now)),
                Err(Unavailable::Busy) => {}
            }
        }
        let Some(mut q) = self.locked() else {
            return Err(self.refusal_for(Unavailable::Busy, who, now));
        };
        let (tx, rx) = oneshot::channel();
        let deadline = now + call.wait;
        // The work ahead: a returning retry waits only behind the retries
        // returned before it.
        let units = wants.work.map(|w| predict::units(w, self.prompt_weight()));
        // Sustained overload: hold the queue short (see the module docs).
        let bound = self.standing_wait();
        let interval = self.standing_interval(q.config().overload_interval);
        let standing = q.standing(bound, interval, now);
        // A standing queue means a saturated fleet: what it completes is
        // what it can do (the capacity figures, learnt from durations at
        // any load, promise more when batches slow every slot down or the
        // limiter holds some back).
        let rate = if standing {
            lock(&self.drain).rate(now)
        } else {
            self.drain_rate(now)
        };
        let ahead = {
            let mut mix = lock(&self.mix);
            let ahead = q.work_ahead(returning, |w| mix.share(w.units));
            if let Some(u) = units {
                mix.observe(u);
            }
            ahead
        };
        let wait = work_wait(ahead, rate);
        // The deadline is promised by the later of the rate's prediction
        // and the slots' (an overload from idle frees them in rounds),
        // scaled by how far the predictions fell short lately.
        let promised = self
            .slots_wait(ahead + 1.0, now)
            .map_or(wait, |s| s.max(wait));
        let predicted = lock(&self.calibration).scale(promised) + DISPATCH_MARGIN;
        if standing && call.wait < q.config().overload_max_wait && wait > bound {
            let len = q.len();
            drop(q);
            return Err(Reject::QueueFull {
                retry_after: self.busy_hint(len, who, now),
            });
        }
        let pushed = q.try_push(
            NewEntry {
                payload: Waiter {
                    tx,
                    prefix: wants.prefix,
                    model: wants.model.map(Arc::from),
                    work: wants.work,
                    units,
                    predicted: promised,
                    reuse: wants.reuse,
                    client,
                },
                deadline,
                priority,
                tenant: id.tenant,
                returning,
                auto: call.default_wait && self.default_wait.is_none(),
            },
            now,
            predicted,
        );
        let len = q.len();
        drop(q);
        match pushed {
            Ok(adm) => {
                if let Some(d) = adm.displaced {
                    self.fleet.metrics.queue_drop("displaced");
                    let them = Some((d.tenant, d.payload.client));
                    let _ = d.payload.tx.send(Err(Reject::Displaced {
                        retry_after: self.busy_hint(len, them, now),
                    }));
                }
                // Capacity may be free right now (the queue was not empty
                // when we looked, or a permit just returned).
                self.fleet.released.changed();
                Ok(Ticket::Queued {
                    id: adm.id,
                    rx,
                    deadline,
                })
            }
            Err(rej) => {
                let retry_after = self.busy_hint(len, who, now);
                Err(match rej.reason {
                    QueueReject::QueueFull => Reject::QueueFull { retry_after },
                    QueueReject::DeadlineUnmeetable => Reject::DeadlineUnmeetable { retry_after },
                    QueueReject::TenantShare => Reject::TenantShare { retry_after },
                })
            }
        }
    }

    /// Another backend for a request whose connect failed (none of
    /// `exclude`), bypassing the queue: nothing was sent yet.
    pub fn readmit(&self, exclude: &[usize], now: Instant) -> Result<Permit, Reject> {
        self.fleet
            .admit(exclude, now, &mut self.rng())
            .map_err(|why| self.refusal(why, now))
    }

    /// A backend for a cheap read (`/v1/models`, `/props`), however busy.
    pub fn passthrough(&self, now: Instant) -> Result<Permit, Reject> {
        self.fleet
            .pick_passthrough(now)
            .map_err(|why| self.refusal(why, now))
    }

    /// `Retry-After` for a request refused now for a reason of its own (a
    /// connect failure): what a request the fleet could not take now would
    /// be told.
    pub fn retry_after_now(&self, now: Instant) -> Hint {
        let any_alive = self.fleet.backends().iter().any(|b| {
            let v = self.fleet.assess(b, now).0.verdict;
            v.is_ok() || v.is_err_and(Ineligible::is_busy)
        });
        let why = self.fleet.no_backend(any_alive, now);
        self.refusal(why, now).hint().unwrap_or(Hint::secs(1))
    }

    /// The client of a queued request went away.
    pub fn cancel(&self, id: EntryId) {
        if let Some(mut q) = self.locked() {
            if q.remove(id).is_some() {
                self.fleet.metrics.queue_drop("cancelled");
            }
        }
    }

    /// The wait of a queued request ran out (its own timer; the answer is
    /// [`Gate::timed_out_for`], which counts it): it leaves the queue, and
    /// its wait tells how far its prediction fell short.
    pub fn expire(&self, id: EntryId) {
        if let Some(mut q) = self.locked() {
            if let Some(e) = q.remove(id) {
                self.learn_wait(
                    &e.payload,
                    e.deadline.saturating_duration_since(e.enqueued_at),
                );
            }
        }
    }

    /// An entry left the queue after `waited` (its whole budget, if it ran
    /// out): what [`WaitCalibration`] learns from. Called under the queue
    /// lock.
    fn learn_wait(&self, w: &Waiter, waited: Duration) {
        let floor = self.standing_wait();
        let mut c = lock(&self.calibration);
        c.observe(w.predicted, waited, floor);
        self.fleet.metrics.queue_wait_margin.set(c.margin());
    }

    /// What the wait predictions are multiplied by before they are held
    /// against a budget ([`WaitCalibration::margin`]).
    pub fn wait_margin(&self) -> f64 {
        lock(&self.calibration).margin()
    }

    /// The rejection for a request whose wait budget ran out in the queue.
    pub fn timed_out(&self, now: Instant) -> Reject {
        self.fleet.metrics.queue_drop("expired");
        Reject::QueueTimeout {
            retry_after: self.busy_hint(self.queue_len(), None, now),
        }
    }

    /// An inference request finished (any outcome that freed a slot).
    pub fn completed(&self, now: Instant) {
        lock(&self.drain).on_complete(now);
    }

    /// The wait until `n` of the fleet's slots have freed, by when the
    /// permits in flight were handed out ([`Schedule::wait`]; each backend
    /// keeps its own, [`crate::backend::state::Backend::dispatched_at`]):
    /// the slots of the serving backends ([`Fleet::each_serving`]), each
    /// freeing after the full-batch duration that makes their capacity
    /// rate. `None` before any is known.
    fn slots_wait(&self, n: f64, now: Instant) -> Option<Duration> {
        let (mut slots, mut rate, mut started) = (0usize, 0.0, Vec::new());
        self.fleet.each_serving(now, |b, cap, d| {
            slots += cap as usize;
            rate += f64::from(cap) / d.as_secs_f64().max(1e-3);
            started.extend(b.dispatched_at());
        });
        if slots == 0 || rate <= 0.0 || !rate.is_finite() {
            return None;
        }
        let typical = Duration::try_from_secs_f64(slots as f64 / rate).ok()?;
        Schedule::new(started).wait(n, slots, typical, now)
    }

    /// The answer to a request no backend could take: the one place a
    /// fleet's reason becomes a rejection and its `Retry-After`.
    pub fn refusal(&self, why: Unavailable, now: Instant) -> Reject {
        self.refusal_for(why, None, now)
    }

    /// Completions per second: the measured drain rate, or the fleet's own
    /// capacity figures when they promise more (the measured rate needs
    /// tens of seconds of history and starts from a cautious prior).
    fn drain_rate(&self, now: Instant) -> f64 {
        let measured = lock(&self.drain).rate(now);
        match self.fleet.capacity_rate(now) {
            Some(c) if c > measured => c,
            _ => measured,
        }
    }

    /// What a prompt token weighs against a generated one on this fleet
    /// (the mean of the backends' measured speeds).
    fn prompt_weight(&self) -> f64 {
        let (mut gen, mut prompt, mut n) = (0.0, 0.0, 0u32);
        for b in self.fleet.backends().iter() {
            let s = b.speed();
            if let (Some(g), Some(p)) = (s.gen_ms(), s.prompt_ms()) {
                (gen, prompt, n) = (gen + g, prompt + p, n + 1);
            }
        }
        if n == 0 {
            return predict::DEFAULT_PROMPT_WEIGHT;
        }
        predict::prompt_weight(Some(gen), Some(prompt))
    }

    /// The longest predicted wait an arrival may be queued for while the
    /// queue stands ([`STANDING_FACTOR`] of the typical request duration,
    /// at least the auto budget's floor), and the queue's standing target.
    pub fn standing_wait(&self) -> Duration {
        match self.fleet.typical_duration() {
            Some(d) => d.mul_f64(STANDING_FACTOR).max(AUTO_WAIT_MIN),
            None => AUTO_WAIT_UNKNOWN.mul_f64(STANDING_FACTOR),
        }
    }

    /// How long the queue must stand before it counts as sustained: the
    /// queue's `overload_interval` or [`STANDING_DURATIONS`] typical request
    /// durations, whichever is longer.
    fn standing_interval(&self, overload_interval: Duration) -> Duration {
        let typical = self.fleet.typical_duration().unwrap_or_default();
        overload_interval.max(typical.mul_f64(STANDING_DURATIONS))
    }
}

#[cfg(test)]
mod tests;
