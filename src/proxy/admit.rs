//! `request_filter`'s work: from the request's facts to a permit on a
//! backend, or the reason there is none.
//!
//! In order: a place among `server.max_clients`, the key (every route, when
//! keys are required), the route (an allowlist), the declared body size,
//! then the body itself (any inference body up to `routing.max_body_bytes`,
//! other bodies up to the 64 KiB read-ahead buffer) — so a slow sender holds
//! no backend slot — and then a place in the passthrough pool
//! and a backend, or for inference the wait budget and priority headers,
//! the rate and token budget, and a permit from the gate, at once or after
//! waiting in its queue.

use bytes::Bytes;
use pingora::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::body_facts::{self, BadBody};
use super::client_slot::ClientSlot;
use super::facts::{Class, RequestFacts, WaitLimits};
use super::rescue;
use super::{Ctx, SluiceProxy};
use crate::admission::gate::{Call, Handoff, Ticket};
use crate::admission::queue::EntryId;
use crate::admission::DISPATCH_MARGIN;
use crate::backend::choice::Wants;
use crate::backend::speed::Work;
use crate::backend::state::Permit;
use crate::edge::Route;
use crate::reject::Reject;
use crate::usage::{StreamCount, Tail, TAIL_BYTES};

/// Bodies up to this size are read before the request takes a permit,
/// whatever the route: a slow sender then holds no backend slot, and a
/// client that leaves while queued is noticed at once. This is pingora's
/// retry buffer (64 KiB), which holds such a body for the upstream.
/// Inference bodies are read ahead up to `routing.max_body_bytes` (their
/// `model` decides the backend; see [`SluiceProxy::read_ahead`]); other
/// larger bodies stream to the backend while the request holds its permit,
/// at the minimum pace of `server.min_body_rate`.
const READ_AHEAD: u64 = 64 * 1024;

/// A large body's buffer starts at this and grows as its bytes arrive.
const GROW_FROM: usize = 256 * 1024;

/// Prompts shorter than this (in estimated tokens) are balanced by load
/// alone: their prompt processing takes milliseconds, less than waiting
/// behind a busier home backend, and identical short prompts (probes,
/// benchmarks) would otherwise all go to one backend.
const AFFINITY_MIN_TOKENS: u64 = 256;

/// Why admission did not produce a permit.
pub(super) enum Admit {
    Reject(Reject),
    ClientGone,
    /// `GET /v1/models` of a multi-model fleet: the gateway answers with
    /// every model the fleet serves.
    Models(Vec<String>),
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
            service: self.gate.service_estimate(),
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
        // Every route is behind the same key check.
        let id = self
            .gate
            .identify(ctx.facts.bearer.as_deref(), ctx.facts.client_ip)?;
        ctx.identity = Some(id);
        let req = session.req_header();
        ctx.facts.class = match self.routing.routes.classify(&req.method, req.uri.path()) {
            Route::Inference => Class::Inference,
            Route::Passthrough => Class::Passthrough,
            Route::Refused => return Err(Reject::RouteNotServed.into()),
        };
        if ctx.facts.class == Class::Passthrough
            && req.method == http::Method::GET
            && req.uri.path() == "/v1/models"
        {
            let models = self.fleet.models();
            if models.len() > 1 {
                return Err(Admit::Models(models));
            }
        }
        let limit = self.routing.max_body_bytes;
        if ctx.facts.too_large(limit) {
            return Err(Reject::BodyTooLarge { limit }.into());
        }
        ctx.body_read = self.read_ahead(session, ctx, now).await?;
        let (permit, dispatched) = match ctx.facts.class {
            Class::Inference => self.admit_inference(session, ctx, now).await?,
            Class::Passthrough => {
                let Some(pass) =
                    ClientSlot::take(&self.open_passthrough, self.routing.max_passthrough)
                else {
                    return Err(Reject::PassthroughBusy.into());
                };
                ctx.pass_slot = Some(pass);
                (self.gate.passthrough(now)?, now)
            }
        };
        ctx.permit = Some(permit);
        ctx.dispatched = Some(dispatched);
        if ctx.facts.class == Class::Inference {
            ctx.tail = Some(Tail::new(TAIL_BYTES));
            if ctx.body.as_ref().is_some_and(|b| b.stream) {
                ctx.stream = Some(StreamCount::new());
            }
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
        let client = f.client.clone()?;
        let priority = f.priority.clone()?;
        let Some(id) = ctx.identity.clone() else {
            return Err(Reject::Unauthorized.into());
        };
        match &self.cluster {
            Some(c) => c.rate_check(&self.gate, &id, now).await?,
            None => self.gate.rate_check(&id, now)?,
        }
        // Prompt and completion from the body when it was read; otherwise
        // from its size.
        let tokens = match &ctx.body {
            Some(b) => b
                .prompt_tokens
                .saturating_add(b.max_tokens.unwrap_or(self.gate.completion_estimate())),
            None => f.estimated_tokens(self.gate.completion_estimate()),
        };
        ctx.tokens_charged = match &self.cluster {
            Some(c) => {
                let charge = c.charge_tokens(&self.gate, &id, tokens, now).await?;
                ctx.tokens_shared = charge.is_some_and(|c| c.shared);
                charge.map(|c| c.tokens)
            }
            None => self.gate.charge_tokens(&id, tokens, now)?,
        };
        let deadline = now + wait;
        ctx.deadline = Some(deadline);
        // Affinity only where the cache saves work: a prompt long enough
        // that reprocessing it costs more than a less balanced fleet.
        let prefix = ctx
            .body
            .as_ref()
            .filter(|b| self.routing.affinity && b.cache_prompt)
            .filter(|b| b.prompt_tokens >= AFFINITY_MIN_TOKENS)
            .and_then(|b| b.prefix);
        let wants = Wants {
            model: ctx
                .body
                .as_ref()
                .and_then(|b| b.model.as_deref())
                .or(self.routing.default_model.as_deref()),
            prefix,
            work: ctx.body.as_ref().map(|b| Work {
                prompt: b.prompt_tokens,
                generate: b.max_tokens.unwrap_or(self.gate.completion_estimate()),
            }),
            // The gate sets it where the request may queue.
            patience: None,
            reuse: ctx
                .body
                .as_ref()
                .filter(|_| prefix.is_some())
                .and_then(|b| b.new_tokens.map(|n| b.prompt_tokens.saturating_sub(n))),
            home_only: false,
        };
        let call = Call {
            wait,
            client,
            default_wait: f.default_wait,
        };
        match self.gate.admit_call(&id, call, priority, wants, now)? {
            Ticket::Ready(p) if !leaves_margin(now, deadline) => {
                drop(p);
                Err(self.gate.timed_out_for(&id, client, now).into())
            }
            Ticket::Ready(p) => Ok((p, now)),
            Ticket::Queued {
                id: entry,
                rx,
                deadline,
            } => {
                let timed_out = || self.gate.timed_out_for(&id, client, Instant::now());
                self.wait_in_queue(session, ctx, entry, rx, deadline, timed_out)
                    .await
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
        timed_out: impl Fn() -> Reject,
    ) -> Result<(Permit, Instant), Admit> {
        // Only a connection with nothing left to read can be watched.
        let watch = ctx.body_read;
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
        tokio::pin!(gone);
        let mut rx = rx;
        let mut deadline = deadline;
        loop {
            tokio::select! {
                handoff = &mut rx => {
                    let now = Instant::now();
                    return match handoff {
                        // A starved thread may see the permit only after
                        // the deadline: never send such a request on.
                        Ok(Ok(g)) if not_past(now, g.deadline) => {
                            ctx.deadline = Some(g.deadline);
                            Ok((g.permit, now))
                        }
                        Ok(Ok(g)) => {
                            drop(g.permit);
                            Err(timed_out().into())
                        }
                        Ok(Err(r)) => Err(r.into()),
                        Err(_) => Err(timed_out().into()),
                    };
                },
                _ = tokio::time::sleep_until(deadline) => {
                    // An auto budget may have been raised meanwhile.
                    if let Some(later) = self.gate.queued_deadline(entry, Instant::now()) {
                        deadline = later;
                        ctx.deadline = Some(later);
                        continue;
                    }
                    self.gate.expire(entry);
                    return Err(timed_out().into());
                }
                _ = &mut gone => {
                    self.gate.cancel(entry);
                    ctx.left_queue = true;
                    return Err(Admit::ClientGone);
                }
            }
        }
    }

    /// `request_body_filter`: chunked bodies declare no length up front, so
    /// the limit is also kept as the bytes arrive; a streamed body must keep
    /// the minimum pace (it holds a permit meanwhile).
    pub(super) fn count_body(
        &self,
        ctx: &mut Ctx,
        body: &mut Option<Bytes>,
        now: Instant,
    ) -> Result<()> {
        if ctx.body_read {
            // Read ahead already: pingora replays its retry buffer, which
            // for a body larger than it holds only the tail; the whole
            // body goes in its place, on every attempt.
            if let Some(whole) = &ctx.ahead {
                *body = Some(whole.clone());
            }
            return Ok(());
        }
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len());
        if self
            .server
            .body
            .behind(ctx.start, ctx.body_bytes as u64, now)
        {
            return Err(rescue::refuse(
                ctx,
                Reject::BodyTimeout,
                "request body slower than server.min_body_rate",
            ));
        }
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

impl SluiceProxy {
    /// Reads the whole request body before any permit is taken if it fits
    /// [`READ_AHEAD`] (or, for inference, `routing.max_body_bytes`), within
    /// the pace `server.body_grace` / `server.min_body_rate` allow for its
    /// length. `Ok(true)`: nothing is left to read; `Ok(false)`: the body
    /// streams (too large or of unknown length) and is paced by
    /// [`SluiceProxy::count_body`].
    ///
    /// pingora replays its retry buffer (64 KiB) upstream, and nothing when
    /// a body overflowed it. So a larger inference body is read in two
    /// parts: all but its last [`READ_AHEAD`] bytes into [`Ctx::ahead`]
    /// with the retry buffer off, the rest with it on. The buffer then
    /// holds that tail, pingora replays it on every attempt, and
    /// `request_body_filter` puts the whole body in its place
    /// ([`SluiceProxy::count_body`]). Memory: the body once, bounded by
    /// `routing.max_body_bytes`, plus the tail.
    async fn read_ahead(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        now: Instant,
    ) -> Result<bool, Admit> {
        let facts = &ctx.facts;
        let limit = match facts.class {
            Class::Inference => (self.routing.max_body_bytes as u64).max(READ_AHEAD),
            Class::Passthrough => READ_AHEAD,
        };
        let len = match facts.content_length {
            Some(n) if n <= limit && !facts.chunked => n,
            None if !facts.chunked => return Ok(true),
            _ => {
                // Streamed while holding a permit: a silent client is cut
                // after the grace time, a trickling one by its pace.
                let silence = self.server.client_timeout.min(self.server.body.grace);
                session.downstream_session.set_read_timeout(Some(silence));
                return Ok(false);
            }
        };
        let deadline = self.server.body.deadline(now, len);
        let ds = &mut session.downstream_session;
        // Bytes to read before the retry buffer takes the rest.
        let head = len.saturating_sub(READ_AHEAD) as usize;
        // Grown as bytes arrive: a declared length alone reserves little.
        let mut whole = bytes::BytesMut::with_capacity(head.min(GROW_FROM));
        if head == 0 {
            ds.enable_retry_buffering();
        }
        let read = async {
            loop {
                match ds.read_request_body().await {
                    Ok(Some(b)) => {
                        ctx.body_bytes += b.len();
                        if head > 0 {
                            whole.extend_from_slice(&b);
                            if ctx.body_bytes >= head {
                                // Each read returns at most what the length
                                // leaves, so the rest fits the buffer.
                                ds.enable_retry_buffering();
                            }
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        };
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(())) if ctx.facts.class == Class::Inference => {
                let body = match head {
                    0 => ds.get_retry_buffer().unwrap_or_default(),
                    _ => whole.freeze(),
                };
                match body_facts::parse(&body) {
                    Ok(f) => ctx.body = Some(f),
                    Err(BadBody(why)) => return Err(Reject::BadBody { why }.into()),
                }
                if head > 0 {
                    if ds.get_retry_buffer().is_none() {
                        // One read took the body past both marks (reads
                        // are ≤ 64 KiB but for a rare large pre-read):
                        // pingora would replay nothing.
                        tracing::warn!(len, "large body not replayable; refused");
                        return Err(Reject::UpstreamError.into());
                    }
                    ctx.ahead = Some(body);
                }
                Ok(true)
            }
            Ok(Ok(())) => Ok(true),
            Ok(Err(e)) if e.etype() == &pingora::ErrorType::ReadTimedout => {
                Err(Reject::BodyTimeout.into())
            }
            Ok(Err(_)) => Err(Admit::ClientGone),
            Err(_) => Err(Reject::BodyTimeout.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_only_before_a_permit_the_deadline_always() {
        let now = Instant::now();
        let ms = |n| std::time::Duration::from_millis(n);
        assert!(!leaves_margin(now, now));
        assert!(!leaves_margin(now, now + DISPATCH_MARGIN));
        assert!(leaves_margin(now, now + DISPATCH_MARGIN + ms(1)));
        assert!(not_past(now, now + ms(1)));
        assert!(!not_past(now, now));
        assert!(!not_past(now + ms(1), now));
    }
}
