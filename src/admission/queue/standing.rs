//! What the gate asks of the queue to admit precisely: the work ahead of a
//! place, whether the queue stands (sustained overload rather than a
//! burst), and which entries can no longer be served before their deadline.
//!
//! ## Standing ([`AdmissionQueue::standing`])
//!
//! A burst the fleet clears within a few typical request durations leaves
//! the queue empty again soon. A queue whose oldest entry has waited longer
//! than `target` and that has not stayed empty for `target` since, for
//! `interval`, is being fed faster than it drains: sustained overload. The
//! gate then holds it short (see `gate`, "Bursts and sustained overload").
//! The signal clears only when the queue stays empty for `target`: a queue
//! held short keeps its oldest wait near the target and empties now and
//! then for a moment (a few completions close together); clearing on such
//! a dip would let it grow back to whole budgets and oscillate (measured:
//! admitted waits swung between 0.2 s and 1 s, and 3 % timed out).
//!
//! ## Unmeetable ([`AdmissionQueue::drop_unmeetable`])
//!
//! When the fleet drains slower than predicted at admission (a backend
//! failed, requests turned out longer), entries far back in the queue can
//! no longer be served in time. They are answered now, with a hint, rather
//! than at their deadline: a refusal after 30 ms beats one after 500 ms,
//! and the client may go elsewhere sooner.

use std::time::Duration;

use tokio::time::Instant;

use super::{AdmissionQueue, DropReason, Dropped, EntryId, Priority};

impl<T> AdmissionQueue<T> {
    /// The work of the entries an arrival waits behind, as `share` counts
    /// each payload (in typical requests): every entry, or for a returning
    /// retry only the returning ones (they rank ahead of first attempts).
    pub fn work_ahead(&self, returning: bool, share: impl Fn(&T) -> f64) -> f64 {
        self.classes
            .iter()
            .flatten()
            .filter(|e| !returning || e.returning)
            .map(|e| share(&e.payload))
            .sum()
    }

    /// Whether the queue stands: its oldest entry waited longer than
    /// `target`, and it has not emptied since, for at least `interval`.
    pub fn standing(&mut self, target: Duration, interval: Duration, now: Instant) -> bool {
        self.standing_target = target;
        self.note_emptiness(now);
        if let Some(w) = self.oldest_wait(now).filter(|w| *w > target) {
            // Since the moment the oldest entry passed the target, however
            // long ago this was last asked.
            let crossed = now.checked_sub(w - target).unwrap_or(now);
            self.standing_since.get_or_insert(crossed);
        }
        self.standing_since
            .is_some_and(|s| now.saturating_duration_since(s) >= interval)
    }

    /// Tracks how long the queue has been empty; empty for the standing
    /// target clears the standing signal.
    pub(super) fn note_emptiness(&mut self, now: Instant) {
        let long_empty = self
            .emptied_at
            .is_some_and(|e| now.saturating_duration_since(e) >= self.standing_target);
        if long_empty {
            self.standing_since = None;
        }
        if self.is_empty() {
            self.emptied_at.get_or_insert(now);
        } else {
            self.emptied_at = None;
        }
    }

    /// Drops, in service order, every entry that `hopeless` says cannot be
    /// served in time: it is given the work ahead of the entry (`share`
    /// counts each payload; dropped entries no longer count) and the time
    /// the entry has left until its deadline.
    pub fn drop_unmeetable(
        &mut self,
        now: Instant,
        share: impl Fn(&T) -> f64,
        hopeless: impl Fn(f64, Duration) -> bool,
    ) -> Vec<Dropped<T>> {
        let mut ahead = 0.0;
        let mut doomed: Vec<(Priority, EntryId)> = Vec::new();
        for e in self.in_service_order() {
            let left = e.deadline.saturating_duration_since(now);
            if hopeless(ahead, left) {
                doomed.push((e.priority, e.id));
            } else {
                ahead += share(&e.payload);
            }
        }
        let mut out = Vec::with_capacity(doomed.len());
        for (p, id) in doomed {
            let class = p.index();
            if let Some(i) = self.classes[class].iter().position(|e| e.id == id) {
                if let Some(entry) = self.take(class, i) {
                    self.drops.add(DropReason::Unmeetable);
                    out.push(Dropped {
                        entry,
                        reason: DropReason::Unmeetable,
                    });
                }
            }
        }
        self.update_overload(now);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NewEntry, QueueConfig};
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn push(q: &mut AdmissionQueue<f64>, work: f64, deadline: Duration, now: Instant) {
        q.try_push(
            NewEntry {
                payload: work,
                deadline: now + deadline,
                priority: Priority::Normal,
                tenant: work as u64,
                returning: false,
                auto: false,
            },
            now,
            Duration::ZERO,
        )
        .unwrap();
    }

    fn queue() -> AdmissionQueue<f64> {
        AdmissionQueue::new(QueueConfig::default()).unwrap()
    }

    #[test]
    fn work_ahead_sums_the_shares() {
        let t = Instant::now();
        let mut q = queue();
        assert_eq!(q.work_ahead(false, |w| *w), 0.0);
        push(&mut q, 2.0, ms(1000), t);
        push(&mut q, 0.5, ms(1000), t);
        assert_eq!(q.work_ahead(false, |w| *w), 2.5);
        assert_eq!(q.work_ahead(true, |w| *w), 0.0, "no returning retries");
    }

    #[test]
    fn standing_needs_the_target_passed_for_an_interval_and_clears_when_empty() {
        let t = Instant::now();
        let (target, interval) = (ms(200), ms(1000));
        let mut q = queue();
        assert!(!q.standing(target, interval, t));
        push(&mut q, 1.0, ms(10_000), t);
        // Below target: not standing, however long.
        assert!(!q.standing(target, interval, t + ms(150)));
        // Above target from 200 ms on, first seen at 300 ms.
        assert!(!q.standing(target, interval, t + ms(300)));
        assert!(!q.standing(target, interval, t + ms(1150)));
        assert!(q.standing(target, interval, t + ms(1200)));
        // Served and refilled: the new oldest is young, but the queue never
        // emptied, so it still stands.
        push(&mut q, 1.0, ms(10_000), t + ms(1300));
        q.pop(t + ms(1300));
        assert!(q.standing(target, interval, t + ms(1310)));
        // Empty for a moment: still standing.
        q.pop(t + ms(1320));
        push(&mut q, 1.0, ms(10_000), t + ms(1330));
        assert!(q.standing(target, interval, t + ms(1340)));
        // Empty for the target: a burst starts afresh.
        q.pop(t + ms(1400));
        assert!(q.standing(target, interval, t + ms(1500)));
        push(&mut q, 1.0, ms(10_000), t + ms(1600));
        assert!(!q.standing(target, interval, t + ms(1900)));
        // Asked only once, long after: the crossing counts, not the asking.
        assert!(q.standing(target, interval, t + ms(2900)));
    }

    #[test]
    fn entries_that_cannot_make_it_are_dropped_and_stop_counting() {
        let t = Instant::now();
        let mut q = queue();
        // Each entry is one typical request; the fleet takes one per 100 ms.
        push(&mut q, 1.0, ms(1000), t);
        push(&mut q, 1.0, ms(150), t);
        push(&mut q, 1.0, ms(1000), t);
        let wait = |ahead: f64| ms(((ahead + 1.0) * 100.0) as u64);
        let d = q.drop_unmeetable(t, |w| *w, |ahead, left| wait(ahead) > left);
        // The second needs 200 ms and has 150: dropped; the third then
        // waits behind one entry only.
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].reason, DropReason::Unmeetable);
        assert_eq!(d[0].entry.deadline, t + ms(150));
        assert_eq!(q.len(), 2);
        assert_eq!(q.drops().unmeetable, 1);
        let d = q.drop_unmeetable(t, |w| *w, |ahead, left| wait(ahead) > left);
        assert!(d.is_empty());
    }
}
