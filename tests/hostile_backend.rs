//! Backend data is untrusted input (issue 12, item 5): a broken or hostile
//! backend on loopback, in-process, in front of which a gateway runs.
//!
//! - `/metrics` with invalid metric and label names, reserved names, `NaN`
//!   and `+Inf`: the gateway's own `/metrics` stays valid exposition format
//!   (checked by a strict validator written here, independent of the
//!   gateway's parser) and keeps the valid series; drops are counted;
//! - `/props` claiming 4 billion slots: capped to `routing.max_slots`;
//! - `/health`, `/metrics`, `/props` answering 302: never followed (the
//!   target counts hits), the scrape error names the redirect;
//! - completions with absurd `usage` / `timings`: the gateway does not
//!   panic, every request completes, token counters stay in range.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice::config::Config;
use sluice::gateway::{free_port, RunningGateway};
use sluice::usage::MAX_TOKENS;
use support::{get, poll, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// === a hostile backend ===

/// Answers `(method, path)` with a whole HTTP/1.1 response.
type Answer = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

struct Server {
    url: String,
    hits: Arc<AtomicUsize>,
}

/// A server on 127.0.0.1:0: one request per connection, answered by `answer`.
fn serve(rt: &tokio::runtime::Runtime, answer: Answer) -> Server {
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    rt.spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let answer = Arc::clone(&answer);
            let hits = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&seen[..head_end]).to_string();
                let length: usize = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                while seen.len() < head_end + length {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                hits.fetch_add(1, Ordering::SeqCst);
                let mut first = head.lines().next().unwrap_or("").split(' ');
                let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
                let response = answer(method, path);
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Server { url, hits }
}

fn http(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn redirect_to(location: &str) -> String {
    format!(
        "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
}

/// Valid load series, then every kind of name a Prometheus scrape refuses.
const HOSTILE_METRICS: &str = "\
# HELP llamacpp:requests_processing Number of requests processing
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 0
# HELP llamacpp:requests_deferred Deferred \\\\ with a backslash\\nand a second line
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 0
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio NaN
llamacpp:tokens_per_second +Inf
llamacpp:with_labels{slot=\"0\",weird=\"a\\\"b\\\\c\\nd,e=f}\"} 6
llamacpp:bad-name{la-bel=\"x\"} 1
1abc 2
llamacpp:x{__reserved=\"y\"} 3
llamacpp:y{ok=\"1\",a-b=\"2\"} 4
llamacpp:caf\u{e9} 5
sluice_ready 1
# TYPE 2bad counter
";

const VALID_METRICS: &str = "\
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 0
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 0
";

/// A backend that is healthy and claims 4 billion slots, with `metrics`
/// as its `/metrics` and `completion` as every completion's body.
fn hostile(
    rt: &tokio::runtime::Runtime,
    metrics: &'static str,
    completions: Vec<String>,
) -> Server {
    let n = Arc::new(AtomicUsize::new(0));
    serve(
        rt,
        Arc::new(move |_, path| match path {
            "/health" => http("200 OK", "application/json", "{\"status\":\"ok\"}"),
            "/props" => http(
                "200 OK",
                "application/json",
                "{\"total_slots\": 4000000000}",
            ),
            "/metrics" => http("200 OK", "text/plain; version=0.0.4", metrics),
            "/completion" => {
                let i = n.fetch_add(1, Ordering::SeqCst);
                let body = completions
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| "{\"content\":\"ok\"}".to_string());
                http("200 OK", "application/json", &body)
            }
            _ => http("404 Not Found", "text/plain", "no"),
        }),
    )
}

// === a gateway in front ===

struct Gw {
    gw: Option<RunningGateway>,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Gw {
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A gateway with `extra` TOML and one backend per `(name, url)`.
    fn start(rt: tokio::runtime::Runtime, extra: &str, backends: &[(&str, &str)]) -> Gw {
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
             [scrape]\ninterval = \"100ms\"\ntimeout = \"500ms\"\n{extra}\n",
            free_port(),
            free_port()
        );
        for (name, url) in backends {
            text += &format!("[[backends]]\nname = \"{name}\"\nurl = \"{url}\"\n");
        }
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let gw = RunningGateway::start(&config).unwrap();
        Gw {
            gw: Some(gw),
            rt,
            client: reqwest::Client::new(),
        }
    }

    fn gw(&self) -> &RunningGateway {
        self.gw.as_ref().unwrap()
    }

    fn status(&self) -> serde_json::Value {
        let r = self
            .rt
            .block_on(get(&self.client, &self.gw().admin_url(), "/status"));
        serde_json::from_str(&r.body).unwrap()
    }

    fn backend(&self, i: usize) -> serde_json::Value {
        self.status()["backends"][i].clone()
    }

    fn metrics(&self) -> String {
        self.rt
            .block_on(get(&self.client, &self.gw().admin_url(), "/metrics"))
            .body
    }

    fn wait(&self, what: &str, f: impl Fn(&Gw) -> bool) {
        if !poll(Duration::from_secs(10), || f(self)) {
            panic!("timed out waiting for {what}; status: {:#}", self.status());
        }
    }

    /// POSTs a completion with an API key; status and body.
    fn complete(&self, key: &str) -> (u16, String) {
        self.rt.block_on(async {
            let r = self
                .client
                .post(format!("{}/completion", self.gw().proxy_url()))
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/json")
                .body(r#"{"prompt":"hi","n_predict":4}"#)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .expect("the gateway answers");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        })
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.stop();
        }
    }
}

// === a strict exposition-format validator, independent of the gateway's ===

fn metric_name_ok(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn label_name_ok(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !n.starts_with("__")
}

fn value_ok(v: &str) -> bool {
    matches!(v, "NaN" | "+Inf" | "-Inf")
        || (v.parse::<f64>().is_ok_and(f64::is_finite)
            && v.bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)))
}

/// Every problem a strict Prometheus text parser would refuse: names, label
/// names and escapes, values, HELP/TYPE once per family and before its
/// samples, families contiguous, no duplicate series.
fn exposition_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut typed: HashSet<String> = HashSet::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut series: HashSet<String> = HashSet::new();
    let mut current = String::new();
    let family_of = |name: &str, typed: &HashSet<String>| {
        for s in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(s) {
                if typed.contains(base) {
                    return base.to_string();
                }
            }
        }
        name.to_string()
    };
    for (i, line) in text.lines().enumerate() {
        let mut bad = |why: &str| problems.push(format!("line {}: {why}: {line:?}", i + 1));
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (word, name, tail) = (parts.next(), parts.next(), parts.next());
            if let (Some(w @ ("HELP" | "TYPE")), Some(name)) = (word, name) {
                if !metric_name_ok(name) {
                    bad("invalid metric name in HELP/TYPE");
                }
                if name != current && finished.contains(name) {
                    bad("family not contiguous");
                }
                if name != current {
                    finished.insert(std::mem::replace(&mut current, name.to_string()));
                }
                if w == "TYPE" {
                    if !matches!(
                        tail,
                        Some("counter" | "gauge" | "histogram" | "summary" | "untyped")
                    ) {
                        bad("invalid type");
                    }
                    if !typed.insert(name.to_string()) {
                        bad("second TYPE");
                    }
                } else {
                    let help = tail.unwrap_or("");
                    let mut chars = help.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                            bad("invalid escape in HELP");
                        }
                        if c.is_control() {
                            bad("control character in HELP");
                        }
                    }
                    if !helped.insert(name.to_string()) {
                        bad("second HELP");
                    }
                }
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        if !metric_name_ok(name) {
            bad("invalid metric name");
        }
        let family = family_of(name, &typed);
        if family != current {
            if finished.contains(&family) {
                bad("family not contiguous");
            }
            finished.insert(std::mem::replace(&mut current, family));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            let mut s = after;
            loop {
                if let Some(after) = s.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let Some(eq) = s.find("=\"") else {
                    bad("label without =\"");
                    rest = "";
                    break;
                };
                let key = &s[..eq];
                if !label_name_ok(key) {
                    bad("invalid label name");
                }
                labels.push(key.to_string());
                let mut chars = s[eq + 2..].char_indices();
                let mut close = None;
                while let Some((j, c)) = chars.next() {
                    match c {
                        '\\' if !matches!(chars.next(), Some((_, '\\' | '"' | 'n'))) => {
                            bad("invalid escape in label value")
                        }
                        '"' => {
                            close = Some(eq + 2 + j + 1);
                            break;
                        }
                        '\n' => bad("newline in label value"),
                        _ => {}
                    }
                }
                let Some(close) = close else {
                    bad("unterminated label value");
                    rest = "";
                    break;
                };
                s = &s[close..];
                s = s.strip_prefix(',').unwrap_or(s);
            }
            let mut sorted = labels.clone();
            sorted.sort();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                bad("duplicate label name");
            }
        }
        let parts: Vec<&str> = rest.split(' ').filter(|p| !p.is_empty()).collect();
        match parts.as_slice() {
            [v] | [v, _] if value_ok(v) => {}
            _ => bad("invalid value"),
        }
        if !series.insert(line.rsplit_once(' ').map_or(line, |(s, _)| s).to_string()) {
            bad("duplicate series");
        }
    }
    problems
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_validator_refuses_what_prometheus_refuses() {
    assert!(exposition_problems(VALID_METRICS).is_empty());
    for bad in [
        "llamacpp:bad-name{backend=\"h0\"} 1\n",
        "1abc{backend=\"h0\"} 2\n",
        "m{la-bel=\"x\"} 1\n",
        "m{__reserved=\"x\"} 1\n",
        "m{a=\"x\\q\"} 1\n",
        "m inf\n",
        "# TYPE m gauge\n# TYPE m gauge\nm 1\n",
        "m{a=\"1\"} 1\nm{a=\"1\"} 2\n",
        "a 1\nb 1\na{x=\"1\"} 1\n",
    ] {
        assert!(!exposition_problems(bad).is_empty(), "{bad}");
    }
}

// === the attacks ===

#[test]
fn invalid_names_never_reach_the_gateways_metrics_and_slots_are_capped() {
    let rt = Gw::runtime();
    let b = hostile(&rt, HOSTILE_METRICS, Vec::new());
    let g = Gw::start(rt, "", &[("h0", &b.url)]);
    g.wait("h0 scraped and eligible", |g| {
        g.backend(0)["eligible"] == true
    });
    let m = g.metrics();
    let problems = exposition_problems(&m);
    assert!(problems.is_empty(), "{problems:#?}\n{m}");
    // The valid series, re-exported, with their values as the format spells them.
    for (series, value) in [
        ("llamacpp:requests_processing{backend=\"h0\"}", 0.0),
        ("llamacpp:requests_deferred{backend=\"h0\"}", 0.0),
        ("llamacpp:tokens_per_second{backend=\"h0\"}", f64::INFINITY),
    ] {
        assert_eq!(sample(&m, series), Some(value), "{series}\n{m}");
    }
    assert!(
        m.contains("llamacpp:kv_cache_usage_ratio{backend=\"h0\"} NaN\n"),
        "{m}"
    );
    assert!(
        m.contains(
            "llamacpp:with_labels{backend=\"h0\",slot=\"0\",weird=\"a\\\"b\\\\c\\nd,e=f}\"} 6\n"
        ),
        "{m}"
    );
    assert!(
        m.contains(
            "# HELP llamacpp:requests_deferred Deferred \\\\ with a backslash and a second line\n"
        ),
        "{m}"
    );
    // Nothing of the invalid ones, and the gateway's own sluice_ready once.
    for gone in [
        "bad-name",
        "la-bel",
        "1abc",
        "__reserved",
        "a-b",
        "caf\u{e9}",
    ] {
        assert!(!m.contains(gone), "{gone} leaked:\n{m}");
    }
    assert_eq!(m.matches("\nsluice_ready ").count(), 1, "{m}");
    // Counted by reason: per scrape 3 invalid names, 2 invalid labels, 1 reserved.
    for reason in ["invalid_name", "invalid_label", "reserved_name"] {
        let n = sample(
            &m,
            &format!("sluice_backend_series_dropped_total{{backend=\"h0\",reason=\"{reason}\"}}"),
        );
        assert!(n.is_some_and(|n| n >= 1.0), "{reason}: {n:?}\n{m}");
    }
    // 4 billion slots claimed: capped to routing.max_slots (512), and said so.
    let s = g.backend(0);
    assert_eq!(s["slots"], 512, "{s:#}");
    assert!(s["limit"].as_u64().unwrap() <= 512, "{s:#}");
    let e = s["last_error"].as_str().unwrap_or_default();
    assert!(
        e.contains(
            "/props: total_slots 4000000000 is more than routing.max_slots = 512; capped to 512"
        ),
        "{e}"
    );
    assert!(e.contains("/metrics: dropped 6 series"), "{e}");
    assert!(
        m.contains("sluice_scrape_errors_total{backend=\"h0\",kind=\"props_slots_capped\"}"),
        "{m}"
    );
}

#[test]
fn a_configured_slot_cap_holds() {
    let rt = Gw::runtime();
    let b = hostile(&rt, VALID_METRICS, Vec::new());
    let g = Gw::start(rt, "[routing]\nmax_slots = 64\n", &[("h0", &b.url)]);
    g.wait("h0 eligible", |g| g.backend(0)["eligible"] == true);
    let s = g.backend(0);
    assert_eq!(s["slots"], 64, "{s:#}");
    assert!(s["limit"].as_u64().unwrap() <= 64, "{s:#}");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("routing.max_slots = 64"),
        "{s:#}"
    );
}

#[test]
fn the_scraper_never_follows_a_redirect() {
    let rt = Gw::runtime();
    // Where the redirects point: a perfectly healthy llama-server lookalike.
    let target = hostile(&rt, VALID_METRICS, Vec::new());
    let to = target.url.clone();
    // h0: /health fine, /metrics and /props redirect; h1: everything redirects.
    let to0 = to.clone();
    let h0 = serve(
        &rt,
        Arc::new(move |_, path| match path {
            "/health" => http("200 OK", "application/json", "{\"status\":\"ok\"}"),
            p => redirect_to(&format!("{to0}{p}")),
        }),
    );
    let h1 = serve(
        &rt,
        Arc::new(move |_, path| redirect_to(&format!("{to}{path}"))),
    );
    let g = Gw::start(rt, "", &[("h0", &h0.url), ("h1", &h1.url)]);
    g.wait("both redirects named", |g| {
        let e0 = g.backend(0)["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let e1 = g.backend(1)["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        e0.contains("/metrics: HTTP 302 redirect to")
            && e0.contains("/props: HTTP 302 redirect to")
            && e1.contains("/health: HTTP 302 redirect to")
            && e1.contains("/metrics: HTTP 302 redirect to")
    });
    // Several rounds later, still not one hit on the target.
    g.wait("three more scrape rounds", |g| {
        sample(
            &g.metrics(),
            "sluice_scrape_errors_total{backend=\"h0\",kind=\"metrics_redirect\"}",
        )
        .is_some_and(|n| n >= 3.0)
    });
    let (s0, s1) = (g.backend(0), g.backend(1));
    assert!(
        s0["last_error"].as_str().unwrap().contains(&format!(
            "redirect to \"{}/metrics\", not followed",
            target.url
        )),
        "{s0:#}"
    );
    assert_eq!(
        target.hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    assert!(h0.hits.load(Ordering::SeqCst) >= 3 && h1.hits.load(Ordering::SeqCst) >= 3);
    assert_eq!(
        (s0["eligible"].clone(), s1["eligible"].clone()),
        (false.into(), false.into())
    );
    assert_eq!(s1["health"], "down");
}

#[test]
fn absurd_usage_and_timings_neither_panic_nor_overflow() {
    let bodies = vec![
        // Every count beyond u64, a per-token time beyond Duration.
        r#"{"content":"a","tokens_predicted":1e30,"tokens_evaluated":1e30,
            "timings":{"prompt_n":1e30,"predicted_n":1e30,"predicted_per_token_ms":1e300},
            "usage":{"prompt_tokens":1e30,"completion_tokens":18446744073709551616}}"#,
        // Negative and not-a-number.
        r#"{"content":"b","usage":{"prompt_tokens":-5,"completion_tokens":NaN},
            "timings":{"predicted_per_token_ms":-5}}"#,
        r#"{"content":"c","timings":{"predicted_per_token_ms":NaN,"predicted_n":Infinity,
            "prompt_n":1e999}}"#,
        // Plausible counts, an absurd per-token time.
        r#"{"content":"d","usage":{"prompt_tokens":12,"completion_tokens":34},
            "timings":{"predicted_per_token_ms":1e308,"predicted_n":34}}"#,
    ];
    let n = bodies.len();
    let rt = Gw::runtime();
    let b = hostile(
        &rt,
        VALID_METRICS,
        bodies.into_iter().map(str::to_string).collect(),
    );
    let g = Gw::start(
        rt,
        "[[api_keys]]\nname = \"team-a\"\nkey = \"sk-test-0123456789\"\n",
        &[("h0", &b.url)],
    );
    g.wait("h0 eligible", |g| g.backend(0)["eligible"] == true);
    for i in 0..n {
        let (status, body) = g.complete("sk-test-0123456789");
        assert_eq!(status, 200, "hostile body {i}: {body}");
        assert!(body.contains("\"content\""), "hostile body {i}: {body}");
    }
    // Later requests still work.
    for _ in 0..3 {
        let (status, body) = g.complete("sk-test-0123456789");
        assert_eq!((status, body.as_str()), (200, "{\"content\":\"ok\"}"));
    }
    // Counters: clamped to MAX_TOKENS per response, summed without overflow.
    let want_prompt = (MAX_TOKENS + 12) as f64;
    let want_completion = (MAX_TOKENS + 34) as f64;
    let mut last = String::new();
    wait_until("token counters", Duration::from_secs(5), || {
        last = g.metrics();
        sample(&last, "sluice_key_tokens_total{key=\"team-a\",kind=\"prompt\"}")
            == Some(want_prompt)
            && sample(
                &last,
                "sluice_key_tokens_total{key=\"team-a\",kind=\"completion\"}",
            ) == Some(want_completion)
            // Every request finished (counted after its reply was sent).
            && sample(
                &last,
                "sluice_key_requests_total{key=\"team-a\",outcome=\"served\"}",
            ) == Some((n + 3) as f64)
    });
    g.wait("h0 healthy and idle", |g| {
        let s = g.backend(0);
        s["health"] == "ok" && s["in_flight"] == 0
    });
}

#[test]
fn oversized_metrics_fail_the_scrape_with_a_reason() {
    let rt = Gw::runtime();
    // h0: 2 MiB of /metrics; h1: valid, but 10,001 samples.
    let big: &'static str =
        Box::leak(format!("{VALID_METRICS}# {}\n", "x".repeat(2 << 20)).into_boxed_str());
    let mut many = VALID_METRICS.to_string();
    for i in 0..10_000 {
        many += &format!("llamacpp:s{{i=\"{i}\"}} 1\n");
    }
    let many: &'static str = Box::leak(many.into_boxed_str());
    let h0 = hostile(&rt, big, Vec::new());
    let h1 = hostile(&rt, many, Vec::new());
    let g = Gw::start(rt, "", &[("h0", &h0.url), ("h1", &h1.url)]);
    g.wait("both scrapes refused with a reason", |g| {
        let m = g.metrics();
        sample(
            &m,
            "sluice_scrape_errors_total{backend=\"h0\",kind=\"metrics_too_large\"}",
        )
        .is_some()
            && sample(
                &m,
                "sluice_scrape_errors_total{backend=\"h1\",kind=\"metrics_too_many\"}",
            )
            .is_some()
    });
    let (s0, s1) = (g.backend(0), g.backend(1));
    assert!(
        s0["last_error"]
            .as_str()
            .unwrap()
            .contains("/metrics: body larger than 1048576 bytes"),
        "{s0:#}"
    );
    assert!(
        s1["last_error"]
            .as_str()
            .unwrap()
            .contains("/metrics: metrics text has more than 10000 samples"),
        "{s1:#}"
    );
    // Neither is routed to, and nothing of theirs is re-exported.
    assert_eq!(
        (s0["eligible"].clone(), s1["eligible"].clone()),
        (false.into(), false.into())
    );
    let m = g.metrics();
    assert!(!m.contains("llamacpp:s{"), "{}", m.len());
    assert!(exposition_problems(&m).is_empty());
}
