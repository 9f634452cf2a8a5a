//! Every way the gateway refuses a request, mapped to a response in one place.
//!
//! A rejection is a typed value; [`Reject::header`] and [`Reject::body`] turn
//! it into the status, the headers (`Retry-After` in whole seconds, at least
//! 1, with the same [`Hint`] in milliseconds as `retry-after-ms` and
//! `x-should-retry: true|false`, as the OpenAI SDKs read them;
//! `x-sluice-reason`; rate-limit headers) and an OpenAI-shaped JSON error
//! body, so OpenAI clients surface the message. The proxy writes them only
//! through `proxy::rescue`, never a status code inline.

use bytes::Bytes;
use pingora::http::ResponseHeader;

mod hint;

pub use hint::Hint;

/// Why the gateway did not forward a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Every healthy backend is full or overloaded.
    Saturated { retry_after: Hint },
    /// No backend is healthy and fresh.
    NoHealthyBackend { retry_after: Hint },
    /// The chosen backend refused the connection and no other could take it.
    UpstreamUnavailable { retry_after: Hint },
    /// The request body exceeds `routing.max_body_bytes`.
    BodyTooLarge { limit: usize },
    /// The gateway queue is full (and nothing could be displaced).
    QueueFull { retry_after: Hint },
    /// The predicted queue wait exceeds the request's wait budget.
    DeadlineUnmeetable { retry_after: Hint },
    /// The request waited its whole budget in the queue.
    QueueTimeout { retry_after: Hint },
    /// Pushed out of a full queue by a request of higher priority, or
    /// dropped as stale during sustained overload.
    Displaced { retry_after: Hint },
    /// This API key already holds its share of the queue.
    TenantShare { retry_after: Hint },
    /// Over the key's request rate.
    RateLimited {
        retry_after: Hint,
        limit: u32,
        remaining: u32,
        reset: u32,
    },
    /// Over the key's tokens-per-minute budget.
    TokenBudget {
        retry_after: Hint,
        limit: u64,
        remaining: u64,
        reset: u32,
    },
    /// No known API key while keys are required.
    Unauthorized,
    /// A request header the gateway reads has an unusable value.
    BadHeader { name: &'static str, why: String },
    /// `server.max_clients` requests are open already.
    TooManyClients,
    /// The backend sent nothing for `routing.read_timeout`.
    UpstreamTimeout,
    /// The backend failed while answering (a reset or broken response)
    /// before any of its response reached the client.
    UpstreamError,
    /// The connection was refused at accept: too many open in total or
    /// from this client address (`server.max_connections*`).
    TooManyConnections { per_client: bool },
    /// Not a route the gateway serves (llama-server internals such as
    /// `/slots` unless `routing.open_routes` names them).
    RouteNotServed,
    /// The client did not send its request body in time
    /// (`server.body_grace`, `server.min_body_rate`).
    BodyTimeout,
    /// `routing.max_passthrough` cheap requests are open already.
    PassthroughBusy,
    /// An inference request body that is not valid JSON.
    BadBody { why: String },
    /// The request names a model no backend of a multi-model fleet serves;
    /// `models` are those it does.
    ModelNotFound { models: Vec<String> },
    /// The model is served by a llama-server router that has not loaded
    /// it, and `routing.unloaded_model = "refuse"`: no backend was asked.
    ModelNotLoaded { retry_after: Hint },
}

impl Reject {
    pub fn status(&self) -> u16 {
        match self {
            Reject::Saturated { .. }
            | Reject::NoHealthyBackend { .. }
            | Reject::UpstreamUnavailable { .. }
            | Reject::QueueFull { .. }
            | Reject::DeadlineUnmeetable { .. }
            | Reject::QueueTimeout { .. }
            | Reject::Displaced { .. }
            | Reject::TenantShare { .. }
            | Reject::TooManyClients
            | Reject::TooManyConnections { .. }
            | Reject::PassthroughBusy
            | Reject::ModelNotLoaded { .. } => 503,
            Reject::RouteNotServed | Reject::ModelNotFound { .. } => 404,
            Reject::BodyTimeout => 408,
            Reject::BodyTooLarge { .. } => 413,
            Reject::RateLimited { .. } | Reject::TokenBudget { .. } => 429,
            Reject::Unauthorized => 401,
            Reject::UpstreamTimeout => 504,
            Reject::UpstreamError => 502,
            Reject::BadHeader { .. } | Reject::BadBody { .. } => 400,
        }
    }

    /// The short machine-readable reason (`x-sluice-reason`, metrics label).
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::Saturated { .. } => "fleet_saturated",
            Reject::NoHealthyBackend { .. } => "no_healthy_backend",
            Reject::UpstreamUnavailable { .. } => "upstream_unavailable",
            Reject::BodyTooLarge { .. } => "body_too_large",
            Reject::QueueFull { .. } => "queue_full",
            Reject::DeadlineUnmeetable { .. } => "deadline_unmeetable",
            Reject::QueueTimeout { .. } => "queue_timeout",
            Reject::Displaced { .. } => "displaced",
            Reject::TenantShare { .. } => "tenant_share",
            Reject::RateLimited { .. } => "rate_limited",
            Reject::TokenBudget { .. } => "token_budget",
            Reject::Unauthorized => "unauthorized",
            Reject::BadHeader { .. } => "bad_header",
            Reject::TooManyClients => "too_many_clients",
            Reject::UpstreamTimeout => "upstream_timeout",
            Reject::UpstreamError => "upstream_error",
            Reject::RouteNotServed => "route_not_served",
            Reject::BodyTimeout => "body_timeout",
            Reject::PassthroughBusy => "passthrough_busy",
            Reject::BadBody { .. } => "invalid_json",
            Reject::ModelNotFound { .. } => "model_not_found",
            Reject::ModelNotLoaded { .. } => "model_not_loaded",
            Reject::TooManyConnections { per_client: false } => "too_many_connections",
            Reject::TooManyConnections { per_client: true } => "too_many_client_connections",
        }
    }

    /// Seconds the client should wait, for statuses where retrying helps
    /// (`Retry-After`: [`Reject::hint`] rounded up).
    pub fn retry_after(&self) -> Option<u32> {
        self.hint().map(Hint::secs_rounded_up)
    }

    /// When the client should come back, for statuses where retrying helps.
    pub fn hint(&self) -> Option<Hint> {
        match self {
            Reject::Saturated { retry_after }
            | Reject::ModelNotLoaded { retry_after }
            | Reject::NoHealthyBackend { retry_after }
            | Reject::UpstreamUnavailable { retry_after }
            | Reject::QueueFull { retry_after }
            | Reject::DeadlineUnmeetable { retry_after }
            | Reject::QueueTimeout { retry_after }
            | Reject::Displaced { retry_after }
            | Reject::TenantShare { retry_after }
            | Reject::RateLimited { retry_after, .. }
            | Reject::TokenBudget { retry_after, .. } => Some(*retry_after),
            Reject::TooManyClients
            | Reject::TooManyConnections { .. }
            | Reject::PassthroughBusy => Some(Hint::secs(1)),
            Reject::BodyTooLarge { .. }
            | Reject::Unauthorized
            | Reject::BadHeader { .. }
            | Reject::UpstreamTimeout
            | Reject::UpstreamError
            | Reject::RouteNotServed
            | Reject::BodyTimeout
            | Reject::BadBody { .. }
            | Reject::ModelNotFound { .. } => None,
        }
    }

    fn error_type(&self) -> &'static str {
        match self.status() {
            400 | 404 | 408 | 413 => "invalid_request_error",
            401 => "authentication_error",
            429 => "rate_limit_error",
            502 => "server_error",
            504 => "timeout_error",
            _ => "unavailable_error",
        }
    }

    fn message(&self) -> String {
        let retry = self
            .retry_after()
            .map(|s| format!(" Retry after {s} s."))
            .unwrap_or_default();
        match self {
            Reject::Saturated { .. } => {
                format!("All backends are busy; the request was not queued.{retry}")
            }
            Reject::NoHealthyBackend { .. } => {
                format!("No backend is healthy right now.{retry}")
            }
            Reject::UpstreamUnavailable { .. } => {
                format!(
                    "The backend could not be reached and no other could take the request.{retry}"
                )
            }
            Reject::BodyTooLarge { limit } => {
                format!("The request body is larger than the gateway's limit of {limit} bytes.")
            }
            Reject::QueueFull { .. } => {
                format!("All backends are busy and the gateway queue is full.{retry}")
            }
            Reject::DeadlineUnmeetable { .. } => format!(
                "All backends are busy and the expected wait is longer than this request may wait.{retry}"
            ),
            Reject::QueueTimeout { .. } => {
                format!("The request waited its whole wait budget for a free backend.{retry}")
            }
            Reject::Displaced { .. } => format!(
                "The request was removed from the gateway queue to serve more urgent or fresher work.{retry}"
            ),
            Reject::TenantShare { .. } => {
                format!("This API key already holds its share of the gateway queue.{retry}")
            }
            Reject::RateLimited { limit, .. } => {
                format!("Rate limit of {limit} requests per minute exceeded.{retry}")
            }
            Reject::TokenBudget { limit, .. } => {
                format!("Token budget of {limit} tokens per minute exceeded.{retry}")
            }
            Reject::Unauthorized => {
                "A valid API key is required (Authorization: Bearer <key>).".to_string()
            }
            Reject::BadHeader { name, why } => format!("Header {name} is not valid: {why}"),
            Reject::TooManyClients => {
                format!("The gateway has too many open requests.{retry}")
            }
            Reject::UpstreamTimeout => {
                "The backend did not answer within the gateway's read timeout.".to_string()
            }
            Reject::UpstreamError => "The backend failed while answering the request.".to_string(),
            Reject::RouteNotServed => {
                "This route is not served through the gateway.".to_string()
            }
            Reject::BodyTimeout => {
                "The request body did not arrive in time (too slow or stalled).".to_string()
            }
            Reject::PassthroughBusy => {
                format!("Too many non-inference requests are open at the gateway.{retry}")
            }
            Reject::BadBody { why } => format!("The request body is not valid JSON: {why}"),
            Reject::ModelNotLoaded { .. } => format!(
                "The model is not loaded on any backend, and none loads it on demand for \
                 this request.{retry}"
            ),
            Reject::ModelNotFound { models } => format!(
                "The model does not exist on this gateway. Models served: {}.",
                models.join(", ")
            ),
            Reject::TooManyConnections { per_client: false } => {
                format!("The gateway has too many open connections.{retry}")
            }
            Reject::TooManyConnections { per_client: true } => {
                format!("Too many open connections from this client address.{retry}")
            }
        }
    }

    /// The JSON error body.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "error": {
                "code": match self {
                    // OpenAI's own code for it, which SDKs surface.
                    Reject::ModelNotFound { .. } => serde_json::json!("model_not_found"),
                    _ => serde_json::json!(self.status()),
                },
                "type": self.error_type(),
                "message": self.message(),
            }
        });
        Bytes::from(body.to_string())
    }

    /// The response head for [`Reject::body`].
    pub fn header(&self, body_len: usize) -> ResponseHeader {
        let mut h = ResponseHeader::build(self.status(), Some(6)).expect("valid status");
        let _ = h.insert_header("content-type", "application/json");
        let _ = h.insert_header("content-length", body_len.to_string());
        let _ = h.insert_header("x-sluice-reason", self.reason());
        if let Some(hint) = self.hint() {
            let _ = h.insert_header("retry-after", hint.secs_rounded_up().to_string());
            let _ = h.insert_header("retry-after-ms", hint.millis().to_string());
            let _ = h.insert_header("x-should-retry", hint.retry().to_string());
        }
        if let Reject::RateLimited {
            limit,
            remaining,
            reset,
            ..
        } = self
        {
            let _ = h.insert_header("x-ratelimit-limit", limit.to_string());
            let _ = h.insert_header("x-ratelimit-remaining", remaining.to_string());
            let _ = h.insert_header("x-ratelimit-reset", reset.to_string());
        }
        if let Reject::TokenBudget {
            limit,
            remaining,
            reset,
            ..
        } = self
        {
            let _ = h.insert_header("x-ratelimit-limit-tokens", limit.to_string());
            let _ = h.insert_header("x-ratelimit-remaining-tokens", remaining.to_string());
            let _ = h.insert_header("x-ratelimit-reset-tokens", reset.to_string());
        }
        if self.status() == 401 {
            let _ = h.insert_header("www-authenticate", "Bearer");
        }
        h
    }

    /// The whole response as HTTP/1.1 bytes with `Connection: close`, for
    /// refusals made before pingora reads the request (connection caps).
    pub fn http1_bytes(&self) -> Bytes {
        let body = self.body();
        let mut h = self.header(body.len());
        let _ = h.insert_header("connection", "close");
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            self.status(),
            h.status.canonical_reason().unwrap_or("")
        );
        for (name, value) in h.headers.iter() {
            out.push_str(name.as_str());
            out.push_str(": ");
            out.push_str(value.to_str().unwrap_or(""));
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&body);
        Bytes::from(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_refusal_is_a_complete_http1_response() {
        let r = Reject::TooManyConnections { per_client: true };
        let raw = r.http1_bytes();
        let text = std::str::from_utf8(&raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("retry-after: 1"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(head.contains("x-sluice-reason: too_many_client_connections"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], 503);
    }

    #[test]
    fn saturation_is_a_soft_503_with_retry_after_and_openai_body() {
        let r = Reject::Saturated {
            retry_after: Hint::secs(0),
        };
        let body = r.body();
        let h = r.header(body.len());
        assert_eq!(h.status.as_u16(), 503);
        assert_eq!(h.headers["retry-after"], "1");
        assert_eq!(h.headers["x-sluice-reason"], "fleet_saturated");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], 503);
        assert_eq!(v["error"]["type"], "unavailable_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Retry after 1 s"));
    }

    #[test]
    fn rate_limited_is_429_with_ratelimit_headers() {
        let r = Reject::RateLimited {
            retry_after: Hint::secs(3),
            limit: 60,
            remaining: 0,
            reset: 10,
        };
        let h = r.header(0);
        assert_eq!(h.status.as_u16(), 429);
        assert_eq!(h.headers["retry-after"], "3");
        assert_eq!(h.headers["x-ratelimit-limit"], "60");
        assert_eq!(h.headers["x-ratelimit-remaining"], "0");
        let v: serde_json::Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn every_overload_rejection_carries_retry_after() {
        for r in [
            Reject::QueueFull {
                retry_after: Hint::secs(2),
            },
            Reject::DeadlineUnmeetable {
                retry_after: Hint::secs(2),
            },
            Reject::QueueTimeout {
                retry_after: Hint::secs(2),
            },
            Reject::Displaced {
                retry_after: Hint::secs(2),
            },
            Reject::TenantShare {
                retry_after: Hint::secs(2),
            },
        ] {
            let h = r.header(0);
            assert_eq!(h.status.as_u16(), 503, "{r:?}");
            assert_eq!(h.headers["retry-after"], "2", "{r:?}");
            assert_eq!(h.headers["x-sluice-reason"], r.reason());
        }
    }

    #[test]
    fn every_hint_goes_out_in_seconds_milliseconds_and_whether_to_retry() {
        let r = Reject::QueueFull {
            retry_after: Hint::from_millis(1250, true),
        };
        let h = r.header(0);
        assert_eq!(h.headers["retry-after"], "2");
        assert_eq!(h.headers["retry-after-ms"], "1250");
        assert_eq!(h.headers["x-should-retry"], "true");
        let r = Reject::Saturated {
            retry_after: Hint::from_millis(999, true).no_retry(),
        };
        let h = r.header(0);
        assert_eq!(h.headers["retry-after"], "1");
        assert_eq!(h.headers["retry-after-ms"], "999");
        assert_eq!(h.headers["x-should-retry"], "false");
        let h = Reject::TooManyClients.header(0);
        assert_eq!(h.headers["retry-after-ms"], "1000");
        // No hint, no retry headers (the SDK's own rules apply).
        let h = Reject::BodyTooLarge { limit: 1 }.header(0);
        assert!(h.headers.get("retry-after-ms").is_none());
        assert!(h.headers.get("x-should-retry").is_none());
        assert_eq!(Hint::secs(0).millis(), 1000);
        assert_eq!(Hint::from_millis(0, true).secs_rounded_up(), 1);
    }

    #[test]
    fn upstream_error_is_a_502_with_openai_body() {
        let r = Reject::UpstreamError;
        let h = r.header(0);
        assert_eq!(h.status.as_u16(), 502);
        assert!(h.headers.get("retry-after").is_none());
        assert_eq!(h.headers["x-sluice-reason"], "upstream_error");
        let v: serde_json::Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(v["error"]["code"], 502);
        assert_eq!(v["error"]["type"], "server_error");
    }

    #[test]
    fn body_too_large_has_no_retry_after() {
        let r = Reject::BodyTooLarge { limit: 10 };
        let h = r.header(0);
        assert_eq!(h.status.as_u16(), 413);
        assert!(h.headers.get("retry-after").is_none());
    }
}
