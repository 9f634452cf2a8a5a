//! How long a client may take to send its request body.
//!
//! A request takes a backend permit only once its body is complete when the
//! body fits the read-ahead buffer, so a slow sender of a small body holds no
//! slot, only its own connection, and for at most [`BodyPace::deadline`].
//! A body too large to buffer streams to the backend while the request holds
//! its permit; then the client must keep up a minimum rate, checked on every
//! chunk ([`BodyPace::behind`]), so twenty one-byte-a-second senders cannot
//! hold twenty slots for longer than the grace period.

use std::time::Duration;

use tokio::time::Instant;

/// Body read limits (validated by the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    /// Time every body gets regardless of its size.
    pub grace: Duration,
    /// Slowest sustained rate accepted past the grace time, bytes per second.
    pub min_rate: u64,
}

impl Default for BodyPace {
    /// 5 s of grace, then 64 KiB/s: a 1 MiB prompt from a phone on a poor
    /// link still makes it (21 s); a one-byte-a-second sender is cut at 5 s.
    fn default() -> Self {
        BodyPace {
            grace: Duration::from_secs(5),
            min_rate: 64 * 1024,
        }
    }
}

impl BodyPace {
    /// Time allowed for `bytes` of body.
    fn allowance(&self, bytes: u64) -> Duration {
        let secs = bytes as f64 / self.min_rate.max(1) as f64;
        self.grace
            .saturating_add(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
    }

    /// The latest time a body of `len` bytes may be complete.
    pub fn deadline(&self, started: Instant, len: u64) -> Instant {
        started
            .checked_add(self.allowance(len))
            .unwrap_or_else(|| started + Duration::from_secs(86_400 * 365))
    }

    /// Is a sender that has sent `received` bytes since `started` now behind
    /// the minimum pace (grace included)?
    pub fn behind(&self, started: Instant, received: u64, now: Instant) -> bool {
        // Each received byte earns its share of time; the next byte must
        // come within the allowance of what has arrived plus one chunk.
        now.saturating_duration_since(started) > self.allowance(received.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickle_falls_behind_after_the_grace_time() {
        let p = BodyPace::default();
        let t0 = Instant::now();
        // One byte a second.
        assert!(!p.behind(t0, 4, t0 + Duration::from_secs(4)));
        assert!(p.behind(t0, 6, t0 + Duration::from_secs(6)));
    }

    #[test]
    fn a_fast_sender_never_falls_behind() {
        let p = BodyPace::default();
        let t0 = Instant::now();
        // 1 MiB/s for 10 s.
        for s in 1..=10u64 {
            assert!(!p.behind(t0, s * 1024 * 1024, t0 + Duration::from_secs(s)));
        }
    }

    #[test]
    fn deadline_grows_with_the_length_and_never_overflows() {
        let p = BodyPace::default();
        let t0 = Instant::now();
        assert_eq!(p.deadline(t0, 0), t0 + p.grace);
        assert_eq!(
            p.deadline(t0, 64 * 1024),
            t0 + p.grace + Duration::from_secs(1)
        );
        let _ = p.deadline(t0, u64::MAX);
        let _ = p.behind(t0, u64::MAX, t0);
    }
}
