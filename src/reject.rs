//! Every way the gateway refuses a request, mapped to a response in one place.
//!
//! A rejection is a typed value; [`Reject::response`] turns it into the status,
//! the headers (`Retry-After` in whole seconds, at least 1; `x-sluice-reason`;
//! rate-limit headers) and an OpenAI-shaped JSON error body, so OpenAI clients
//! surface the message. The proxy never writes a status code inline.

use bytes::Bytes;
use pingora::http::ResponseHeader;

/// Why the gateway did not forward a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Every healthy backend is full or overloaded.
    Saturated { retry_after: u32 },
    /// No backend is healthy and fresh.
    NoHealthyBackend { retry_after: u32 },
    /// The chosen backend refused the connection and no other could take it.
    UpstreamUnavailable { retry_after: u32 },
    /// The request body exceeds `routing.max_body_bytes`.
    BodyTooLarge { limit: usize },
}

impl Reject {
    pub fn status(&self) -> u16 {
        match self {
            Reject::Saturated { .. }
            | Reject::NoHealthyBackend { .. }
            | Reject::UpstreamUnavailable { .. } => 503,
            Reject::BodyTooLarge { .. } => 413,
        }
    }

    /// The short machine-readable reason (`x-sluice-reason`, metrics label).
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::Saturated { .. } => "fleet_saturated",
            Reject::NoHealthyBackend { .. } => "no_healthy_backend",
            Reject::UpstreamUnavailable { .. } => "upstream_unavailable",
            Reject::BodyTooLarge { .. } => "body_too_large",
        }
    }

    /// Seconds the client should wait, for statuses where retrying helps.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Reject::Saturated { retry_after }
            | Reject::NoHealthyBackend { retry_after }
            | Reject::UpstreamUnavailable { retry_after } => Some((*retry_after).max(1)),
            Reject::BodyTooLarge { .. } => None,
        }
    }

    fn error_type(&self) -> &'static str {
        match self.status() {
            413 => "invalid_request_error",
            429 => "rate_limit_error",
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
        }
    }

    /// The JSON error body.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "error": {
                "code": self.status(),
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
        if let Some(s) = self.retry_after() {
            let _ = h.insert_header("retry-after", s.to_string());
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturation_is_a_soft_503_with_retry_after_and_openai_body() {
        let r = Reject::Saturated { retry_after: 0 };
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
    fn body_too_large_has_no_retry_after() {
        let r = Reject::BodyTooLarge { limit: 10 };
        let h = r.header(0);
        assert_eq!(h.status.as_u16(), 413);
        assert!(h.headers.get("retry-after").is_none());
    }
}
