//! CORS at the edge: llama-server (and the sim, which copies it) echoes any
//! `Origin` with credentials allowed; through the gateway no backend
//! `access-control-*` header passes, and only origins in
//! `[server] cors_origins` get the gateway's own grant. Preflights are
//! answered by the gateway itself. Loopback only.

mod support;

use reqwest::header::HeaderMap;
use reqwest::Method;
use sluice::gateway::{free_port, RunningGateway};
use support::{completion, fast};

const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";

struct Bed {
    rt: tokio::runtime::Runtime,
    sim: sluice::sim::SimHandle,
    gw: RunningGateway,
    client: reqwest::Client,
}

fn bed(server_extra: &str) -> Bed {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(sluice::sim::spawn(fast(4))).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nthreads = 1\n{server_extra}\n\
         [admin]\nlisten = \"127.0.0.1:{}\"\n[scrape]\ninterval = \"100ms\"\n\
         [routing]\nmax_body_bytes = 4096\n\
         [[backends]]\nname = \"b0\"\nurl = \"{}\"\n",
        free_port(),
        free_port(),
        sim.url()
    );
    let gw = support::start_ready(&text);
    Bed {
        rt,
        sim,
        gw,
        client: reqwest::Client::new(),
    }
}

impl Bed {
    fn send(
        &self,
        base: &str,
        method: Method,
        path: &str,
        origin: &str,
        body: &str,
    ) -> (u16, HeaderMap) {
        self.rt.block_on(async {
            let mut r = self
                .client
                .request(method.clone(), format!("{base}{path}"))
                .header("origin", origin);
            if method == Method::OPTIONS {
                r = r.header("access-control-request-method", "POST").header(
                    "access-control-request-headers",
                    "authorization, content-type",
                );
            } else if !body.is_empty() {
                r = r
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let _ = resp.bytes().await;
            (status, headers)
        })
    }

    fn gateway(&self, method: Method, path: &str, origin: &str, body: &str) -> (u16, HeaderMap) {
        self.send(&self.gw.proxy_url(), method, path, origin, body)
    }
}

fn cors_headers(h: &HeaderMap) -> Vec<String> {
    let mut v: Vec<String> = h
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("access-control-"))
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
        .collect();
    v.sort();
    v
}

fn vary_has_origin(h: &HeaderMap) -> bool {
    h.get_all("vary").iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains("origin")
    })
}

#[test]
fn default_config_lets_no_cors_header_through() {
    let b = bed("");
    let post = completion(2).to_string();
    // The backend itself grants any origin, credentials included.
    let (s, h) = b.send(&b.sim.url(), Method::POST, "/completion", EVIL, &post);
    assert_eq!(s, 200);
    assert_eq!(
        h.get("access-control-allow-origin").unwrap(),
        EVIL,
        "the sim echoes Origin like llama-server"
    );
    let (s, h) = b.send(&b.sim.url(), Method::OPTIONS, "/completion", EVIL, "");
    assert_eq!(s, 200);
    assert_eq!(h.get("access-control-allow-credentials").unwrap(), "true");

    let mut seen = Vec::new();
    for (method, path, body) in [
        (Method::POST, "/completion", post.as_str()),
        (
            Method::POST,
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#,
        ),
        (Method::GET, "/health", ""),
        (Method::GET, "/v1/models", ""),
        (Method::OPTIONS, "/v1/chat/completions", ""),
        (Method::POST, "/completion", &"x".repeat(5000)), // 413 from the gateway
    ] {
        for origin in [EVIL, APP] {
            let (s, h) = b.gateway(method.clone(), path, origin, body);
            assert!(
                cors_headers(&h).is_empty(),
                "{method} {path} from {origin}: {s} with {:?}",
                cors_headers(&h)
            );
            assert!(
                !vary_has_origin(&h),
                "{method} {path}: Vary: Origin without an allowlist"
            );
            if method == Method::OPTIONS {
                // The sim answers 200: 204 is the gateway's own answer.
                assert_eq!(s, 204, "the gateway answers preflights itself");
            }
            seen.push(format!("{method} {path} from {origin}: {s}"));
        }
    }
    println!(
        "default config, no CORS header on any of: {}",
        seen.join("; ")
    );
}

#[test]
fn only_the_allowed_origin_is_echoed() {
    let b = bed(&format!(
        "cors_origins = [\"{APP}\"]\ncors_allow_credentials = true"
    ));
    let post = completion(2).to_string();
    for (method, path, body, status) in [
        (Method::POST, "/completion", post.as_str(), 200),
        (Method::GET, "/health", "", 200),
        (Method::POST, "/completion", &"x".repeat(5000), 413),
    ] {
        let (s, h) = b.gateway(method.clone(), path, APP, body);
        assert_eq!(s, status, "{method} {path}");
        assert_eq!(
            cors_headers(&h),
            vec![
                "access-control-allow-credentials: true".to_string(),
                format!("access-control-allow-origin: {APP}"),
                "access-control-expose-headers: Retry-After, x-request-id, x-sluice-reason"
                    .to_string(),
            ],
            "{method} {path} from the allowed origin"
        );
        assert!(vary_has_origin(&h), "{method} {path}");
        assert_eq!(h.get_all("access-control-allow-origin").iter().count(), 1);

        let (s, h) = b.gateway(method.clone(), path, EVIL, body);
        assert_eq!(s, status);
        assert!(
            cors_headers(&h).is_empty(),
            "{method} {path} from {EVIL}: {:?}",
            cors_headers(&h)
        );
        assert!(vary_has_origin(&h));
    }

    let (s, h) = b.gateway(Method::OPTIONS, "/v1/chat/completions", APP, "");
    assert_eq!(s, 204);
    assert!(
        h.get("transfer-encoding").is_none() && h.get("content-length").is_none(),
        "a 204 has no body framing: {h:?}"
    );
    assert_eq!(
        cors_headers(&h),
        vec![
            "access-control-allow-credentials: true".to_string(),
            "access-control-allow-headers: Authorization, Content-Type, x-sluice-deadline, x-sluice-priority".to_string(),
            "access-control-allow-methods: GET, POST, OPTIONS".to_string(),
            format!("access-control-allow-origin: {APP}"),
            "access-control-max-age: 600".to_string(),
        ]
    );
    let (s, h) = b.gateway(Method::OPTIONS, "/v1/chat/completions", EVIL, "");
    assert_eq!(s, 204);
    assert!(cors_headers(&h).is_empty(), "{:?}", cors_headers(&h));
    println!("allowlist [{APP}]: {APP} echoed on 200/413/preflight 204, {EVIL} got no CORS header");
}
