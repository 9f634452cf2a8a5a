//! Forwarding one request to a model's instance and streaming its answer
//! back chunk by chunk (SSE streams stay streams), as the real router
//! proxies to its child servers.

use std::convert::Infallible;
use std::io;
use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

use crate::sim::handle::SimHandle;

pub(super) type Body = UnsyncBoxBody<Bytes, io::Error>;

pub(super) fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("server", http::HeaderValue::from_static("llama.cpp"));
    h.insert(
        "content-type",
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn client() -> &'static reqwest::Client {
    static C: OnceLock<reqwest::Client> = OnceLock::new();
    C.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    })
}

/// Headers that belong to one hop, not to the message.
fn hop(name: &str) -> bool {
    matches!(
        name,
        "host" | "content-length" | "connection" | "transfer-encoding" | "keep-alive"
    )
}

fn end_to_end(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in from {
        if !hop(k.as_str()) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

/// Sends `req`'s method, path, query and headers with `body` to `to`.
pub(super) async fn forward<B>(
    to: &SimHandle,
    req: Request<B>,
    body: Bytes,
) -> Result<Response<Body>, io::Error> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let sent = client()
        .request(req.method().clone(), format!("{}{path}", to.url()))
        .headers(end_to_end(req.headers()))
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(r) => r,
        // The instance went away (unloaded meanwhile): as a dead child.
        Err(e) => return Err(io::Error::other(e)),
    };
    let status = upstream.status();
    let headers = end_to_end(upstream.headers());
    let chunks = futures::stream::unfold(Some(upstream), |state| async move {
        let mut r = state?;
        match r.chunk().await {
            Ok(Some(b)) => Some((Ok(Frame::data(b)), Some(r))),
            Ok(None) => None,
            Err(e) => Some((Err(io::Error::other(e)), None)),
        }
    });
    let mut out = Response::new(StreamBody::new(chunks).boxed_unsync());
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}
