//! Per-backend circuit breaker: stop sending work to a backend that is
//! failing, probe it gently, and let it back in when it answers again.
//!
//! ```text
//!                 N consecutive failures, or failure rate ≥ R over the
//!                 window with ≥ V requests (both subject to the fleet
//!                 ejection cap), or trip_now(cause) (never capped)
//!   ┌────────┐ ─────────────────────────────────────────────────► ┌──────────────┐
//!   │ Closed │                                                    │ Open{until}  │
//!   └────────┘ ◄──────────┐                                       └──────────────┘
//!        ▲                │ `successes_to_close`                     │        ▲
//!        │                │ probe successes                 backoff  │        │ any probe failure,
//!        │           ┌──────────┐ ◄──────────────────────────── elapsed        │ or trip_now(cause)
//!        └───────────│ HalfOpen │ ──────────────────────────────────────────────┘
//!                    └──────────┘   (admits ≤ `half_open_probes` requests at once)
//! ```
//!
//! Only these four transitions exist: Closed→Open, Open→HalfOpen,
//! HalfOpen→Closed, HalfOpen→Open. Every one is returned to the caller as a
//! [`Transition`] with its [`TransitionCause`], so metrics can count them.
//!
//! ## Why both a consecutive count and a rate
//!
//! A backend that is down fails every request: the consecutive count sees it
//! after N requests, however slow the traffic. A backend that fails one
//! request in three never produces N in a row but is still bad: the windowed
//! rate sees it, and the minimum volume keeps two unlucky requests out of
//! three at low traffic from ejecting a healthy backend.
//!
//! ## What counts as a failure
//!
//! Connect errors, resets, 5xx other than llama-server's `503 Loading model`,
//! and first-byte timeouts (see [`Outcome`]). A 4xx is the client's fault, a
//! client abort or our own deadline expiry says nothing about the backend, and
//! "Loading model" is a backend that is starting: none of these count.
//!
//! ## The fleet ejection cap
//!
//! When every backend fails at once the cause is usually not the backends (a
//! poisonous prompt, a shared dependency, overload that makes everyone time
//! out). Ejecting them all turns a partial outage into a total one. So a
//! *statistical* trip (consecutive failures or rate) first asks
//! [`may_eject`]. A trip with direct evidence ([`Breaker::trip_now`]:
//! connection refused, `/health` 503) ignores the cap: sending requests to a
//! port that refuses them helps nobody. A probe failure in half-open ignores
//! it too: that backend already counts as ejected.
//!
//! ## Backoff
//!
//! Each re-open without a healthy period in between multiplies the open time
//! by `backoff_multiplier`, capped at `max_backoff`, with ± `jitter` so a
//! fleet that failed together does not probe together. The jitter comes from
//! a small deterministic generator seeded in [`Breaker::new`]: the breaker
//! stays pure and reproducible, and no call needs an rng argument. The level
//! resets once the breaker has stayed closed for `healthy_period`.
//!
//! ## Late outcomes
//!
//! Requests admitted while closed may finish after the breaker opened. While
//! open, outcomes are ignored (the decision is made). In half-open, any
//! outcome is evidence about the backend and is counted like a probe's; the
//! probe slot count saturates at zero.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// Number of buckets in the sliding failure-rate window. Ten buckets make the
/// window slide in steps of a tenth of its length: fine enough that a burst
/// is forgotten close to `window` later, small enough to stay a fixed array.
const WINDOW_BUCKETS: usize = 10;

// === Config ===

/// Breaker parameters. Build with [`BreakerConfig::default`] and adjust; the
/// breaker validates them in [`Breaker::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker. Default 5: a dead backend
    /// is found after five requests, while a single timeout or reset (which
    /// happens to healthy servers) is not enough.
    pub consecutive_failures: u32,
    /// Failure share over `window` that opens the breaker, in (0, 1].
    /// Default 0.5: a backend failing half its requests is worse than waiting
    /// for another one; lower values eject backends for noise.
    pub failure_rate: f64,
    /// Length of the sliding window for the failure rate. Default 30 s: LLM
    /// requests last seconds, so a shorter window holds too few outcomes.
    pub window: Duration,
    /// Outcomes needed in the window before the rate may trip. Default 10:
    /// below that, a rate of 0.5 is two or three unlucky requests.
    pub min_requests: u32,
    /// First open period. Default 2 s: long enough that a restarting
    /// llama-server is not hammered, short enough that a blip costs little.
    pub base_backoff: Duration,
    /// Growth of the open period on each re-open. Default 2.0 (exponential).
    pub backoff_multiplier: f64,
    /// Cap on the open period. Default 60 s: a model load takes tens of
    /// seconds; probing less often than once a minute wastes a recovered
    /// backend for too long.
    pub max_backoff: Duration,
    /// Relative jitter on the open period, in [0, 1). Default 0.2 (±20 %),
    /// enough to spread probes of backends that failed together.
    pub jitter: f64,
    /// Closed time after which the backoff level resets. Default 60 s: a
    /// backend that served for a minute is healthy again, its next failure
    /// starts from `base_backoff`.
    pub healthy_period: Duration,
    /// Requests admitted at once in half-open. Default 2: one probe can be
    /// unlucky (a long generation); more would hit a sick backend with load.
    pub half_open_probes: u32,
    /// Probe successes that close the breaker. Default 2.
    pub successes_to_close: u32,
    /// A probe that has not reported after this long gives its slot back, so
    /// a lost outcome cannot wedge the breaker in half-open. Default 300 s,
    /// longer than any sane generation.
    pub probe_timeout: Duration,
    /// Largest share of the fleet that statistical trips may hold open, in
    /// (0, 1]. Default 0.5: see "The fleet ejection cap" above.
    pub max_ejected_share: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(30),
            min_requests: 10,
            base_backoff: Duration::from_secs(2),
            backoff_multiplier: 2.0,
            max_backoff: Duration::from_secs(60),
            jitter: 0.2,
            healthy_period: Duration::from_secs(60),
            half_open_probes: 2,
            successes_to_close: 2,
            probe_timeout: Duration::from_secs(300),
            max_ejected_share: 0.5,
        }
    }
}

/// A configuration value that cannot work; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidBreakerConfig(pub String);

impl fmt::Display for InvalidBreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidBreakerConfig {}

impl BreakerConfig {
    /// Checks every field; the error names the first bad one and its value.
    pub fn validate(&self) -> Result<(), InvalidBreakerConfig> {
        let bad = |field: &str, value: String, why: &str| {
            Err(InvalidBreakerConfig(format!(
                "breaker.{field} = {value} is not valid: {why}"
            )))
        };
        if self.consecutive_failures == 0 {
            return bad("consecutive_failures", "0".into(), "must be at least 1");
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return bad(
                "failure_rate",
                self.failure_rate.to_string(),
                "must be in (0, 1]",
            );
        }
        if self.window < Duration::from_millis(WINDOW_BUCKETS as u64) {
            return bad(
                "window",
                format!("{:?}", self.window),
                "must be at least 10ms",
            );
        }
        if self.min_requests == 0 {
            return bad("min_requests", "0".into(), "must be at least 1");
        }
        if self.base_backoff.is_zero() {
            return bad("base_backoff", "0s".into(), "must be positive");
        }
        if !(self.backoff_multiplier >= 1.0 && self.backoff_multiplier.is_finite()) {
            return bad(
                "backoff_multiplier",
                self.backoff_multiplier.to_string(),
                "must be a finite number ≥ 1",
            );
        }
        if self.max_backoff < self.base_backoff {
            return bad(
                "max_backoff",
                format!("{:?}", self.max_backoff),
                "must not be less than base_backoff",
            );
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return bad("jitter", self.jitter.to_string(), "must be in [0, 1)");
        }
        if self.half_open_probes == 0 {
            return bad("half_open_probes", "0".into(), "must be at least 1");
        }
        if self.successes_to_close == 0 {
            return bad("successes_to_close", "0".into(), "must be at least 1");
        }
        if self.probe_timeout.is_zero() {
            return bad("probe_timeout", "0s".into(), "must be positive");
        }
        if !(self.max_ejected_share > 0.0 && self.max_ejected_share <= 1.0) {
            return bad(
                "max_ejected_share",
                self.max_ejected_share.to_string(),
                "must be in (0, 1]",
            );
        }
        Ok(())
    }
}

// === Outcomes, states, transitions ===

/// What happened to one request sent to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Any 2xx/3xx answer, or a stream that ended normally.
    Success,
    /// Could not connect (refused, unreachable, connect timeout). For a
    /// refusal the caller should also call [`Breaker::trip_now`].
    ConnectError,
    /// The connection was reset or closed mid-response.
    Reset,
    /// A 5xx other than llama-server's "Loading model" 503.
    ServerError5xx,
    /// No first byte within the first-byte timeout.
    FirstByteTimeout,
    /// Says nothing about the backend: 4xx, client abort, our own deadline
    /// expiry, "Loading model" 503.
    NotCounted,
}

impl Outcome {
    /// Whether this outcome is a backend failure.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::ConnectError
                | Outcome::Reset
                | Outcome::ServerError5xx
                | Outcome::FirstByteTimeout
        )
    }
}

/// Direct evidence that a backend cannot serve; opens the breaker at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TripCause {
    /// A connect attempt was refused: nothing listens on the port.
    ConnectionRefused,
    /// `/health` answered 503 (model loading) or did not answer.
    HealthUnavailable,
    /// An operator drained the backend.
    Manual,
}

/// The breaker's state as seen at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// No requests until `until`.
    Open {
        /// End of the open period; the breaker is half-open from then on.
        until: Instant,
    },
    /// A few probe requests are admitted.
    HalfOpen,
}

/// The state without its data, for transitions and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// See [`BreakerState::Closed`].
    Closed,
    /// See [`BreakerState::Open`].
    Open,
    /// See [`BreakerState::HalfOpen`].
    HalfOpen,
}

impl StateKind {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Closed => "closed",
            StateKind::Open => "open",
            StateKind::HalfOpen => "half_open",
        }
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransitionCause {
    /// Closed→Open: `consecutive_failures` in a row.
    ConsecutiveFailures,
    /// Closed→Open: failure rate over the window.
    FailureRate,
    /// Closed/HalfOpen→Open: [`Breaker::trip_now`].
    Tripped(TripCause),
    /// Open→HalfOpen: the open period elapsed.
    BackoffElapsed,
    /// HalfOpen→Closed: enough probes succeeded.
    ProbesSucceeded,
    /// HalfOpen→Open: a probe failed.
    ProbeFailed,
}

impl TransitionCause {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionCause::ConsecutiveFailures => "consecutive_failures",
            TransitionCause::FailureRate => "failure_rate",
            TransitionCause::Tripped(TripCause::ConnectionRefused) => "connection_refused",
            TransitionCause::Tripped(TripCause::HealthUnavailable) => "health_unavailable",
            TransitionCause::Tripped(TripCause::Manual) => "manual",
            TransitionCause::BackoffElapsed => "backoff_elapsed",
            TransitionCause::ProbesSucceeded => "probes_succeeded",
            TransitionCause::ProbeFailed => "probe_failed",
        }
    }
}

/// One state change, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: StateKind,
    /// State after.
    pub to: StateKind,
    /// Why.
    pub cause: TransitionCause,
}

/// Up to two transitions, in order (see [`Breaker::trip_now`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transitions([Option<Transition>; 2]);

impl Transitions {
    /// The transitions, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Transition> + '_ {
        self.0.iter().flatten().copied()
    }

    /// The newest transition, if any.
    pub fn last(&self) -> Option<Transition> {
        self.0[1].or(self.0[0])
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
}

/// Answer of [`Breaker::allow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Allow {
    /// Whether the request may go to this backend.
    pub allowed: bool,
    /// Set when this call moved the breaker from Open to HalfOpen.
    pub transition: Option<Transition>,
}

/// Whether a statistical trip may eject one more backend: `open_count` is
/// the number of backends currently Open or HalfOpen, `fleet_size` the number
/// of backends. At least one backend may always be ejected (otherwise a fleet
/// of one could never be), and never more than `max_ejected_share` of the
/// fleet. Non-finite or out-of-range shares are treated as the nearest bound.
pub fn may_eject(open_count: usize, fleet_size: usize, max_ejected_share: f64) -> bool {
    if open_count == 0 {
        return true;
    }
    let share = if max_ejected_share.is_nan() {
        0.0
    } else {
        max_ejected_share.clamp(0.0, 1.0)
    };
    let allowed = (share * fleet_size as f64).floor() as usize;
    open_count < allowed
}

// === Sliding window ===

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    successes: u32,
    failures: u32,
}

/// Success/failure counts over the last `window`, in `WINDOW_BUCKETS` slices.
#[derive(Debug, Clone)]
struct Window {
    origin: Option<Instant>,
    width: Duration,
    buckets: [Bucket; WINDOW_BUCKETS],
}

impl Window {
    fn new(window: Duration) -> Self {
        Self {
            origin: None,
            width: window / WINDOW_BUCKETS as u32,
            buckets: [Bucket::default(); WINDOW_BUCKETS],
        }
    }

    fn epoch(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let since = now.saturating_duration_since(origin).as_nanos();
        let width = self.width.as_nanos().max(1);
        u64::try_from(since / width).unwrap_or(u64::MAX)
    }

    fn add(&mut self, failure: bool, now: Instant) {
        let epoch = self.epoch(now);
        let b = &mut self.buckets[(epoch % WINDOW_BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        if failure {
            b.failures = b.failures.saturating_add(1);
        } else {
            b.successes = b.successes.saturating_add(1);
        }
    }

    /// (successes, failures) in buckets that are still inside the window.
    fn totals(&mut self, now: Instant) -> (u64, u64) {
        let epoch = self.epoch(now);
        self.buckets
            .iter()
            .filter(|b| b.epoch <= epoch && epoch - b.epoch < WINDOW_BUCKETS as u64)
            .fold((0, 0), |(s, f), b| {
                (s + u64::from(b.successes), f + u64::from(b.failures))
            })
    }

    fn clear(&mut self) {
        self.buckets = [Bucket::default(); WINDOW_BUCKETS];
        self.origin = None;
    }
}

// === Breaker ===

#[derive(Debug, Clone, Copy)]
enum Inner {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        since: Instant,
        in_flight: u32,
        successes: u32,
    },
}

/// Circuit breaker for one backend. See the module docs.
#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    inner: Inner,
    consecutive: u32,
    window: Window,
    /// Open periods since the last healthy period; drives the backoff.
    level: u32,
    /// When the breaker last closed (None: never opened).
    closed_since: Option<Instant>,
    rng: u64,
}

// === impl Breaker ===

impl Breaker {
    /// A closed breaker. `jitter_seed` seeds the backoff jitter; give each
    /// backend a different one (e.g. its index, or a random number) so their
    /// probes spread out.
    pub fn new(cfg: BreakerConfig, jitter_seed: u64) -> Result<Self, InvalidBreakerConfig> {
        cfg.validate()?;
        Ok(Self {
            window: Window::new(cfg.window),
            cfg,
            inner: Inner::Closed,
            consecutive: 0,
            level: 0,
            closed_since: None,
            rng: jitter_seed,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// The state at `now` (an elapsed open period reads as half-open even
    /// before [`Breaker::allow`] moved it there).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.inner {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { until } if now < until => BreakerState::Open { until },
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Time left in the open period, for `Retry-After`; `None` unless open.
    pub fn remaining_open(&self, now: Instant) -> Option<Duration> {
        match self.inner {
            Inner::Open { until } if now < until => Some(until - now),
            _ => None,
        }
    }

    /// Whether a request may be sent now. In half-open this takes a probe
    /// slot, which the request's [`Breaker::record`] gives back.
    pub fn allow(&mut self, now: Instant) -> Allow {
        let transition = self.advance(now);
        let allowed = match &mut self.inner {
            Inner::Closed => true,
            Inner::Open { .. } => false,
            Inner::HalfOpen {
                since, in_flight, ..
            } => {
                if now.saturating_duration_since(*since) >= self.cfg.probe_timeout {
                    // Probes that never reported: give their slots back.
                    *in_flight = 0;
                    *since = now;
                }
                if *in_flight < self.cfg.half_open_probes {
                    *in_flight += 1;
                    true
                } else {
                    false
                }
            }
        };
        Allow {
            allowed,
            transition,
        }
    }

    /// Moves an elapsed Open period to HalfOpen. [`Breaker::allow`] and
    /// [`Breaker::record`] call it; call it from a periodic task to publish
    /// the transition even when no request arrives.
    pub fn poll(&mut self, now: Instant) -> Option<Transition> {
        self.advance(now)
    }

    /// Reports the outcome of a request. `may_eject` is the answer of
    /// [`may_eject`] for this fleet right now; it only matters for the
    /// statistical trips. Outcomes that arrive while Open (even an elapsed
    /// Open that no [`Breaker::allow`] or [`Breaker::poll`] has moved on yet)
    /// come from requests admitted before the trip and are ignored.
    pub fn record(
        &mut self,
        outcome: Outcome,
        now: Instant,
        may_eject: bool,
    ) -> Option<Transition> {
        match &mut self.inner {
            Inner::Open { .. } => None,
            Inner::HalfOpen {
                in_flight,
                successes,
                ..
            } => {
                *in_flight = in_flight.saturating_sub(1);
                match outcome {
                    Outcome::NotCounted => None,
                    Outcome::Success => {
                        *successes += 1;
                        if *successes >= self.cfg.successes_to_close {
                            Some(self.close(now))
                        } else {
                            None
                        }
                    }
                    _ => Some(self.open(now, StateKind::HalfOpen, TransitionCause::ProbeFailed)),
                }
            }
            Inner::Closed => {
                if outcome == Outcome::NotCounted {
                    return None;
                }
                let failure = outcome.is_failure();
                self.window.add(failure, now);
                if !failure {
                    self.consecutive = 0;
                    return None;
                }
                self.consecutive = self.consecutive.saturating_add(1);
                if !may_eject {
                    return None;
                }
                if self.consecutive >= self.cfg.consecutive_failures {
                    return Some(self.open(
                        now,
                        StateKind::Closed,
                        TransitionCause::ConsecutiveFailures,
                    ));
                }
                let (s, f) = self.window.totals(now);
                let total = s + f;
                if total >= u64::from(self.cfg.min_requests)
                    && f as f64 >= self.cfg.failure_rate * total as f64
                {
                    return Some(self.open(now, StateKind::Closed, TransitionCause::FailureRate));
                }
                None
            }
        }
    }

    /// Opens at once on direct evidence (connection refused, `/health`
    /// 503, operator drain). Ignores the ejection cap. While open this does
    /// nothing: the open period runs out and the next half-open decides, so
    /// repeated health failures back off exponentially. If the open period
    /// has elapsed unobserved, both steps (Open→HalfOpen, HalfOpen→Open) are
    /// returned.
    pub fn trip_now(&mut self, cause: TripCause, now: Instant) -> Transitions {
        let half_opened = self.advance(now);
        let from = match self.inner {
            Inner::Open { .. } => return Transitions([half_opened, None]),
            Inner::Closed => StateKind::Closed,
            Inner::HalfOpen { .. } => StateKind::HalfOpen,
        };
        let opened = self.open(now, from, TransitionCause::Tripped(cause));
        Transitions([half_opened, Some(opened)])
    }

    fn advance(&mut self, now: Instant) -> Option<Transition> {
        match self.inner {
            Inner::Open { until } if now >= until => {
                self.inner = Inner::HalfOpen {
                    since: now,
                    in_flight: 0,
                    successes: 0,
                };
                Some(Transition {
                    from: StateKind::Open,
                    to: StateKind::HalfOpen,
                    cause: TransitionCause::BackoffElapsed,
                })
            }
            _ => None,
        }
    }

    fn open(&mut self, now: Instant, from: StateKind, cause: TransitionCause) -> Transition {
        if let Some(closed) = self.closed_since {
            if from == StateKind::Closed
                && now.saturating_duration_since(closed) >= self.cfg.healthy_period
            {
                self.level = 0;
            }
        }
        let backoff = self.backoff(self.level);
        self.level = self.level.saturating_add(1);
        self.inner = Inner::Open {
            until: now.checked_add(backoff).unwrap_or(now),
        };
        self.consecutive = 0;
        self.window.clear();
        Transition {
            from,
            to: StateKind::Open,
            cause,
        }
    }

    fn close(&mut self, now: Instant) -> Transition {
        self.inner = Inner::Closed;
        self.closed_since = Some(now);
        self.consecutive = 0;
        self.window.clear();
        Transition {
            from: StateKind::HalfOpen,
            to: StateKind::Closed,
            cause: TransitionCause::ProbesSucceeded,
        }
    }

    /// base × multiplier^level, capped, then ± jitter (and capped again).
    fn backoff(&mut self, level: u32) -> Duration {
        let base = self.cfg.base_backoff.as_secs_f64();
        let max = self.cfg.max_backoff.as_secs_f64();
        let exp = i32::try_from(level.min(1024)).unwrap_or(1024);
        let raw = (base * self.cfg.backoff_multiplier.powi(exp)).min(max);
        let u = self.next_unit();
        let jittered = raw * (1.0 + self.cfg.jitter * (2.0 * u - 1.0));
        Duration::try_from_secs_f64(jittered.clamp(0.0, max)).unwrap_or(self.cfg.max_backoff)
    }

    /// SplitMix64 step mapped to [0, 1).
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> Instant {
        Instant::now()
    }

    fn no_jitter() -> BreakerConfig {
        BreakerConfig {
            jitter: 0.0,
            ..BreakerConfig::default()
        }
    }

    fn breaker(cfg: BreakerConfig) -> Breaker {
        Breaker::new(cfg, 7).unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_config_is_valid() {
        BreakerConfig::default().validate().unwrap();
    }

    #[test]
    fn invalid_config_names_field_and_value() {
        let cfg = BreakerConfig {
            failure_rate: 1.5,
            ..BreakerConfig::default()
        };
        let err = Breaker::new(cfg, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "breaker.failure_rate = 1.5 is not valid: must be in (0, 1]"
        );
        let cfg = BreakerConfig {
            max_backoff: secs(1),
            base_backoff: secs(2),
            ..BreakerConfig::default()
        };
        assert!(Breaker::new(cfg, 0)
            .unwrap_err()
            .0
            .starts_with("breaker.max_backoff"));
        let cfg = BreakerConfig {
            jitter: 1.0,
            ..BreakerConfig::default()
        };
        assert!(Breaker::new(cfg, 0).unwrap_err().0.contains("jitter"));
    }

    #[test]
    fn opens_after_consecutive_failures() {
        let now = t0();
        let mut b = breaker(no_jitter());
        for i in 0..4 {
            assert_eq!(b.record(Outcome::Reset, now + secs(i), true), None);
        }
        let t = b
            .record(Outcome::ServerError5xx, now + secs(4), true)
            .unwrap();
        assert_eq!(
            t,
            Transition {
                from: StateKind::Closed,
                to: StateKind::Open,
                cause: TransitionCause::ConsecutiveFailures
            }
        );
        assert_eq!(
            b.state(now + secs(4)),
            BreakerState::Open {
                until: now + secs(6)
            }
        );
        assert!(!b.allow(now + secs(5)).allowed);
        assert_eq!(b.remaining_open(now + secs(5)), Some(secs(1)));
    }

    #[test]
    fn success_resets_the_consecutive_count() {
        let now = t0();
        let mut b = breaker(BreakerConfig {
            min_requests: 1000,
            ..no_jitter()
        });
        for i in 0..20 {
            let o = if i % 4 == 3 {
                Outcome::Success
            } else {
                Outcome::FirstByteTimeout
            };
            assert_eq!(b.record(o, now, true), None, "step {i}");
        }
        assert_eq!(b.state(now), BreakerState::Closed);
    }

    #[test]
    fn not_counted_outcomes_never_trip() {
        let now = t0();
        let mut b = breaker(no_jitter());
        for _ in 0..100 {
            assert_eq!(b.record(Outcome::NotCounted, now, true), None);
        }
        assert_eq!(b.state(now), BreakerState::Closed);
    }

    #[test]
    fn opens_on_failure_rate_with_minimum_volume() {
        let now = t0();
        let mut b = breaker(no_jitter());
        // Alternate: never 5 in a row, but 50 % failures.
        let mut got = None;
        for i in 0..10u32 {
            let o = if i % 2 == 0 {
                Outcome::Success
            } else {
                Outcome::ServerError5xx
            };
            got = b.record(o, now + Duration::from_millis(u64::from(i)), true);
            if i < 9 {
                assert_eq!(got, None, "below min volume at {i}");
            }
        }
        assert_eq!(got.unwrap().cause, TransitionCause::FailureRate);
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let now = t0();
        let mut b = breaker(no_jitter());
        for _ in 0..8 {
            b.record(Outcome::Success, now, true);
        }
        for _ in 0..4 {
            b.record(Outcome::Reset, now, true);
        }
        b.record(Outcome::Success, now, true);
        // 12 ok / 4 failed in the window; the successes age out after 30 s.
        let later = now + secs(31);
        for _ in 0..4 {
            assert_eq!(b.record(Outcome::Reset, later, true), None);
            assert_eq!(b.record(Outcome::Success, later, true), None);
        }
        assert_eq!(b.state(later), BreakerState::Closed);
        // Now 4 ok / 4 failed, below volume 10; two more failures: 6/10.
        b.record(Outcome::Reset, later, true);
        let t = b.record(Outcome::Reset, later, true).unwrap();
        assert_eq!(t.cause, TransitionCause::FailureRate);
    }

    #[test]
    fn ejection_cap_blocks_statistical_trips_only() {
        let now = t0();
        let mut b = breaker(no_jitter());
        for _ in 0..20 {
            assert_eq!(b.record(Outcome::Reset, now, false), None);
        }
        assert_eq!(b.state(now), BreakerState::Closed);
        // Once the cap allows, the next failure trips.
        assert!(b.record(Outcome::Reset, now, true).is_some());
        let mut b = breaker(no_jitter());
        let t = b
            .trip_now(TripCause::ConnectionRefused, now)
            .last()
            .unwrap();
        assert_eq!(
            t.cause,
            TransitionCause::Tripped(TripCause::ConnectionRefused)
        );
    }

    #[test]
    fn may_eject_respects_share_and_always_allows_one() {
        assert!(may_eject(0, 1, 0.5));
        assert!(may_eject(0, 10, 0.01));
        assert!(may_eject(1, 4, 0.5));
        assert!(!may_eject(2, 4, 0.5));
        assert!(may_eject(4, 10, 0.5));
        assert!(!may_eject(5, 10, 0.5));
        assert!(!may_eject(1, 10, f64::NAN));
        assert!(may_eject(9, 10, 7.0));
        assert!(!may_eject(usize::MAX, usize::MAX, 1.0));
    }

    #[test]
    fn half_open_admits_limited_probes_and_closes_after_successes() {
        let now = t0();
        let mut b = breaker(no_jitter());
        b.trip_now(TripCause::HealthUnavailable, now);
        let t = now + secs(2);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        let a = b.allow(t);
        assert!(a.allowed);
        assert_eq!(a.transition.unwrap().to, StateKind::HalfOpen);
        assert!(b.allow(t).allowed);
        let third = b.allow(t);
        assert!(!third.allowed);
        assert_eq!(third.transition, None);
        assert_eq!(b.record(Outcome::Success, t, true), None);
        // The freed slot admits another probe.
        assert!(b.allow(t).allowed);
        let closed = b.record(Outcome::Success, t, true).unwrap();
        assert_eq!(closed.from, StateKind::HalfOpen);
        assert_eq!(closed.to, StateKind::Closed);
        assert!(b.allow(t).allowed);
    }

    #[test]
    fn probe_failure_reopens_with_longer_backoff() {
        let now = t0();
        let mut b = breaker(no_jitter());
        b.trip_now(TripCause::ConnectionRefused, now);
        let t = now + secs(2);
        assert!(b.allow(t).allowed);
        let t2 = b.record(Outcome::ConnectError, t, false).unwrap();
        assert_eq!(t2.cause, TransitionCause::ProbeFailed);
        assert_eq!(b.remaining_open(t), Some(secs(4)));
        // Third open: 8 s; then capped at 60 s.
        let mut at = t + secs(4);
        let mut expect = 8;
        for _ in 0..8 {
            assert!(b.allow(at).allowed);
            b.record(Outcome::Reset, at, true);
            assert_eq!(b.remaining_open(at), Some(secs(expect)));
            at += secs(expect);
            expect = (expect * 2).min(60);
        }
    }

    #[test]
    fn not_counted_probe_gives_its_slot_back() {
        let now = t0();
        let mut b = breaker(BreakerConfig {
            half_open_probes: 1,
            ..no_jitter()
        });
        b.trip_now(TripCause::Manual, now);
        let t = now + secs(3);
        assert!(b.allow(t).allowed);
        assert!(!b.allow(t).allowed);
        assert_eq!(b.record(Outcome::NotCounted, t, true), None);
        assert!(b.allow(t).allowed);
    }

    #[test]
    fn lost_probe_slot_is_reclaimed_after_probe_timeout() {
        let now = t0();
        let mut b = breaker(BreakerConfig {
            half_open_probes: 1,
            ..no_jitter()
        });
        b.trip_now(TripCause::Manual, now);
        let t = now + secs(2);
        assert!(b.allow(t).allowed);
        assert!(!b.allow(t + secs(299)).allowed);
        assert!(b.allow(t + secs(300)).allowed);
    }

    #[test]
    fn backoff_resets_after_healthy_period() {
        let now = t0();
        let mut b = breaker(BreakerConfig {
            half_open_probes: 1,
            successes_to_close: 1,
            ..no_jitter()
        });
        let reopen_and_close = |b: &mut Breaker, at: Instant| -> Duration {
            b.trip_now(TripCause::ConnectionRefused, at);
            let d = b.remaining_open(at).unwrap();
            assert!(b.allow(at + d).allowed);
            b.record(Outcome::Success, at + d, true);
            assert_eq!(b.state(at + d), BreakerState::Closed);
            d
        };
        assert_eq!(reopen_and_close(&mut b, now), secs(2));
        assert_eq!(reopen_and_close(&mut b, now + secs(10)), secs(4));
        assert_eq!(reopen_and_close(&mut b, now + secs(20)), secs(8));
        // Closed at now+28 s; healthy for 60 s → back to the base.
        assert_eq!(reopen_and_close(&mut b, now + secs(90)), secs(2));
    }

    #[test]
    fn trip_while_open_changes_nothing() {
        let now = t0();
        let mut b = breaker(no_jitter());
        b.trip_now(TripCause::HealthUnavailable, now);
        assert!(b
            .trip_now(TripCause::HealthUnavailable, now + secs(1))
            .is_empty());
        assert_eq!(b.remaining_open(now + secs(1)), Some(secs(1)));
        // After the period, a trip goes HalfOpen → Open with a longer backoff.
        let ts: Vec<_> = b
            .trip_now(TripCause::HealthUnavailable, now + secs(2))
            .iter()
            .collect();
        assert_eq!(ts.len(), 2);
        assert_eq!(
            (ts[0].from, ts[0].to),
            (StateKind::Open, StateKind::HalfOpen)
        );
        assert_eq!(
            (ts[1].from, ts[1].to),
            (StateKind::HalfOpen, StateKind::Open)
        );
        assert_eq!(b.remaining_open(now + secs(2)), Some(secs(4)));
    }

    #[test]
    fn outcomes_while_open_are_ignored() {
        let now = t0();
        let mut b = breaker(no_jitter());
        b.trip_now(TripCause::Manual, now);
        for _ in 0..10 {
            assert_eq!(b.record(Outcome::Success, now, true), None);
        }
        assert!(matches!(b.state(now), BreakerState::Open { .. }));
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let now = t0();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..50 {
            let mut b = Breaker::new(BreakerConfig::default(), seed).unwrap();
            b.trip_now(TripCause::Manual, now);
            let d = b.remaining_open(now).unwrap();
            assert!(d >= Duration::from_millis(1600) && d <= Duration::from_millis(2400));
            seen.insert(d);
        }
        assert!(seen.len() > 40);
    }

    #[test]
    fn poll_publishes_open_to_half_open() {
        let now = t0();
        let mut b = breaker(no_jitter());
        b.trip_now(TripCause::Manual, now);
        assert_eq!(b.poll(now + secs(1)), None);
        assert_eq!(
            b.poll(now + secs(2)).unwrap().cause,
            TransitionCause::BackoffElapsed
        );
        assert_eq!(b.poll(now + secs(3)), None);
    }

    #[test]
    fn labels_are_stable() {
        assert_eq!(StateKind::HalfOpen.as_str(), "half_open");
        assert_eq!(
            TransitionCause::Tripped(TripCause::HealthUnavailable).as_str(),
            "health_unavailable"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allow,
        Record(Outcome, bool),
        Trip(TripCause),
        Poll,
    }

    fn op() -> impl Strategy<Value = (Op, u64)> {
        let outcome = prop_oneof![
            Just(Outcome::Success),
            Just(Outcome::ConnectError),
            Just(Outcome::Reset),
            Just(Outcome::ServerError5xx),
            Just(Outcome::FirstByteTimeout),
            Just(Outcome::NotCounted),
        ];
        let cause = prop_oneof![
            Just(TripCause::ConnectionRefused),
            Just(TripCause::HealthUnavailable),
            Just(TripCause::Manual),
        ];
        let o = prop_oneof![
            4 => Just(Op::Allow),
            6 => (outcome, any::<bool>()).prop_map(|(o, e)| Op::Record(o, e)),
            1 => cause.prop_map(Op::Trip),
            1 => Just(Op::Poll),
        ];
        (o, 0u64..5_000)
    }

    fn legal(t: &Transition) -> bool {
        use StateKind::*;
        matches!(
            (t.from, t.to),
            (Closed, Open) | (Open, HalfOpen) | (HalfOpen, Closed) | (HalfOpen, Open)
        )
    }

    fn kind(s: BreakerState) -> StateKind {
        match s {
            BreakerState::Closed => StateKind::Closed,
            BreakerState::Open { .. } => StateKind::Open,
            BreakerState::HalfOpen => StateKind::HalfOpen,
        }
    }

    proptest! {
        #[test]
        fn prop_only_legal_transitions(
            ops in proptest::collection::vec(op(), 1..300),
            seed in any::<u64>(),
            probes in 1u32..4,
        ) {
            let cfg = BreakerConfig { half_open_probes: probes, ..BreakerConfig::default() };
            let mut b = Breaker::new(cfg, seed).unwrap();
            let mut now = t0();
            let mut probes_out = 0u32;
            for (op, dt_ms) in ops {
                now += Duration::from_millis(dt_ms);
                let before = b.inner;
                let ts: Vec<Transition> = match op {
                    Op::Allow => {
                        let a = b.allow(now);
                        if a.allowed && matches!(b.inner, Inner::HalfOpen { .. }) {
                            probes_out += 1;
                        }
                        a.transition.into_iter().collect()
                    }
                    Op::Record(o, e) => b.record(o, now, e).into_iter().collect(),
                    Op::Trip(c) => b.trip_now(c, now).iter().collect(),
                    Op::Poll => b.poll(now).into_iter().collect(),
                };
                for t in &ts {
                    prop_assert!(legal(t), "illegal {:?} from {:?}", t, before);
                }
                if let Inner::HalfOpen { in_flight, .. } = b.inner {
                    prop_assert!(in_flight <= probes);
                } else {
                    probes_out = 0;
                }
                if let Some(d) = b.remaining_open(now) {
                    prop_assert!(d <= Duration::from_secs(60));
                    prop_assert_eq!(kind(b.state(now)), StateKind::Open);
                }
            }
            let _ = probes_out;
        }

        #[test]
        fn prop_closed_breaker_without_cap_never_trips(
            outcomes in proptest::collection::vec(0u8..6, 1..200),
        ) {
            let mut b = Breaker::new(BreakerConfig::default(), 1).unwrap();
            let now = t0();
            for o in outcomes {
                let o = [Outcome::Success, Outcome::ConnectError, Outcome::Reset,
                         Outcome::ServerError5xx, Outcome::FirstByteTimeout,
                         Outcome::NotCounted][o as usize];
                prop_assert_eq!(b.record(o, now, false), None);
            }
            prop_assert_eq!(b.state(now), BreakerState::Closed);
        }
    }
}
