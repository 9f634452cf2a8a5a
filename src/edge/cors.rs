//! CORS: the gateway, not the backend, decides which browser origins may
//! read its answers.
//!
//! llama-server echoes any request's `Origin` in
//! `Access-Control-Allow-Origin` (and answers preflights with credentials
//! allowed and every header): any web page a user visits could drive the
//! fleet with the user's network position and read the answers. So every
//! `access-control-*` header from a backend is dropped ([`is_cors_header`]),
//! and the gateway adds its own for origins in `[server] cors_origins` only
//! (none by default: no CORS headers at all). Preflights (`OPTIONS` with
//! `Origin` and `Access-Control-Request-Method`) are answered by the gateway
//! itself with 204, before any key check (browsers send them without
//! credentials), with the grant for an allowed origin and none otherwise.
//!
//! Pure: header values in, header lists out.

use http::{HeaderMap, Method};

/// Methods a cross-origin caller may use.
pub const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// Request headers a cross-origin caller may send.
pub const ALLOW_HEADERS: &str = "Authorization, Content-Type, x-sluice-deadline, x-sluice-priority";
/// Response headers a cross-origin caller may read beyond the safelisted ones.
pub const EXPOSE_HEADERS: &str = "Retry-After, x-request-id, x-sluice-reason";
/// How long a browser may cache a preflight answer, in seconds.
pub const MAX_AGE: &str = "600";

/// The configured allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsParams {
    /// Allowed origins, lower case, as browsers send them
    /// (`scheme://host[:port]`).
    pub origins: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` to allowed origins.
    pub allow_credentials: bool,
}

/// Headers to add to an answer, in order.
pub type Headers = Vec<(&'static str, String)>;

/// A header a backend must not set toward clients.
pub fn is_cors_header(name: &str) -> bool {
    name.len() >= 15 && name.as_bytes()[..15].eq_ignore_ascii_case(b"access-control-")
}

/// A CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(http::header::ORIGIN)
        && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl CorsParams {
    pub fn enabled(&self) -> bool {
        !self.origins.is_empty()
    }

    /// The request's origin when it is in the allowlist (ASCII case
    /// ignored), as the request wrote it.
    pub fn allowed<'a>(&self, origin: Option<&'a [u8]>) -> Option<&'a str> {
        let o = std::str::from_utf8(origin?).ok()?;
        self.origins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(o))
            .then_some(o)
    }

    /// Headers for an ordinary answer to a request with `origin`.
    pub fn response(&self, origin: Option<&[u8]>) -> Headers {
        let mut h = Headers::new();
        if !self.enabled() {
            return h;
        }
        // The answer depends on Origin whenever an allowlist exists.
        h.push(("vary", "Origin".into()));
        if let Some(o) = self.allowed(origin) {
            h.push(("access-control-allow-origin", o.to_string()));
            if self.allow_credentials {
                h.push(("access-control-allow-credentials", "true".into()));
            }
            h.push(("access-control-expose-headers", EXPOSE_HEADERS.into()));
        }
        h
    }

    /// Headers for the gateway's own 204 answer to a preflight.
    pub fn preflight(&self, origin: Option<&[u8]>) -> Headers {
        let mut h = Headers::new();
        if !self.enabled() {
            return h;
        }
        h.push(("vary", "Origin".into()));
        if let Some(o) = self.allowed(origin) {
            h.push(("access-control-allow-origin", o.to_string()));
            if self.allow_credentials {
                h.push(("access-control-allow-credentials", "true".into()));
            }
            h.push(("access-control-allow-methods", ALLOW_METHODS.into()));
            h.push(("access-control-allow-headers", ALLOW_HEADERS.into()));
            h.push(("access-control-max-age", MAX_AGE.into()));
        }
        h
    }
}

/// Checks one configured origin: `scheme://host[:port]`, http or https, no
/// path, no wildcard. `Ok`: the origin in lower case.
pub fn parse_origin(raw: &str) -> Result<String, &'static str> {
    if raw == "*" || raw.contains('*') {
        return Err("a wildcard would let every web page call the gateway; list the origins");
    }
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .ok_or("must start with https:// or http:// (an origin such as \"https://app.example\")")?;
    if rest.is_empty() {
        return Err("has no host");
    }
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(
            "an origin has no path, not even a trailing \"/\" (write \"https://app.example\")",
        );
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    {
        return Err("the host may hold only letters, digits, '-', '.', ':' and [IPv6]");
    }
    Ok(raw.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(creds: bool) -> CorsParams {
        CorsParams {
            origins: vec!["https://app.example".into(), "http://localhost:3000".into()],
            allow_credentials: creds,
        }
    }

    #[test]
    fn backend_cors_headers_are_recognised() {
        for n in [
            "access-control-allow-origin",
            "Access-Control-Allow-Credentials",
            "ACCESS-CONTROL-ALLOW-HEADERS",
            "access-control-max-age",
        ] {
            assert!(is_cors_header(n), "{n}");
        }
        for n in [
            "vary",
            "access-control",
            "content-type",
            "x-access-control-x",
        ] {
            assert!(!is_cors_header(n), "{n}");
        }
    }

    #[test]
    fn default_adds_nothing() {
        let p = CorsParams::default();
        assert!(p.response(Some(b"https://app.example")).is_empty());
        assert!(p.preflight(Some(b"https://app.example")).is_empty());
        assert_eq!(p.allowed(Some(b"https://app.example")), None);
    }

    #[test]
    fn only_listed_origins_are_echoed() {
        let p = params(false);
        let h = p.response(Some(b"https://app.example"));
        assert_eq!(
            h,
            vec![
                ("vary", "Origin".to_string()),
                ("access-control-allow-origin", "https://app.example".into()),
                ("access-control-expose-headers", EXPOSE_HEADERS.into()),
            ]
        );
        assert_eq!(
            p.allowed(Some(b"HTTPS://APP.example")),
            Some("HTTPS://APP.example")
        );
        for other in [
            &b"https://evil.example"[..],
            b"https://app.example.evil",
            b"https://app.example:444",
            b"http://app.example",
            b"null",
            b"",
            b"\xff",
        ] {
            assert_eq!(
                p.response(Some(other)),
                vec![("vary", "Origin".to_string())]
            );
            assert_eq!(
                p.preflight(Some(other)),
                vec![("vary", "Origin".to_string())]
            );
        }
        assert_eq!(p.response(None), vec![("vary", "Origin".to_string())]);
    }

    #[test]
    fn credentials_only_when_configured() {
        let with = params(true).preflight(Some(b"http://localhost:3000"));
        assert!(with.contains(&("access-control-allow-credentials", "true".into())));
        assert!(with.contains(&("access-control-allow-methods", ALLOW_METHODS.into())));
        assert!(with.contains(&("access-control-allow-headers", ALLOW_HEADERS.into())));
        let without = params(false).preflight(Some(b"http://localhost:3000"));
        assert!(!without
            .iter()
            .any(|(n, _)| *n == "access-control-allow-credentials"));
    }

    #[test]
    fn preflight_needs_options_origin_and_request_method() {
        let mut h = HeaderMap::new();
        h.insert("origin", "https://app.example".parse().unwrap());
        assert!(!is_preflight(&Method::OPTIONS, &h));
        h.insert("access-control-request-method", "POST".parse().unwrap());
        assert!(is_preflight(&Method::OPTIONS, &h));
        assert!(!is_preflight(&Method::POST, &h));
    }

    #[test]
    fn configured_origins_are_checked() {
        assert_eq!(
            parse_origin("https://App.Example").as_deref(),
            Ok("https://app.example")
        );
        assert_eq!(
            parse_origin("http://[::1]:8080").as_deref(),
            Ok("http://[::1]:8080")
        );
        for bad in [
            "*",
            "https://*.example",
            "app.example",
            "https://",
            "https://app.example/",
            "https://app.example/x",
            "ftp://app.example",
            "https://app example",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
