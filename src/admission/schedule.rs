//! When the fleet's slots free: the moments the gate handed out the
//! permits still in flight, and the wait they predict for the entry behind
//! `n` completions (issue 13, the start transient).
//!
//! ## Why the rate is not enough
//!
//! The completion rate says how many slots free per second *on average*.
//! An overload that starts from an idle fleet fills every slot at once, so
//! the slots free together, in rounds one typical duration apart: with 12
//! slots of 430 ms, the 25th queued entry is taken in the third round,
//! 1.3 s away, where the rate (28 a second) predicts 0.9 s. Admitted by the
//! rate, such entries wait out a 1 s budget and are refused at its end
//! (slow 503s), where they could have been refused at once. The rounds
//! stay together while the queue refills every slot the moment it frees.
//!
//! ## The rule
//!
//! Each slot in flight frees a typical duration `d` after it was handed
//! out (at once if that is past; a slot not in use frees at once); every
//! freed slot takes the next entry and frees again `d` later. The entry
//! behind `n` completions (`n` = work ahead + 1, in typical requests, as
//! [`super::predict::work_wait`] counts it) is taken when the `n`-th slot
//! frees: with the slots' first free times sorted, `f[(n - 1) mod S] +
//! ⌊(n - 1) / S⌋ × d × (1 + ROUND_SLACK)`. Completions spread over `d` (a
//! fleet in steady state) give about `n ÷ rate`, as the rate does;
//! completions in rounds give the rounds. Each further round takes a
//! little longer than a typical duration ([`ROUND_SLACK`]): the freed
//! slot's next request is dispatched a few milliseconds after the end (the
//! dispatcher's wake-up, the connect), and the mean hides the longer ones. The gate refuses an arrival at once when either prediction
//! misses its deadline ([`Schedule::wait`] with the rate's).
//!
//! ## What is counted
//!
//! The dispatch moments of the permits in flight, as each backend's
//! table of the requests it holds keeps them ([`crate::backend::running`]:
//! the one record of them, entered and removed with each permit). The gate
//! gathers them at each prediction and passes the fleet's slots and
//! typical duration in.
//!
//! Pure: no clock, no locks.

use std::time::Duration;

use tokio::time::Instant;

use super::retry_after::MAX_PREDICTION;

/// Each further round of the slots takes this share of a typical duration
/// more. Measured in `loadtest/bench` scenario 3 (12 slots of about 430 ms,
/// from idle): without it, one entry predicted to be taken two rounds on,
/// within its 1 s budget, was taken some 25 ms too late (about 3 % of a
/// duration per round); 1/16 is twice that.
pub const ROUND_SLACK: f64 = 1.0 / 16.0;

/// The dispatch moments of the requests in flight. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// Oldest first.
    started: Vec<Instant>,
}

// === impl Schedule ===

impl Schedule {
    /// The requests in flight, dispatched at `started` (any order).
    pub fn new(mut started: Vec<Instant>) -> Schedule {
        started.sort_unstable();
        Schedule { started }
    }

    /// Requests in flight.
    pub fn len(&self) -> usize {
        self.started.len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.started.is_empty()
    }

    /// The wait until the `n`-th of `slots` slots frees (`n` ≥ 1, in
    /// typical requests; a fraction counts as a whole one), each taking
    /// `typical` a request; `None` when there are no slots or no typical
    /// duration. At most [`MAX_PREDICTION`].
    pub fn wait(&self, n: f64, slots: usize, typical: Duration, now: Instant) -> Option<Duration> {
        if slots == 0 || typical.is_zero() || !n.is_finite() {
            return None;
        }
        // The slots' first free times: the newest `slots` in flight (at
        // most `typical` away), then the idle ones (free now).
        let mut free: Vec<Duration> = self
            .started
            .iter()
            .rev()
            .take(slots)
            .map(|s| (*s + typical).saturating_duration_since(now).min(typical))
            .collect();
        free.resize(slots, Duration::ZERO);
        let k = (n.max(1.0).ceil() as u64).saturating_sub(1);
        let (rounds, i) = (k / slots as u64, (k % slots as u64) as usize);
        let (_, first, _) = free.select_nth_unstable(i);
        let round = typical.mul_f64(1.0 + ROUND_SLACK);
        let rounds = u32::try_from(rounds).unwrap_or(u32::MAX);
        let wait = first.saturating_add(round.saturating_mul(rounds));
        Some(wait.min(MAX_PREDICTION))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::predict::work_wait;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `k` further rounds of `d`, with their slack.
    fn rounds(k: u32, d: Duration) -> Duration {
        d.mul_f64(1.0 + ROUND_SLACK) * k
    }

    fn started(at: &[Instant]) -> Schedule {
        Schedule::new(at.to_vec())
    }

    #[test]
    fn slots_filled_at_once_free_in_rounds() {
        // 12 slots of 430 ms, all handed out at t0 (an overload from idle).
        let t0 = Instant::now();
        let s = started(&[t0; 12]);
        let d = ms(430);
        let at = |n: f64| s.wait(n, 12, d, t0).unwrap();
        assert_eq!(at(1.0), ms(430));
        assert_eq!(at(12.0), ms(430));
        assert_eq!(at(13.0), d + rounds(1, d));
        assert_eq!(at(24.0), d + rounds(1, d));
        // The 25th: the third round, 1.3 s away, where the rate says 0.9 s.
        assert_eq!(at(25.0), d + rounds(2, d));
        assert!(at(25.0) > ms(1290));
        let rate = 12.0 / 0.43;
        assert!(work_wait(24.0, rate) < ms(900));
        // A fraction of a request counts as a whole one.
        assert_eq!(at(12.5), d + rounds(1, d));
        assert_eq!(at(0.2), ms(430));
        // Later, the same rounds are nearer.
        assert_eq!(
            s.wait(25.0, 12, d, t0 + ms(400)).unwrap(),
            ms(30) + rounds(2, d)
        );
    }

    #[test]
    fn slots_spread_over_a_duration_predict_as_the_rate_does() {
        // 10 slots of 1 s, handed out 100 ms apart: one frees every 100 ms.
        let t0 = Instant::now();
        let at: Vec<Instant> = (0..10).map(|i| t0 + ms(100 * i)).collect();
        let s = started(&at);
        let now = t0 + ms(950);
        let d = Duration::from_secs(1);
        for (n, k) in [(1.0, 0), (5.0, 0), (10.0, 0), (11.0, 1), (27.0, 2)] {
            let w = s.wait(n, 10, d, now).unwrap();
            // Within a slot's spacing of the rate, past the rounds' slack.
            let by_rate = work_wait(n - 1.0, 10.0) + rounds(k, d) - d * k;
            let off = w.abs_diff(by_rate);
            assert!(off <= ms(100), "n = {n}: {w:?} against {by_rate:?}");
        }
    }

    #[test]
    fn idle_and_overdue_slots_free_at_once() {
        let t0 = Instant::now();
        let d = ms(400);
        // Two of four slots busy since t0, asked at 100 ms: two free now.
        let s = started(&[t0, t0]);
        let now = t0 + ms(100);
        assert_eq!(s.wait(1.0, 4, d, now), Some(Duration::ZERO));
        assert_eq!(s.wait(2.0, 4, d, now), Some(Duration::ZERO));
        assert_eq!(s.wait(3.0, 4, d, now), Some(ms(300)));
        assert_eq!(s.wait(5.0, 4, d, now), Some(rounds(1, d)));
        // Past their typical duration: free at once.
        assert_eq!(s.wait(4.0, 4, d, t0 + ms(900)), Some(Duration::ZERO));
        // Nothing known: no prediction.
        assert_eq!(s.wait(1.0, 0, d, now), None);
        assert_eq!(s.wait(1.0, 4, Duration::ZERO, now), None);
        assert_eq!(s.wait(f64::NAN, 4, d, now), None);
    }

    #[test]
    fn the_newest_in_flight_count_whatever_order_they_come_in() {
        let t0 = Instant::now();
        let d = ms(400);
        // Gathered from several backends, out of order.
        let s = started(&[t0 + ms(300), t0, t0 + ms(200)]);
        assert_eq!(s.len(), 3);
        // Slots of two: the newest two count, the first frees at 600 ms.
        assert_eq!(s.wait(1.0, 2, d, t0 + ms(400)), Some(ms(200)));
        assert_eq!(s.wait(2.0, 2, d, t0 + ms(400)), Some(ms(300)));
        // The third: the first slot's next round.
        assert_eq!(
            s.wait(3.0, 2, d, t0 + ms(400)),
            Some(ms(200) + rounds(1, d))
        );
        assert!(Schedule::default().is_empty());
    }

    proptest! {
        #[test]
        fn prop_bounded_monotone_and_never_below_the_rounds_floor(
            gaps in proptest::collection::vec(0u64..2_000, 0..40),
            slots in 1usize..64,
            d_ms in 1u64..5_000,
            n in 0.0f64..1e7,
            more in 0.0f64..1e4,
            probe in 0u64..100_000,
        ) {
            let t0 = Instant::now();
            let mut t = t0;
            let s = Schedule::new(gaps.iter().map(|g| { t += ms(*g); t }).collect());
            let now = t0 + ms(probe);
            let d = ms(d_ms);
            let w = s.wait(n, slots, d, now).unwrap();
            prop_assert!(w <= MAX_PREDICTION);
            prop_assert!(s.wait(n + more, slots, d, now).unwrap() >= w);
            // Whole rounds before the n-th slot frees: at least that many
            // durations, whenever the slots were handed out.
            let k = (n.max(1.0).ceil() as u64 - 1) / slots as u64;
            let floor = d.saturating_mul(k as u32).min(MAX_PREDICTION);
            prop_assert!(w >= floor);
        }
    }
}
