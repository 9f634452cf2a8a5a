//! Settling a token charge once `usage` is known: sent to Redis from the
//! cluster's runtime (off the request path), or kept in the ledger
//! (`ledger.rs`) while Redis is away and sent when the heartbeat finds it
//! again; or reconciled in the fallback's local share where it was made.

use std::sync::Arc;

use tokio::time::Instant;

use super::ledger::{Ledger, Settlement};
use super::{scripts, BudgetOp, Charge, Cluster, Inner};
use crate::admission::gate::{Gate, Identity};

impl Cluster {
    /// Settles a charge with the tokens really used, where it was made. A
    /// Redis settlement is sent from the cluster's runtime (off the request
    /// path); if Redis is down or the call fails, it waits in the ledger
    /// (`ledger.rs`) and is sent when the heartbeat finds Redis again.
    pub fn settle_tokens(
        &self,
        gate: &Gate,
        id: &Identity,
        charge: Charge,
        used: u64,
        now: Instant,
    ) {
        let key = &id.rate_key;
        if !charge.shared {
            if let Some(s) = self.inner.share.load_full() {
                s.reconcile(key, charge.tokens, used, now);
            }
            return;
        }
        let Some(q) = gate.budget_quota(key) else {
            return;
        };
        let delta = i64::try_from(charge.tokens)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(used).unwrap_or(i64::MAX));
        if delta == 0 {
            return;
        }
        let s = Settlement {
            key: self.inner.key("tb", key),
            quota: q,
            delta,
            id: rand::random(),
            at: now,
        };
        if !self.redis_up() {
            self.inner.pend(s);
            return;
        }
        let i = Arc::clone(&self.inner);
        self.inner.handle.spawn(async move {
            if let Err(s) = i.send(s).await {
                i.pend(s);
            }
        });
    }

    /// Settlements waiting for Redis.
    pub fn pending_settlements(&self) -> usize {
        self.inner.ledger().len()
    }
}

impl Inner {
    pub(super) fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a settlement Redis did not take.
    fn pend(&self, s: Settlement) {
        let mut l = self.ledger();
        if l.push(s) {
            self.metrics.settlements_dropped.inc();
        }
        self.metrics.settlements_pending.set(l.len() as i64);
    }

    /// Sends one settlement; gives it back when Redis did not take it.
    async fn send(&self, s: Settlement) -> Result<(), Settlement> {
        let mut con = self.con.clone();
        let op = BudgetOp::Settle {
            delta: s.delta,
            id: s.id,
        };
        match self
            .call(scripts::budget(&mut con, &s.key, s.quota, op))
            .await
        {
            Ok(_) => Ok(()),
            Err(f) => {
                self.metrics.errors.with_label_values(&[f.kind()]).inc();
                Err(s)
            }
        }
    }

    /// Sends what the ledger holds, oldest first; stops at the first
    /// failure and keeps the rest for the next heartbeat.
    pub(super) async fn settle_pending(&self) {
        let due = self.ledger().take(Instant::now());
        let mut due = due.into_iter();
        while let Some(s) = due.next() {
            if let Err(s) = self.send(s).await {
                self.pend(s);
                due.for_each(|s| self.pend(s));
                break;
            }
        }
        let n = self.ledger().len();
        self.metrics.settlements_pending.set(n as i64);
    }
}
