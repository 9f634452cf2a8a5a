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
            let mut models: Vec<Option<Arc<str>>> = Vec::new();
            for e in q.in_service_order() {
                if !models.contains(&e.payload.model) {
                    models.push(e.payload.model.clone());
                }
            }
            let mut served = None;
            for m in models {
                let wants = Wants {
                    model: m.as_deref(),
                    prefix: None,
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
            // Capacity is proven; the entry's cache home may have it too.
            let permit = match entry.payload.prefix {
                Some(_) => self
                    .fleet
                    .admit_with(&[], entry.payload.wants(), now, &mut self.rng())
                    .unwrap_or(permit),
                None => permit,
            };
            // A client that left without cancelling drops the permit here.
            let _ = entry.payload.tx.send(Ok(permit));
        }
    }

    /// Tells a request that left the queue unserved why.
    fn answer_dropped(&self, d: Dropped<Waiter>, len: usize, now: Instant) {
        self.fleet.metrics.queue_drop(d.reason.as_str());
        let who = Some((d.entry.tenant, d.entry.payload.client));
        let retry_after = self.busy_hint(len, who, now);
        let r = match d.reason {
            DropReason::Expired => Reject::QueueTimeout { retry_after },
            _ => Reject::Displaced { retry_after },
        };
        let _ = d.entry.payload.tx.send(Err(r));
    }
}
