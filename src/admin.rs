//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`, and
//! the operator console (`/ui`, polling `/ui/state.json`; see [`crate::console`]).
//!
//! Loopback by default: it exposes internals. Served by pingora as its own
//! service, so graceful upgrades hand its socket over with the proxy's.

use std::sync::Arc;
use tokio::time::Instant;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::backend::breaker::BreakerState;
use crate::backend::fleet::Fleet;
use crate::console::{self, Console};
use crate::telemetry::Metrics;

pub struct AdminApp {
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<Metrics>,
    /// The console's history, written by its sampler.
    pub console: Arc<Console>,
    /// Bearer token for operator actions; unset disables them.
    pub token: Arc<AdminToken>,
    /// Limits shared with other replicas (`[cluster]`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The discovered entries (`discover = "dns"`).
    pub roster: Option<Arc<crate::backend::discovery::Roster>>,
}

/// The admin token, held as its SHA-256 digest and replaced on reload.
/// A given token is hashed and compared in constant time, so neither the
/// response time nor the token's length tells an attacker anything.
#[derive(Default)]
pub struct AdminToken(ArcSwapOption<[u8; 32]>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.0.load().is_some();
        write!(f, "AdminToken({})", if set { "<digest>" } else { "unset" })
    }
}

/// What a given admin token is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// No token is configured: operator actions are off.
    Disabled,
    Wrong,
    Valid,
}

impl AdminToken {
    pub fn new(token: Option<&str>) -> AdminToken {
        let t = AdminToken::default();
        t.set(token);
        t
    }

    /// Replaces the token (`None` turns operator actions off).
    pub fn set(&self, token: Option<&str>) {
        self.0
            .store(token.map(|t| Arc::new(Sha256::digest(t.as_bytes()).into())));
    }

    pub fn check(&self, given: &str) -> TokenCheck {
        match &*self.0.load() {
            None => TokenCheck::Disabled,
            Some(d) => {
                let g: [u8; 32] = Sha256::digest(given.as_bytes()).into();
                if bool::from(g.ct_eq(&**d)) {
                    TokenCheck::Valid
                } else {
                    TokenCheck::Wrong
                }
            }
        }
    }
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .expect("static response parts are valid")
}

fn json_response(status: u16, v: serde_json::Value) -> Response<Vec<u8>> {
    respond(status, "application/json", v.to_string().into_bytes())
}

impl AdminApp {
    /// The `/status` document: per backend health, figures, limits, verdict.
    pub fn status(&self, now: Instant) -> serde_json::Value {
        let backends: Vec<_> = self
            .fleet
            .backends()
            .iter()
            .map(|b| {
                let obs = b.observed();
                let (a, cap) = self.fleet.assess(b, now);
                let load = obs.load.as_ref().map(|(l, _)| l);
                json!({
                    "name": b.name(),
                    "url": b.config.url,
                    "weight": b.weight(),
                    "health": obs.health.as_str(),
                    "eligible": a.verdict.is_ok(),
                    "ineligible_reason": a.verdict.err().map(|r| r.as_str()),
                    "in_flight": b.in_flight(),
                    "limit": cap,
                    "slots": obs.slots,
                    "models": obs.models.as_deref().cloned().unwrap_or_default(),
                    // A llama-server router: each listed model's status.
                    "router_models": obs.router.as_ref().map(|r| r.models.iter()
                        .map(|m| json!({"id": m.id, "status": m.status.as_str()}))
                        .collect::<Vec<_>>()),
                    // A router's sub-backend: which router and model.
                    "instance": b.config.instance.as_ref()
                        .map(|i| json!({"router": i.parent, "model": i.model})),
                    "draining": b.is_draining(),
                    "breaker": match b.breaker_state(now) {
                        BreakerState::Closed => "closed",
                        BreakerState::HalfOpen => "half_open",
                        BreakerState::Open { .. } => "open",
                    },
                    "adaptive_limit": b.view().limit,
                    "requests_processing": load.map(|l| l.processing),
                    "requests_deferred": load.map(|l| l.deferred),
                    "scrape_age_seconds": obs.load_age(now).map(|d| d.as_secs_f64()),
                    "scrape_latency_seconds": obs.metrics_latency.map(|d| d.as_secs_f64()),
                    "mean_request_seconds": b.mean_duration().map(|d| d.as_secs_f64()),
                    "generation_ms_per_token": b.speed().gen_ms(),
                    "last_error": obs.last_error,
                })
            })
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "ready": self.fleet.ready(now),
            "queue_depth": self.fleet.released.waiting(),
            "models": self.fleet.models(),
            "backends": backends,
            "cluster": self.cluster.as_ref().map(|c| c.status()),
            "discovery": self.roster.as_ref().map(|r| discovery_status(r, now)),
        })
    }
}

/// Each discovered entry: its name, members, and how its lookups go.
fn discovery_status(r: &crate::backend::discovery::Roster, now: Instant) -> serde_json::Value {
    use crate::backend::discovery::members::member_name;
    let entries: Vec<_> = r.status().into_iter().map(|s| json!({
        "backend": s.entry.name,
        "host": s.entry.host,
        "port": s.entry.port,
        "resolve_every_seconds": s.entry.resolve_every.as_secs_f64(),
        "members": s.members.iter().map(|a| member_name(&s.entry.name, *a)).collect::<Vec<_>>(),
        "resolutions": s.resolutions,
        "last_outcome": s.last.map(|(o, _)| o.as_str()),
        "last_resolved_seconds_ago": s.last.map(|(_, at)| now.saturating_duration_since(at).as_secs_f64()),
        "last_error": s.last_error,
    })).collect();
    json!(entries)
}

impl AdminApp {
    /// `POST /backends/{name}/drain` or `/undrain`, with the admin token.
    fn operator_action(&self, authorization: Option<&str>, path: &str) -> Response<Vec<u8>> {
        let given = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let check = self.token.check(given.trim());
        if check == TokenCheck::Disabled {
            return json_response(
                403,
                json!({"error": {"code": 403, "message":
                    "operator actions are disabled: set admin.token_file in the configuration"}}),
            );
        }
        if check != TokenCheck::Valid {
            return json_response(
                401,
                json!({"error": {"code": 401, "message": "a valid admin token is required (Authorization: Bearer <token>)"}}),
            );
        }
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        // A discovered member's name has a slash (`pool/10.0.0.5`).
        let (name, action) = match parts.as_slice() {
            ["backends", name @ .., action @ ("drain" | "undrain")] if !name.is_empty() => {
                (name.join("/"), *action)
            }
            _ => {
                return json_response(
                    404,
                    json!({"error": {"code": 404, "message": format!(
                        "no operator action {path}; use POST /backends/NAME/drain or /undrain"
                    )}}),
                )
            }
        };
        let name = name.as_str();
        let Some(b) = self.fleet.by_name(name) else {
            return json_response(
                404,
                json!({"error": {"code": 404, "message": format!("no backend named {name:?}")}}),
            );
        };
        b.set_draining(action == "drain");
        tracing::warn!(backend = name, action, "operator action");
        if action == "undrain" {
            self.fleet.released.changed();
        }
        json_response(
            200,
            json!({"backend": name, "draining": b.is_draining(), "in_flight": b.in_flight()}),
        )
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let now = Instant::now();
        if req.method == http::Method::POST {
            let auth = req
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let path = req.uri.path().to_string();
            return self.operator_action(auth.as_deref(), &path);
        }
        if req.method != http::Method::GET {
            return json_response(
                405,
                json!({"error": {"code": 405, "message": "the admin endpoints answer GET (and POST for operator actions) only"}}),
            );
        }
        match req.uri.path() {
            "/metrics" => respond(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                crate::backend::export::render(&self.metrics, &self.fleet, now).into_bytes(),
            ),
            "/healthz" => respond(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                let ready = self.fleet.ready(now);
                json_response(if ready { 200 } else { 503 }, json!({ "ready": ready }))
            }
            "/status" => json_response(200, self.status(now)),
            "/ui/state.json" => {
                let since = console::snapshot::since(req.uri.query());
                json_response(
                    200,
                    console::snapshot::document(&self.console, since, self.status(now)),
                )
            }
            other => console::page::serve(other).unwrap_or_else(|| {
                json_response(
                    404,
                    json!({"error": {"code": 404, "message": format!(
                        "no admin endpoint {other}; try /metrics, /healthz, /readyz, /status or /ui"
                    )}}),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn app(token: Option<&str>) -> AdminApp {
        let config = Config::parse(
            "[[backends]]\nname = \"b0\"\nurl = \"http://127.0.0.1:1\"\n\
             [[backends]]\nname = \"b1\"\nurl = \"http://127.0.0.1:2\"\n",
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        AdminApp {
            fleet: crate::gateway::fleet(&config, Arc::clone(&metrics)),
            metrics,
            console: Arc::new(Console::new(Instant::now())),
            token: Arc::new(AdminToken::new(token)),
            cluster: None,
            roster: None,
        }
    }

    fn body(r: &Response<Vec<u8>>) -> serde_json::Value {
        serde_json::from_slice(r.body()).unwrap()
    }

    const TOKEN: &str = "0123456789abcdef-admin";

    #[test]
    fn actions_are_off_without_a_token_and_need_the_right_one() {
        let off = app(None);
        let r = off.operator_action(Some(&format!("Bearer {TOKEN}")), "/backends/b0/drain");
        assert_eq!(r.status(), 403);
        let on = app(Some(TOKEN));
        for auth in [
            None,
            Some("Bearer wrong"),
            Some(TOKEN),
            Some("Bearer 0123456789abcdef-admiN"),
        ] {
            let r = on.operator_action(auth, "/backends/b0/drain");
            assert_eq!(r.status(), 401, "{auth:?}");
        }
        assert!(!on.fleet.by_name("b0").unwrap().is_draining());
    }

    #[test]
    fn drain_and_undrain_a_named_backend() {
        let a = app(Some(TOKEN));
        let auth = format!("Bearer {TOKEN}");
        let r = a.operator_action(Some(&auth), "/backends/b1/drain");
        assert_eq!(r.status(), 200);
        assert_eq!(body(&r)["draining"], true);
        assert!(a.fleet.by_name("b1").unwrap().is_draining());
        assert!(!a.fleet.by_name("b0").unwrap().is_draining());
        let r = a.operator_action(Some(&auth), "/backends/b1/undrain");
        assert_eq!(body(&r)["draining"], false);
        assert_eq!(
            a.operator_action(Some(&auth), "/backends/nope/drain")
                .status(),
            404
        );
        assert_eq!(
            a.operator_action(Some(&auth), "/backends/b1/explode")
                .status(),
            404
        );
        // A discovered member, named `entry/<ip>`.
        let member = crate::backend::spec::BackendConfig {
            name: "pool/10.0.0.5".into(),
            ..a.fleet.by_name("b0").unwrap().config.clone()
        };
        a.fleet.reconfigure(&[member]);
        let r = a.operator_action(Some(&auth), "/backends/pool/10.0.0.5/drain");
        assert_eq!(body(&r)["backend"], "pool/10.0.0.5");
        assert!(a.fleet.by_name("pool/10.0.0.5").unwrap().is_draining());
    }

    #[test]
    fn status_lists_every_backend_with_its_state() {
        let a = app(None);
        let s = a.status(Instant::now());
        let names: Vec<_> = s["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["b0", "b1"]);
        let b0 = &s["backends"][0];
        assert_eq!(b0["breaker"], "closed");
        assert_eq!(b0["in_flight"], 0);
        assert_eq!(s["queue_depth"], 0);
    }

    #[test]
    fn the_token_is_a_digest_compared_whole_and_replaceable() {
        let t = AdminToken::new(Some("0123456789abcdef-admin"));
        assert_eq!(t.check("0123456789abcdef-admin"), TokenCheck::Valid);
        assert_eq!(t.check("0123456789abcdef-admiN"), TokenCheck::Wrong);
        assert_eq!(t.check(""), TokenCheck::Wrong);
        assert!(!format!("{t:?}").contains("0123"), "{t:?}");
        t.set(Some("another-token-0123456"));
        assert_eq!(t.check("0123456789abcdef-admin"), TokenCheck::Wrong);
        assert_eq!(t.check("another-token-0123456"), TokenCheck::Valid);
        t.set(None);
        assert_eq!(t.check("another-token-0123456"), TokenCheck::Disabled);
    }
}
