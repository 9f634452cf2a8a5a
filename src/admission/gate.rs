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

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::oneshot;

use super::budget::{BudgetParams, TokenBudget};
use super::drain::{retry_after_open, retry_after_secs, DrainEstimator, DrainParams};
use super::queue::{
    AdmissionQueue, DropReason, Dropped, EntryId, NewEntry, Priority, QueueParams, QueueReject,
};
use super::ratelimit::{RateLimitParams, RateLimits};
use super::DISPATCH_MARGIN;
use crate::backend::fleet::Fleet;
use crate::backend::state::Permit;
use crate::reject::Reject;

/// Auto wait budget = this share of the typical request duration.
const AUTO_WAIT_FACTOR: f64 = 0.5;
/// Floor of the auto budget: below it, queueing cannot absorb any burst.
const AUTO_WAIT_MIN: Duration = Duration::from_millis(50);
/// Auto budget before any request has finished.
const AUTO_WAIT_UNKNOWN: Duration = Duration::from_secs(2);

/// Everything the gate is built from, checked by `config`.
#[derive(Debug, Clone, PartialEq)]
pub struct GateParams {
    /// `None`: no queue, shed at once when the fleet is full.
    pub queue: Option<QueueParams>,
    /// Wait budget of a request that names none (`x-sluice-deadline`);
    /// `None` = auto: half the fleet's typical request duration.
    pub default_wait: Option<Duration>,
    /// Largest wait budget a client may ask for.
    pub max_wait: Duration,
    pub drain: DrainParams,
    /// `None`: no rate limits.
    pub rate_limit: Option<RateLimitParams>,
    /// `None`: no token budgets.
    pub token_budget: Option<BudgetParams>,
    /// Completion tokens charged up front when a request is admitted (the
    /// prompt is estimated from the body size); reconciled from `usage`.
    pub completion_estimate: u64,
    pub api_keys: Vec<ApiKey>,
    /// Refuse requests without a known API key (401).
    pub require_key: bool,
}

impl Default for GateParams {
    /// A queue with its defaults, auto wait budget, no limits, no keys.
    fn default() -> Self {
        GateParams {
            queue: Some(QueueParams::default()),
            default_wait: None,
            // A client may ask to wait up to a minute (batch jobs), no longer.
            max_wait: Duration::from_secs(60),
            drain: DrainParams::default(),
            rate_limit: None,
            token_budget: None,
            // A typical chat answer; requests that generate more pay the
            // difference when their `usage` arrives.
            completion_estimate: 256,
            api_keys: Vec::new(),
            require_key: false,
        }
    }
}

/// A named API key. The key itself never appears in logs or metrics.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub name: String,
    pub key: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}, <redacted>)", self.name)
    }
}

/// What a queued request receives: a permit, or why it was dropped.
pub type Handoff = Result<Permit, Reject>;

/// Who sent a request, as far as admission cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The API key's configured name, `key-<hash>` for an unknown bearer
    /// token, or `anonymous`. Safe to log; never the key itself.
    pub name: Arc<str>,
    /// The rate-limit key: the key name, or `ip:<address>` without one.
    pub rate_key: Arc<str>,
    /// Fairness tenant (a hash of `rate_key`).
    pub tenant: u64,
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
    queue: Option<Mutex<AdmissionQueue<oneshot::Sender<Handoff>>>>,
    drain: Mutex<DrainEstimator>,
    rate: Option<RateLimits>,
    budget: Option<Mutex<TokenBudget>>,
    pub completion_estimate: u64,
    keys: Vec<ApiKey>,
    require_key: bool,
    anonymous: Arc<str>,
    default_wait: Option<Duration>,
    pub max_wait: Duration,
    max_retry_after: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn hash(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl Gate {
    pub fn new(fleet: Arc<Fleet>, params: GateParams) -> Gate {
        Gate {
            fleet,
            queue: params
                .queue
                .map(|q| Mutex::new(AdmissionQueue::with_params(q))),
            max_retry_after: params.drain.config().max_retry_after,
            drain: Mutex::new(DrainEstimator::with_params(params.drain)),
            rate: params.rate_limit.as_ref().map(RateLimits::with_params),
            budget: params
                .token_budget
                .map(|b| Mutex::new(TokenBudget::with_params(b))),
            completion_estimate: params.completion_estimate,
            keys: params.api_keys,
            require_key: params.require_key,
            anonymous: Arc::from("anonymous"),
            default_wait: params.default_wait,
            max_wait: params.max_wait,
        }
    }

    /// The wait budget of a request that names none. Auto (the default):
    /// half the fleet's typical request duration, so an admitted request
    /// takes at most about 1.5× its unloaded time; "hold the queue short,
    /// reject early rather than queue long".
    pub fn default_wait(&self) -> Duration {
        if let Some(w) = self.default_wait {
            return w;
        }
        let auto = match self.fleet.typical_duration() {
            Some(d) => d.mul_f64(AUTO_WAIT_FACTOR).max(AUTO_WAIT_MIN),
            None => AUTO_WAIT_UNKNOWN,
        };
        auto.min(self.max_wait)
    }

    /// Requests waiting in the queue now.
    pub fn queue_len(&self) -> usize {
        self.fleet.released.waiting.load(Ordering::Acquire)
    }

    /// Names the sender from its bearer token and address.
    pub fn identify(&self, bearer: Option<&str>, ip: Option<IpAddr>) -> Result<Identity, Reject> {
        let known = bearer.and_then(|t| self.keys.iter().find(|k| k.key == t));
        let (name, rate_key): (Arc<str>, Arc<str>) = match (known, bearer) {
            (Some(k), _) => {
                let n: Arc<str> = Arc::from(k.name.as_str());
                (n.clone(), n)
            }
            (None, _) if self.require_key => return Err(Reject::Unauthorized),
            (None, Some(t)) => {
                let n: Arc<str> = Arc::from(format!("key-{:08x}", hash(t) as u32));
                (n.clone(), n)
            }
            (None, None) => (
                Arc::clone(&self.anonymous),
                Arc::from(ip.map_or_else(|| "ip:unknown".to_string(), |ip| format!("ip:{ip}"))),
            ),
        };
        let tenant = hash(&rate_key);
        Ok(Identity {
            name,
            rate_key,
            tenant,
        })
    }

    /// Counts the request against its key's rate limit.
    pub fn rate_check(&self, id: &Identity) -> Result<(), Reject> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        rate.check(&id.rate_key)
            .map(|_| ())
            .map_err(|l| Reject::RateLimited {
                retry_after: l.retry_after_secs().min(u64::from(u32::MAX)) as u32,
                limit: l.limit,
                remaining: l.remaining,
                reset: l.reset.as_secs_f64().ceil() as u32,
            })
    }

    /// Charges the key's token budget an estimate; `Ok(Some(charged))`
    /// must later be reconciled with the tokens really used.
    pub fn charge_tokens(
        &self,
        id: &Identity,
        estimate: u64,
        now: Instant,
    ) -> Result<Option<u64>, Reject> {
        let Some(b) = &self.budget else {
            return Ok(None);
        };
        let secs = |d: Duration| d.as_secs_f64().ceil().min(f64::from(u32::MAX)) as u32;
        lock(b)
            .charge(&id.rate_key, estimate, now)
            .map(|_| Some(estimate))
            .map_err(|e| Reject::TokenBudget {
                retry_after: secs(e.retry_after).max(1),
                limit: e.limit,
                remaining: e.remaining,
                reset: secs(e.reset),
            })
    }

    /// Settles a charge with the tokens the response reported (0 if none).
    pub fn reconcile_tokens(&self, id: &Identity, estimated: u64, actual: u64, now: Instant) {
        if let Some(b) = &self.budget {
            lock(b).reconcile(&id.rate_key, estimated, actual, now);
        }
    }

    /// Drops idle rate-limit and budget keys (called periodically).
    pub fn evict_idle_keys(&self, now: Instant) {
        if let Some(r) = &self.rate {
            r.retain_recent();
        }
        if let Some(b) = &self.budget {
            lock(b).evict_idle(now);
        }
    }

    /// A permit now, a place in the queue, or a rejection.
    pub fn admit(
        &self,
        id: &Identity,
        wait: Duration,
        priority: Priority,
        now: Instant,
    ) -> Result<Ticket, Reject> {
        if self.queue_len() == 0 {
            match self.fleet.admit(&[], now, &mut rand::rng()) {
                Ok(p) => return Ok(Ticket::Ready(p)),
                Err(r @ Reject::NoHealthyBackend { .. }) => return Err(self.unhealthy(r, now)),
                Err(_) if self.queue.is_none() => return Err(self.saturated(now)),
                Err(_) => {}
            }
        }
        let Some(queue) = &self.queue else {
            return Err(self.saturated(now));
        };
        let (tx, rx) = oneshot::channel();
        let deadline = now + wait;
        let mut q = lock(queue);
        let predicted = self.predicted_wait(q.len(), now) + DISPATCH_MARGIN;
        let pushed = q.try_push(
            NewEntry {
                payload: tx,
                deadline,
                priority,
                tenant: id.tenant,
            },
            now,
            predicted,
        );
        self.fleet
            .released
            .waiting
            .store(q.len(), Ordering::Release);
        let len = q.len();
        drop(q);
        match pushed {
            Ok(adm) => {
                if let Some(d) = adm.displaced {
                    self.fleet.metrics.queue_drop("displaced");
                    let _ = d.payload.send(Err(Reject::Displaced {
                        retry_after: self.retry_after(len, now),
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
                let retry_after = self.retry_after(len, now);
                Err(match rej.reason {
                    QueueReject::QueueFull => Reject::QueueFull { retry_after },
                    QueueReject::DeadlineUnmeetable => Reject::DeadlineUnmeetable { retry_after },
                    QueueReject::TenantShare => Reject::TenantShare { retry_after },
                })
            }
        }
    }

    /// The client of a queued request went away, or its wait ran out.
    pub fn cancel(&self, id: EntryId) {
        if let Some(q) = &self.queue {
            let mut q = lock(q);
            if q.remove(id).is_some() {
                self.fleet.metrics.queue_drop("cancelled");
            }
            self.fleet
                .released
                .waiting
                .store(q.len(), Ordering::Release);
        }
    }

    /// The rejection for a request whose wait budget ran out in the queue.
    pub fn timed_out(&self, now: Instant) -> Reject {
        self.fleet.metrics.queue_drop("expired");
        Reject::QueueTimeout {
            retry_after: self.retry_after(self.queue_len(), now),
        }
    }

    /// Hands free capacity to queued requests, and answers expired ones.
    pub fn pump(&self) {
        let Some(queue) = &self.queue else { return };
        loop {
            // Each round reads the clock: handing out permits takes time.
            let now = Instant::now();
            let mut q = lock(queue);
            let cutoff = now + DISPATCH_MARGIN;
            for d in q.drop_expired(cutoff) {
                self.answer_dropped(d, q.len(), now);
            }
            if q.is_empty() {
                self.fleet.released.waiting.store(0, Ordering::Release);
                return;
            }
            let Ok(permit) = self.fleet.admit(&[], now, &mut rand::rng()) else {
                self.fleet
                    .released
                    .waiting
                    .store(q.len(), Ordering::Release);
                return;
            };
            let popped = q.pop(cutoff);
            self.fleet
                .released
                .waiting
                .store(q.len(), Ordering::Release);
            let len = q.len();
            drop(q);
            for d in popped.dropped {
                self.answer_dropped(d, len, now);
            }
            let Some(entry) = popped.next else { return };
            self.fleet.metrics.queue_wait.observe(
                now.saturating_duration_since(entry.enqueued_at)
                    .as_secs_f64(),
            );
            // A client that left without cancelling drops the permit here.
            let _ = entry.payload.send(Ok(permit));
        }
    }

    /// Tells a request that left the queue unserved why.
    fn answer_dropped(&self, d: Dropped<oneshot::Sender<Handoff>>, len: usize, now: Instant) {
        self.fleet.metrics.queue_drop(d.reason.as_str());
        let retry_after = self.retry_after(len, now);
        let r = match d.reason {
            DropReason::Expired => Reject::QueueTimeout { retry_after },
            _ => Reject::Displaced { retry_after },
        };
        let _ = d.entry.payload.send(Err(r));
    }

    /// An inference request finished (any outcome that freed a slot).
    pub fn completed(&self, now: Instant) {
        lock(&self.drain).on_complete(now);
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

    /// Predicted wait of the entry at `position` (0 = served next).
    fn predicted_wait(&self, position: usize, now: Instant) -> Duration {
        let secs = (position as f64 + 1.0) / self.drain_rate(now);
        Duration::try_from_secs_f64(secs)
            .unwrap_or(Duration::MAX)
            .min(Duration::from_secs(3600))
    }

    /// `Retry-After` while `queue_len` requests wait: the time to drain them.
    fn retry_after(&self, queue_len: usize, now: Instant) -> u32 {
        let wait = match queue_len {
            0 => Duration::ZERO,
            n => self.predicted_wait(n - 1, now),
        };
        retry_after_secs(wait, self.max_retry_after)
    }

    fn saturated(&self, now: Instant) -> Reject {
        Reject::Saturated {
            retry_after: self.retry_after(self.queue_len().max(1), now),
        }
    }

    fn unhealthy(&self, r: Reject, now: Instant) -> Reject {
        let open = self
            .fleet
            .all_open_remaining(now)
            .and_then(|d| retry_after_open([d], self.max_retry_after));
        match (open, r) {
            (Some(s), _) => Reject::NoHealthyBackend { retry_after: s },
            (None, r) => r,
        }
    }
}

/// Reads `x-sluice-deadline`: how long the request may wait at the gateway
/// for a backend, as seconds (`"2.5"`) or a duration (`"500ms"`, `"3s"`).
pub fn parse_wait(raw: Option<&str>, default: Duration, max: Duration) -> Result<Duration, Reject> {
    let Some(raw) = raw else { return Ok(default) };
    let raw = raw.trim();
    let d = match raw.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s),
        Ok(_) => {
            return Err(Reject::BadHeader {
                name: "x-sluice-deadline",
                why: format!("{raw:?} must not be negative"),
            })
        }
        Err(_) => humantime::parse_duration(raw).map_err(|e| Reject::BadHeader {
            name: "x-sluice-deadline",
            why: format!("{raw:?}: {e} (write seconds, e.g. \"2.5\", or \"500ms\")"),
        })?,
    };
    Ok(d.min(max))
}

/// Reads `x-sluice-priority`: `critical`, `normal` (default) or `sheddable`.
pub fn parse_priority(raw: Option<&str>) -> Result<Priority, Reject> {
    match raw.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("normal") => Ok(Priority::Normal),
        Some("critical") => Ok(Priority::Critical),
        Some("sheddable") | Some("low") => Ok(Priority::Sheddable),
        Some(other) => Err(Reject::BadHeader {
            name: "x-sluice-priority",
            why: format!("{other:?}: use critical, normal or sheddable"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_header_forms() {
        let d = Duration::from_secs(2);
        let m = Duration::from_secs(60);
        assert_eq!(parse_wait(None, d, m).unwrap(), d);
        assert_eq!(
            parse_wait(Some("0.5"), d, m).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_wait(Some("750ms"), d, m).unwrap(),
            Duration::from_millis(750)
        );
        assert_eq!(parse_wait(Some("1h"), d, m).unwrap(), m);
        assert_eq!(parse_wait(Some("soon"), d, m).unwrap_err().status(), 400);
        assert_eq!(parse_wait(Some("-1"), d, m).unwrap_err().status(), 400);
    }

    #[test]
    fn priority_header_forms() {
        assert_eq!(parse_priority(None).unwrap(), Priority::Normal);
        assert_eq!(
            parse_priority(Some("Critical")).unwrap(),
            Priority::Critical
        );
        assert_eq!(
            parse_priority(Some("sheddable")).unwrap(),
            Priority::Sheddable
        );
        assert!(parse_priority(Some("urgent")).is_err());
    }
}
