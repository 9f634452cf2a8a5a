//! The HTTP reads of one scrape round — `/health`, `/metrics`, `/props`,
//! `/v1/models`, and a router's `/models` — each bounded to [`MAX_SCRAPE_BODY`] and never following a
//! redirect: what a backend answers is untrusted input.

use std::time::Duration;

use tokio::time::Instant;

use super::observed::{DownCause, Health};
use super::promtext;

/// Largest body read from any scrape endpoint (`/health`, `/metrics`,
/// `/props`): `/metrics` is a few KiB, `/props` with its chat template tens.
pub const MAX_SCRAPE_BODY: usize = 1 << 20;

pub(super) struct MetricsError {
    pub(super) kind: &'static str,
    pub(super) message: String,
}

pub(super) async fn fetch_health(client: &reqwest::Client, base: &str) -> Health {
    match client.get(format!("{base}/health")).send().await {
        Ok(r) if r.status().is_success() => Health::Ok,
        Ok(r) if r.status().is_redirection() => Health::Down(DownCause::Redirect(redirect(&r))),
        Ok(r) if r.status().as_u16() == 503 => {
            let body = read_body(r).await.unwrap_or_default();
            if body.contains("Loading model") {
                Health::Loading
            } else {
                Health::Down(DownCause::Unavailable(snippet(&body)))
            }
        }
        Ok(r) => Health::Down(DownCause::Status(r.status().as_u16())),
        Err(e) => Health::Down(cause(&e)),
    }
}

#[cfg(test)]
pub(super) async fn fetch_metrics(
    client: &reqwest::Client,
    base: &str,
) -> (Duration, Result<promtext::Parsed, MetricsError>) {
    fetch_metrics_at(client, base, "").await
}

/// `/metrics` + `query` (a router's model instance: see [`super::router`]).
pub(super) async fn fetch_metrics_at(
    client: &reqwest::Client,
    base: &str,
    query: &str,
) -> (Duration, Result<promtext::Parsed, MetricsError>) {
    let start = Instant::now();
    let result = async {
        let r = client
            .get(format!("{base}/metrics{query}"))
            .send()
            .await
            .map_err(|e| MetricsError {
                kind: if e.is_timeout() {
                    "metrics_timeout"
                } else {
                    "metrics_connect"
                },
                message: describe(&e),
            })?;
        let status = r.status().as_u16();
        if r.status().is_redirection() {
            return Err(MetricsError {
                kind: "metrics_redirect",
                message: redirect(&r),
            });
        }
        if status == 501 {
            return Err(MetricsError {
                kind: "metrics_disabled",
                message: "HTTP 501: the backend serves no metrics; start llama-server with \
                          --metrics (Sluice does not route to a backend it cannot see)"
                    .into(),
            });
        }
        if status != 200 {
            return Err(MetricsError {
                kind: "metrics_status",
                message: format!("HTTP {status}"),
            });
        }
        let text = read_body(r).await.map_err(|e| MetricsError {
            kind: match e {
                BodyError::TooLarge => "metrics_too_large",
                BodyError::Read(_) => "metrics_timeout",
            },
            message: e.to_string(),
        })?;
        promtext::parse_counted(&text)
            .map(promtext::Parsed::without_reserved)
            .map_err(|e| MetricsError {
                kind: match e {
                    promtext::PromTextError::TooManySamples { .. } => "metrics_too_many",
                    _ => "metrics_malformed",
                },
                message: e.to_string(),
            })
    }
    .await;
    (start.elapsed(), result)
}

/// `GET base + path`, its body read bounded; a redirect or a status other
/// than 2xx is an error naming it.
async fn get_body(client: &reqwest::Client, base: &str, path: &str) -> Result<String, String> {
    let r = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .map_err(|e| describe(&e))?;
    if r.status().is_redirection() {
        return Err(redirect(&r));
    }
    if !r.status().is_success() {
        return Err(format!("HTTP {}", r.status().as_u16()));
    }
    read_body(r).await.map_err(|e| e.to_string())
}

/// What `/props` says a backend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Props {
    /// A server (or one router instance) with this many slots as claimed
    /// (at least 1); the caller caps it.
    Slots(u64),
    /// A llama-server router ([`super::router`]): no slots of its own;
    /// whether it loads models on demand.
    Router { autoload: bool },
}

/// `total_slots` as claimed (at least 1); the caller caps it.
#[cfg(test)]
pub(super) async fn fetch_slots(client: &reqwest::Client, base: &str) -> Result<u64, String> {
    match fetch_props(client, base, "").await? {
        Props::Slots(n) => Ok(n),
        Props::Router { .. } => Err("no total_slots in /props".into()),
    }
}

/// `/props` + `query`: a router, or the slot count.
pub(super) async fn fetch_props(
    client: &reqwest::Client,
    base: &str,
    query: &str,
) -> Result<Props, String> {
    let body = get_body(client, base, &format!("/props{query}")).await?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("not JSON: {e}"))?;
    if super::router::is_router_props(&v) {
        return Ok(Props::Router {
            autoload: super::router::autoloads(&v),
        });
    }
    match v.get("total_slots").and_then(|s| s.as_u64()) {
        Some(n) if n >= 1 => Ok(Props::Slots(n)),
        _ => Err("no total_slots in /props".into()),
    }
}

/// A router's `GET /models`, with each model's status.
pub(super) async fn fetch_router_models(
    client: &reqwest::Client,
    base: &str,
) -> Result<Vec<super::router::RouterModel>, String> {
    super::router::parse_models(&get_body(client, base, "/models").await?)
}

/// The models `/v1/models` lists (see [`super::models`]).
pub(super) async fn fetch_models(
    client: &reqwest::Client,
    base: &str,
) -> Result<Vec<String>, String> {
    super::models::parse(&get_body(client, base, "/v1/models").await?)
}

/// Why a scrape body was not read whole.
#[derive(Debug)]
pub(super) enum BodyError {
    /// More than [`MAX_SCRAPE_BODY`] bytes (announced or sent).
    TooLarge,
    Read(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => write!(f, "body larger than {MAX_SCRAPE_BODY} bytes"),
            BodyError::Read(e) => f.write_str(e),
        }
    }
}

/// Reads a body chunk by chunk, refusing more than [`MAX_SCRAPE_BODY`]
/// bytes (a `Content-Length` above it is refused before reading).
pub(super) async fn read_body(mut r: reqwest::Response) -> Result<String, BodyError> {
    if r.content_length()
        .is_some_and(|n| n > MAX_SCRAPE_BODY as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut buf = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| BodyError::Read(describe(&e)))? {
        if buf.len() + chunk.len() > MAX_SCRAPE_BODY {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A 3xx answer, described: never followed.
pub(super) fn redirect(r: &reqwest::Response) -> String {
    let to = r
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| snippet(&String::from_utf8_lossy(v.as_bytes())))
        .unwrap_or_default();
    format!(
        "HTTP {} redirect to {to:?}, not followed",
        r.status().as_u16()
    )
}

/// The typed cause of a failed request; the breaker trips on
/// [`DownCause::Refused`] at once.
pub(super) fn cause(e: &reqwest::Error) -> DownCause {
    if e.is_timeout() {
        DownCause::Timeout
    } else if e.is_connect() {
        DownCause::Refused
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s = format!("{s}: {inner}");
            src = inner.source();
        }
        DownCause::Other(s)
    }
}

pub(super) fn describe(e: &reqwest::Error) -> String {
    cause(e).to_string()
}

pub(super) fn snippet(s: &str) -> String {
    s.chars().take(120).collect()
}
