//! The router's listener and routes, answering as the real router does
//! (see the module doc of [`super`]).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use super::proxy::{forward, json, Body};
use super::{Refusal, Shared};
use crate::sim::options::Dialect;

pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut stop = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((stream, _)) = r else { continue };
                let _ = stream.set_nodelay(true);
                let s = Arc::clone(&shared);
                let mut stop = shared.shutdown.subscribe();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| route(Arc::clone(&s), req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.changed() => {}
                    }
                });
            }
            _ = stop.changed() => return,
        }
    }
}

fn error(status: u16, message: &str) -> Response<Body> {
    let kind = if status == 404 {
        "not_found_error"
    } else {
        "invalid_request_error"
    };
    json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        crate::sim::responses::error_body(status, message, kind),
    )
}

fn refusal(r: Refusal, model: &str) -> Response<Body> {
    match r {
        Refusal::Unknown => error(400, &format!("model '{model}' not found")),
        Refusal::NotLoaded => error(400, "model is not loaded"),
    }
}

const MISSING: &str = "model name is missing from the request";

/// `model` and `autoload` from a query string.
fn query(q: Option<&str>) -> (Option<String>, bool) {
    let mut model = None;
    let mut autoload = true;
    for kv in q.unwrap_or("").split('&') {
        match kv.split_once('=') {
            Some(("model", v)) => model = Some(decode(v)),
            Some(("autoload", v)) => autoload = !matches!(v, "false" | "0"),
            _ => {}
        }
    }
    (model, autoload)
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn models(shared: &Shared) -> String {
    let data: Vec<_> = shared
        .statuses()
        .into_iter()
        .map(|(id, status)| {
            json!({
                "id": id, "aliases": [], "tags": [], "object": "model",
                "owned_by": "llamacpp", "created": shared.created,
                "status": {"value": status},
                "source": "models_dir", "can_remove": false,
            })
        })
        .collect();
    json!({"data": data, "object": "list"}).to_string()
}

fn router_props(shared: &Shared) -> String {
    json!({
        "role": "router",
        "max_instances": shared.opts.models_max,
        "models_autoload": shared.opts.autoload,
        "model_alias": "llama-server",
        "model_path": "none",
        "default_generation_settings": {"params": null, "n_ctx": 0},
        "ui_settings": {},
        "build_info": Dialect::Recent.build_info(),
        "cors_proxy_enabled": false,
    })
    .to_string()
}

type Answer = Result<Response<Body>, std::io::Error>;

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_string();
    let (model, autoload) = query(req.uri().query());
    let ok = |body: String| json(StatusCode::OK, body);
    match (req.method(), path.as_str()) {
        (&Method::GET, "/health" | "/v1/health") => Ok(ok(r#"{"status":"ok"}"#.into())),
        (&Method::GET, "/models" | "/v1/models") => Ok(ok(models(&shared))),
        (&Method::GET, "/sim/router") => Ok(ok(
            json!({"loads": shared.loads.load(std::sync::atomic::Ordering::SeqCst)}).to_string(),
        )),
        (&Method::GET, "/props") if model.is_none() => {
            shared
                .props_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(ok(router_props(&shared)))
        }
        (&Method::GET, "/props" | "/metrics" | "/slots") => {
            let Some(m) = model else {
                return Ok(error(400, MISSING));
            };
            match shared.instance(&m, autoload).await {
                Ok(h) => forward(&h, req, Bytes::new()).await,
                Err(r) => Ok(refusal(r, &m)),
            }
        }
        (&Method::POST, "/models/load" | "/models/unload") => {
            let body = read(req).await?;
            let Some(m) = body_model(&body) else {
                return Ok(error(400, MISSING));
            };
            if !shared.knows(&m) {
                return Ok(refusal(Refusal::Unknown, &m));
            }
            if path == "/models/load" {
                shared.start_load(&m);
            } else {
                shared.unload(&m);
            }
            Ok(ok(r#"{"success":true}"#.into()))
        }
        (
            &Method::POST,
            "/completion"
            | "/completions"
            | "/v1/completions"
            | "/v1/chat/completions"
            | "/chat/completions",
        ) => {
            let (parts, incoming) = req.into_parts();
            let body = read(Request::from_parts(parts.clone(), incoming)).await?;
            let Some(m) = body_model(&body) else {
                return Ok(error(400, MISSING));
            };
            match shared.instance(&m, true).await {
                Ok(h) => forward(&h, Request::from_parts(parts, ()), body).await,
                Err(r) => Ok(refusal(r, &m)),
            }
        }
        _ => Ok(error(404, "File Not Found")),
    }
}

async fn read(req: Request<Incoming>) -> Result<Bytes, std::io::Error> {
    Ok(req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes())
}

fn body_model(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("model")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_read_as_the_router_reads_them() {
        assert_eq!(
            query(Some("model=tiny-a&autoload=false")),
            (Some("tiny-a".into()), false)
        );
        assert_eq!(query(Some("model=org%2Fm")), (Some("org/m".into()), true));
        assert_eq!(query(None), (None, true));
    }
}
