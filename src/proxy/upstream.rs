//! The hop to the backend: which peer to connect to (the permit's backend,
//! or after a connect failure another one), the headers sent to it and
//! added to its answer, and what the response body tells us on the way
//! (first byte, usage tail).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::ErrorType;
use tokio::time::Instant;

use super::facts::Class;
use super::{admit, rescue, Ctx, SluiceProxy};
use crate::backend::state::Permit;

impl SluiceProxy {
    /// `upstream_peer`: the peer for this attempt.
    pub(super) fn choose_peer(&self, ctx: &mut Ctx, now: Instant) -> Result<Box<HttpPeer>> {
        ctx.peer_calls += 1;
        // Last check before anything reaches a backend (the margin was
        // applied when the permit was given; see `admit.rs`).
        if ctx.deadline.is_some_and(|d| !admit::not_past(now, d)) {
            ctx.permit = None;
            let r = self.gate.timed_out(now);
            let why = "the request's wait budget ran out before it could be sent";
            return Err(rescue::refuse(ctx, r, why));
        }
        if ctx.peer_calls > 1 {
            // The previous connect failed: nothing was sent, try elsewhere.
            if let Some(p) = ctx.permit.take() {
                ctx.tried.push(p.backend().id);
            }
            let again = match ctx.facts.class {
                Class::Inference => self.gate.readmit(&ctx.tried, now),
                Class::Passthrough => self.gate.passthrough(now),
            };
            match again {
                Ok(p) => ctx.permit = Some(p),
                Err(_) => {
                    let r = rescue::upstream_unavailable(&self.gate, now);
                    return Err(rescue::refuse(
                        ctx,
                        r,
                        "no other backend after a connect failure",
                    ));
                }
            }
        }
        match &ctx.permit {
            Some(p) => Ok(self.peer(p)),
            None => Err(Error::explain(ErrorType::InternalError, "no permit")),
        }
    }

    fn peer(&self, permit: &Permit) -> Box<HttpPeer> {
        let mut peer = HttpPeer::new(permit.backend().config.addr, false, String::new());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.routing.connect_timeout);
        o.read_timeout = Some(self.routing.read_timeout);
        o.idle_timeout = Some(self.routing.idle_timeout);
        o.write_timeout = Some(self.routing.read_timeout);
        Box::new(peer)
    }
}

/// `upstream_request_filter`: no client `x-sluice-*` header goes on (they
/// are instructions to the gateway, and `x-sluice-deadline-ms` is the
/// gateway's to set); who asked (`x-forwarded-for`: the chain only from a
/// trusted proxy, then the peer); the request id; and the deadline as Unix
/// milliseconds for the backend.
pub(super) fn request_headers(upstream: &mut RequestHeader, ctx: &Ctx, now: Instant) -> Result<()> {
    let ours: Vec<_> = upstream
        .headers
        .keys()
        .filter(|n| n.as_str().starts_with("x-sluice-"))
        .cloned()
        .collect();
    for name in ours {
        upstream.remove_header(&name);
    }
    upstream.remove_header("x-forwarded-for");
    if let Some(peer) = ctx.facts.peer_ip.map(|ip| ip.to_string()) {
        let xff = match &ctx.facts.forwarded_for {
            Some(chain) => format!("{chain}, {peer}"),
            None => peer,
        };
        upstream.insert_header("x-forwarded-for", xff)?;
    }
    upstream.insert_header("x-request-id", &ctx.facts.request_id)?;
    if let Some(d) = ctx.deadline {
        upstream.insert_header("x-sluice-deadline-ms", unix_ms(d, now).to_string())?;
    }
    Ok(())
}

/// `response_filter`: the request id and the backend that answered; the
/// backend's CORS headers replaced by the gateway's (see `edge::cors`).
pub(super) fn response_headers(resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
    rescue::cors_headers(resp, &ctx.cors)?;
    resp.insert_header("x-request-id", &ctx.facts.request_id)?;
    if let Some(p) = &ctx.permit {
        resp.insert_header("x-sluice-backend", p.backend().name())?;
    }
    Ok(())
}

/// `response_body_filter`: the first byte's time, and the tail for usage.
pub(super) fn saw_body(ctx: &mut Ctx, body: &Option<Bytes>, now: Instant) {
    if let Some(b) = body.as_ref().filter(|b| !b.is_empty()) {
        ctx.first_byte.get_or_insert(now);
        if let Some(t) = &mut ctx.tail {
            t.push(b);
        }
        if let Some(s) = &mut ctx.stream {
            s.push(b);
        }
    }
}

/// `at` on the wall clock, in Unix milliseconds (`now` is the same moment
/// as the wall clock read here).
fn unix_ms(at: Instant, now: Instant) -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let wall: Duration = if at >= now {
        wall + (at - now)
    } else {
        wall.saturating_sub(now - at)
    };
    wall.as_millis() as u64
}
