//! The HTTP face of a simulated llama-server (hyper 1, HTTP/1.1): the
//! listener that can stop and resume on the same port, and the routes.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::engine::{Engine, RequestGuard};
use super::fault::{FaultSet, MetricsFault};
use super::metrics_text;
use super::model::{Event, ModelConfig, RequestSpec};
use super::options::{Dialect, SimOptions};
use super::request::{self, ApiError, Route};
use super::responses::{self, Shape};

pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Most `x-request-id`s kept for tests to read.
const REQUEST_ID_LOG: usize = 10_000;

/// Counters kept by the HTTP layer.
#[derive(Clone, Debug, Default)]
pub struct HttpStats {
    pub received: u64,
    pub late_arrivals: u64,
    pub errors_injected: u64,
    pub resets_injected: u64,
    pub bad_requests: u64,
    pub metrics_scrapes: u64,
    pub last_headers: HeaderMap,
    pub request_ids: Vec<String>,
}

pub enum ListenCmd {
    Stop(oneshot::Sender<()>),
    Resume(std::net::TcpListener, oneshot::Sender<()>),
}

/// State shared by the listener, every connection and every handle.
pub struct Shared {
    pub opts: SimOptions,
    pub engine: Arc<Engine>,
    pub faults: Mutex<FaultSet>,
    pub loading: AtomicBool,
    pub listening: AtomicBool,
    pub connections: AtomicU64,
    pub stats: Mutex<HttpStats>,
    rng: Mutex<SmallRng>,
    pub addr: SocketAddr,
    pub ctl: mpsc::UnboundedSender<ListenCmd>,
    pub shutdown: watch::Sender<bool>,
    start_unix: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Binds `addr` and starts the server tasks on the current runtime.
pub async fn start(addr: SocketAddr, opts: SimOptions) -> io::Result<Arc<Shared>> {
    opts.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    opts.faults
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let engine = Engine::new(
        ModelConfig {
            slots: opts.slots,
            prompt_tps: opts.prompt_tps,
            gen_tps: opts.gen_tps,
            curve: opts.curve.clone(),
            keep_abandoned_deferred: opts.keep_abandoned_deferred,
            abandon_delay: opts.abandon_delay,
            n_ctx: opts.n_ctx,
        },
        opts.token_tick,
    );
    engine.set_speed(opts.faults.speed());
    let (ctl, cmds) = mpsc::unbounded_channel();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        faults: Mutex::new(opts.faults.clone()),
        loading: AtomicBool::new(!opts.load_time.is_zero()),
        listening: AtomicBool::new(true),
        connections: AtomicU64::new(0),
        stats: Mutex::new(HttpStats::default()),
        rng: Mutex::new(SmallRng::seed_from_u64(opts.seed)),
        addr,
        ctl,
        shutdown,
        start_unix: unix_now().as_secs(),
        engine: engine.clone(),
        opts,
    });
    tokio::spawn(engine.run(shutdown_rx.clone()));
    if !shared.opts.load_time.is_zero() {
        let s = shared.clone();
        let mut sd = shutdown_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(s.opts.load_time) => s.loading.store(false, Ordering::SeqCst),
                _ = sd.changed() => {}
            }
        });
    }
    tokio::spawn(accept_loop(shared.clone(), listener, cmds, shutdown_rx));
    Ok(shared)
}

// === listener ===

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut cmds: mpsc::UnboundedReceiver<ListenCmd>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut listener = Some(listener);
    // Bumped to close every open connection (a dead process keeps none).
    let (kill, _) = watch::channel(0u64);
    loop {
        let accept = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            res = accept => match res {
                Ok((stream, _)) => {
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(serve_connection(shared.clone(), stream, kill.subscribe(), shutdown.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            cmd = cmds.recv() => match cmd {
                Some(ListenCmd::Stop(ack)) => {
                    listener = None;
                    kill.send_modify(|g| *g += 1);
                    shared.listening.store(false, Ordering::SeqCst);
                    let _ = ack.send(());
                }
                Some(ListenCmd::Resume(std_listener, ack)) => {
                    if let Ok(l) = TcpListener::from_std(std_listener) {
                        listener = Some(l);
                        shared.listening.store(true, Ordering::SeqCst);
                    }
                    let _ = ack.send(());
                }
                None => break,
            },
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    kill.send_modify(|g| *g += 1);
                    break;
                }
            }
        }
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    mut kill: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let svc = service_fn(move |req| handle(shared.clone(), req));
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        _ = kill.changed() => {}
        _ = shutdown.changed() => {}
    }
}

// === routes ===

/// Why a connection is closed without an answer.
#[derive(Debug)]
pub struct ConnectionReset;

impl std::fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated connection reset")
    }
}

impl std::error::Error for ConnectionReset {}

type Answer = Result<Response<Body>, ConnectionReset>;

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_string();
    if let Some(cmd) = path.strip_prefix("/sim/") {
        return Ok(control(&shared, cmd, req).await);
    }
    if lock(&shared.faults).hang {
        std::future::pending::<()>().await;
    }
    if shared.loading.load(Ordering::SeqCst) {
        return Ok(json(
            StatusCode::SERVICE_UNAVAILABLE,
            responses::LOADING_BODY.to_string(),
        ));
    }
    let o = &shared.opts;
    let route = match (req.method(), path.as_str()) {
        (&Method::GET, "/health" | "/v1/health") => {
            return Ok(json(StatusCode::OK, r#"{"status":"ok"}"#.to_string()))
        }
        (&Method::GET, "/metrics") => return Ok(metrics(&shared).await),
        (&Method::GET, "/props") => {
            return Ok(json(
                StatusCode::OK,
                responses::props(o.dialect, o.slots, o.n_ctx, &o.model),
            ))
        }
        (&Method::GET, "/slots") => return Ok(slots(&shared, req.uri().query())),
        (&Method::GET, "/v1/models" | "/models") => {
            let created = shared.start_unix;
            return Ok(json(
                StatusCode::OK,
                responses::models(o.dialect, &o.model, o.n_ctx, created),
            ));
        }
        (&Method::POST, "/completion" | "/completions") => Route::Completion,
        (&Method::POST, "/v1/completions") => Route::V1Completions,
        (&Method::POST, "/v1/chat/completions" | "/chat/completions") => Route::V1Chat,
        _ => {
            return Ok(error(&ApiError {
                status: 404,
                message: "File Not Found".into(),
                kind: "not_found_error",
            }))
        }
    };
    inference(shared, route, req).await
}

fn base_response(status: StatusCode, content_type: &'static str) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header("Server", "llama.cpp")
        .header("Access-Control-Allow-Origin", HeaderValue::from_static(""))
        .header("Content-Type", content_type)
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn respond(builder: http::response::Builder, body: Body) -> Response<Body> {
    builder.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(full(""));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    respond(
        base_response(status, "application/json; charset=utf-8"),
        full(body),
    )
}

fn error(e: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, responses::error_body(e.status, &e.message, e.kind))
}

async fn metrics(shared: &Shared) -> Response<Body> {
    let f = lock(&shared.faults).clone();
    if let Some(ms) = f.metrics_delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    lock(&shared.stats).metrics_scrapes += 1;
    let body = match f.metrics {
        MetricsFault::Disabled => {
            return error(&ApiError {
                status: 501,
                message: "This server does not support metrics endpoint. Start it with `--metrics`"
                    .into(),
                kind: "not_supported_error",
            })
        }
        MetricsFault::Empty => String::new(),
        MetricsFault::Malformed => metrics_text::MALFORMED.to_string(),
        MetricsFault::Ok => metrics_text::render(shared.opts.dialect, &shared.engine.scrape()),
    };
    let mut b = base_response(StatusCode::OK, metrics_text::CONTENT_TYPE);
    if shared.opts.dialect == Dialect::B4748 {
        b = b.header("Process-Start-Time-Unix", shared.start_unix);
    }
    respond(b, full(body))
}

fn slots(shared: &Shared, query: Option<&str>) -> Response<Body> {
    let views = shared.engine.slots();
    let fail = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "fail_on_no_slot=1" || kv == "fail_on_no_slot=true")
    });
    if fail && views.iter().all(|s| s.task.is_some()) {
        return error(&ApiError {
            status: 503,
            message: "no slot available".into(),
            kind: "unavailable_error",
        });
    }
    json(
        StatusCode::OK,
        responses::slots(shared.opts.dialect, &views, shared.opts.n_ctx),
    )
}

/// Records what tests want to see about an arriving inference request.
fn note_arrival(shared: &Shared, headers: &HeaderMap) {
    let mut st = lock(&shared.stats);
    st.received += 1;
    st.last_headers = headers.clone();
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        if st.request_ids.len() < REQUEST_ID_LOG {
            st.request_ids.push(id.to_string());
        }
    }
    let deadline = headers
        .get("x-sluice-deadline-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u128>().ok());
    if deadline.is_some_and(|d| d < unix_now().as_millis()) {
        st.late_arrivals += 1;
    }
}

async fn inference(shared: Arc<Shared>, route: Route, req: Request<Incoming>) -> Answer {
    note_arrival(&shared, req.headers());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(ConnectionReset),
    };
    let parsed = match request::parse(route, &body) {
        Ok(p) => p,
        Err(e) => {
            lock(&shared.stats).bad_requests += 1;
            return Ok(error(&e));
        }
    };
    let faults = lock(&shared.faults).clone();
    let o = &shared.opts;
    let (fail, text_seed, id, limited, n_predict) = {
        let mut rng = lock(&shared.rng);
        let fail = faults.error_rate.is_some_and(|r| rng.random::<f64>() < r);
        let room = o.n_ctx.saturating_sub(parsed.prompt_tokens);
        let (limited, n) = match parsed.n_predict {
            Some(n) => (true, n.min(room)),
            None if parsed.ignore_eos => (true, room),
            None => (
                false,
                rng.random_range(o.gen_length.min..=o.gen_length.max)
                    .min(room),
            ),
        };
        (
            fail,
            rng.random::<u64>(),
            responses::completion_id(&mut rng),
            limited,
            n,
        )
    };
    if fail {
        lock(&shared.stats).errors_injected += 1;
        let status = faults.error_status.unwrap_or(500);
        return Ok(error(&ApiError {
            status,
            message: "simulated failure".into(),
            kind: if status == 503 {
                "unavailable_error"
            } else {
                "server_error"
            },
        }));
    }
    if parsed.prompt_tokens >= o.n_ctx {
        lock(&shared.stats).bad_requests += 1;
        let body = serde_json::json!({"error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": parsed.prompt_tokens, "n_ctx": o.n_ctx,
        }});
        return Ok(json(StatusCode::BAD_REQUEST, body.to_string()));
    }
    let shape = Shape {
        dialect: o.dialect,
        model: o.model.clone(),
        id,
        created: unix_now().as_secs(),
        n_ctx: o.n_ctx,
        req: parsed,
        limited,
    };
    let spec = RequestSpec {
        prompt_tokens: shape.req.prompt_tokens,
        n_predict,
    };
    let (guard, rx) = shared.engine.submit(spec);
    let run = Run {
        shape,
        guard,
        rx,
        rng: SmallRng::seed_from_u64(text_seed),
        reset_after: faults.reset_after_tokens,
        shared: shared.clone(),
    };
    if run.shape.req.stream {
        Ok(stream_response(run))
    } else {
        run.complete().await
    }
}

/// One admitted inference request and what it needs to answer.
struct Run {
    shape: Shape,
    guard: RequestGuard,
    rx: mpsc::UnboundedReceiver<Event>,
    rng: SmallRng,
    reset_after: Option<u32>,
    shared: Arc<Shared>,
}

impl Run {
    fn note_reset(&self) {
        lock(&self.shared.stats).resets_injected += 1;
    }

    /// Non-streaming: nothing is sent until the last token.
    async fn complete(mut self) -> Answer {
        let mut text = String::new();
        while let Some(ev) = self.rx.recv().await {
            match ev {
                Event::Started { .. } => {}
                Event::Tokens { count, total, .. } => {
                    for _ in 0..count {
                        text.push_str(responses::next_token(&mut self.rng).1);
                    }
                    if self.reset_after.is_some_and(|n| total >= n) {
                        self.note_reset();
                        return Err(ConnectionReset);
                    }
                }
                Event::Finished { timings, .. } => {
                    self.guard.done = true;
                    return Ok(json(StatusCode::OK, self.shape.full_body(&text, &timings)));
                }
                Event::Dropped { .. } => break,
            }
        }
        Err(ConnectionReset)
    }
}

/// Streaming: headers at once (even while deferred), one SSE event per
/// token, the final chunk with `timings` (and `usage`).
fn stream_response(run: Run) -> Response<Body> {
    // The 2026-10 build sends `X-Accel-Buffering: no`; b4748 does not.
    let accel = run.shape.dialect == Dialect::Recent;
    struct St {
        run: Run,
        sent: u32,
        reset_next: bool,
        done: bool,
    }
    let st = St {
        run,
        sent: 0,
        reset_next: false,
        done: false,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        if st.reset_next {
            // Give hyper a pending poll to flush the tokens already written;
            // an error right away would discard its buffer with them.
            tokio::time::sleep(Duration::from_millis(10)).await;
            st.done = true;
            st.run.note_reset();
            return Some((Err(io::Error::other(ConnectionReset)), st));
        }
        loop {
            let ev = st.run.rx.recv().await?;
            let out = match ev {
                Event::Started { .. } => st.run.shape.stream_start(),
                Event::Tokens { count, .. } => {
                    let mut out = String::new();
                    for _ in 0..count {
                        if st.run.reset_after.is_some_and(|n| st.sent >= n) {
                            st.reset_next = true;
                            break;
                        }
                        st.sent += 1;
                        let (tok, piece) = responses::next_token(&mut st.run.rng);
                        let prompt_n = st.run.shape.req.prompt_tokens.max(1);
                        out.push_str(&st.run.shape.stream_token(piece, tok, st.sent, prompt_n));
                    }
                    if out.is_empty() && st.reset_next {
                        st.done = true;
                        st.run.note_reset();
                        return Some((Err(io::Error::other(ConnectionReset)), st));
                    }
                    out
                }
                Event::Finished { timings, .. } => {
                    st.run.guard.done = true;
                    st.done = true;
                    st.run.shape.stream_end(&timings)
                }
                Event::Dropped { .. } => return None,
            };
            if !out.is_empty() {
                return Some((Ok(Frame::data(Bytes::from(out))), st));
            }
        }
    });
    let mut b = base_response(StatusCode::OK, "text/event-stream");
    if accel {
        b = b.header("X-Accel-Buffering", "no");
    }
    respond(b, BodyExt::boxed_unsync(StreamBody::new(stream.boxed())))
}

// === control endpoint ===

async fn control(shared: &Arc<Shared>, cmd: &str, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    match (method, cmd) {
        (Method::GET, "counters") => json(StatusCode::OK, super::handle::counters_json(shared)),
        (Method::GET, "fault") => json(
            StatusCode::OK,
            serde_json::to_string(&*lock(&shared.faults)).unwrap_or_default(),
        ),
        (Method::POST, "clear") => {
            clear_faults(shared);
            json(StatusCode::OK, r#"{"ok":true}"#.to_string())
        }
        (Method::POST, "fault") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let v: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return error(&ApiError::invalid_request(format!("invalid JSON: {e}"))),
            };
            let merged = {
                let mut f = lock(&shared.faults);
                f.merge_json(&v).map(|_| f.clone())
            };
            let f = match merged {
                Ok(f) => f,
                Err(e) => return error(&ApiError::invalid_request(e)),
            };
            shared.engine.set_speed(f.speed());
            if let Some(b) = v.get("loading").and_then(|b| b.as_bool()) {
                shared.loading.store(b, Ordering::SeqCst);
            }
            if let Some(ms) = v.get("refuse_for_ms").and_then(|m| m.as_u64()) {
                let s = shared.clone();
                tokio::spawn(async move {
                    // Let this answer go out before the connections close.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    stop_listening(&s).await;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let _ = resume_listening(&s).await;
                });
            }
            json(
                StatusCode::OK,
                serde_json::to_string(&f).unwrap_or_default(),
            )
        }
        _ => error(&ApiError {
            status: 404,
            message: "File Not Found".into(),
            kind: "not_found_error",
        }),
    }
}

pub fn clear_faults(shared: &Shared) {
    *lock(&shared.faults) = FaultSet::default();
    shared.loading.store(false, Ordering::SeqCst);
    shared.engine.set_speed(1.0);
}

pub async fn stop_listening(shared: &Shared) {
    let (ack, done) = oneshot::channel();
    if shared.ctl.send(ListenCmd::Stop(ack)).is_ok() {
        let _ = done.await;
    }
}

pub async fn resume_listening(shared: &Shared) -> io::Result<()> {
    if shared.listening.load(Ordering::SeqCst) {
        return Ok(());
    }
    let l = std::net::TcpListener::bind(shared.addr)?;
    l.set_nonblocking(true)?;
    let (ack, done) = oneshot::channel();
    shared
        .ctl
        .send(ListenCmd::Resume(l, ack))
        .map_err(|_| io::Error::other("simulator shut down"))?;
    let _ = done.await;
    Ok(())
}

/// Locked access for the handle.
pub fn stats(shared: &Shared) -> HttpStats {
    lock(&shared.stats).clone()
}

pub fn faults(shared: &Shared) -> MutexGuard<'_, FaultSet> {
    lock(&shared.faults)
}
