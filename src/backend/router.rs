//! llama-server's router mode: one server (`--models-dir`, `--models-preset`)
//! hosting several models, each loaded on demand into a child instance of
//! its own. This module holds what the gateway knows of it: how a router is
//! recognised, what its `GET /models` says of each model, and the
//! per-model sub-backend (`backend/model`) that carries one loaded model's
//! capacity.
//!
//! Facts, from the real 2026-10 build (captures in
//! `tests/fixtures/llama-server/2026-10-router/`):
//!
//! - `GET /props` without `model` answers 200 with `"role":"router"` (and
//!   `max_instances`, `models_autoload`) and no `total_slots`: that is the
//!   detection. A plain server's `/props` has no `role`.
//! - `GET /models` (and `/v1/models`) lists every model it can load, each
//!   with `status.value` `unloaded`, `loading` or `loaded`.
//! - `/metrics`, `/slots` without `model` answer 400 "model name is missing
//!   from the request"; `/props`, `/metrics`, `/slots` with
//!   `?model=NAME&autoload=false` answer 400 "model is not loaded" for a
//!   model that is not loaded, and the instance's own answer (its
//!   `total_slots`, its counters) for a loaded one.
//! - **Without `autoload=false`, `GET /metrics?model=NAME` loads NAME**
//!   (status `loading`, then `loaded`): the gateway therefore scrapes only
//!   models `/models` lists as loaded, always with `autoload=false`.
//! - A completion naming an unloaded model loads it and is answered once it
//!   is loaded (0.5 s for the tiny model); one naming no model gets 400,
//!   an unknown one 400 "model 'x' not found". `/health` is 200 whatever
//!   is loaded. Started with `--no-models-autoload`, `/props` says
//!   `"models_autoload":false` and a completion for an unloaded model gets
//!   400 "model is not loaded": such a router is sent no request to wait.
//!   Each instance is a process of its own: its `/metrics`
//!   carries its own `Process-Start-Time-Unix`.
//!
//! So a router backend is never routed to as such. Each model `/models`
//! lists as loaded becomes a sub-backend named `backend/model` with the
//! router's address, scraped through `?model=…&autoload=false`, with its own
//! slots, in-flight count, breaker and limit; the fleet adds and removes
//! them as models load and unload. A request for a model no backend has
//! loaded is sent to a router that lists it ([`UnloadedModel::Wait`]: the
//! router loads it) through that model's sub-backend, made then and kept
//! while the model loads or requests wait there, but no candidate of the
//! ordinary choice until `/models` says loaded; or it is refused
//! ([`UnloadedModel::Refuse`]).

use super::models::List;
use super::spec::{BackendConfig, Instance};

/// What `routing.unloaded_model` says to do with a request for a model some
/// router backend lists but none has loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnloadedModel {
    /// Send it to one router backend listing the model (the one already
    /// loading it, else the least busy), which loads it on demand; the
    /// request waits there for the load, bounded by `routing.read_timeout`.
    /// Beyond [`LOAD_WAITERS`] such requests at one router, more wait in the
    /// gateway queue within their deadline (`x-sluice-deadline`,
    /// `queue.max_wait`) until the model shows as loaded and its
    /// sub-backend takes them.
    #[default]
    Wait,
    /// Refuse it (503 `model_not_loaded`, with `Retry-After`); it reaches
    /// no backend.
    Refuse,
}

impl UnloadedModel {
    pub fn parse(s: &str) -> Option<UnloadedModel> {
        match s {
            "wait" => Some(UnloadedModel::Wait),
            "refuse" => Some(UnloadedModel::Refuse),
            _ => None,
        }
    }
}

/// Requests for one model a router has not loaded that it is sent at once
/// (its `max_in_flight` instead, if set): they wait inside it while it
/// loads; more wait in the gateway's queue until the model shows as loaded
/// and its sub-backend takes them by its slots. Counted per model, on the
/// sub-backend made for the load, so one model's load never holds up
/// another's.
pub const LOAD_WAITERS: u32 = 4;

/// A model's state in a router's `GET /models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Loaded,
    Loading,
    Unloaded,
    /// Another value (e.g. a failed load), kept for `/status`.
    Other(String),
}

impl Status {
    fn from(s: &str) -> Status {
        match s {
            "loaded" => Status::Loaded,
            "loading" => Status::Loading,
            "unloaded" => Status::Unloaded,
            other => Status::Other(other.chars().take(32).collect()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Status::Loaded => "loaded",
            Status::Loading => "loading",
            Status::Unloaded => "unloaded",
            Status::Other(s) => s,
        }
    }
}

/// One model a router can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterModel {
    pub id: String,
    pub aliases: Vec<String>,
    pub status: Status,
}

/// Most models kept per router, and the longest name (a hostile backend
/// cannot grow the gateway's memory or its metric labels).
const MAX_MODELS: usize = 64;
const MAX_NAME: usize = 128;
const MAX_ALIASES: usize = 8;

/// The models of a router's `GET /models` body.
pub fn parse_models(body: &str) -> Result<Vec<RouterModel>, String> {
    let list: List = serde_json::from_str(body).map_err(|e| format!("not a model list: {e}"))?;
    let ok = |n: &String| !n.is_empty() && n.len() <= MAX_NAME && !n.contains(char::is_control);
    let mut out: Vec<RouterModel> = Vec::new();
    for e in list.data {
        let Some(id) = e.id.filter(ok) else { continue };
        if out.iter().any(|m| m.id == id) {
            continue;
        }
        let status = e
            .status
            .and_then(|s| s.value)
            .map_or(Status::Other("none".into()), |v| Status::from(&v));
        let aliases = e
            .aliases
            .into_iter()
            .filter(|a| ok(a) && *a != id)
            .take(MAX_ALIASES)
            .collect();
        out.push(RouterModel {
            id,
            aliases,
            status,
        });
        if out.len() == MAX_MODELS {
            break;
        }
    }
    Ok(out)
}

/// Is this `/props` body a router's?
pub fn is_router_props(props: &serde_json::Value) -> bool {
    props.get("role").and_then(|r| r.as_str()) == Some("router")
}

/// Does this router's `/props` say it loads models on demand
/// (`models_autoload`, on unless started with `--no-models-autoload`)?
pub fn autoloads(props: &serde_json::Value) -> bool {
    props
        .get("models_autoload")
        .and_then(|a| a.as_bool())
        .unwrap_or(true)
}

/// What the last scrape learned of a router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterView {
    /// Its `GET /models`.
    pub models: Vec<RouterModel>,
    /// `models_autoload` from its `/props`: without it, a request for an
    /// unloaded model would not load it, so none is sent there to wait.
    pub autoload: bool,
}

/// The query selecting one model instance without ever loading it.
pub fn instance_query(model: &str) -> String {
    format!("?model={}&autoload=false", encode(model))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The sub-backend of `parent` carrying loaded model `m`: the router's
/// address and settings, named `parent/model`, answering to the model's id
/// and aliases.
pub fn instance_config(parent: &BackendConfig, m: &RouterModel) -> BackendConfig {
    let mut models = vec![m.id.clone()];
    models.extend(m.aliases.iter().cloned());
    BackendConfig {
        name: format!("{}/{}", parent.name, m.id),
        models,
        instance: Some(Instance {
            parent: parent.name.clone(),
            model: m.id.clone(),
        }),
        ..parent.clone()
    }
}

/// Is `b` a sub-backend of `parent` (its name and address)?
pub fn is_child(b: &BackendConfig, parent: &BackendConfig) -> bool {
    parent.instance.is_none()
        && b.instance
            .as_ref()
            .is_some_and(|i| i.parent == parent.name && b.addr == parent.addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(file: &str) -> String {
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/llama-server/2026-10-router/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        text.split_once("\r\n\r\n").unwrap().1.to_string()
    }

    #[test]
    fn the_real_router_lists_its_models_with_status() {
        let m = parse_models(&body("models-initial.txt")).unwrap();
        let view: Vec<_> = m
            .iter()
            .map(|m| (m.id.as_str(), m.status.as_str()))
            .collect();
        assert_eq!(view, [("tiny-a", "unloaded"), ("tiny-b", "unloaded")]);
        let m = parse_models(&body("models-a-loaded.txt")).unwrap();
        assert_eq!(m[0].status, Status::Loaded);
        assert_eq!(m[1].status, Status::Unloaded);
    }

    #[test]
    fn router_props_are_recognised_and_plain_ones_are_not() {
        let router: serde_json::Value = serde_json::from_str(&body("props-nomodel.txt")).unwrap();
        assert!(is_router_props(&router));
        assert!(autoloads(&router));
        assert!(!autoloads(
            &serde_json::json!({"role": "router", "models_autoload": false})
        ));
        assert!(router.get("total_slots").is_none());
        let instance: serde_json::Value =
            serde_json::from_str(&body("props-a-loaded-noautoload.txt")).unwrap();
        assert!(!is_router_props(&instance));
        assert_eq!(instance["total_slots"], 2);
        let plain: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/llama-server/2026-10/props.json"
        ))
        .unwrap();
        assert!(!is_router_props(&plain));
    }

    #[test]
    fn the_query_never_autoloads_and_is_encoded() {
        assert_eq!(instance_query("tiny-a"), "?model=tiny-a&autoload=false");
        assert_eq!(
            instance_query("org/m 7b&x"),
            "?model=org%2Fm%207b%26x&autoload=false"
        );
    }

    #[test]
    fn hostile_lists_are_bounded() {
        let many: Vec<String> = (0..500)
            .map(|i| format!(r#"{{"id":"m{i}","status":{{"value":"loaded"}}}}"#))
            .collect();
        let m = parse_models(&format!(r#"{{"data":[{}]}}"#, many.join(","))).unwrap();
        assert_eq!(m.len(), MAX_MODELS);
        let long = "x".repeat(MAX_NAME + 1);
        let m = parse_models(&format!(r#"{{"data":[{{"id":"{long}"}},{{"id":"ok"}}]}}"#)).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].status, Status::Other("none".into()));
        assert!(parse_models("<html>").is_err());
    }

    #[test]
    fn unloaded_model_values() {
        assert_eq!(UnloadedModel::parse("wait"), Some(UnloadedModel::Wait));
        assert_eq!(UnloadedModel::parse("refuse"), Some(UnloadedModel::Refuse));
        assert_eq!(UnloadedModel::parse("load"), None);
    }
}
