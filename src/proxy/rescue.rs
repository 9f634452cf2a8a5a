//! The one place the gateway answers a client itself: every status code,
//! `Retry-After` and error body the proxy writes is made here, from a
//! [`Reject`] (whose `header`/`body` turn it into bytes).
//!
//! - [`send_reject`] writes a rejection and keeps it in the context for
//!   `logging`;
//! - [`refuse`] is how a phase that returns a pingora error (`upstream_peer`,
//!   `request_body_filter`) refuses: the Reject goes into the context and the
//!   error carries its status, so `fail_to_proxy` answers with that Reject;
//! - [`SluiceProxy::rescue`] (`fail_to_proxy`) maps any other pingora error
//!   to a Reject: connect failures → `UpstreamUnavailable`, the backend's
//!   read timeout → `UpstreamTimeout`, anything else on the backend's side →
//!   `UpstreamError` (502); the client's own errors get no answer;
//! - [`upstream_unavailable`] is where that Reject's `Retry-After` comes from;
//! - [`send_preflight`] answers a CORS preflight (204), and [`cors_headers`]
//!   puts the gateway's CORS headers, never a backend's, on every answer.
//!
//! [`Failure`] summarises a pingora error in the few kinds the gateway's
//! decisions tell apart (this answer, the backend's verdict in
//! `completion.rs`), so those decisions are pure functions tests can feed.

use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{ErrorSource, ErrorType};

use super::{Ctx, SluiceProxy};
use tokio::time::Instant;

use crate::admission::gate::Gate;
use crate::edge::cors::{is_cors_header, Headers};
use crate::reject::Reject;
use pingora::http::ResponseHeader;

/// What a pingora error is, as far as the gateway's decisions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// An error raised with an HTTP status: by the gateway (its [`Reject`]
    /// is in the context) or by pingora about the client's request.
    Status(u16),
    /// The client failed or left.
    Downstream,
    /// The connect to the backend failed (`fail_to_connect` reported it).
    Connect,
    /// Nothing arrived for the read timeout; `upstream`: on the backend side.
    ReadTimeout {
        upstream: bool,
    },
    WriteTimeout,
    /// Anything else: a reset, a broken response, an internal error.
    Other,
}

impl Failure {
    pub fn of(e: &Error) -> Failure {
        match e.etype() {
            ErrorType::HTTPStatus(c) => return Failure::Status(*c),
            _ if e.esource() == &ErrorSource::Downstream => return Failure::Downstream,
            _ => {}
        }
        match e.etype() {
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectError
            | ErrorType::ConnectNoRoute => Failure::Connect,
            ErrorType::ReadTimedout => Failure::ReadTimeout {
                upstream: e.esource() == &ErrorSource::Upstream,
            },
            ErrorType::WriteTimedout => Failure::WriteTimeout,
            _ => Failure::Other,
        }
    }
}

/// Writes `r` to the client and keeps it for `logging`.
pub(super) async fn send_reject(session: &mut Session, ctx: &mut Ctx, r: Reject) {
    let body = r.body();
    let mut h = r.header(body.len());
    let _ = cors_headers(&mut h, &ctx.cors);
    let _ = h.insert_header("x-request-id", &ctx.facts.request_id);
    if session
        .write_response_header(Box::new(h), false)
        .await
        .is_ok()
    {
        let _ = session.write_response_body(Some(body), true).await;
    }
    ctx.reject = Some(r);
}

/// Drops every `access-control-*` header (a backend's) and adds the
/// gateway's own for this request (`Vary` is appended to).
pub(super) fn cors_headers(h: &mut ResponseHeader, cors: &Headers) -> Result<()> {
    let backend: Vec<String> = h
        .headers
        .keys()
        .map(|n| n.as_str())
        .filter(|n| is_cors_header(n))
        .map(str::to_string)
        .collect();
    for n in backend {
        h.remove_header(&n);
    }
    for (name, value) in cors {
        if *name == "vary" {
            h.append_header(*name, value.as_str())?;
        } else {
            h.insert_header(*name, value.as_str())?;
        }
    }
    Ok(())
}

/// The gateway's own answer to a CORS preflight: 204 with `headers` (the
/// grant for an allowed origin, none for others). Never forwarded: a
/// backend would grant any origin.
pub(super) async fn send_preflight(session: &mut Session, ctx: &mut Ctx, headers: Headers) {
    // No Content-Length: a 204 has no body (RFC 9110 §8.6).
    let Ok(mut h) = ResponseHeader::build(204, Some(headers.len())) else {
        return;
    };
    let _ = cors_headers(&mut h, &headers);
    ctx.cors = headers;
    let _ = session.write_response_header(Box::new(h), true).await;
}

/// `GET /v1/models` answered by the gateway: every model the fleet serves,
/// once each, in OpenAI's list shape.
pub(super) async fn send_models(session: &mut Session, ctx: &mut Ctx, models: &[String]) {
    let data: Vec<serde_json::Value> = models
        .iter()
        .map(|m| serde_json::json!({"id": m, "object": "model", "owned_by": "llamacpp"}))
        .collect();
    let body = bytes::Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string());
    let Ok(mut h) = ResponseHeader::build(200, Some(4)) else {
        return;
    };
    let _ = h.insert_header("content-type", "application/json");
    let _ = h.insert_header("content-length", body.len().to_string());
    let _ = h.insert_header("x-request-id", &ctx.facts.request_id);
    let headers = ctx.cors.clone();
    let _ = cors_headers(&mut h, &headers);
    if session
        .write_response_header(Box::new(h), false)
        .await
        .is_ok()
    {
        let _ = session.write_response_body(Some(body), true).await;
    }
}

/// The error a phase returns to refuse the request with `r`;
/// `fail_to_proxy` then sends `r`.
pub(super) fn refuse(ctx: &mut Ctx, r: Reject, why: &'static str) -> Box<Error> {
    let e = Error::explain(ErrorType::HTTPStatus(r.status()), why);
    ctx.reject = Some(r);
    e
}

/// The backend could not be reached and no other took the request; the
/// client may retry when a slot is likely to be free.
pub(super) fn upstream_unavailable(gate: &Gate, now: Instant) -> Reject {
    Reject::UpstreamUnavailable {
        retry_after: gate.retry_after_now(now),
    }
}

/// The rejection for a pingora error no phase turned into one itself;
/// `None`: not ours to answer (the client's error, or a status pingora
/// raised about the client's request).
fn reject_for(f: Failure, unavailable: impl FnOnce() -> Reject) -> Option<Reject> {
    match f {
        Failure::Connect => Some(unavailable()),
        Failure::ReadTimeout { upstream: true } => Some(Reject::UpstreamTimeout),
        Failure::Status(_) | Failure::Downstream => None,
        Failure::ReadTimeout { upstream: false } | Failure::WriteTimeout | Failure::Other => {
            Some(Reject::UpstreamError)
        }
    }
}

impl SluiceProxy {
    /// `fail_to_proxy`: answer the client for an error, unless a response
    /// has started (then the stream just ends).
    pub(super) async fn rescue(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        let failure = Failure::of(e);
        let reject = ctx
            .reject
            .take()
            .or_else(|| reject_for(failure, || upstream_unavailable(&self.gate, Instant::now())));
        let headers_sent = session.response_written().is_some();
        let error_code = match reject {
            Some(r) if !headers_sent => {
                let code = r.status();
                send_reject(session, ctx, r).await;
                code
            }
            _ => {
                let code = match failure {
                    Failure::Status(c) => c,
                    Failure::Downstream => 0,
                    _ => 502,
                };
                // A status pingora raised about the request (no Reject of
                // ours): its plain error page.
                if code > 0 && !headers_sent {
                    let _ = session.respond_error(code).await;
                }
                code
            }
        };
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> Reject {
        Reject::UpstreamUnavailable {
            retry_after: crate::reject::Hint::secs(3),
        }
    }

    #[test]
    fn kinds() {
        let up = |t| Failure::of(&Error::new_up(t));
        assert_eq!(up(ErrorType::ConnectRefused), Failure::Connect);
        assert_eq!(
            up(ErrorType::ReadTimedout),
            Failure::ReadTimeout { upstream: true }
        );
        assert_eq!(up(ErrorType::ConnectionClosed), Failure::Other);
        assert_eq!(
            Failure::of(&Error::new_down(ErrorType::ReadTimedout)),
            Failure::Downstream
        );
        assert_eq!(
            Failure::of(&Error::new_down(ErrorType::HTTPStatus(400))),
            Failure::Status(400)
        );
        assert_eq!(
            Failure::of(&Error::new(ErrorType::ReadTimedout)),
            Failure::ReadTimeout { upstream: false }
        );
    }

    #[test]
    fn pingora_errors_to_rejections() {
        assert_eq!(
            reject_for(Failure::Connect, unavailable),
            Some(unavailable())
        );
        assert_eq!(
            reject_for(Failure::ReadTimeout { upstream: true }, unavailable),
            Some(Reject::UpstreamTimeout)
        );
        for f in [
            Failure::ReadTimeout { upstream: false },
            Failure::WriteTimeout,
            Failure::Other,
        ] {
            assert_eq!(
                reject_for(f, unavailable),
                Some(Reject::UpstreamError),
                "{f:?}"
            );
        }
        assert_eq!(reject_for(Failure::Downstream, unavailable), None);
        assert_eq!(reject_for(Failure::Status(400), unavailable), None);
    }

    #[test]
    fn a_refusal_carries_the_rejections_status() {
        let mut ctx = Ctx::new(tokio::time::Instant::now());
        let e = refuse(&mut ctx, Reject::BodyTooLarge { limit: 1 }, "too large");
        assert_eq!(e.etype(), &ErrorType::HTTPStatus(413));
        assert_eq!(ctx.reject, Some(Reject::BodyTooLarge { limit: 1 }));
    }
}
