//! Routing one request, and the read-only endpoints: `/health`, `/metrics`,
//! `/props`, `/slots`, `/v1/models`. Inference goes to [`inference`],
//! `/sim/*` to [`control`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::reply::{base_response, error, full, json, not_found, respond, Answer, Body};
use super::shared::{lock, Shared};
use super::{control, inference};
use crate::sim::endpoints;
use crate::sim::fault::MetricsFault;
use crate::sim::metrics_text;
use crate::sim::request::{ApiError, Route};
use crate::sim::responses;

/// llama-server's CORS, as permissive as the real one: every answer echoes
/// the request's `Origin` in `Access-Control-Allow-Origin` (empty without
/// one, as in the captures), with credentials allowed when there is one;
/// `OPTIONS` is a preflight granting every header.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Answer {
    let origin = req.headers().get(http::header::ORIGIN).cloned();
    if req.method() == Method::OPTIONS {
        let b = base_response(StatusCode::OK, "text/html")
            .header("Access-Control-Allow-Credentials", "true")
            .header("Access-Control-Allow-Methods", "GET, POST")
            .header("Access-Control-Allow-Headers", "*");
        let mut r = respond(b, full(""));
        if let Some(o) = origin {
            r.headers_mut().insert("access-control-allow-origin", o);
        }
        return Ok(r);
    }
    let mut answer = route(shared, req).await;
    if let (Ok(r), Some(o)) = (&mut answer, origin) {
        r.headers_mut().insert("access-control-allow-origin", o);
        r.headers_mut().insert(
            "access-control-allow-credentials",
            http::HeaderValue::from_static("true"),
        );
    }
    answer
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_string();
    if let Some(cmd) = path.strip_prefix("/sim/") {
        return Ok(control::control(&shared, cmd, req).await);
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
                endpoints::props(o.dialect, o.slots, o.n_ctx, &o.model),
            ))
        }
        (&Method::GET, "/slots") => return Ok(slots(&shared, req.uri().query())),
        (&Method::GET, "/v1/models" | "/models") => {
            let created = shared.start_unix();
            return Ok(json(
                StatusCode::OK,
                endpoints::models(o.dialect, &o.model, o.n_ctx, created),
            ));
        }
        (&Method::POST, "/completion" | "/completions") => Route::Completion,
        (&Method::POST, "/v1/completions") => Route::V1Completions,
        (&Method::POST, "/v1/chat/completions" | "/chat/completions") => Route::V1Chat,
        _ => return Ok(not_found()),
    };
    inference::inference(shared, route, req).await
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
    // Both captured builds send it; it changes when the server restarts.
    let b = base_response(StatusCode::OK, metrics_text::CONTENT_TYPE)
        .header("Process-Start-Time-Unix", shared.start_unix());
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
        endpoints::slots(shared.opts.dialect, &views, shared.opts.n_ctx),
    )
}
