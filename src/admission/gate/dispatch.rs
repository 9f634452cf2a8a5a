//! Handing free capacity to queued requests: [`Gate::pump`], called by the
//! dispatcher whenever a permit returns or a scrape lands, serves each
//! waiting model in turn and answers entries that expired, or that can no
//! longer be served before their deadline ([`HOPELESS_FACTOR`]).

use super::*;

/// How many queued entries of one model a dispatch round looks at for one
/// whose conversation's home has the free slot.
const HOME_LOOKAHEAD: usize = 8;

/// What the choice weighs of a queued entry: prefix, work, reuse, deadline.
type Head = (Option<u64>, Option<Work>, Option<u64>, Instant);

impl Gate {
    /// Hands free capacity to queued requests, and answers expired ones.
    /// Each round asks `clock` for the time: handing out permits takes time,
    /// and no entry is served within [`DISPATCH_MARGIN`] of its deadline.
    pub fn pump(&self, clock: impl Fn() -> Instant) {
        let mut first = true;
        loop {
            let now = clock();
            let cutoff = now + DISPATCH_MARGIN;
            let Some(mut q) = self.locked() else { return };
            self.raise_auto(&mut q);
            let mut dropped = q.drop_expired(cutoff);
            if std::mem::take(&mut first) && !q.is_empty() {
                // Once per round: entries the fleet now drains too slowly
                // to reach in time are answered at once.
                let rate = self.drain_rate(now);
                let mix = *lock(&self.mix);
                dropped.extend(q.drop_unmeetable(
                    cutoff,
                    |w| mix.share(w.units),
                    |ahead, left| {
                        ahead >= HOPELESS_MIN_AHEAD
                            && work_wait(ahead, rate) > left.mul_f64(HOPELESS_FACTOR)
                    },
                ));
            }
            // The distinct models waiting, in service order: each is tried
            // once, so a model whose backends are full never blocks another.
            // Each model's first entry (the one served next) says what the
            // choice weighs: its cache home, its work, and how long it may
            // still wait for a faster backend or its home. Before it, the
            // first few entries of the model whose conversation's home is
            // free (up to HOME_LOOKAHEAD, none past one without a prefix)
            // may take that home's slot: another conversation's turn there
            // would reprocess its whole history.
            let mut models: Vec<(Option<Arc<str>>, Vec<Head>)> = Vec::new();
            for e in q.in_service_order() {
                let w = &e.payload;
                let head = (w.prefix, w.work, w.reuse, e.deadline);
                match models.iter_mut().find(|(m, _)| *m == w.model) {
                    None => models.push((w.model.clone(), vec![head])),
                    Some((_, heads)) if heads.len() < HOME_LOOKAHEAD => heads.push(head),
                    Some(_) => {}
                }
            }
            let mut served = None;
            'models: for (m, heads) in models {
                let wants = |&(prefix, work, reuse, deadline): &Head, home_only| Wants {
                    model: m.as_deref(),
                    prefix,
                    work,
                    patience: Some(deadline.saturating_duration_since(cutoff)),
                    reuse,
                    home_only,
                };
                let homed = heads.iter().take_while(|h| h.0.is_some());
                for h in homed.filter(|_| heads.len() > 1) {
                    let Ok(permit) =
                        self.fleet
                            .admit_with(&[], wants(h, true), now, &mut self.rng())
                    else {
                        continue;
                    };
                    // The first entry of this conversation (an equal one).
                    let popped = q.pop_where(cutoff, |w| w.model == m && w.prefix == h.0);
                    dropped.extend(popped.dropped);
                    served = popped.next.map(|e| (permit, e));
                    break 'models;
                }
                let Ok(permit) =
                    self.fleet
                        .admit_with(&[], wants(&heads[0], false), now, &mut self.rng())
                else {
                    continue;
                };
                let popped = q.pop_where(cutoff, |w| w.model == m);
                dropped.extend(popped.dropped);
                served = popped.next.map(|e| (permit, e));
                break;
            }
            for d in dropped.iter().filter(|d| d.reason == DropReason::Expired) {
                let e = &d.entry;
                self.learn_wait(
                    &e.payload,
                    e.deadline.saturating_duration_since(e.enqueued_at),
                );
            }
            if let Some((_, e)) = &served {
                self.learn_wait(&e.payload, now.saturating_duration_since(e.enqueued_at));
            }
            let len = q.len();
            drop(q);
            for d in dropped {
                self.answer_dropped(d, len, now);
            }
            let Some((permit, entry)) = served else {
                return;
            };
            let waited = now.saturating_duration_since(entry.enqueued_at);
            self.fleet.metrics.queue_wait.observe(waited.as_secs_f64());
            let error = waited.as_secs_f64() - entry.payload.predicted.as_secs_f64();
            self.fleet.metrics.queue_wait_error.observe(error);
            // A client that left without cancelling drops the permit here.
            let _ = entry.payload.tx.send(Ok(Given {
                permit,
                deadline: entry.deadline,
            }));
        }
    }

    /// Tells a request that left the queue unserved why.
    fn answer_dropped(&self, d: Dropped<Waiter>, len: usize, now: Instant) {
        self.fleet.metrics.queue_drop(d.reason.as_str());
        let who = Some((d.entry.tenant, d.entry.payload.client));
        let retry_after = self.busy_hint(len, who, now);
        let r = match d.reason {
            DropReason::Expired => Reject::QueueTimeout { retry_after },
            DropReason::Unmeetable => Reject::DeadlineUnmeetable { retry_after },
            _ => Reject::Displaced { retry_after },
        };
        let _ = d.entry.payload.tx.send(Err(r));
    }
}
