//! What one request says about itself, read once in `request_filter` from the
//! request head and the client address.
//!
//! Every later phase reads these fields instead of the headers: the
//! content-length used to be parsed three times (size check, token estimate,
//! body read), the bearer token and the wait budget in their own places.
//! Parsing never fails here; a header the gateway cannot use is kept as the
//! [`Reject`] it will answer with, so that only inference requests (the ones
//! that read it) are refused for it.

use std::net::IpAddr;
use std::time::Duration;

use http::header::{HeaderName, AUTHORIZATION, CONTENT_LENGTH};
use pingora::http::RequestHeader;

use crate::admission::gate::{parse_client, parse_priority, wait_budget, ClientHeaders};
use crate::admission::headers::{DEADLINE, JS_TIMEOUT, PRIORITY, PY_TIMEOUT, RETRY_COUNT};
use crate::admission::queue::Priority;
use crate::edge::TrustedProxies;
use crate::reject::Reject;

// The headers read, named once: a lookup by `&str` parses the name every
// time (1.6 k of `request_filter`'s 16 k instructions per request,
// loadtest/RESULTS.md, "Instructions per request").
const PY_TIMEOUT_H: HeaderName = HeaderName::from_static(PY_TIMEOUT);
const JS_TIMEOUT_H: HeaderName = HeaderName::from_static(JS_TIMEOUT);
const RETRY_COUNT_H: HeaderName = HeaderName::from_static(RETRY_COUNT);
const DEADLINE_H: HeaderName = HeaderName::from_static(DEADLINE);
const PRIORITY_H: HeaderName = HeaderName::from_static(PRIORITY);
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Requests that occupy a slot and go through admission, or cheap reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Inference,
    Passthrough,
}

impl Class {
    /// The `class` label of the request metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Inference => "inference",
            Class::Passthrough => "passthrough",
        }
    }
}

/// POSTs run the model, except a few cheap helpers that never take a slot.
pub fn classify(method: &http::Method, path: &str) -> Class {
    const CHEAP: &[&str] = &["/tokenize", "/detokenize", "/apply-template"];
    if method == http::Method::POST && !CHEAP.contains(&path) {
        Class::Inference
    } else {
        Class::Passthrough
    }
}

/// The wait budget the gate allows: used when the header is absent, and the
/// cap on what it may ask; `service`: what a declared client timeout loses
/// to the request itself.
#[derive(Debug, Clone, Copy)]
pub struct WaitLimits {
    pub default: Duration,
    pub max: Duration,
    pub service: Duration,
}

/// The facts of one request.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    /// The client's `x-request-id` if usable, else a fresh random one.
    pub request_id: String,
    pub class: Class,
    /// `content-length`, if present and a number.
    pub content_length: Option<u64>,
    /// A `transfer-encoding` header is present (the length is not known).
    pub chunked: bool,
    /// The key from `Authorization: Bearer <key>`.
    pub bearer: Option<String>,
    /// The client: the TCP peer, or behind a trusted proxy the address
    /// `X-Forwarded-For` names (see [`TrustedProxies::client`]).
    pub client_ip: Option<IpAddr>,
    /// The TCP peer.
    pub peer_ip: Option<IpAddr>,
    /// The `X-Forwarded-For` chain, kept only from a trusted peer; the
    /// upstream gets it with the peer appended (else the peer alone).
    pub forwarded_for: Option<String>,
    /// How long the request may wait for a backend: `x-sluice-deadline`,
    /// else the SDK's declared timeout less the service time, else the
    /// default (`admission::headers::wait_budget`).
    pub wait: Result<Duration, Reject>,
    /// `wait` is the default: the request named no deadline and its client
    /// declared no timeout.
    pub default_wait: bool,
    /// What an OpenAI SDK says of its timeout and attempts.
    pub client: Result<ClientHeaders, Reject>,
    /// `x-sluice-priority`.
    pub priority: Result<Priority, Reject>,
}

impl RequestFacts {
    /// Before `request_filter` has read the head (for a context that ends
    /// earlier): no id, passthrough, defaults.
    pub fn unread() -> Self {
        RequestFacts {
            request_id: String::new(),
            class: Class::Passthrough,
            content_length: None,
            chunked: false,
            bearer: None,
            client_ip: None,
            peer_ip: None,
            forwarded_for: None,
            wait: Ok(Duration::ZERO),
            default_wait: false,
            client: Ok(ClientHeaders::default()),
            priority: Ok(Priority::Normal),
        }
    }

    /// Reads the head of a request from `peer`; `trusted` decides whether
    /// its `X-Forwarded-For` names the client.
    pub fn parse(
        req: &RequestHeader,
        peer: Option<IpAddr>,
        limits: WaitLimits,
        trusted: &TrustedProxies,
    ) -> Self {
        let header = |n: &HeaderName| req.headers.get(n).and_then(|v| v.to_str().ok());
        let forwarded_for = peer
            .filter(|p| trusted.contains(*p))
            .and_then(|_| forwarded_chain(req));
        let client_ip = peer.map(|p| trusted.client(p, forwarded_for.as_deref()));
        let client = parse_client(
            header(&PY_TIMEOUT_H),
            header(&JS_TIMEOUT_H),
            header(&RETRY_COUNT_H),
        );
        let patience = client.as_ref().ok().and_then(|c| c.patience);
        let default_wait = header(&DEADLINE_H).is_none() && patience.is_none();
        let wait = wait_budget(
            header(&DEADLINE_H),
            patience,
            limits.service,
            limits.default,
            limits.max,
        );
        RequestFacts {
            request_id: request_id(header(&REQUEST_ID)),
            class: classify(&req.method, req.uri.path()),
            content_length: header(&CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()),
            chunked: req.headers.get(http::header::TRANSFER_ENCODING).is_some(),
            bearer: bearer(header(&AUTHORIZATION)),
            client_ip,
            peer_ip: peer,
            forwarded_for,
            wait,
            default_wait,
            client,
            priority: parse_priority(header(&PRIORITY_H)),
        }
    }

    /// Tokens charged to the key's budget on admission: the prompt ≈ body
    /// bytes / 4 (JSON overhead makes this generous) plus a typical
    /// completion; settled from `usage` when the response ends.
    pub fn estimated_tokens(&self, completion_estimate: u64) -> u64 {
        self.content_length.unwrap_or(0) / 4 + completion_estimate
    }

    /// The declared body is over `limit` bytes (chunked bodies are counted
    /// as they arrive instead).
    pub fn too_large(&self, limit: usize) -> bool {
        self.content_length.is_some_and(|n| n > limit as u64)
    }
}

/// The token of `Authorization: Bearer <token>` (`Bearer` or `bearer`),
/// trimmed; an empty one is none.
fn bearer(value: Option<&str>) -> Option<String> {
    value
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// Every `X-Forwarded-For` line, joined in order (a chain may be split
/// over several); none when absent or not text, or absurdly long.
fn forwarded_chain(req: &RequestHeader) -> Option<String> {
    /// Longer chains are not believed (a proxy chain is a few hops).
    const MAX_CHAIN: usize = 4096;
    let mut out = String::new();
    for v in req.headers.get_all(&FORWARDED_FOR) {
        let v = v.to_str().ok()?.trim();
        if v.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(v);
        if out.len() > MAX_CHAIN {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The client's id when it is short printable ASCII, else a random one.
fn request_id(given: Option<&str>) -> String {
    given
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| hex::encode(rand::random::<u128>().to_be_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: WaitLimits = WaitLimits {
        default: Duration::from_secs(2),
        max: Duration::from_secs(60),
        service: Duration::from_secs(1),
    };

    fn facts(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestFacts {
        let mut req = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        RequestFacts::parse(&req, None, LIMITS, &TrustedProxies::default())
    }

    fn from_peer(peer: &str, trusted: &[&str], xff: &[&str]) -> RequestFacts {
        let mut req = RequestHeader::build("POST", b"/completion", None).unwrap();
        for v in xff {
            req.append_header("x-forwarded-for", *v).unwrap();
        }
        let t = TrustedProxies::parse(trusted.iter().copied()).unwrap();
        RequestFacts::parse(&req, Some(peer.parse().unwrap()), LIMITS, &t)
    }

    #[test]
    fn forwarded_for_names_the_client_only_from_a_trusted_peer() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // Untrusted peer: the forged header is neither believed nor kept.
        let f = from_peer("127.0.0.1", &[], &["6.6.6.6"]);
        assert_eq!(f.client_ip, ip("127.0.0.1"));
        assert_eq!(f.forwarded_for, None);
        // Trusted peer: the right-most untrusted hop, over several lines.
        let f = from_peer(
            "127.0.0.1",
            &["127.0.0.0/8", "10.0.0.0/8"],
            &["6.6.6.6, 198.51.100.4", "10.0.0.2"],
        );
        assert_eq!(f.client_ip, ip("198.51.100.4"));
        assert_eq!(f.peer_ip, ip("127.0.0.1"));
        assert_eq!(
            f.forwarded_for.as_deref(),
            Some("6.6.6.6, 198.51.100.4, 10.0.0.2")
        );
        // Trusted, no header: the peer.
        let f = from_peer("127.0.0.1", &["127.0.0.1"], &[]);
        assert_eq!(f.client_ip, ip("127.0.0.1"));
        // An absurd chain is not believed.
        let long = "1.2.3.4, ".repeat(1000);
        let f = from_peer("127.0.0.1", &["127.0.0.1"], &[&long]);
        assert_eq!((f.client_ip, f.forwarded_for), (ip("127.0.0.1"), None));
    }

    proptest::proptest! {
        #[test]
        fn prop_any_head_parses_without_panic(
            auth in proptest::prelude::any::<String>(),
            xff in proptest::prelude::any::<String>(),
            id in proptest::prelude::any::<String>(),
            deadline in proptest::prelude::any::<String>(),
            priority in proptest::prelude::any::<String>(),
        ) {
            let mut req = RequestHeader::build("POST", b"/completion", None).unwrap();
            for (k, v) in [
                ("authorization", &auth),
                ("x-forwarded-for", &xff),
                ("x-request-id", &id),
                ("x-sluice-deadline", &deadline),
                ("x-sluice-priority", &priority),
            ] {
                // Only values HTTP can carry reach us.
                if let Ok(v) = http::HeaderValue::from_str(v) {
                    req.append_header(k, v).unwrap();
                }
            }
            let t = TrustedProxies::parse(["0.0.0.0/0", "::/0"]).unwrap();
            let f = RequestFacts::parse(&req, Some("127.0.0.1".parse().unwrap()), LIMITS, &t);
            proptest::prop_assert!(f.client_ip.is_some());
            if let Some(b) = &f.bearer {
                proptest::prop_assert!(!b.is_empty() && b.trim() == b);
            }
            proptest::prop_assert!(!f.request_id.is_empty() && f.request_id.len() <= 128);
            proptest::prop_assert!(f.request_id.bytes().all(|b| b.is_ascii_graphic()));
            if let Ok(w) = f.wait {
                proptest::prop_assert!(w <= LIMITS.max);
            }
        }

        #[test]
        fn prop_bearer_never_panics(v in proptest::prelude::any::<String>()) {
            let _ = bearer(Some(&v));
            let _ = request_id(Some(&v));
        }
    }

    #[test]
    fn posts_are_inference_except_cheap_helpers() {
        assert_eq!(
            classify(&http::Method::POST, "/v1/chat/completions"),
            Class::Inference
        );
        assert_eq!(
            classify(&http::Method::POST, "/completion"),
            Class::Inference
        );
        assert_eq!(
            classify(&http::Method::POST, "/tokenize"),
            Class::Passthrough
        );
        assert_eq!(
            classify(&http::Method::GET, "/v1/models"),
            Class::Passthrough
        );
        assert_eq!(
            facts("POST", "/v1/completions", &[]).class,
            Class::Inference
        );
    }

    #[test]
    fn content_length_missing_invalid_or_huge() {
        let f = facts("POST", "/completion", &[]);
        assert_eq!(f.content_length, None);
        assert!(!f.too_large(10));
        assert_eq!(f.estimated_tokens(100), 100);

        let f = facts("POST", "/completion", &[("content-length", "ten")]);
        assert_eq!(f.content_length, None);
        assert!(!f.too_large(10));

        let f = facts("POST", "/completion", &[("content-length", "400")]);
        assert_eq!(f.content_length, Some(400));
        assert_eq!(f.estimated_tokens(100), 200);
        assert!(f.too_large(399) && !f.too_large(400));

        let huge = u64::MAX.to_string();
        let f = facts("POST", "/completion", &[("content-length", &huge)]);
        assert!(f.too_large(usize::MAX >> 1));
        assert_eq!(f.estimated_tokens(0), u64::MAX / 4);

        let f = facts("POST", "/completion", &[("transfer-encoding", "chunked")]);
        assert!(f.chunked && f.content_length.is_none());
    }

    #[test]
    fn bearer_variants() {
        let bearer = |v: &str| facts("POST", "/", &[("authorization", v)]).bearer;
        assert_eq!(bearer("Bearer k1"), Some("k1".into()));
        assert_eq!(bearer("bearer  k2 "), Some("k2".into()));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("BEARER k3"), None);
        assert_eq!(bearer("Bearer "), None, "an empty token is none");
        assert_eq!(bearer("Bearer    "), None);
        assert_eq!(facts("POST", "/", &[]).bearer, None);
    }

    #[test]
    fn request_id_kept_only_when_usable() {
        let id = |v: &str| facts("GET", "/", &[("x-request-id", v)]).request_id;
        assert_eq!(id("abc-123"), "abc-123");
        let long = "a".repeat(129);
        for bad in ["", "has space", long.as_str()] {
            let got = id(bad);
            assert_eq!(got.len(), 32, "{bad:?}");
            assert!(got.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_eq!(id(&"a".repeat(128)), "a".repeat(128));
        assert_ne!(
            facts("GET", "/", &[]).request_id,
            facts("GET", "/", &[]).request_id
        );
    }

    #[test]
    fn wait_and_priority_headers_are_parsed_once_and_kept() {
        let f = facts("POST", "/", &[]);
        assert_eq!(f.wait, Ok(LIMITS.default));
        assert_eq!(f.priority, Ok(Priority::Normal));
        let f = facts(
            "POST",
            "/",
            &[
                ("x-sluice-deadline", "500ms"),
                ("x-sluice-priority", "critical"),
            ],
        );
        assert_eq!(f.wait, Ok(Duration::from_millis(500)));
        assert_eq!(f.priority, Ok(Priority::Critical));
        let f = facts(
            "POST",
            "/",
            &[("x-sluice-deadline", "soon"), ("x-sluice-priority", "vip")],
        );
        assert!(matches!(
            f.wait,
            Err(Reject::BadHeader {
                name: "x-sluice-deadline",
                ..
            })
        ));
        assert!(matches!(
            f.priority,
            Err(Reject::BadHeader {
                name: "x-sluice-priority",
                ..
            })
        ));
    }
}
