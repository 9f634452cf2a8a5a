//! The pingora `ProxyHttp` glue: each phase calls one function of the policy
//! modules and keeps per-request facts in [`Ctx`].
//!
//! - `request_filter`: classify the route, take a permit on a backend
//!   ([`Fleet::admit`]) or answer a [`Reject`];
//! - `upstream_peer`: connect to the permit's backend; after a connect failure,
//!   release it and admit again elsewhere (nothing was sent yet);
//! - body filters: note the first byte (time to first token);
//! - `logging`: count the outcome; dropping the context returns the permit, so
//!   a request holds its backend until the response ends or the client leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::ErrorType;

use crate::backend::fleet::Fleet;
use crate::backend::state::Permit;
use crate::config::RoutingConfig;
use crate::reject::Reject;
use crate::telemetry::Metrics;

/// Connect failures are retried on another backend at most this often.
const MAX_CONNECT_RETRIES: u32 = 1;

/// Requests that occupy a slot and go through admission, or cheap reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Inference,
    Passthrough,
}

impl Class {
    fn as_str(self) -> &'static str {
        match self {
            Class::Inference => "inference",
            Class::Passthrough => "passthrough",
        }
    }
}

/// POSTs run the model, except a few cheap helpers that never take a slot.
pub fn classify(method: &http::Method, path: &str) -> Class {
    const CHEAP: &[&str] = &["/tokenize", "/detokenize", "/apply-template"];
    if method == http::Method::POST && !CHEAP.contains(&path) {
        Class::Inference
    } else {
        Class::Passthrough
    }
}

/// Per-request facts.
pub struct Ctx {
    start: Instant,
    request_id: String,
    class: Class,
    permit: Option<Permit>,
    tried: Vec<usize>,
    connect_retries: u32,
    peer_calls: u32,
    reject: Option<Reject>,
    first_byte: Option<Instant>,
}

pub struct SluiceProxy {
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<Metrics>,
    pub routing: RoutingConfig,
}

impl SluiceProxy {
    async fn send_reject(&self, session: &mut Session, ctx: &mut Ctx, r: Reject) {
        let body = r.body();
        let mut h = r.header(body.len());
        let _ = h.insert_header("x-request-id", &ctx.request_id);
        if session
            .write_response_header(Box::new(h), false)
            .await
            .is_ok()
        {
            let _ = session.write_response_body(Some(body), true).await;
        }
        ctx.reject = Some(r);
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

fn request_id(req: &RequestHeader) -> String {
    req.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
}

#[async_trait]
impl ProxyHttp for SluiceProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            request_id: String::new(),
            class: Class::Passthrough,
            permit: None,
            tried: Vec::new(),
            connect_retries: 0,
            peer_calls: 0,
            reject: None,
            first_byte: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        ctx.start = Instant::now();
        ctx.request_id = request_id(req);
        ctx.class = classify(&req.method, req.uri.path());
        let too_large = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > self.routing.max_body_bytes as u64);
        let admitted = if too_large {
            Err(Reject::BodyTooLarge {
                limit: self.routing.max_body_bytes,
            })
        } else {
            match ctx.class {
                Class::Inference => self.fleet.admit(&[], ctx.start, &mut rand::rng()),
                Class::Passthrough => self.fleet.pick_passthrough(ctx.start),
            }
        };
        match admitted {
            Ok(p) => {
                ctx.permit = Some(p);
                Ok(false)
            }
            Err(r) => {
                self.send_reject(session, ctx, r).await;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.peer_calls += 1;
        if ctx.peer_calls > 1 {
            // The previous connect failed: nothing was sent, try elsewhere.
            if let Some(p) = ctx.permit.take() {
                ctx.tried.push(p.backend().id);
            }
            let again = match ctx.class {
                Class::Inference => self
                    .fleet
                    .admit(&ctx.tried, Instant::now(), &mut rand::rng()),
                Class::Passthrough => self.fleet.pick_passthrough(Instant::now()),
            };
            match again {
                Ok(p) => ctx.permit = Some(p),
                Err(r) => {
                    let r = Reject::UpstreamUnavailable {
                        retry_after: r.retry_after().unwrap_or(1),
                    };
                    ctx.reject = Some(r);
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(503),
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

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if ctx.connect_retries < MAX_CONNECT_RETRIES {
            ctx.connect_retries += 1;
            self.metrics.retries.inc();
            tracing::warn!(request_id = %ctx.request_id, peer = %peer, error = %e, "connect failed; retrying on another backend");
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string());
        if let Some(ip) = client {
            let xff = match upstream
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip,
            };
            upstream.insert_header("x-forwarded-for", xff)?;
        }
        upstream.insert_header("x-request-id", &ctx.request_id)?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        resp.insert_header("x-request-id", &ctx.request_id)?;
        if let Some(p) = &ctx.permit {
            resp.insert_header("x-sluice-backend", p.backend().name())?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if ctx.first_byte.is_none() && body.as_ref().is_some_and(|b| !b.is_empty()) {
            ctx.first_byte = Some(Instant::now());
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let reject = ctx.reject.take().or_else(|| {
            matches!(
                e.etype(),
                ErrorType::ConnectTimedout
                    | ErrorType::ConnectRefused
                    | ErrorType::ConnectError
                    | ErrorType::ConnectNoRoute
            )
            .then(|| Reject::UpstreamUnavailable {
                retry_after: self.fleet.retry_after(),
            })
        });
        let headers_sent = session.response_written().is_some();
        match reject {
            Some(r) if !headers_sent => {
                let code = r.status();
                self.send_reject(session, ctx, r).await;
                FailToProxy {
                    error_code: code,
                    can_reuse_downstream: false,
                }
            }
            _ => {
                let code = match e.etype() {
                    ErrorType::HTTPStatus(c) => *c,
                    _ if e.esource() == &pingora::ErrorSource::Downstream => 0,
                    _ => 502,
                };
                if code > 0 && !headers_sent {
                    let _ = session.respond_error(code).await;
                }
                FailToProxy {
                    error_code: code,
                    can_reuse_downstream: false,
                }
            }
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let end = Instant::now();
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let (outcome, reason): (&str, &str) = if let Some(r) = &ctx.reject {
            ("rejected", r.reason())
        } else if let Some(e) = e {
            if e.esource() == &pingora::ErrorSource::Downstream {
                ("client_closed", "client_closed")
            } else {
                ("failed", "upstream_error")
            }
        } else {
            ("served", status_class(status))
        };
        self.metrics.request(ctx.class.as_str(), outcome, reason);
        let backend = ctx.permit.as_ref().map(|p| Arc::clone(p.backend()));
        if let Some(b) = &backend {
            let m = &self.metrics.backends[b.id];
            if let Some(fb) = ctx.first_byte {
                m.ttft.observe(fb.duration_since(ctx.start).as_secs_f64());
            }
            if outcome == "served" {
                m.duration
                    .observe(end.duration_since(ctx.start).as_secs_f64());
                if ctx.class == Class::Inference && status < 500 {
                    b.observe_duration(end.duration_since(ctx.start));
                }
            }
        }
        tracing::info!(
            target: "sluice::access",
            request_id = %ctx.request_id,
            method = %session.req_header().method,
            path = session.req_header().uri.path(),
            backend = backend.as_ref().map(|b| b.name()).unwrap_or("-"),
            status,
            outcome,
            reason,
            ttft_ms = ctx.first_byte.map(|f| f.duration_since(ctx.start).as_millis() as u64),
            duration_ms = end.duration_since(ctx.start).as_millis() as u64,
        );
        // Return the backend's in-flight unit now, not when pingora drops ctx.
        ctx.permit = None;
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_are_inference_except_cheap_helpers() {
        assert_eq!(
            classify(&http::Method::POST, "/v1/chat/completions"),
            Class::Inference
        );
        assert_eq!(
            classify(&http::Method::POST, "/completion"),
            Class::Inference
        );
        assert_eq!(
            classify(&http::Method::POST, "/tokenize"),
            Class::Passthrough
        );
        assert_eq!(
            classify(&http::Method::GET, "/v1/models"),
            Class::Passthrough
        );
    }
}
