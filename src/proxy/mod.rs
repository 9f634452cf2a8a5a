//! The request path: pingora's `ProxyHttp` phases, each a call into one of
//! the files below, with per-request state kept in [`Ctx`].
//!
//! - `facts.rs`: [`RequestFacts`], the request head read once (id, class,
//!   length, key, client address, wait budget, priority);
//! - `body_facts.rs`: what an inference body read ahead says (model,
//!   stream, max tokens, prompt size, prefix fingerprint), parsed once;
//! - `client.rs`: the client connection's limits for this request (read and
//!   write timeouts, keep-alive) and its header clock (`early_request_filter`);
//! - `client_slot.rs`: the `server.max_clients` and `routing.max_passthrough`
//!   caps;
//! - `admit.rs`: a permit for the request, at once or after queueing
//!   (`request_filter`), and the body limit (`request_body_filter`);
//! - `upstream.rs`: the peer to connect to (`upstream_peer`) and the headers
//!   and body on the way (`upstream_request_filter`, `response_filter`,
//!   `response_body_filter`);
//! - `retry.rs`: whether a failed attempt is tried on another backend
//!   (`fail_to_connect`, `error_while_proxy`);
//! - `rescue.rs`: the only place a status, `Retry-After` and error body are
//!   written (`fail_to_proxy`, and every refusal), and what a pingora error
//!   means to the gateway;
//! - `completion.rs`: what the end of a request counts (`logging`);
//! - `listener.rs`: the client listener's socket buffer sizes.
//!
//! A request holds its permit (its backend's in-flight unit) from admission
//! until `logging`, or until the context drops if the client leaves.

mod admit;
mod body_facts;
mod client;
mod client_slot;
mod completion;
mod facts;
pub mod listener;
mod rescue;
mod retry;
mod upstream;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::ErrorType;
use tokio::time::Instant;

use crate::admission::gate::{Gate, Identity};
use crate::backend::fleet::Fleet;
use crate::backend::state::Permit;
use crate::config::{RoutingConfig, ServerConfig};
use crate::edge::Connections;
use crate::reject::Reject;
use crate::telemetry::Metrics;
use crate::usage::{StreamCount, Tail};

use admit::Admit;
pub use body_facts::{parse as read_body_facts, BadBody, BodyFacts};
use client_slot::ClientSlot;
pub use facts::{classify, Class, RequestFacts};

/// Per-request state.
pub struct Ctx {
    start: Instant,
    facts: RequestFacts,
    permit: Option<Permit>,
    /// Backends whose connect failed.
    tried: Vec<usize>,
    connect_retries: u32,
    peer_calls: u32,
    /// The rejection sent to the client, if any.
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
    /// The events of a streamed inference response, counted as they pass.
    stream: Option<StreamCount>,
    /// Request body bytes seen so far.
    body_bytes: usize,
    /// This request's place among `server.max_clients`.
    client_slot: Option<ClientSlot>,
    /// Tokens charged to the key's budget on admission, to reconcile.
    tokens_charged: Option<u64>,
    /// The charge was made in the cluster's Redis (settle it there).
    tokens_shared: bool,
    /// The whole body was read ahead: nothing is left to read.
    body_read: bool,
    /// What an inference body read ahead says (model, prompt, limits).
    body: Option<BodyFacts>,
    /// An inference body larger than pingora's retry buffer, read ahead
    /// whole: sent upstream in place of the buffer's tail.
    ahead: Option<Bytes>,
    /// This request's place in the passthrough pool.
    pass_slot: Option<ClientSlot>,
    /// The client's TCP address (the connection guard's key).
    peer: Option<std::net::SocketAddr>,
    /// The gateway's CORS headers for this request's origin (backend ones
    /// are dropped): on every answer, relayed or the gateway's own.
    cors: crate::edge::cors::Headers,
}

impl Ctx {
    fn new(start: Instant) -> Ctx {
        Ctx {
            start,
            facts: RequestFacts::unread(),
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
            stream: None,
            body_bytes: 0,
            client_slot: None,
            tokens_charged: None,
            tokens_shared: false,
            body_read: false,
            body: None,
            ahead: None,
            pass_slot: None,
            peer: None,
            cors: Vec::new(),
        }
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
    /// Passthrough requests open now (see `routing.max_passthrough`).
    pub open_passthrough: Arc<AtomicUsize>,
    /// Every client connection (caps and the header clock).
    pub connections: Arc<Connections>,
    /// Limits shared with other replicas (`[cluster]`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

#[async_trait]
impl ProxyHttp for SluiceProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(Instant::now())
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        self.client_session(session, ctx);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let now = Instant::now();
        ctx.start = now;
        let (req, cors) = (session.req_header(), &self.server.cors);
        let origin = req.headers.get(http::header::ORIGIN).map(|v| v.as_bytes());
        if crate::edge::cors::is_preflight(&req.method, &req.headers) {
            let headers = cors.preflight(origin);
            rescue::send_preflight(session, ctx, headers).await;
            return Ok(true);
        }
        ctx.cors = cors.response(origin);
        match self.admit(session, ctx, now).await {
            Ok(()) => Ok(false),
            Err(Admit::Reject(r)) => {
                rescue::send_reject(session, ctx, r).await;
                Ok(true)
            }
            Err(Admit::Models(models)) => {
                rescue::send_models(session, ctx, &models).await;
                Ok(true)
            }
            Err(Admit::ClientGone) => Err(Error::new_down(ErrorType::ConnectionClosed)),
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.count_body(ctx, body, Instant::now())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        self.choose_peer(ctx, Instant::now())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.connect_failed(peer, ctx, e, Instant::now())
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        self.proxy_failed(peer, session, e, ctx, client_reused)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream::request_headers(upstream, ctx, Instant::now())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream::response_headers(resp, ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        upstream::saw_body(ctx, body, Instant::now());
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        self.rescue(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let now = Instant::now();
        self.finish(session, e, ctx, now);
        if let Some(peer) = ctx.peer {
            self.connections.request_ended(peer, now);
        }
    }
}
