//! The bodies of the read-only endpoints, `/props`, `/slots` and
//! `/v1/models`: the real captures (see [`templates`](super::templates))
//! patched with this server's slots, context and model name, per dialect.

use std::sync::OnceLock;

use serde_json::{json, Value};

use super::model::SlotView;
use super::options::Dialect;
use super::responses::{parsed, set};
use super::templates;

/// `/props`.
pub fn props(dialect: Dialect, slots: usize, n_ctx: u32, model: &str) -> String {
    static B: OnceLock<Value> = OnceLock::new();
    static R: OnceLock<Value> = OnceLock::new();
    let mut v = match dialect {
        Dialect::B4748 => parsed(&B, templates::PROPS_B4748),
        Dialect::Recent => parsed(&R, templates::PROPS_RECENT),
    };
    set(&mut v, "total_slots", json!(slots));
    set(&mut v, "model_path", json!(model));
    set(&mut v, "build_info", json!(dialect.build_info()));
    if dialect == Dialect::Recent {
        set(&mut v, "model_alias", json!(model));
    }
    if let Some(dgs) = v.get_mut("default_generation_settings") {
        set(dgs, "n_ctx", json!(n_ctx));
    }
    v.to_string()
}

/// `/slots`.
pub fn slots(dialect: Dialect, views: &[SlotView], n_ctx: u32) -> String {
    static B: OnceLock<Value> = OnceLock::new();
    static R: OnceLock<Value> = OnceLock::new();
    let base = match dialect {
        Dialect::B4748 => parsed(&B, templates::SLOT_B4748),
        Dialect::Recent => parsed(&R, templates::SLOT_RECENT),
    };
    let all: Vec<Value> = views
        .iter()
        .map(|s| {
            let mut v = base.clone();
            set(&mut v, "id", json!(s.id));
            set(&mut v, "n_ctx", json!(n_ctx));
            set(&mut v, "is_processing", json!(s.task.is_some()));
            if dialect == Dialect::B4748 {
                set(&mut v, "id_task", json!(s.task.map_or(-1, |t| t as i64)));
                if let Some(nt) = v.get_mut("next_token") {
                    set(nt, "n_decoded", json!(s.n_decoded));
                    set(
                        nt,
                        "n_remain",
                        json!(if s.task.is_some() {
                            s.n_remain as i64
                        } else {
                            -1
                        }),
                    );
                }
            }
            v
        })
        .collect();
    Value::Array(all).to_string()
}

/// `/v1/models`.
pub fn models(dialect: Dialect, model: &str, n_ctx: u32, created: u64) -> String {
    static B: OnceLock<Value> = OnceLock::new();
    static R: OnceLock<Value> = OnceLock::new();
    let mut v = match dialect {
        Dialect::B4748 => parsed(&B, templates::MODELS_B4748),
        Dialect::Recent => parsed(&R, templates::MODELS_RECENT),
    };
    if let Some(d) = v.get_mut("data").and_then(|d| d.get_mut(0)) {
        set(d, "id", json!(model));
        set(d, "created", json!(created));
        if dialect == Dialect::Recent {
            set(d, "aliases", json!([model]));
            if let Some(meta) = d.get_mut("meta") {
                set(meta, "n_ctx", json!(n_ctx));
            }
        }
    }
    if let Some(m) = v.get_mut("models").and_then(|d| d.get_mut(0)) {
        set(m, "name", json!(model));
        set(m, "model", json!(model));
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn props_patch_slots_and_ctx() {
        let v: Value = serde_json::from_str(&props(Dialect::B4748, 7, 512, "m")).unwrap();
        assert_eq!(v["total_slots"], 7);
        assert_eq!(v["default_generation_settings"]["n_ctx"], 512);
    }
}
