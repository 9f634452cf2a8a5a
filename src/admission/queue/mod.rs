//! The gateway's bounded, deadline-aware queue of requests waiting for a
//! backend slot.
//!
//! ## Why the queue is here and not in llama-server
//!
//! A request deferred inside llama-server is bound to that backend, waits in
//! plain FIFO, and is not removed when its client leaves. Here it binds late
//! (to whichever backend frees first), an expired or abandoned entry costs
//! nothing, and the gateway can tell the client when to come back.
//!
//! ## Admission ([`AdmissionQueue::try_push`]), in this order
//!
//! 1. **Deadline.** Refused if `now + predicted_wait` is past the entry's
//!    deadline: it would only wait to be dropped, holding a place another
//!    request could use. The caller gets an answer at once instead.
//! 2. **Tenant share.** A tenant (API key, client address) may hold at most
//!    `max_tenant_share` of the capacity *while other tenants are waiting*.
//!    Alone, a tenant may use the whole queue (work-conserving: a
//!    single-tenant deployment keeps its full queue).
//! 3. **Room.** If the queue is full, the arrival may displace one entry: the
//!    newest entry of the lowest priority class below the arrival's, or, at
//!    equal priority, the newest entry of the tenant holding the most entries
//!    if that tenant is over its share. The newest is chosen because its
//!    client has invested the least waiting. Critical entries are never
//!    displaced by a lower class; nothing displaces an entry of higher
//!    priority. Otherwise the arrival is refused (`QueueFull`).
//!
//! ## Service ([`AdmissionQueue::pop`])
//!
//! Highest priority class first. Entries whose deadline has passed are never
//! served; they are returned as dropped so the caller can answer them with a
//! 503 and count them.
//!
//! Within a class, retries that came back when they were told
//! (`returning`, a promise claimed in [`returns`]) go first, in arrival
//! order: their clients were refused once already and waited as told, and
//! each refusal earns at most one such place. Then the first attempts: FIFO
//! while the queue keeps up, and LIFO under
//! sustained overload (adaptive LIFO with a CoDel-style trigger, as in
//! Facebook's "Fail at Scale"): when the oldest entry has waited longer than
//! `target_wait` continuously for `overload_interval`, the queue is standing,
//! not absorbing a burst. Then the newest entries are served first (their
//! clients are most likely still there and their deadlines furthest away),
//! and entries that waited more than `overload_max_wait` are dropped as
//! stale. When the oldest wait falls under the target (or the queue
//! empties), FIFO resumes.
//!
//! Every operation is O(len) at worst; the queue is bounded to a few
//! hundred entries, and the simplicity is worth more than a heap here.
//!
//! The standing-queue rule is also what bounds patient clients: a client
//! whose declared timeout gives it a long wait budget still waits at most
//! `overload_max_wait` once the queue stands, and the queue holds at most
//! `capacity` entries, however patient its clients.
//!
//! Files: `config.rs` (parameters), `entry.rs` (entries and outcomes),
//! `returns.rs` (the promised returns that rank a retry first),
//! `standing.rs` (the work ahead of a place, the standing-queue signal and
//! the entries that can no longer be served in time), this file (the queue
//! itself).

mod config;
mod entry;
pub mod returns;
mod standing;

pub use config::{InvalidQueueConfig, QueueConfig, QueueParams};
pub use entry::{
    Admitted, DropCounts, DropReason, Dropped, Entry, EntryId, NewEntry, Popped, Priority,
    QueueReject, Rejected,
};

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

// === AdmissionQueue ===

/// The waiting room. See the module docs.
#[derive(Debug)]
pub struct AdmissionQueue<T> {
    cfg: QueueConfig,
    /// One FIFO per priority, indexed by `Priority::index`; back = newest.
    classes: [VecDeque<Entry<T>>; 3],
    tenants: HashMap<u64, usize>,
    next_id: u64,
    /// Since when the oldest wait has been above target.
    above_target_since: Option<Instant>,
    overloaded: bool,
    /// Since when the queue has stood above the standing target without
    /// staying empty for that long (see `standing.rs`).
    standing_since: Option<Instant>,
    /// The standing target last asked about.
    standing_target: Duration,
    /// Since when the queue has been empty.
    emptied_at: Option<Instant>,
    drops: DropCounts,
}

// === impl AdmissionQueue ===

impl<T> AdmissionQueue<T> {
    /// An empty queue; checks `cfg` first (tests and one-off use).
    pub fn new(cfg: QueueConfig) -> Result<Self, InvalidQueueConfig> {
        Ok(Self::with_params(QueueParams::new(cfg)?))
    }

    /// An empty queue with checked parameters.
    pub fn with_params(params: QueueParams) -> Self {
        Self {
            cfg: params.0,
            classes: [VecDeque::new(), VecDeque::new(), VecDeque::new()],
            tenants: HashMap::new(),
            next_id: 0,
            above_target_since: None,
            overloaded: false,
            standing_since: None,
            standing_target: Duration::ZERO,
            emptied_at: None,
            drops: DropCounts::default(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.classes.iter().map(VecDeque::len).sum()
    }

    /// Returning retries waiting (they are served ahead of first attempts).
    pub fn returning_len(&self) -> usize {
        self.classes
            .iter()
            .map(|c| c.iter().filter(|e| e.returning).count())
            .sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.classes.iter().all(VecDeque::is_empty)
    }

    /// Entries `tenant` holds.
    pub fn tenant_len(&self, tenant: u64) -> usize {
        self.tenants.get(&tenant).copied().unwrap_or(0)
    }

    /// How long the oldest entry has waited.
    pub fn oldest_wait(&self, now: Instant) -> Option<Duration> {
        self.classes
            .iter()
            .filter_map(|c| c.front())
            .map(|e| now.saturating_duration_since(e.enqueued_at))
            .max()
    }

    /// Whether the queue is in overload (LIFO) mode, as of the last
    /// `try_push` or `pop`.
    pub fn is_overloaded(&self) -> bool {
        self.overloaded
    }

    /// Drops by reason since creation.
    pub fn drops(&self) -> DropCounts {
        self.drops
    }

    /// Queues an arrival, or says why not. `predicted_wait` comes from the
    /// drain estimator for the position the entry would take.
    pub fn try_push(
        &mut self,
        new: NewEntry<T>,
        now: Instant,
        predicted_wait: Duration,
    ) -> Result<Admitted<T>, Rejected<T>> {
        self.update_overload(now);
        let reject = |reason, payload| Err(Rejected { reason, payload });
        let fits = now
            .checked_add(predicted_wait)
            .is_some_and(|done| done < new.deadline);
        if !fits {
            return reject(QueueReject::DeadlineUnmeetable, new.payload);
        }
        let cap = self.cfg.tenant_cap();
        let mine = self.tenant_len(new.tenant);
        let others_waiting = self.len() > mine;
        if mine >= cap && others_waiting {
            return reject(QueueReject::TenantShare, new.payload);
        }
        let mut displaced = None;
        if self.len() >= self.cfg.capacity {
            match self.victim(new.priority, new.tenant) {
                Some((class, index)) => {
                    displaced = self.take(class, index);
                    self.drops.add(DropReason::Displaced);
                }
                None => return reject(QueueReject::QueueFull, new.payload),
            }
        }
        let id = EntryId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        *self.tenants.entry(new.tenant).or_insert(0) += 1;
        self.classes[new.priority.index()].push_back(Entry {
            id,
            enqueued_at: now,
            deadline: new.deadline,
            priority: new.priority,
            tenant: new.tenant,
            returning: new.returning,
            auto: new.auto,
            payload: new.payload,
        });
        self.update_overload(now);
        Ok(Admitted { id, displaced })
    }

    /// The next entry to serve, plus whatever was dropped on the way.
    pub fn pop(&mut self, now: Instant) -> Popped<T> {
        self.pop_where(now, |_| true)
    }

    /// Like [`AdmissionQueue::pop`], but serves the next entry (in service
    /// order) whose payload satisfies `fits`: the next request a backend
    /// that just freed can take (one serving its model).
    pub fn pop_where(&mut self, now: Instant, fits: impl Fn(&T) -> bool) -> Popped<T> {
        let mut dropped = Vec::new();
        self.drop_where(&mut dropped, DropReason::Expired, |e| e.deadline <= now);
        self.update_overload(now);
        if self.overloaded {
            let max = self.cfg.overload_max_wait;
            self.drop_where(&mut dropped, DropReason::Stale, |e| {
                now.saturating_duration_since(e.enqueued_at) > max
            });
        }
        let lifo = self.overloaded;
        let mut next = None;
        for p in Priority::ALL_HIGH_FIRST {
            let class = &mut self.classes[p.index()];
            let returning = class.iter().position(|e| e.returning && fits(&e.payload));
            let at = returning.or_else(|| {
                if lifo {
                    class.iter().rposition(|e| fits(&e.payload))
                } else {
                    class.iter().position(|e| fits(&e.payload))
                }
            });
            if let Some(e) = at.and_then(|i| class.remove(i)) {
                self.forget_tenant(e.tenant);
                next = Some(e);
                break;
            }
        }
        self.update_overload(now);
        Popped { next, dropped }
    }

    /// The entries in the order they would be served (highest class first;
    /// returning retries first within a class; then newest first under
    /// sustained overload).
    pub fn in_service_order(&self) -> Vec<&Entry<T>> {
        let mut out = Vec::with_capacity(self.len());
        for p in Priority::ALL_HIGH_FIRST {
            let class = &self.classes[p.index()];
            out.extend(class.iter().filter(|e| e.returning));
            let first = class.iter().filter(|e| !e.returning);
            if self.overloaded {
                out.extend(first.rev());
            } else {
                out.extend(first);
            }
        }
        out
    }

    /// Removes an entry whose client went away.
    pub fn remove(&mut self, id: EntryId) -> Option<Entry<T>> {
        for class in 0..self.classes.len() {
            if let Some(i) = self.classes[class].iter().position(|e| e.id == id) {
                self.drops.add(DropReason::Cancelled);
                return self.take(class, i);
            }
        }
        None
    }

    /// Moves the deadline of every entry queued with the automatic wait
    /// budget to `budget` after it was queued, where that is later (never
    /// earlier): the budget is the gateway's own guess of a few request
    /// durations, and a burst's first requests to end show how long a full
    /// batch takes.
    pub fn raise_auto(&mut self, budget: Duration) {
        for e in self.classes.iter_mut().flatten().filter(|e| e.auto) {
            e.deadline = e.deadline.max(e.enqueued_at + budget);
        }
    }

    /// The deadline of a queued entry, if it is still queued.
    pub fn deadline_of(&self, id: EntryId) -> Option<Instant> {
        self.classes
            .iter()
            .flatten()
            .find(|e| e.id == id)
            .map(|e| e.deadline)
    }

    /// Drops every expired entry (for a periodic sweep when nothing pops).
    pub fn drop_expired(&mut self, now: Instant) -> Vec<Dropped<T>> {
        let mut dropped = Vec::new();
        self.drop_where(&mut dropped, DropReason::Expired, |e| e.deadline <= now);
        self.update_overload(now);
        dropped
    }

    /// Which entry a full queue gives up for an arrival, as (class, index).
    fn victim(&self, priority: Priority, tenant: u64) -> Option<(usize, usize)> {
        // A lower class first: its newest entry.
        for p in [Priority::Sheddable, Priority::Normal] {
            if p >= priority {
                break;
            }
            let class = &self.classes[p.index()];
            if !class.is_empty() {
                return Some((p.index(), class.len() - 1));
            }
        }
        // Same class: the newest entry of the biggest tenant over its share,
        // if the arrival's tenant is under its own.
        let cap = self.cfg.tenant_cap();
        if self.tenant_len(tenant) >= cap {
            return None;
        }
        let (&big, &count) = self
            .tenants
            .iter()
            .filter(|(&t, _)| t != tenant)
            .max_by_key(|(&t, &n)| (n, std::cmp::Reverse(t)))?;
        if count <= cap {
            return None;
        }
        let class = &self.classes[priority.index()];
        class
            .iter()
            .rposition(|e| e.tenant == big)
            .map(|i| (priority.index(), i))
    }

    fn take(&mut self, class: usize, index: usize) -> Option<Entry<T>> {
        let e = self.classes.get_mut(class)?.remove(index)?;
        self.forget_tenant(e.tenant);
        Some(e)
    }

    fn forget_tenant(&mut self, tenant: u64) {
        if let Some(n) = self.tenants.get_mut(&tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.tenants.remove(&tenant);
            }
        }
    }

    fn drop_where(
        &mut self,
        out: &mut Vec<Dropped<T>>,
        reason: DropReason,
        f: impl Fn(&Entry<T>) -> bool,
    ) {
        for class in 0..self.classes.len() {
            let mut i = 0;
            while i < self.classes[class].len() {
                if f(&self.classes[class][i]) {
                    if let Some(entry) = self.take(class, i) {
                        self.drops.add(reason);
                        out.push(Dropped { entry, reason });
                    }
                } else {
                    i += 1;
                }
            }
        }
    }

    fn update_overload(&mut self, now: Instant) {
        self.note_emptiness(now);
        match self.oldest_wait(now) {
            Some(w) if w > self.cfg.target_wait => {
                let since = *self.above_target_since.get_or_insert(now);
                self.overloaded =
                    now.saturating_duration_since(since) >= self.cfg.overload_interval;
            }
            _ => {
                self.above_target_since = None;
                self.overloaded = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn queue(capacity: usize) -> AdmissionQueue<u32> {
        AdmissionQueue::new(QueueConfig {
            capacity,
            ..QueueConfig::default()
        })
        .unwrap()
    }

    fn entry(payload: u32, deadline: Instant, priority: Priority, tenant: u64) -> NewEntry<u32> {
        NewEntry {
            payload,
            deadline,
            priority,
            tenant,
            returning: false,
            auto: false,
        }
    }

    fn normal(payload: u32, now: Instant, tenant: u64) -> NewEntry<u32> {
        entry(payload, now + secs(60), Priority::Normal, tenant)
    }

    #[test]
    fn invalid_config_names_field_and_value() {
        let err = AdmissionQueue::<u32>::new(QueueConfig {
            max_tenant_share: 0.0,
            ..QueueConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "queue.max_tenant_share = 0 is not valid: must be in (0, 1]"
        );
        assert!(AdmissionQueue::<u32>::new(QueueConfig {
            capacity: 0,
            ..QueueConfig::default()
        })
        .is_err());
    }

    #[test]
    fn fifo_within_class_and_priority_order() {
        let t = Instant::now();
        let mut q = queue(10);
        q.try_push(normal(1, t, 1), t, ms(0)).unwrap();
        q.try_push(entry(2, t + secs(60), Priority::Sheddable, 1), t, ms(0))
            .unwrap();
        q.try_push(normal(3, t, 2), t, ms(0)).unwrap();
        q.try_push(entry(4, t + secs(60), Priority::Critical, 3), t, ms(0))
            .unwrap();
        let order: Vec<u32> = (0..4).map(|_| q.pop(t).next.unwrap().payload).collect();
        assert_eq!(order, vec![4, 1, 3, 2]);
        assert!(q.pop(t).next.is_none());
        assert!(q.is_empty());
    }

    #[test]
    fn refuses_when_predicted_wait_passes_deadline() {
        let t = Instant::now();
        let mut q = queue(10);
        let r = q
            .try_push(entry(1, t + secs(5), Priority::Normal, 1), t, secs(6))
            .unwrap_err();
        assert_eq!(r.reason, QueueReject::DeadlineUnmeetable);
        assert_eq!(r.payload, 1);
        let r = q
            .try_push(entry(2, t, Priority::Normal, 1), t, ms(0))
            .unwrap_err();
        assert_eq!(r.reason, QueueReject::DeadlineUnmeetable);
        assert!(q
            .try_push(entry(3, t + secs(5), Priority::Normal, 1), t, secs(4))
            .is_ok());
    }

    #[test]
    fn expired_entries_are_dropped_not_served() {
        let t = Instant::now();
        let mut q = queue(10);
        q.try_push(entry(1, t + secs(1), Priority::Normal, 1), t, ms(0))
            .unwrap();
        q.try_push(entry(2, t + secs(9), Priority::Normal, 1), t, ms(0))
            .unwrap();
        let p = q.pop(t + secs(1));
        assert_eq!(p.next.unwrap().payload, 2);
        assert_eq!(p.dropped.len(), 1);
        assert_eq!(p.dropped[0].entry.payload, 1);
        assert_eq!(p.dropped[0].reason, DropReason::Expired);
        assert_eq!(q.drops().expired, 1);
    }

    #[test]
    fn full_queue_refuses_equal_priority() {
        let t = Instant::now();
        let mut q = queue(2);
        q.try_push(normal(1, t, 1), t, ms(0)).unwrap();
        q.try_push(normal(2, t, 2), t, ms(0)).unwrap();
        let r = q.try_push(normal(3, t, 3), t, ms(0)).unwrap_err();
        assert_eq!(r.reason, QueueReject::QueueFull);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn higher_priority_displaces_newest_of_lowest_class() {
        let t = Instant::now();
        let mut q = queue(3);
        q.try_push(entry(1, t + secs(60), Priority::Sheddable, 1), t, ms(0))
            .unwrap();
        q.try_push(entry(2, t + secs(60), Priority::Sheddable, 2), t, ms(0))
            .unwrap();
        q.try_push(normal(3, t, 3), t, ms(0)).unwrap();
        let a = q
            .try_push(entry(4, t + secs(60), Priority::Critical, 4), t, ms(0))
            .unwrap();
        assert_eq!(a.displaced.unwrap().payload, 2);
        let a = q.try_push(normal(5, t, 5), t, ms(0)).unwrap();
        assert_eq!(a.displaced.unwrap().payload, 1);
        // Only Normal and Critical left: a Normal cannot displace them.
        assert_eq!(
            q.try_push(normal(6, t, 6), t, ms(0)).unwrap_err().reason,
            QueueReject::QueueFull
        );
        assert_eq!(q.drops().displaced, 2);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn tenant_alone_may_fill_the_queue_but_not_crowd_out_others() {
        let t = Instant::now();
        let mut q = queue(4); // tenant cap 2
        for i in 0..4 {
            q.try_push(normal(i, t, 7), t, ms(0)).unwrap();
        }
        assert_eq!(q.tenant_len(7), 4);
        // Another tenant arrives at a full queue: displaces 7's newest.
        let a = q.try_push(normal(10, t, 8), t, ms(0)).unwrap();
        assert_eq!(a.displaced.unwrap().payload, 3);
        // Now others wait: tenant 7 (3 entries ≥ cap 2) is refused.
        assert_eq!(
            q.try_push(normal(11, t, 7), t, ms(0)).unwrap_err().reason,
            QueueReject::TenantShare
        );
        // Tenant 8 may take one more (displacing 7 again), then is at cap.
        let a = q.try_push(normal(12, t, 8), t, ms(0)).unwrap();
        assert_eq!(a.displaced.unwrap().payload, 2);
        assert_eq!(
            q.try_push(normal(13, t, 8), t, ms(0)).unwrap_err().reason,
            QueueReject::TenantShare
        );
        assert_eq!((q.tenant_len(7), q.tenant_len(8)), (2, 2));
    }

    #[test]
    fn remove_cancels_and_counts() {
        let t = Instant::now();
        let mut q = queue(4);
        let id = q.try_push(normal(1, t, 1), t, ms(0)).unwrap().id;
        q.try_push(normal(2, t, 1), t, ms(0)).unwrap();
        assert_eq!(q.remove(id).unwrap().payload, 1);
        assert_eq!(q.remove(id), None);
        assert_eq!(q.drops().cancelled, 1);
        assert_eq!(q.tenant_len(1), 1);
        assert_eq!(q.pop(t).next.unwrap().payload, 2);
    }

    #[test]
    fn standing_queue_switches_to_lifo_and_sheds_stale() {
        let t = Instant::now();
        // The mechanism, with an interval of 5 s and stale after 10 s (the
        // defaults are 1 s and 25 s).
        let mut q = AdmissionQueue::new(QueueConfig {
            capacity: 100,
            overload_interval: secs(5),
            overload_max_wait: secs(10),
            ..QueueConfig::default()
        })
        .unwrap();
        for i in 0..10u32 {
            q.try_push(normal(i, t, 1), t, ms(0)).unwrap();
        }
        // Oldest waited 2 s: above target, but only just seen → FIFO.
        assert_eq!(q.pop(t + secs(2)).next.unwrap().payload, 0);
        assert!(!q.is_overloaded());
        // Above target for 5 s: overload → newest first, nothing stale yet.
        let p = q.pop(t + secs(7));
        assert!(q.is_overloaded());
        assert_eq!(p.next.unwrap().payload, 9);
        assert!(p.dropped.is_empty());
        for i in 10..13u32 {
            q.try_push(normal(i, t + secs(8), 2), t + secs(8), ms(0))
                .unwrap();
        }
        // At t+12 s the entries from t waited 12 s > 10 s: stale.
        let p = q.pop(t + secs(12));
        assert_eq!(p.next.unwrap().payload, 12);
        let stale: Vec<u32> = p.dropped.iter().map(|d| d.entry.payload).collect();
        assert_eq!(stale, (1..9).collect::<Vec<_>>());
        assert!(p.dropped.iter().all(|d| d.reason == DropReason::Stale));
        assert_eq!(q.drops().stale, 8);
        // Drain; once empty, FIFO again.
        while q.pop(t + secs(12)).next.is_some() {}
        assert!(!q.is_overloaded());
        q.try_push(normal(100, t + secs(13), 1), t + secs(13), ms(0))
            .unwrap();
        q.try_push(normal(101, t + secs(13), 1), t + secs(13), ms(0))
            .unwrap();
        assert_eq!(q.pop(t + secs(13)).next.unwrap().payload, 100);
    }

    #[test]
    fn returning_retries_first_within_their_class_only() {
        let t = Instant::now();
        let mut q = queue(10);
        let back = |payload, priority| NewEntry {
            returning: true,
            ..entry(payload, t + secs(60), priority, 9)
        };
        q.try_push(normal(1, t, 1), t, ms(0)).unwrap();
        q.try_push(normal(2, t, 2), t, ms(0)).unwrap();
        q.try_push(back(3, Priority::Normal), t, ms(0)).unwrap();
        q.try_push(back(4, Priority::Sheddable), t, ms(0)).unwrap();
        q.try_push(entry(5, t + secs(60), Priority::Critical, 3), t, ms(0))
            .unwrap();
        q.try_push(back(6, Priority::Normal), t, ms(0)).unwrap();
        let order: Vec<u32> = q.in_service_order().iter().map(|e| e.payload).collect();
        assert_eq!(order, vec![5, 3, 6, 1, 2, 4]);
        let popped: Vec<u32> = (0..6).map(|_| q.pop(t).next.unwrap().payload).collect();
        assert_eq!(popped, order);
    }

    #[test]
    fn automatic_deadlines_move_later_named_ones_never() {
        let t = Instant::now();
        let mut q = queue(10);
        let auto = |payload| NewEntry {
            auto: true,
            ..entry(payload, t + ms(600), Priority::Normal, 1)
        };
        let a = q.try_push(auto(1), t, ms(0)).unwrap().id;
        let named = q
            .try_push(entry(2, t + ms(600), Priority::Normal, 1), t, ms(0))
            .unwrap()
            .id;
        let later = q.try_push(auto(3), t + ms(100), ms(0)).unwrap().id;
        // A longer budget, measured from each entry's own arrival.
        q.raise_auto(ms(1500));
        assert_eq!(q.deadline_of(a), Some(t + ms(1500)));
        assert_eq!(q.deadline_of(later), Some(t + ms(1600)));
        assert_eq!(
            q.deadline_of(named),
            Some(t + ms(600)),
            "a named budget stays"
        );
        // A shorter one moves nothing back.
        q.raise_auto(ms(200));
        assert_eq!(q.deadline_of(a), Some(t + ms(1500)));
        // So the named entry expires and the automatic ones wait on.
        let p = q.pop_where(t + ms(700), |_| false);
        assert_eq!(p.dropped.len(), 1);
        assert_eq!(p.dropped[0].entry.payload, 2);
        assert_eq!(q.len(), 2);
        assert_eq!(q.deadline_of(named), None);
    }

    #[test]
    fn returning_retries_first_under_lifo_too() {
        let t = Instant::now();
        let mut q = queue(100);
        for i in 0..5u32 {
            q.try_push(normal(i, t, 1), t, ms(0)).unwrap();
        }
        q.pop(t + secs(2));
        let back = NewEntry {
            returning: true,
            ..normal(50, t + secs(6), 2)
        };
        q.try_push(back, t + secs(6), ms(0)).unwrap();
        let p = q.pop(t + secs(7));
        assert!(q.is_overloaded());
        assert_eq!(p.next.unwrap().payload, 50);
        assert_eq!(q.pop(t + secs(7)).next.unwrap().payload, 4);
    }

    #[test]
    fn patient_clients_cannot_build_an_unbounded_queue() {
        // 3x overload of patient clients (60 s budgets): 3 arrivals and one
        // service every 100 ms for 120 s. The queue never holds more than
        // its capacity, and once it stands nobody waits past
        // overload_max_wait (plus one step).
        let t = Instant::now();
        let mut q = queue(64);
        let max = q.config().overload_max_wait;
        let mut worst = Duration::ZERO;
        for step in 0..1200u64 {
            let now = t + ms(100 * step);
            for k in 0..3 {
                let _ = q.try_push(normal(k, now, 1 + k as u64), now, ms(0));
            }
            assert!(q.len() <= 64);
            if let Some(e) = q.pop(now).next {
                if q.is_overloaded() {
                    worst = worst.max(now.saturating_duration_since(e.enqueued_at));
                }
            }
        }
        assert!(q.is_overloaded());
        assert!(worst <= max + ms(100), "waited {worst:?}");
    }

    #[test]
    fn oldest_wait_and_drop_expired() {
        let t = Instant::now();
        let mut q = queue(4);
        assert_eq!(q.oldest_wait(t), None);
        q.try_push(entry(1, t + secs(2), Priority::Sheddable, 1), t, ms(0))
            .unwrap();
        q.try_push(normal(2, t + secs(1), 1), t + secs(1), ms(0))
            .unwrap();
        assert_eq!(q.oldest_wait(t + secs(3)), Some(secs(3)));
        let d = q.drop_expired(t + secs(3));
        assert_eq!(d.len(), 1);
        assert_eq!(q.oldest_wait(t + secs(3)), Some(secs(2)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push {
            tenant: u64,
            prio: u8,
            deadline_ms: u64,
            wait_ms: u64,
        },
        Pop,
        Remove(u64),
    }

    fn op() -> impl Strategy<Value = (Op, u64)> {
        let o = prop_oneof![
            5 => (0u64..5, 0u8..3, 0u64..30_000, 0u64..5_000).prop_map(
                |(tenant, prio, deadline_ms, wait_ms)| Op::Push { tenant, prio, deadline_ms, wait_ms }),
            3 => Just(Op::Pop),
            1 => (0u64..200).prop_map(Op::Remove),
        ];
        (o, 0u64..2_000)
    }

    proptest! {
        #[test]
        fn prop_bound_deadline_and_share(
            ops in proptest::collection::vec(op(), 1..400),
            capacity in 1usize..20,
            share in 0.1f64..1.0,
        ) {
            let cfg = QueueConfig { capacity, max_tenant_share: share, ..QueueConfig::default() };
            let cap = cfg.tenant_cap();
            let mut q: AdmissionQueue<u64> = AdmissionQueue::new(cfg).unwrap();
            let mut now = Instant::now();
            let mut admitted = 0u64;
            let mut out = 0u64;
            for (op, dt) in ops {
                now += Duration::from_millis(dt);
                match op {
                    Op::Push { tenant, prio, deadline_ms, wait_ms } => {
                        let priority = [Priority::Sheddable, Priority::Normal, Priority::Critical][prio as usize];
                        let before_others = q.len() - q.tenant_len(tenant);
                        let r = q.try_push(NewEntry {
                            payload: tenant,
                            deadline: now + Duration::from_millis(deadline_ms),
                            priority,
                            tenant,
                            returning: tenant == 0,
                            auto: false,
                        }, now, Duration::from_millis(wait_ms));
                        if let Ok(a) = r {
                            admitted += 1;
                            prop_assert!(wait_ms < deadline_ms);
                            if a.displaced.is_some() { out += 1; }
                            // Share: over the cap only if nobody else waited.
                            prop_assert!(q.tenant_len(tenant) <= cap || before_others == 0,
                                "tenant {} holds {} > cap {}", tenant, q.tenant_len(tenant), cap);
                        }
                    }
                    Op::Pop => {
                        let p = q.pop(now);
                        out += p.dropped.len() as u64;
                        for d in &p.dropped {
                            if d.reason == DropReason::Expired {
                                prop_assert!(d.entry.deadline <= now);
                            }
                        }
                        if let Some(e) = p.next {
                            out += 1;
                            prop_assert!(e.deadline > now, "served an expired entry");
                        }
                    }
                    Op::Remove(id) => {
                        if q.remove(EntryId(id)).is_some() { out += 1; }
                    }
                }
                prop_assert!(q.len() <= capacity);
                prop_assert_eq!(q.len() as u64, admitted - out);
                let per_tenant: usize = (0..5).map(|t| q.tenant_len(t)).sum();
                prop_assert_eq!(per_tenant, q.len());
            }
        }
    }
}
