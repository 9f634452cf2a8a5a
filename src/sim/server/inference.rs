//! An inference request from arrival to admission: what tests record about
//! it, parsing, the drawn length and seeds, injected failures, the context
//! check, and submission to the engine. [`answer`](super::answer) sends the
//! reply.

use std::sync::Arc;

use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::answer::{stream_response, Run};
use super::reply::{error, json, Answer, ConnectionReset};
use super::shared::{lock, unix_now, Shared};
use crate::sim::model::RequestSpec;
use crate::sim::request::{self, ApiError, Route};
use crate::sim::responses::{self, Shape};

/// Most `x-request-id`s kept for tests to read.
const REQUEST_ID_LOG: usize = 10_000;

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
    let now = unix_now().as_millis();
    if let Some(d) = deadline.filter(|&d| d < now) {
        st.late_arrivals += 1;
        st.max_late_ms = st.max_late_ms.max((now - d) as u64);
    }
}

pub async fn inference(shared: Arc<Shared>, route: Route, req: Request<Incoming>) -> Answer {
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
        tokens: shape.req.tokens.clone(),
        cache_prompt: shape.req.cache_prompt.unwrap_or(o.cache_prompt),
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
