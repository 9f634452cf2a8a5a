//! Which models a backend serves, from its `/v1/models` answer, and whether
//! a request's `model` names one of them.
//!
//! llama-server lists each model once in `data[]` with its `id` (the
//! `--alias`, or the model path) and `aliases`; router-mode builds list every
//! model they can load. Clients name a model by that id, or often by the
//! file's stem (`coder-7b` for `models/coder-7b.gguf`): both match.

use serde::Deserialize;

/// A `/v1/models` (or a router's `/models`) body, as llama-server writes
/// it: the one wire shape both readers share.
#[derive(Deserialize)]
pub(super) struct List {
    #[serde(default)]
    pub data: Vec<Entry>,
}

#[derive(Deserialize)]
pub(super) struct Entry {
    pub id: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Router mode only: `{"value": "loaded" | "loading" | "unloaded" | ...}`.
    pub status: Option<StatusField>,
}

#[derive(Deserialize)]
pub(super) struct StatusField {
    pub value: Option<String>,
}

/// At most this many names are kept per backend (a hostile backend cannot
/// grow the gateway's memory through its model list).
const MAX_MODELS: usize = 256;
/// Longest model name kept.
const MAX_NAME: usize = 256;

/// The model names in a `/v1/models` body (ids and aliases, deduplicated).
pub fn parse(body: &str) -> Result<Vec<String>, String> {
    let list: List = serde_json::from_str(body).map_err(|e| format!("not a model list: {e}"))?;
    let mut names: Vec<String> = Vec::new();
    for e in list.data {
        for n in e.id.into_iter().chain(e.aliases) {
            if !n.is_empty() && n.len() <= MAX_NAME && !names.contains(&n) {
                names.push(n);
            }
        }
        if names.len() >= MAX_MODELS {
            names.truncate(MAX_MODELS);
            break;
        }
    }
    Ok(names)
}

/// The file stem of a model path: `models/coder-7b.gguf` → `coder-7b`.
fn stem(name: &str) -> &str {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.strip_suffix(".gguf").unwrap_or(base)
}

/// Does `wanted` name one of `served`?
pub fn matches(served: &[String], wanted: &str) -> bool {
    served
        .iter()
        .any(|s| s == wanted || stem(s) == wanted || stem(s) == stem(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_capture_lists_its_model() {
        let body = include_str!("../../tests/fixtures/llama-server/2026-10/v1-models.json");
        let names = parse(body).unwrap();
        assert_eq!(names, ["models/tiny.gguf"]);
        assert!(matches(&names, "models/tiny.gguf"));
        assert!(matches(&names, "tiny"));
        assert!(matches(&names, "tiny.gguf"));
        assert!(!matches(&names, "coder-7b"));
    }

    #[test]
    fn aliases_count_and_garbage_is_refused() {
        let names =
            parse(r#"{"data":[{"id":"chat-8b","aliases":["chat","chat-8b"]},{"id":"coder"}]}"#)
                .unwrap();
        assert_eq!(names, ["chat-8b", "chat", "coder"]);
        assert!(parse("<html>").is_err());
        let many: Vec<String> = (0..1000).map(|i| format!(r#"{{"id":"m{i}"}}"#)).collect();
        let names = parse(&format!(r#"{{"data":[{}]}}"#, many.join(","))).unwrap();
        assert_eq!(names.len(), MAX_MODELS);
    }
}
