//! `/sim/*`: the simulator's own control endpoint (counters, faults), for
//! tests and operators that drive a server from outside the process.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::counters;
use super::reply::{error, json, not_found, Body};
use super::shared::{lock, Shared};
use crate::sim::request::ApiError;

pub async fn control(shared: &Arc<Shared>, cmd: &str, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    match (method, cmd) {
        (Method::GET, "counters") => json(StatusCode::OK, counters::json(shared)),
        (Method::GET, "fault") => json(
            StatusCode::OK,
            serde_json::to_string(&*lock(&shared.faults)).unwrap_or_default(),
        ),
        (Method::POST, "restart") => {
            // Answer first: the restart closes this connection too.
            let s = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = s.restart().await;
            });
            json(StatusCode::OK, r#"{"ok":true}"#.to_string())
        }
        (Method::POST, "clear") => {
            shared.clear_faults();
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
                    s.stop_listening().await;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let _ = s.resume_listening().await;
                });
            }
            json(
                StatusCode::OK,
                serde_json::to_string(&f).unwrap_or_default(),
            )
        }
        _ => not_found(),
    }
}
