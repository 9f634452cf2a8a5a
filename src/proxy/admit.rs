//! `request_filter`'s work: from the request's facts to a permit on a
//! backend, or the reason there is none.
//!
//! In order: a place among `server.max_clients`, the declared body size,
//! then a passthrough pick, or for inference the wait budget and priority
//! headers, the key, its rate and token budget, and a permit from the gate,
//! at once or after waiting in its queue. While queued, a small body is read
//! first so that a client that leaves is noticed at once.

use std::time::Duration;

use bytes::Bytes;
use pingora::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::client_slot::ClientSlot;
use super::facts::{Class, RequestFacts, WaitLimits};
use super::rescue;
use super::{Ctx, SluiceProxy};
use crate::admission::gate::{Handoff, Ticket};
use crate::admission::queue::EntryId;
use crate::admission::DISPATCH_MARGIN;
use crate::backend::state::Permit;
use crate::reject::Reject;
use crate::usage::{Tail, TAIL_BYTES};

/// Bodies up to this size are read before a request queues, so that a client
/// that leaves while queued is noticed at once (pingora's retry buffer holds
/// the body for the upstream). Larger bodies queue without that watch and
/// leave by their wait budget.
const WATCHABLE_BODY: u64 = 64 * 1024;
/// Longest a client may take to send a body we read before queueing.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why admission did not produce a permit.
pub(super) enum Admit {
    Reject(Reject),
    ClientGone,
}

impl From<Reject> for Admit {
    fn from(r: Reject) -> Admit {
        Admit::Reject(r)
    }
}

impl SluiceProxy {
    /// Reads the request's facts into `ctx` and takes a permit for it.
    pub(super) async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        now: Instant,
    ) -> Result<(), Admit> {
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let limits = WaitLimits {
            default: self.gate.default_wait(),
            max: self.gate.max_wait,
        };
        ctx.facts = RequestFacts::parse(
            session.req_header(),
            client_ip,
            limits,
            &self.server.trusted_proxies,
        );
        let Some(slot) = ClientSlot::take(&self.open_clients, self.server.max_clients) else {
            // Refused before classification: counted as passthrough, as it
            // always was (it goes through no admission).
            ctx.facts.class = Class::Passthrough;
            return Err(Reject::TooManyClients.into());
        };
        ctx.client_slot = Some(slot);
        let limit = self.routing.max_body_bytes;
        if ctx.facts.too_large(limit) {
            return Err(Reject::BodyTooLarge { limit }.into());
        }
        let (permit, dispatched) = match ctx.facts.class {
            Class::Inference => self.admit_inference(session, ctx, now).await?,
            Class::Passthrough => (self.gate.passthrough(now)?, now),
        };
        ctx.permit = Some(permit);
        ctx.dispatched = Some(dispatched);
        if ctx.facts.class == Class::Inference {
            ctx.tail = Some(Tail::new(TAIL_BYTES));
        }
        Ok(())
    }

    /// Identity, rate limit, token budget, then a permit now or after
    /// queueing, with the moment it was handed over.
    async fn admit_inference(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        now: Instant,
    ) -> Result<(Permit, Instant), Admit> {
        let f = &ctx.facts;
        let wait = f.wait.clone()?;
        let priority = f.priority.clone()?;
        let id = self.gate.identify(f.bearer.as_deref(), f.client_ip)?;
        ctx.identity = Some(id.clone());
        self.gate.rate_check(&id, now)?;
        let tokens = f.estimated_tokens(self.gate.completion_estimate());
        ctx.tokens_charged = self.gate.charge_tokens(&id, tokens, now)?;
        let deadline = now + wait;
        ctx.deadline = Some(deadline);
        match self.gate.admit(&id, wait, priority, now)? {
            Ticket::Ready(p) if !leaves_margin(now, deadline) => {
                drop(p);
                Err(self.gate.timed_out(now).into())
            }
            Ticket::Ready(p) => Ok((p, now)),
            Ticket::Queued { id, rx, deadline } => {
                self.wait_in_queue(session, ctx, id, rx, deadline).await
            }
        }
    }

    async fn wait_in_queue(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        entry: EntryId,
        rx: oneshot::Receiver<Handoff>,
        deadline: Instant,
    ) -> Result<(Permit, Instant), Admit> {
        let Ok(watch) = read_small_body(session, &ctx.facts).await else {
            self.gate.cancel(entry);
            ctx.left_queue = true;
            return Err(Admit::ClientGone);
        };
        let gone = async {
            if !watch {
                return std::future::pending::<()>().await;
            }
            loop {
                match session.downstream_session.read_body_or_idle(true).await {
                    Err(_) => return,
                    Ok(_) => std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            handoff = rx => {
                let now = Instant::now();
                match handoff {
                    // A starved thread may see the permit only after the
                    // deadline: never send such a request on.
                    Ok(Ok(p)) if not_past(now, deadline) => Ok((p, now)),
                    Ok(Ok(p)) => {
                        drop(p);
                        Err(self.gate.timed_out(now).into())
                    }
                    Ok(Err(r)) => Err(r.into()),
                    Err(_) => Err(self.gate.timed_out(now).into()),
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                self.gate.cancel(entry);
                Err(self.gate.timed_out(Instant::now()).into())
            }
            _ = gone => {
                self.gate.cancel(entry);
                ctx.left_queue = true;
                Err(Admit::ClientGone)
            }
        }
    }

    /// `request_body_filter`: chunked bodies declare no length up front, so
    /// the limit is also kept as the bytes arrive.
    pub(super) fn count_body(&self, ctx: &mut Ctx, body: &Option<Bytes>) -> Result<()> {
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len());
        let limit = self.routing.max_body_bytes;
        if ctx.body_bytes > limit {
            let r = Reject::BodyTooLarge { limit };
            return Err(rescue::refuse(
                ctx,
                r,
                "request body over routing.max_body_bytes",
            ));
        }
        Ok(())
    }
}

// === The deadline rule ===
//
// One dispatch margin ([`DISPATCH_MARGIN`]): the gate applies it when it
// hands a queued request a permit; a permit given at once must leave it too
// ([`leaves_margin`]), so that a request with a tiny budget is never sent past
// it. After a permit is handed over, the proxy only checks that the deadline
// has not passed ([`not_past`]): after the queue wait, and last in
// `upstream_peer` before connecting.

/// A permit given at once is used only with the margin still ahead.
fn leaves_margin(now: Instant, deadline: Instant) -> bool {
    now + DISPATCH_MARGIN < deadline
}

/// A request may still be sent.
pub(super) fn not_past(now: Instant, deadline: Instant) -> bool {
    now < deadline
}

/// Reads the whole request body if it is small enough to hold, so the
/// connection can be watched for the client leaving. `Ok(false)`: not read
/// (too large or of unknown length); `Err`: the client went away.
async fn read_small_body(session: &mut Session, facts: &RequestFacts) -> Result<bool, ()> {
    match facts.content_length {
        Some(n) if n <= WATCHABLE_BODY && !facts.chunked => {}
        None if !facts.chunked => return Ok(true),
        _ => return Ok(false),
    }
    let ds = &mut session.downstream_session;
    ds.enable_retry_buffering();
    loop {
        match tokio::time::timeout(BODY_READ_TIMEOUT, ds.read_request_body()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return Ok(true),
            _ => return Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_only_before_a_permit_the_deadline_always() {
        let now = Instant::now();
        let ms = |n| Duration::from_millis(n);
        assert!(!leaves_margin(now, now));
        assert!(!leaves_margin(now, now + DISPATCH_MARGIN));
        assert!(leaves_margin(now, now + DISPATCH_MARGIN + ms(1)));
        assert!(not_past(now, now + ms(1)));
        assert!(!not_past(now, now));
        assert!(!not_past(now + ms(1), now));
    }
}
