//! Token-budget settlements Redis did not take, kept until it answers again.
//!
//! A charge made in Redis is settled from `usage` when the request ends
//! (`estimated − used` tokens back, or more taken). When Redis is down
//! then, the settlement waits here and is sent when the heartbeat finds
//! Redis again; without it the key would keep the estimate's charge.
//!
//! ## Bounds
//!
//! - At most [`CAPACITY`] entries; when full, the oldest is dropped
//!   (counted): memory stays bounded however long Redis is away.
//! - An entry older than its bucket's refill time (`burst ÷ rate`) is
//!   dropped when the ledger is read: by then the bucket would be full
//!   without it, and a refund to a full bucket changes nothing (a late
//!   extra charge is forgiven).
//!
//! ## Sent twice?
//!
//! A call that timed out may have been applied. Each settlement carries an
//! id the script records (`SET NX`), so a settlement sent again after a
//! timeout is applied once.
//!
//! Pure: the caller passes `now`.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::admission::budget::TokenQuota;

/// Most settlements kept while Redis is away (about 100 bytes each).
pub const CAPACITY: usize = 10_000;

/// One settlement to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The budget's Redis key.
    pub key: String,
    pub quota: TokenQuota,
    /// Tokens back (positive) or taken (negative).
    pub delta: i64,
    /// Recorded by the script: applied once however often sent.
    pub id: u64,
    /// When the request ended.
    pub at: Instant,
}

impl Settlement {
    /// Past this age, the bucket would be full without it.
    fn moot(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.at) >= refill_time(self.quota)
    }
}

/// How long an empty bucket of `q` takes to fill.
pub fn refill_time(q: TokenQuota) -> Duration {
    let per_sec = q.tokens_per_minute as f64 / 60.0;
    if per_sec <= 0.0 {
        return Duration::MAX;
    }
    Duration::try_from_secs_f64(q.burst.saturating_add(q.max_debt) as f64 / per_sec)
        .unwrap_or(Duration::MAX)
}

/// The settlements waiting for Redis, oldest first.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: VecDeque<Settlement>,
    /// Dropped because the ledger was full.
    pub dropped: u64,
}

impl Ledger {
    /// Keeps `s`; the oldest entry goes when full (then `true`).
    pub fn push(&mut self, s: Settlement) -> bool {
        let full = self.entries.len() >= CAPACITY;
        if full {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back(s);
        full
    }

    /// Everything still worth sending at `now`, taken out of the ledger
    /// (what fails again is pushed back by the caller).
    pub fn take(&mut self, now: Instant) -> Vec<Settlement> {
        self.entries.drain(..).filter(|s| !s.moot(now)).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: TokenQuota = TokenQuota {
        tokens_per_minute: 600,
        burst: 100,
        max_debt: 0,
    };

    fn s(id: u64, at: Instant) -> Settlement {
        Settlement {
            key: "k".into(),
            quota: Q,
            delta: 10,
            id,
            at,
        }
    }

    #[test]
    fn kept_until_taken_oldest_first() {
        let now = Instant::now();
        let mut l = Ledger::default();
        l.push(s(1, now));
        l.push(s(2, now));
        let ids: Vec<u64> = l.take(now).iter().map(|s| s.id).collect();
        assert_eq!(ids, [1, 2]);
        assert!(l.is_empty());
    }

    #[test]
    fn bounded_dropping_the_oldest() {
        let now = Instant::now();
        let mut l = Ledger::default();
        for i in 0..(CAPACITY as u64 + 5) {
            l.push(s(i, now));
        }
        assert_eq!(l.len(), CAPACITY);
        assert_eq!(l.dropped, 5);
        assert_eq!(l.take(now)[0].id, 5);
    }

    #[test]
    fn moot_once_the_bucket_would_be_full() {
        // 100 tokens at 10/s: full in 10 s.
        assert_eq!(refill_time(Q), Duration::from_secs(10));
        let t0 = Instant::now();
        let mut l = Ledger::default();
        l.push(s(1, t0));
        l.push(s(2, t0 + Duration::from_secs(5)));
        let left = l.take(t0 + Duration::from_secs(12));
        assert_eq!(left.iter().map(|s| s.id).collect::<Vec<_>>(), [2]);
    }
}
