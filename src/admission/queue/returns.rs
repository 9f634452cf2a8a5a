//! The hints the gateway gave, kept until their clients come back: who was
//! told to return when, so that a retry that returns when it was told ranks
//! ahead of first attempts, and so that the next refused client is told to
//! come back after those already promised a place.
//!
//! ## Why a ledger and not the retry count alone
//!
//! `x-stainless-retry-count` is the client's word. Trusted alone, any client
//! could send `1` on every request and always be served first. Here a
//! retry ranks ahead only by *claiming* a promise: one the gateway made to
//! the same tenant (API key or client address) whose due time is within a
//! tolerance of now ([`tolerance`]). Each refusal makes at most one promise
//! and each promise is claimed at most once, so a tenant gets at most one
//! early place per refusal it received: it cannot claim the rank forever.
//! The ledger holds at most `capacity` promises (beyond that, refusals are
//! still answered, without a promise), and a promise no one claimed is
//! forgotten one tolerance after it was due.
//!
//! Pure: every call takes `now`.

use std::time::Duration;

use tokio::time::Instant;

/// How far from the due time a returning retry still counts as on time:
/// half a second (a round trip and the client's own scheduling) plus a
/// quarter of the hint (a client that sleeps `hint` drifts with it).
pub fn tolerance(hint: Duration) -> Duration {
    Duration::from_millis(500) + hint / 4
}

#[derive(Debug, Clone, Copy)]
struct Promise {
    tenant: u64,
    due: Instant,
    tolerance: Duration,
}

impl Promise {
    fn expired(&self, now: Instant) -> bool {
        self.due + self.tolerance < now
    }

    fn on_time(&self, tenant: u64, now: Instant) -> bool {
        let early = self.due.checked_sub(self.tolerance).unwrap_or(self.due);
        self.tenant == tenant && early <= now && now <= self.due + self.tolerance
    }
}

/// Promised returns. See the module docs.
#[derive(Debug)]
pub struct Returns {
    promises: Vec<Promise>,
    capacity: usize,
}

impl Returns {
    /// At most `capacity` promises outstanding.
    pub fn new(capacity: usize) -> Returns {
        Returns {
            promises: Vec::new(),
            capacity,
        }
    }

    /// Promises not yet claimed nor expired.
    pub fn outstanding(&mut self, now: Instant) -> usize {
        self.forget_expired(now);
        self.promises.len()
    }

    /// `tenant` was told to come back after `hint`. `false`: the ledger is
    /// full and no promise was made.
    pub fn promise(&mut self, tenant: u64, hint: Duration, now: Instant) -> bool {
        self.forget_expired(now);
        if self.promises.len() >= self.capacity {
            return false;
        }
        self.promises.push(Promise {
            tenant,
            due: now + hint,
            tolerance: tolerance(hint),
        });
        true
    }

    /// A retry of `tenant` arrived: whether it came back when told (and
    /// takes that promise; the one due soonest).
    pub fn claim(&mut self, tenant: u64, now: Instant) -> bool {
        self.forget_expired(now);
        let best = self
            .promises
            .iter()
            .enumerate()
            .filter(|(_, p)| p.on_time(tenant, now))
            .min_by_key(|(_, p)| p.due)
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                self.promises.swap_remove(i);
                true
            }
            None => false,
        }
    }

    fn forget_expired(&mut self, now: Instant) {
        self.promises.retain(|p| !p.expired(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_claims_its_own_promise_once_when_on_time() {
        let t = Instant::now();
        let mut r = Returns::new(8);
        assert!(r.promise(1, ms(2000), t));
        assert_eq!(r.outstanding(t), 1);
        // Too early (due 2 s, tolerance 1 s), another tenant: no.
        assert!(!r.claim(1, t + ms(900)));
        assert!(!r.claim(2, t + ms(2000)));
        // On time: once.
        assert!(r.claim(1, t + ms(2100)));
        assert!(!r.claim(1, t + ms(2100)));
        assert_eq!(r.outstanding(t + ms(2100)), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unclaimed_promises_are_forgotten_and_the_ledger_is_bounded() {
        let t = Instant::now();
        let mut r = Returns::new(3);
        for _ in 0..3 {
            assert!(r.promise(7, ms(1000), t));
        }
        assert!(!r.promise(7, ms(1000), t), "full");
        assert_eq!(r.outstanding(t), 3);
        // Due at 1 s, tolerance 0.75 s: gone after 1.75 s.
        assert_eq!(r.outstanding(t + ms(1750)), 3);
        assert_eq!(r.outstanding(t + ms(1751)), 0);
        assert!(!r.claim(7, t + ms(1800)));
        assert!(r.promise(7, ms(1000), t + ms(1800)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_claims_at_most_one_place_per_refusal() {
        let t = Instant::now();
        let mut r = Returns::new(100);
        r.promise(1, ms(500), t);
        r.promise(1, ms(600), t);
        let claimed = (0..10).filter(|_| r.claim(1, t + ms(550))).count();
        assert_eq!(claimed, 2);
    }
}
