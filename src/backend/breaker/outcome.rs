//! What the breaker is told (a request's [`Outcome`], a [`TripCause`]) and
//! what it answers (its [`BreakerState`], each [`Transition`] with its cause).

use tokio::time::Instant;

/// What happened to one request sent to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Any 2xx/3xx answer, or a stream that ended normally.
    Success,
    /// Could not connect (refused, unreachable, connect timeout). For a
    /// refusal the caller should also call [`Breaker::trip_now`](super::Breaker::trip_now).
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
    /// Closed/HalfOpen→Open: [`Breaker::trip_now`](super::Breaker::trip_now).
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

/// Up to two transitions, in order (see [`Breaker::trip_now`](super::Breaker::trip_now)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transitions(pub(super) [Option<Transition>; 2]);

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

/// Answer of [`Breaker::allow`](super::Breaker::allow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Allow {
    /// Whether the request may go to this backend.
    pub allowed: bool,
    /// Set when this call moved the breaker from Open to HalfOpen.
    pub transition: Option<Transition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable() {
        assert_eq!(StateKind::HalfOpen.as_str(), "half_open");
        assert_eq!(
            TransitionCause::Tripped(TripCause::HealthUnavailable).as_str(),
            "health_unavailable"
        );
    }
}
