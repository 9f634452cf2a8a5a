//! Which llama-server routes the gateway serves, and how: an allowlist.
//!
//! llama-server serves more than its public API: `/slots` shows every slot's
//! prompt (other users' conversations), slot save/restore writes files on
//! the backend, `/lora-adapters` and `POST /props` change the server for
//! everyone, `/models/load` loads models, and its own `/metrics` readings
//! are reset by every reader. Through an edge gateway only the public
//! inference API passes by default; the operator opens the rest by name
//! (`routing.open_routes`).

use http::Method;

/// How a request is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Runs the model: takes a slot through admission.
    Inference,
    /// Cheap (reads, tokenizer helpers): a small pool of its own, no slot.
    Passthrough,
    /// Not served through the gateway (404).
    Refused,
}

/// POST routes that run the model.
const INFERENCE: &[&str] = &[
    "/completion",
    "/completions",
    "/chat/completions",
    "/infill",
    "/embedding",
    "/embeddings",
    "/rerank",
    "/reranking",
];

/// Cheap helpers: POST, but no slot.
const HELPERS: &[&str] = &["/tokenize", "/detokenize", "/apply-template"];

/// Read-only routes (GET / HEAD).
const READS: &[&str] = &["/health", "/props", "/models"];

/// `/v1/*` paths that are cheap reads or helpers rather than inference.
const V1_CHEAP: &[&str] = &["/v1/models", "/v1/health", "/v1/messages/count_tokens"];

/// The allowlist with the operator's additions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// Extra paths served as passthrough (any method, no slot, the small
    /// passthrough pool): exact (`/slots`) or a prefix ending in `*`.
    open: Vec<String>,
}

impl Routes {
    /// `open` entries must start with `/`; the message names the bad one.
    pub fn new(open: Vec<String>) -> Result<Routes, String> {
        if let Some(bad) = open.iter().find(|p| !p.starts_with('/')) {
            return Err(format!("{bad:?} must be a path starting with \"/\""));
        }
        Ok(Routes { open })
    }

    fn opened(&self, path: &str) -> bool {
        self.open.iter().any(|o| match o.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => o == path,
        })
    }

    pub fn classify(&self, method: &Method, path: &str) -> Route {
        let read = method == Method::GET || method == Method::HEAD;
        let post = method == Method::POST;
        if post && INFERENCE.contains(&path) {
            return Route::Inference;
        }
        if let Some(rest) = path.strip_prefix("/v1/") {
            if V1_CHEAP.contains(&path) || rest.is_empty() {
                return Route::Passthrough;
            }
            // The OpenAI-compatible API: every POST runs the model.
            return if post {
                Route::Inference
            } else {
                Route::Passthrough
            };
        }
        if (post && HELPERS.contains(&path)) || (read && READS.contains(&path)) {
            return Route::Passthrough;
        }
        if self.opened(path) {
            return Route::Passthrough;
        }
        Route::Refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_api_passes_and_the_rest_is_refused() {
        let r = Routes::default();
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(r.classify(&post, "/v1/chat/completions"), Route::Inference);
        assert_eq!(r.classify(&post, "/v1/completions"), Route::Inference);
        assert_eq!(r.classify(&post, "/v1/embeddings"), Route::Inference);
        assert_eq!(r.classify(&post, "/completion"), Route::Inference);
        assert_eq!(r.classify(&post, "/infill"), Route::Inference);
        assert_eq!(r.classify(&post, "/rerank"), Route::Inference);
        assert_eq!(r.classify(&post, "/tokenize"), Route::Passthrough);
        assert_eq!(r.classify(&post, "/apply-template"), Route::Passthrough);
        assert_eq!(r.classify(&get, "/v1/models"), Route::Passthrough);
        assert_eq!(r.classify(&get, "/health"), Route::Passthrough);
        assert_eq!(r.classify(&get, "/props"), Route::Passthrough);
        for (m, p) in [
            (&get, "/slots"),
            (&post, "/slots/0"),
            (&get, "/metrics"),
            (&get, "/lora-adapters"),
            (&post, "/lora-adapters"),
            (&post, "/props"),
            (&post, "/models/load"),
            (&get, "/"),
            (&get, "/index.html"),
            (&post, "/health"),
        ] {
            assert_eq!(r.classify(m, p), Route::Refused, "{m} {p}");
        }
    }

    #[test]
    fn the_operator_opens_routes_by_name_or_prefix() {
        let r = Routes::new(vec!["/slots".into(), "/slots/*".into(), "/metrics".into()]).unwrap();
        assert_eq!(r.classify(&Method::GET, "/slots"), Route::Passthrough);
        assert_eq!(r.classify(&Method::POST, "/slots/0"), Route::Passthrough);
        assert_eq!(r.classify(&Method::GET, "/metrics"), Route::Passthrough);
        assert_eq!(r.classify(&Method::GET, "/lora-adapters"), Route::Refused);
        assert!(Routes::new(vec!["slots".into()]).is_err());
    }
}
