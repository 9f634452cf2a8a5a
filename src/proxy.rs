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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::ErrorType;

use crate::admission::gate::{parse_priority, parse_wait, Gate, Handoff, Identity, Ticket};
use crate::admission::queue::EntryId;
use crate::backend::breaker::Outcome;
use crate::backend::fleet::Fleet;
use crate::backend::limiter::ResponseSample;
use crate::backend::state::Permit;
use crate::config::{RoutingConfig, ServerConfig};
use crate::reject::Reject;
use crate::telemetry::Metrics;
use crate::usage::{self, Tail, TAIL_BYTES};

/// Bodies up to this size are read before a request queues, so that a client
/// that leaves while queued is noticed at once (pingora's retry buffer holds
/// the body for the upstream). Larger bodies queue without that watch and
/// leave by their wait budget.
const WATCHABLE_BODY: u64 = 64 * 1024;
/// A request this close to its deadline is not sent to a backend: it would
/// arrive after it.
const LAST_MOMENT: Duration = Duration::from_millis(5);
/// Longest a client may take to send a body we read before queueing.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// When the request got its permit (after any queueing).
    dispatched: Option<Instant>,
    /// Latest time a backend may receive it (sent upstream as Unix ms).
    deadline: Option<Instant>,
    identity: Option<Identity>,
    /// Set when the client left while queued.
    left_queue: bool,
    /// The end of an inference response, for its usage figures.
    tail: Option<Tail>,
    /// Request body bytes seen so far.
    body_bytes: usize,
    /// This request's place among `server.max_clients`.
    client_slot: Option<ClientSlot>,
    /// Tokens charged to the key's budget on admission, to reconcile.
    tokens_charged: Option<u64>,
}

/// One of `server.max_clients` places; returned on drop.
pub struct ClientSlot(Arc<AtomicUsize>);

impl ClientSlot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<ClientSlot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| ClientSlot(Arc::clone(open)))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct SluiceProxy {
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<Metrics>,
    pub gate: Arc<Gate>,
    pub routing: RoutingConfig,
    pub server: ServerConfig,
    /// Client requests open now (see `server.max_clients`).
    pub open_clients: Arc<AtomicUsize>,
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

    /// Admission for an inference request: identity, rate limit, wait budget,
    /// then a permit now or after queueing.
    async fn admit_inference(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Permit, Admit> {
        let req = session.req_header();
        let header = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
        let bearer = header("authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let wait = parse_wait(
            header("x-sluice-deadline"),
            self.gate.default_wait(),
            self.gate.max_wait,
        )
        .map_err(Admit::Reject)?;
        let priority = parse_priority(header("x-sluice-priority")).map_err(Admit::Reject)?;
        let id = self.gate.identify(bearer, ip).map_err(Admit::Reject)?;
        ctx.identity = Some(id.clone());
        self.gate
            .rate_check(&id, ctx.start)
            .map_err(Admit::Reject)?;
        // Prompt ≈ body bytes / 4 (JSON overhead makes this generous) plus
        // a typical completion; settled from `usage` when the response ends.
        let body_len = header("content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        ctx.tokens_charged = self
            .gate
            .charge_tokens(&id, body_len / 4 + self.gate.completion_estimate, ctx.start)
            .map_err(Admit::Reject)?;
        let deadline = ctx.start + wait;
        ctx.deadline = Some(deadline);
        match self.gate.admit(&id, wait, priority, ctx.start) {
            Ok(Ticket::Ready(p)) => Ok(p),
            Ok(Ticket::Queued { id, rx, deadline }) => {
                self.wait_in_queue(session, ctx, id, rx, deadline).await
            }
            Err(r) => Err(Admit::Reject(r)),
        }
    }

    async fn wait_in_queue(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        entry: EntryId,
        rx: tokio::sync::oneshot::Receiver<Handoff>,
        deadline: Instant,
    ) -> Result<Permit, Admit> {
        let watch = match read_small_body(session).await {
            Ok(w) => w,
            Err(()) => {
                self.gate.cancel(entry);
                ctx.left_queue = true;
                return Err(Admit::ClientGone);
            }
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
            handoff = rx => match handoff {
                // A starved thread may see the permit only after the
                // deadline: never send such a request on.
                Ok(Ok(p)) if Instant::now() + LAST_MOMENT < deadline => Ok(p),
                Ok(Ok(p)) => {
                    drop(p);
                    Err(Admit::Reject(self.gate.timed_out(Instant::now())))
                }
                Ok(Err(r)) => Err(Admit::Reject(r)),
                Err(_) => Err(Admit::Reject(self.gate.timed_out(Instant::now()))),
            },
            _ = tokio::time::sleep_until(deadline) => {
                self.gate.cancel(entry);
                Err(Admit::Reject(self.gate.timed_out(Instant::now())))
            }
            _ = gone => {
                self.gate.cancel(entry);
                ctx.left_queue = true;
                Err(Admit::ClientGone)
            }
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

/// Why admission did not produce a permit.
enum Admit {
    Reject(Reject),
    ClientGone,
}

/// Reads the whole request body if it is small enough to hold, so the
/// connection can be watched for the client leaving. `Ok(false)`: not read
/// (too large or of unknown length); `Err`: the client went away.
async fn read_small_body(session: &mut Session) -> Result<bool, ()> {
    let len = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = session
        .req_header()
        .headers
        .get(http::header::TRANSFER_ENCODING)
        .is_some();
    match len {
        Some(n) if n <= WATCHABLE_BODY && !chunked => {}
        None if !chunked => return Ok(true),
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

fn unix_ms(at: Instant) -> u64 {
    let now = Instant::now();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let wall = if at >= now {
        wall + (at - now)
    } else {
        wall.saturating_sub(now - at)
    };
    wall.as_millis() as u64
}

/// What the end of a proxied request says about its backend.
fn backend_outcome(e: Option<&Error>, status: u16, got_first_byte: bool) -> Outcome {
    match e {
        Some(e) if e.esource() == &pingora::ErrorSource::Downstream => Outcome::NotCounted,
        Some(e) => match e.etype() {
            // Already reported by fail_to_connect.
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectError
            | ErrorType::ConnectNoRoute
            | ErrorType::HTTPStatus(_) => Outcome::NotCounted,
            ErrorType::ReadTimedout if !got_first_byte => Outcome::FirstByteTimeout,
            _ => Outcome::Reset,
        },
        // 503 is llama-server's "Loading model" (the scrape loop sees it);
        // 4xx is the client's doing.
        None if status >= 500 && status != 503 => Outcome::ServerError5xx,
        None if (200..400).contains(&status) => Outcome::Success,
        None => Outcome::NotCounted,
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
            dispatched: None,
            deadline: None,
            identity: None,
            left_queue: false,
            tail: None,
            body_bytes: 0,
            client_slot: None,
            tokens_charged: None,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        // A client that trickles its body holds a connection and a task.
        session
            .downstream_session
            .set_read_timeout(Some(self.server.client_timeout));
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Chunked bodies declare no length up front: count them.
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len());
        if ctx.body_bytes > self.routing.max_body_bytes {
            ctx.reject = Some(Reject::BodyTooLarge {
                limit: self.routing.max_body_bytes,
            });
            return Err(Error::explain(
                ErrorType::HTTPStatus(413),
                "request body over routing.max_body_bytes",
            ));
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.start = Instant::now();
        match ClientSlot::take(&self.open_clients, self.server.max_clients) {
            Some(slot) => ctx.client_slot = Some(slot),
            None => {
                ctx.request_id = request_id(session.req_header());
                self.send_reject(session, ctx, Reject::TooManyClients).await;
                return Ok(true);
            }
        }
        let req = session.req_header();
        ctx.request_id = request_id(req);
        ctx.class = classify(&req.method, req.uri.path());
        let too_large = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > self.routing.max_body_bytes as u64);
        let admitted = if too_large {
            Err(Admit::Reject(Reject::BodyTooLarge {
                limit: self.routing.max_body_bytes,
            }))
        } else {
            match ctx.class {
                Class::Inference => self.admit_inference(session, ctx).await,
                Class::Passthrough => self.gate.passthrough(ctx.start).map_err(Admit::Reject),
            }
        };
        match admitted {
            Ok(p) => {
                ctx.permit = Some(p);
                ctx.dispatched = Some(Instant::now());
                if ctx.class == Class::Inference {
                    ctx.tail = Some(Tail::new(TAIL_BYTES));
                }
                Ok(false)
            }
            Err(Admit::Reject(r)) => {
                self.send_reject(session, ctx, r).await;
                Ok(true)
            }
            Err(Admit::ClientGone) => Err(Error::new_down(ErrorType::ConnectionClosed)),
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.peer_calls += 1;
        // Last check before anything reaches a backend: never past the deadline.
        if ctx
            .deadline
            .is_some_and(|d| Instant::now() + LAST_MOMENT >= d)
        {
            ctx.permit = None;
            ctx.reject = Some(self.gate.timed_out(Instant::now()));
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "the request's wait budget ran out before it could be sent",
            ));
        }
        if ctx.peer_calls > 1 {
            // The previous connect failed: nothing was sent, try elsewhere.
            if let Some(p) = ctx.permit.take() {
                ctx.tried.push(p.backend().id);
            }
            let again = match ctx.class {
                Class::Inference => self.gate.readmit(&ctx.tried, Instant::now()),
                Class::Passthrough => self.gate.passthrough(Instant::now()),
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
        if let Some(p) = &ctx.permit {
            self.fleet
                .report(p.backend(), Outcome::ConnectError, None, Instant::now());
        }
        if ctx.connect_retries < MAX_CONNECT_RETRIES {
            ctx.connect_retries += 1;
            self.metrics.retries.inc();
            tracing::warn!(request_id = %ctx.request_id, peer = %peer, error = %e, "connect failed; retrying on another backend");
            e.set_retry(true);
        }
        e
    }

    /// A pooled connection that fails before any response byte usually
    /// means the backend died (or closed it) while it sat idle: the request
    /// never reached a live llama-server. Retry that once elsewhere if the
    /// whole body is still buffered; never once a response has started.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if e.esource() == &pingora::ErrorSource::Downstream {
            // The client left: nothing to retry, and not the backend's fault.
            e.set_retry(false);
            return e;
        }
        let nothing_back = ctx.first_byte.is_none() && session.response_written().is_none();
        let body_kept = !session.as_ref().retry_buffer_truncated();
        // A timeout means the backend may be working on it: never resend.
        let dead_connection = !matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        if client_reused
            && nothing_back
            && body_kept
            && dead_connection
            && ctx.connect_retries < MAX_CONNECT_RETRIES
        {
            ctx.connect_retries += 1;
            self.metrics.retries.inc();
            tracing::warn!(request_id = %ctx.request_id, error = %e, "pooled upstream connection failed before any response; retrying on another backend");
            e.set_retry(true);
        } else {
            e.set_retry(false);
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
        if let Some(d) = ctx.deadline {
            upstream.insert_header("x-sluice-deadline-ms", unix_ms(d).to_string())?;
        }
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
        if let Some(b) = body.as_ref().filter(|b| !b.is_empty()) {
            if ctx.first_byte.is_none() {
                ctx.first_byte = Some(Instant::now());
            }
            if let Some(t) = &mut ctx.tail {
                t.push(b);
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let reject = ctx.reject.take().or_else(|| match e.etype() {
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectError
            | ErrorType::ConnectNoRoute => Some(Reject::UpstreamUnavailable {
                retry_after: self.gate.retry_after_now(Instant::now()),
            }),
            ErrorType::ReadTimedout if e.esource() == &pingora::ErrorSource::Upstream => {
                Some(Reject::UpstreamTimeout)
            }
            _ => None,
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
        let (outcome, reason): (&str, &str) = if let Some(r @ Reject::UpstreamTimeout) = &ctx.reject
        {
            ("failed", r.reason())
        } else if let Some(r) = &ctx.reject {
            ("rejected", r.reason())
        } else if ctx.left_queue {
            ("client_closed", "left_queue")
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
        if ctx.permit.is_none() {
            if let (Some(id), Some(charged)) = (&ctx.identity, ctx.tokens_charged.take()) {
                self.gate.reconcile_tokens(id, charged, 0, end);
            }
        }
        if let Some(id) = &ctx.identity {
            self.metrics.key_request(&id.name, outcome);
        }
        let backend = ctx.permit.as_ref().map(|p| Arc::clone(p.backend()));
        if let (Some(b), Class::Inference) = (&backend, ctx.class) {
            let verdict = backend_outcome(e, status, ctx.first_byte.is_some());
            let dispatched = ctx.dispatched.unwrap_or(ctx.start);
            let usage = ctx
                .tail
                .as_ref()
                .map(|t| usage::scan(t.as_slice()))
                .unwrap_or_default();
            if let Some(id) = &ctx.identity {
                self.metrics.key_tokens(
                    &id.name,
                    usage.prompt_tokens.unwrap_or(0),
                    usage.completion_tokens.unwrap_or(0),
                );
                if let Some(charged) = ctx.tokens_charged.take() {
                    let used =
                        usage.prompt_tokens.unwrap_or(0) + usage.completion_tokens.unwrap_or(0);
                    self.gate.reconcile_tokens(id, charged, used, end);
                }
            }
            // Per-token time is only a signal on generations long enough
            // that the prompt does not dominate it.
            let per_token = usage
                .per_token_ms
                .filter(|_| usage.completion_tokens.unwrap_or(0) >= 8)
                .map(|ms| Duration::from_secs_f64(ms / 1000.0));
            let sample = (verdict == Outcome::Success).then(|| ResponseSample {
                latency: end.saturating_duration_since(dispatched),
                ttft: ctx
                    .first_byte
                    .map(|f| f.saturating_duration_since(dispatched)),
                per_token,
                in_server_wait: None,
            });
            self.fleet.report(b, verdict, sample, end);
            self.gate.completed(end);
        }
        if let Some(b) = &backend {
            let m = &b.metrics;
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
            key = ctx.identity.as_ref().map(|i| &*i.name).unwrap_or("-"),
            queue_ms = ctx.dispatched.map(|d| d.saturating_duration_since(ctx.start).as_millis() as u64),
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
