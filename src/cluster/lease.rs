//! Rate-limit cells a replica took from Redis ahead of need, so that most
//! admitted requests wait for no round trip.
//!
//! ## Why leases, and why small ones
//!
//! One GCRA call per request is exact, and on a quiet loopback costs
//! 0.3-0.5 ms; but its tail is the tail of a round trip to another process
//! (measured on the busy 2-core test machine: mean 0.6-0.9 ms, p99 over
//! 2.5 ms), against the 1 ms p99. So the script may grant several
//! cells at once, counted in Redis at once (never more admitted than
//! configured), and the replica spends them locally; when a lease runs
//! low, the next one is fetched in the background.
//!
//! The price is cells a replica holds and does not spend: they are
//! admissions the key does not get. The script grants at most
//! `free ÷ (20 × replicas)` (at most [`MAX_GRANT`]) of the cells that
//! conform now, so all replicas together hold at most 5 % of what is free:
//! far from its limit a key's requests rarely wait for Redis; near it
//! (little free) every grant is one cell and every decision exact, as
//! before. Leased cells expire after [`TTL`]: a cell taken at one moment
//! may not be spent much later, on top of a refilled bucket.
//!
//! Pure: the caller passes `now`.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Most cells one grant may hold.
pub const MAX_GRANT: u32 = 32;
/// How long leased cells may be spent.
pub const TTL: Duration = Duration::from_millis(250);
/// Keys kept before the expired ones are swept.
const SWEEP_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Lease {
    left: u32,
    until: Instant,
    /// A background fetch is under way.
    fetching: bool,
}

/// Leased cells per rate key.
#[derive(Debug, Default)]
pub struct Leases {
    by_key: HashMap<String, Lease>,
}

impl Leases {
    /// Spends one leased cell of `key`, if it holds one at `now`.
    pub fn take(&mut self, key: &str, now: Instant) -> bool {
        match self.by_key.get_mut(key) {
            Some(l) if l.left > 0 && now < l.until => {
                l.left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Adds `cells` granted at `now` (replacing what expired).
    pub fn add(&mut self, key: &str, cells: u32, now: Instant) {
        if self.by_key.len() >= SWEEP_AT {
            self.by_key
                .retain(|_, l| l.fetching || (l.left > 0 && now < l.until));
        }
        let l = self.by_key.entry(key.to_string()).or_insert(Lease {
            left: 0,
            until: now,
            fetching: false,
        });
        if now >= l.until {
            l.left = 0;
        }
        l.left = l.left.saturating_add(cells);
        l.until = now + TTL;
    }

    /// Should a background fetch start for `key` now? `true` once, while
    /// the lease is low (a last grant of one cell is not worth fetching
    /// after: near its limit a key goes cell by cell); then
    /// [`Leases::fetched`] ends it.
    pub fn start_fetch(&mut self, key: &str, last_grant: u32, now: Instant) -> bool {
        if last_grant <= 1 {
            return false;
        }
        let Some(l) = self.by_key.get_mut(key) else {
            return false;
        };
        let low = now >= l.until || l.left <= last_grant / 2;
        if low && !l.fetching {
            l.fetching = true;
            return true;
        }
        false
    }

    /// A background fetch ended, having got `cells`.
    pub fn fetched(&mut self, key: &str, cells: u32, now: Instant) {
        if cells > 0 {
            self.add(key, cells, now);
        }
        if let Some(l) = self.by_key.get_mut(key) {
            l.fetching = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_what_was_granted_then_nothing() {
        let now = Instant::now();
        let mut l = Leases::default();
        assert!(!l.take("k", now));
        l.add("k", 2, now);
        assert!(l.take("k", now));
        assert!(l.take("k", now));
        assert!(!l.take("k", now));
        assert!(!l.take("other", now));
    }

    #[test]
    fn cells_expire() {
        let now = Instant::now();
        let mut l = Leases::default();
        l.add("k", 5, now);
        assert!(!l.take("k", now + TTL));
        // What expired is not added to a new grant.
        l.add("k", 1, now + TTL);
        assert!(l.take("k", now + TTL));
        assert!(!l.take("k", now + TTL));
    }

    #[test]
    fn one_fetch_at_a_time_when_low() {
        let now = Instant::now();
        let mut l = Leases::default();
        l.add("k", 7, now);
        assert!(!l.start_fetch("k", 8, now), "7 of 8 left: not low");
        for _ in 0..3 {
            l.take("k", now);
        }
        assert!(l.start_fetch("k", 8, now), "4 of 8 left");
        assert!(!l.start_fetch("k", 8, now), "one under way");
        l.fetched("k", 8, now);
        for _ in 0..12 {
            assert!(l.take("k", now));
        }
        assert!(!l.take("k", now));
        assert!(!l.start_fetch("k", 1, now), "a grant of one: cell by cell");
    }
}
