//! The change gate: when the limit may move again.
//!
//! ## Stale signals, and why the limit does not collapse
//!
//! Every signal describes the past: a gauge is up to one scrape interval
//! old, a response shows the limit in force when it was *sent*, and after a
//! decrease the excess in flight drains only as requests finish (about one
//! request duration). Reacting to every reading of one episode of queueing
//! would cut the limit again and again and drive it to 1. So:
//!
//! * a response sent before the last change is not a signal;
//! * deferred requests while our own in-flight is still above the limit are
//!   that excess, not a reason to cut again;
//! * decreases are at most one per typical request duration (EWMA of
//!   observed durations, floored at `min_change_interval`, capped at
//!   `max_change_interval` so long generations do not freeze it), gated by
//!   the last *decrease*: an increase that made the backend queue is undone
//!   at the first reading that shows it;
//! * increases are at most one per typical duration since the last change;
//! * severe decreases have their own gate, so a burst of timeouts halves the
//!   limit once, not four times.
//!
//! ## Why the typical duration is kept here
//!
//! The gate's EWMA is of the time from dispatch to the end of a successful
//! response: how long the excess after a change takes to drain. It is not
//! [`Backend::mean_duration`](crate::backend::state::Backend::mean_duration),
//! which runs from the request's arrival at the gateway (queue wait
//! included), counts every served inference request and weighs samples 1/8;
//! this one's weight and starting value are configuration
//! (`duration_alpha`, `initial_duration`). Two facts, one home each.

use std::time::Duration;

use tokio::time::Instant;

use super::LimiterConfig;

/// The typical request duration and the times of the last changes.
#[derive(Debug, Clone)]
pub(super) struct ChangeGate {
    /// EWMA of request durations, seconds.
    typical: f64,
    alpha: f64,
    min: Duration,
    max: Duration,
    last_change: Option<Instant>,
    last_decrease: Option<Instant>,
    last_severe: Option<Instant>,
}

impl ChangeGate {
    pub(super) fn new(cfg: &LimiterConfig) -> Self {
        Self {
            typical: cfg.initial_duration.as_secs_f64(),
            alpha: cfg.duration_alpha,
            min: cfg.min_change_interval,
            max: cfg.max_change_interval,
            last_change: None,
            last_decrease: None,
            last_severe: None,
        }
    }

    /// Learns one request duration.
    pub(super) fn observe(&mut self, latency: Duration) {
        let d = latency.as_secs_f64();
        if d.is_finite() {
            self.typical += self.alpha * (d - self.typical);
        }
    }

    /// The gate: typical duration within its floor and cap.
    pub(super) fn interval(&self) -> Duration {
        let d = Duration::try_from_secs_f64(self.typical).unwrap_or(self.max);
        d.clamp(self.min, self.max)
    }

    /// Whether a whole gate has passed since `since` (or it never happened).
    pub(super) fn elapsed_since(&self, since: Option<Instant>, now: Instant) -> bool {
        since.is_none_or(|t| now.saturating_duration_since(t) >= self.interval())
    }

    /// Whether a response that took `latency` and ended at `now` was sent
    /// under the current limit: one sent before the last change says nothing
    /// about it.
    pub(super) fn sent_since_change(&self, latency: Duration, now: Instant) -> bool {
        match (self.last_change, now.checked_sub(latency)) {
            (None, _) => true,
            (Some(change), Some(sent)) => sent >= change,
            (Some(_), None) => false,
        }
    }

    /// Increases: one per gate since the last change of either kind.
    pub(super) fn may_increase(&self, now: Instant) -> bool {
        self.elapsed_since(self.last_change, now)
    }

    /// Decreases are gated by the last decrease, not the last change: an
    /// increase that made the backend queue is undone at the first reading
    /// that shows it, while one episode of queueing still cuts the limit
    /// only once per typical duration.
    pub(super) fn may_decrease(&self, now: Instant) -> bool {
        self.elapsed_since(self.last_decrease, now)
    }

    /// Severe decreases have their own gate: a burst of timeouts halves once.
    pub(super) fn may_cut_hard(&self, now: Instant) -> bool {
        self.elapsed_since(self.last_severe, now)
    }

    pub(super) fn changed(&mut self, now: Instant) {
        self.last_change = Some(now);
    }

    pub(super) fn decreased(&mut self, now: Instant) {
        self.last_decrease = Some(now);
    }

    pub(super) fn cut_hard(&mut self, now: Instant) {
        self.last_severe = Some(now);
        self.last_decrease = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn each_kind_of_change_has_its_own_gate() {
        let t = Instant::now();
        let mut g = ChangeGate::new(&LimiterConfig::default());
        assert_eq!(g.interval(), secs(2), "initial_duration");
        assert!(g.may_increase(t) && g.may_decrease(t) && g.may_cut_hard(t));
        g.changed(t);
        assert!(!g.may_increase(t + secs(1)));
        assert!(
            g.may_decrease(t + secs(1)),
            "an increase does not gate a decrease"
        );
        g.cut_hard(t);
        assert!(!g.may_decrease(t + secs(1)) && !g.may_cut_hard(t + secs(1)));
        assert!(g.may_increase(t + secs(2)) && g.may_cut_hard(t + secs(2)));
    }

    #[test]
    fn a_response_sent_before_the_last_change_is_not_current() {
        let t = Instant::now() + secs(100);
        let mut g = ChangeGate::new(&LimiterConfig::default());
        assert!(g.sent_since_change(secs(5), t));
        g.changed(t);
        assert!(!g.sent_since_change(secs(5), t + secs(3)));
        assert!(g.sent_since_change(secs(2), t + secs(3)));
    }
}
