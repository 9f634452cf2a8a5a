//! The hints of the gate's refusals for a known client: the time until the
//! queue and the returns already promised are served, whether a retry can
//! still help, and the promise made when it can (see the module docs of
//! [`super`], "The client contract").

use super::*;

impl Gate {
    /// [`Gate::timed_out`] for a call of `id` whose client said `client`.
    pub fn timed_out_for(&self, id: &Identity, client: ClientHeaders, now: Instant) -> Reject {
        self.fleet.metrics.queue_drop("expired");
        let who = Some((id.tenant, client.retries()));
        Reject::QueueTimeout {
            retry_after: self.busy_hint(self.queue_len(), who, now),
        }
    }

    /// [`Gate::refusal`] for a request of a known tenant and client.
    pub(super) fn refusal_for(
        &self,
        why: Unavailable,
        who: Option<(u64, Retries)>,
        now: Instant,
    ) -> Reject {
        match why {
            Unavailable::Busy => Reject::Saturated {
                retry_after: self.busy_hint(self.queue_len(), who, now),
            },
            Unavailable::Unhealthy {
                probe_in,
                stale_after,
            } => Reject::NoHealthyBackend {
                retry_after: self.retry.unhealthy(probe_in, stale_after),
            },
            Unavailable::UnknownModel => Reject::ModelNotFound {
                models: self.fleet.models(),
            },
            Unavailable::ModelNotLoaded { stale_after } => Reject::ModelNotLoaded {
                retry_after: self.retry.unhealthy(None, stale_after),
            },
        }
    }

    /// The hint while the fleet is busy and `waiting` requests queue: the
    /// time until those and the returns promised already are served. For a
    /// known client (`who`: its tenant and retries) the hint says whether a
    /// retry can still help, and a retry it is told to make is promised.
    pub(super) fn busy_hint(
        &self,
        waiting: usize,
        who: Option<(u64, Retries)>,
        now: Instant,
    ) -> Hint {
        let rate = self.drain_rate(now);
        let mut returns = lock(&self.returns);
        // Those queued (at least one slot must free), then each promised.
        let ahead = waiting.max(1).saturating_add(returns.outstanding(now));
        let wait = busy_wait(ahead, rate);
        let Some((tenant, client)) = who else {
            return self.retry.hint(wait);
        };
        let hint = self.retry.for_client(wait, client);
        if hint.retry() {
            // Only a client that counts its attempts can claim it.
            if client.taken.is_some() {
                returns.promise(tenant, hint.wait(), now);
            }
        } else {
            self.fleet.metrics.no_retry_answer();
        }
        hint
    }
}
