//! Handing free capacity to queued requests: [`Gate::pump`], called by the
//! dispatcher whenever a permit returns or a scrape lands, serves each
//! waiting model in turn and answers entries that expired.

use super::*;

impl Gate {
    /// Hands free capacity to queued requests, and answers expired ones.
    /// Each round asks `clock` for the time: handing out permits takes time,
    /// and no entry is served within [`DISPATCH_MARGIN`] of its deadline.
    pub fn pump(&self, clock: impl Fn() -> Instant) {
        loop {
            let now = clock();
            let cutoff = now + DISPATCH_MARGIN;
            let Some(mut q) = self.locked() else { return };
            let mut dropped = q.drop_expired(cutoff);
            // The distinct models waiting, in service order: each is tried
            // once, so a model whose backends are full never blocks another.
            // Each model's first entry says what the choice weighs: its work,
            // and how long it may still wait for a faster backend.
            let mut models: Vec<(Option<Arc<str>>, Option<Work>, Instant)> = Vec::new();
            for e in q.in_service_order() {
                if !models.iter().any(|(m, ..)| *m == e.payload.model) {
                    models.push((e.payload.model.clone(), e.payload.work, e.deadline));
                }
            }
            let mut served = None;
            for (m, work, deadline) in models {
                let wants = Wants {
                    model: m.as_deref(),
                    work,
                    patience: Some(deadline.saturating_duration_since(cutoff)),
                    ..Wants::default()
                };
                let Ok(permit) = self.fleet.admit_with(&[], wants, now, &mut self.rng()) else {
                    continue;
                };
                let popped = q.pop_where(cutoff, |w| w.model == m);
                dropped.extend(popped.dropped);
                served = popped.next.map(|e| (permit, e));
                break;
            }
            let len = q.len();
            drop(q);
            for d in dropped {
                self.answer_dropped(d, len, now);
            }
            let Some((permit, entry)) = served else {
                return;
            };
            self.fleet.metrics.queue_wait.observe(
                now.saturating_duration_since(entry.enqueued_at)
                    .as_secs_f64(),
            );
            // Capacity is proven; the entry's cache home, or a cheaper
            // backend for its work, may have it too.
            let w = entry.payload.wants();
            let permit = if w.prefix.is_some() || w.work.is_some() {
                self.fleet
                    .admit_with(&[], w, now, &mut self.rng())
                    .unwrap_or(permit)
            } else {
                permit
            };
            // A client that left without cancelling drops the permit here.
            let _ = entry.payload.tx.send(Ok(permit));
        }
    }

    /// Tells a request that left the queue unserved why.
    fn answer_dropped(&self, d: Dropped<Waiter>, len: usize, now: Instant) {
        self.fleet.metrics.queue_drop(d.reason.as_str());
        let retry_after = self.busy_retry(len, now);
        let r = match d.reason {
            DropReason::Expired => Reject::QueueTimeout { retry_after },
            _ => Reject::Displaced { retry_after },
        };
        let _ = d.entry.payload.tx.send(Err(r));
    }
}
