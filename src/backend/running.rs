//! The requests a backend holds now: when each was dispatched and how long
//! it was expected to take, so the wait for its next free slot is told from
//! their ages, not from the average alone.
//!
//! A full backend's next slot frees when the request nearest its end
//! finishes. The average (`slots / cost`: a slot every `cost / slots`)
//! is right for requests at random points of their work but wrong just
//! after a wave of them started together, which is when a conversation's
//! next turn arrives: its own previous turn ended, and the others that
//! began beside it are about to. Each slot is taken to run its current
//! request to its expected end, then requests of `period` each; a request
//! past its expected end is taken to need a tenth of it more (it ends
//! soon, not now), so a wait judged from these never reads as free.
//!
//! Expected durations are the choice's cost estimates, which rank backends
//! well but may be off in absolute terms (per-token times measured while
//! the batch was busier, say). So the table learns how long requests really
//! took against their estimates (EWMA of the ratio, newest 1/8) and
//! answers in the estimates' units: ages are divided by that ratio, and a
//! wait from here compares with costs from [`super::speed`] as they are.

use std::time::Duration;

use tokio::time::Instant;

/// Share of its expected duration a request past its end is still given.
const OVERRUN_SHARE: f64 = 0.1;

/// Weight of the newest actual ÷ expected ratio.
const NEWEST: f64 = 1.0 / 8.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: u64,
    since: Instant,
    expected: Option<Duration>,
}

/// The in-flight requests of one backend (its permits), as a pure table.
#[derive(Debug, Default)]
pub struct Running {
    next: u64,
    entries: Vec<Entry>,
    /// How long requests took ÷ what they were expected to take (EWMA).
    scale: Option<f64>,
}

impl Running {
    /// A request dispatched at `now`, expected to take `expected` (if the
    /// choice estimated it); the id ends it.
    pub fn start(&mut self, now: Instant, expected: Option<Duration>) -> u64 {
        self.next = self.next.wrapping_add(1);
        self.entries.push(Entry {
            id: self.next,
            since: now,
            expected,
        });
        self.next
    }

    /// The request `id` ended at `now` (unknown ids are ignored); one with
    /// an estimate teaches the actual ÷ expected ratio.
    pub fn end(&mut self, id: u64, now: Instant) {
        let Some(e) = self.take(id) else {
            return;
        };
        let Some(expected) = e.expected.filter(|d| !d.is_zero()) else {
            return;
        };
        let ratio = now.saturating_duration_since(e.since).as_secs_f64() / expected.as_secs_f64();
        if ratio.is_finite() && ratio > 0.0 {
            self.scale = Some(match self.scale {
                Some(s) => s + NEWEST * (ratio - s),
                None => ratio,
            });
        }
    }

    /// A request that left without running to its end (a client that
    /// went away, a failure): out of the table, and nothing learnt.
    pub fn forget(&mut self, id: u64) {
        self.take(id);
    }

    /// Removes the request `id` from the table, if it is there.
    fn take(&mut self, id: u64) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.id == id)?;
        Some(self.entries.swap_remove(i))
    }

    /// How long requests took ÷ their estimates, once one ended.
    pub fn scale(&self) -> Option<f64> {
        self.scale
    }

    /// When each request held was dispatched (in no particular order).
    pub fn dispatched_at(&self) -> impl Iterator<Item = Instant> + '_ {
        self.entries.iter().map(|e| e.since)
    }

    /// Requests held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How long from `now` until the `n`-th slot (1-based) frees, in the
    /// estimates' units: the `n`-th nearest end among the requests held
    /// (each expected to take what the choice estimated, else `typical`,
    /// a real duration), then one `period` per further round of every
    /// slot. `None` when nothing is held (the backend is full of other
    /// replicas' requests: nothing to age) or neither an estimate nor
    /// `typical` is known.
    pub fn nth_free(
        &self,
        n: usize,
        now: Instant,
        typical: Option<Duration>,
        period: Duration,
    ) -> Option<Duration> {
        let scale = self.scale.unwrap_or(1.0);
        let mut left: Vec<Duration> = self
            .entries
            .iter()
            .map(|e| {
                let expected = e.expected.or_else(|| typical.map(|t| t.div_f64(scale)))?;
                let age = now.saturating_duration_since(e.since).div_f64(scale);
                Some(
                    expected
                        .saturating_sub(age)
                        .max(expected.mul_f64(OVERRUN_SHARE)),
                )
            })
            .collect::<Option<_>>()?;
        if left.is_empty() {
            return None;
        }
        left.sort_unstable();
        let k = left.len();
        let n = n.max(1);
        let rounds = u32::try_from((n - 1) / k).unwrap_or(u32::MAX);
        Some(left[(n - 1) % k] + period.saturating_mul(rounds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_next_slot_frees_when_the_oldest_request_is_due() {
        let t0 = Instant::now();
        let mut r = Running::default();
        r.start(t0, Some(3 * S));
        r.start(t0 + S, Some(3 * S));
        let now = t0 + 2 * S;
        // 1 s left for the first, 2 s for the second.
        assert_eq!(r.nth_free(1, now, None, 3 * S), Some(S));
        assert_eq!(r.nth_free(2, now, None, 3 * S), Some(2 * S));
        // The third waiter takes the first slot's next round.
        assert_eq!(r.nth_free(3, now, None, 3 * S), Some(4 * S));
        assert_eq!(r.nth_free(4, now, None, 3 * S), Some(5 * S));
    }

    #[test]
    fn a_request_past_its_end_still_needs_a_tenth_of_it() {
        let t0 = Instant::now();
        let mut r = Running::default();
        r.start(t0, Some(2 * S));
        let late = r.nth_free(1, t0 + 10 * S, None, S).unwrap();
        assert_eq!(late, Duration::from_millis(200));
    }

    #[test]
    fn without_an_estimate_the_typical_duration_counts() {
        let t0 = Instant::now();
        let mut r = Running::default();
        r.start(t0, None);
        assert_eq!(r.nth_free(1, t0 + S, None, S), None);
        assert_eq!(r.nth_free(1, t0 + S, Some(4 * S), S), Some(3 * S));
    }

    #[test]
    fn ended_requests_leave_and_an_empty_table_tells_nothing() {
        let t0 = Instant::now();
        let mut r = Running::default();
        let a = r.start(t0, Some(S));
        let b = r.start(t0, Some(5 * S));
        r.end(a, t0 + S);
        r.end(a, t0 + S);
        assert_eq!(r.len(), 1);
        assert_eq!(r.nth_free(1, t0 + S, None, S), Some(4 * S));
        r.end(b, t0 + 5 * S);
        assert!(r.is_empty());
        assert_eq!(r.nth_free(1, t0, Some(S), S), None);
    }

    #[test]
    fn estimates_twice_too_long_make_ages_count_twice() {
        let t0 = Instant::now();
        let mut r = Running::default();
        // Requests estimated at 4 s take 2 s: the ratio is 1/2.
        for k in 0..3 {
            let at = t0 + 2 * k * S;
            let id = r.start(at, Some(4 * S));
            r.end(id, at + 2 * S);
        }
        assert_eq!(r.scale(), Some(0.5));
        let now = t0 + 10 * S;
        r.start(now, Some(4 * S));
        // One second in is half of its real two: 2 s left in estimate units.
        assert_eq!(r.nth_free(1, now + S, None, S), Some(2 * S));
        // A typical real duration of 2 s reads as 4 s of estimates.
        let mut u = Running::default();
        let id = u.start(t0, Some(4 * S));
        u.end(id, t0 + 2 * S);
        u.start(now, None);
        assert_eq!(u.nth_free(1, now, Some(2 * S), S), Some(4 * S));
    }

    #[test]
    fn a_request_forgotten_teaches_nothing() {
        let t0 = Instant::now();
        let mut r = Running::default();
        let done = r.start(t0, Some(4 * S));
        r.end(done, t0 + 2 * S);
        // Cut short after a tenth of its estimate (its client left).
        let cut = r.start(t0, Some(4 * S));
        r.forget(cut);
        assert_eq!(r.len(), 0);
        assert_eq!(r.scale(), Some(0.5));
        r.forget(cut);
        assert_eq!(r.len(), 0, "an unknown id is ignored");
    }
}
