//! Building responses the way llama-server sends them: its headers, JSON
//! bodies and error shapes.

use std::convert::Infallible;
use std::io;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

use crate::sim::request::ApiError;
use crate::sim::responses;

pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Why a connection is closed without an answer.
#[derive(Debug)]
pub struct ConnectionReset;

impl std::fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated connection reset")
    }
}

impl std::error::Error for ConnectionReset {}

pub type Answer = Result<Response<Body>, ConnectionReset>;

pub fn base_response(status: StatusCode, content_type: &'static str) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header("Server", "llama.cpp")
        .header("Access-Control-Allow-Origin", HeaderValue::from_static(""))
        .header("Content-Type", content_type)
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

pub fn respond(builder: http::response::Builder, body: Body) -> Response<Body> {
    builder.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(full(""));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

pub fn json(status: StatusCode, body: String) -> Response<Body> {
    respond(
        base_response(status, "application/json; charset=utf-8"),
        full(body),
    )
}

pub fn error(e: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, responses::error_body(e.status, &e.message, e.kind))
}

/// llama-server's answer to an unknown path.
pub fn not_found() -> Response<Body> {
    error(&ApiError {
        status: 404,
        message: "File Not Found".into(),
        kind: "not_found_error",
    })
}
