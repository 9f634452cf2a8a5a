//! Completion bodies and SSE chunks shaped like the real ones (see
//! `tests/fixtures/llama-server/`), per dialect; the bodies of `/props`,
//! `/slots` and `/v1/models` are in `endpoints.rs`.

use std::sync::OnceLock;

use rand::rngs::SmallRng;
use rand::Rng;
use serde_json::{json, Value};

use super::model::Timings;
use super::options::Dialect;
use super::request::{Inference, Route};
use super::templates;

/// Word pieces the fake model "generates" (nonsense, like the tiny model).
const PIECES: &[&str] = &[
    " the",
    " model",
    " UK",
    " up",
    " ling",
    " styles",
    " camera",
    "ing",
    " data",
    " river",
    " Kelly",
    " files",
    " Commander",
    " started",
    " realized",
    " slant",
    " temple",
    " figures",
    " gate",
    " sluice",
    " water",
    " flow",
    "ed",
    " of",
    " and",
    " to",
    " a",
    " queue",
    " slot",
    " token",
    " light",
    " stone",
];

/// The text and token id of one generated token.
pub fn next_token(rng: &mut SmallRng) -> (u32, &'static str) {
    let i = rng.random_range(0..PIECES.len());
    (rng.random_range(100..32000), PIECES[i])
}

/// `chatcmpl-` followed by 32 letters and digits, like the real ids.
pub fn completion_id(rng: &mut SmallRng) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::with_capacity(41);
    s.push_str("chatcmpl-");
    for _ in 0..32 {
        s.push(ALNUM[rng.random_range(0..ALNUM.len())] as char);
    }
    s
}

/// An error body: `{"error":{"code":..,"message":..,"type":..}}`.
pub fn error_body(status: u16, message: &str, kind: &str) -> String {
    json!({"error": {"code": status, "message": message, "type": kind}}).to_string()
}

/// The body every endpoint answers while the model loads.
pub const LOADING_BODY: &str =
    r#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#;

/// What every response of one request shares.
#[derive(Clone, Debug)]
pub struct Shape {
    pub dialect: Dialect,
    pub model: String,
    pub id: String,
    pub created: u64,
    pub n_ctx: u32,
    pub req: Inference,
    /// The length was set by the request (finish "length"), not drawn
    /// (finish "stop", as at an end-of-sequence token).
    pub limited: bool,
}

pub(super) fn parsed(cell: &'static OnceLock<Value>, text: &str) -> Value {
    cell.get_or_init(|| serde_json::from_str(text).unwrap_or(Value::Null))
        .clone()
}

fn gen_settings(dialect: Dialect) -> Value {
    static B: OnceLock<Value> = OnceLock::new();
    static R: OnceLock<Value> = OnceLock::new();
    match dialect {
        Dialect::B4748 => parsed(&B, templates::GEN_SETTINGS_B4748),
        Dialect::Recent => parsed(&R, templates::GEN_SETTINGS_RECENT),
    }
}

pub(super) fn set(v: &mut Value, key: &str, val: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_string(), val);
    }
}

// === impl Shape ===

impl Shape {
    fn finish_reason(&self) -> &'static str {
        if self.limited {
            "length"
        } else {
            "stop"
        }
    }

    fn timings(&self, t: &Timings) -> Value {
        let per = |n: u32, ms: f64| if n > 0 { ms / n as f64 } else { 0.0 };
        let rate = |n: u32, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
        let mut v = json!({
            "cache_n": t.cache_n,
            "prompt_n": t.prompt_n,
            "prompt_ms": t.prompt_ms,
            "prompt_per_token_ms": per(t.prompt_n, t.prompt_ms),
            "prompt_per_second": rate(t.prompt_n, t.prompt_ms),
            "predicted_n": t.predicted_n,
            "predicted_ms": t.predicted_ms,
            "predicted_per_token_ms": per(t.predicted_n, t.predicted_ms),
            "predicted_per_second": rate(t.predicted_n, t.predicted_ms),
        });
        if let (Dialect::B4748, Some(o)) = (self.dialect, v.as_object_mut()) {
            o.remove("cache_n");
        }
        v
    }

    fn usage(&self, t: &Timings) -> Value {
        // The whole prompt, cached or not; the cached part in the details.
        let prompt = t.cache_n + t.prompt_n;
        let mut v = json!({
            "completion_tokens": t.predicted_n,
            "prompt_tokens": prompt,
            "total_tokens": prompt + t.predicted_n,
        });
        if self.dialect == Dialect::Recent {
            set(
                &mut v,
                "prompt_tokens_details",
                json!({"cached_tokens": t.cache_n}),
            );
        }
        v
    }

    fn openai_base(&self, object: &str) -> Value {
        json!({
            "created": self.created,
            "id": self.id,
            "model": self.model,
            "system_fingerprint": self.dialect.build_info(),
            "object": object,
        })
    }

    /// The native `/completion` final object (also the last stream chunk).
    fn native_final(&self, content: &str, t: &Timings) -> Value {
        let mut gs = gen_settings(self.dialect);
        let n = self.req.n_predict.map_or(-1, i64::from);
        set(&mut gs, "n_predict", json!(n));
        set(&mut gs, "max_tokens", json!(n));
        set(&mut gs, "stream", json!(self.req.stream));
        set(&mut gs, "ignore_eos", json!(self.req.ignore_eos));
        json!({
            "index": 0,
            "content": content,
            "tokens": [],
            "id_slot": t.slot,
            "stop": true,
            "model": self.model,
            "tokens_predicted": t.predicted_n,
            "tokens_evaluated": t.cache_n + t.prompt_n,
            "generation_settings": gs,
            "prompt": self.req.prompt_text,
            "has_new_line": content.contains('\n'),
            "truncated": false,
            "stop_type": if self.limited { "limit" } else { "eos" },
            "stopping_word": "",
            "tokens_cached": t.cache_n + t.prompt_n + t.predicted_n,
            "timings": self.timings(t),
        })
    }

    /// The complete non-streaming body.
    pub fn full_body(&self, content: &str, t: &Timings) -> String {
        let v = match self.req.route {
            Route::Completion => self.native_final(content, t),
            Route::V1Completions => {
                let mut v = self.openai_base("text_completion");
                set(
                    &mut v,
                    "choices",
                    json!([{
                        "text": content, "index": 0, "logprobs": null,
                        "finish_reason": self.finish_reason(),
                    }]),
                );
                set(&mut v, "usage", self.usage(t));
                set(&mut v, "timings", self.timings(t));
                v
            }
            Route::V1Chat => {
                let mut v = self.openai_base("chat.completion");
                set(
                    &mut v,
                    "choices",
                    json!([{
                        "finish_reason": self.finish_reason(), "index": 0,
                        "message": {"role": "assistant", "content": content},
                    }]),
                );
                set(&mut v, "usage", self.usage(t));
                set(&mut v, "timings", self.timings(t));
                v
            }
        };
        v.to_string()
    }

    /// SSE events sent before the first token (the 2026-10 role delta).
    pub fn stream_start(&self) -> String {
        if self.req.route == Route::V1Chat && self.dialect == Dialect::Recent {
            let mut v = self.openai_base("chat.completion.chunk");
            set(
                &mut v,
                "choices",
                json!([{
                    "finish_reason": null, "index": 0,
                    "delta": {"role": "assistant", "content": null},
                }]),
            );
            sse(&v)
        } else {
            String::new()
        }
    }

    /// The SSE event of token number `n` (1-based).
    pub fn stream_token(&self, piece: &str, token_id: u32, n: u32, prompt_n: u32) -> String {
        let v = match self.req.route {
            Route::Completion => json!({
                "index": 0, "content": piece, "tokens": [token_id], "stop": false,
                "id_slot": -1, "tokens_predicted": n, "tokens_evaluated": prompt_n,
            }),
            Route::V1Completions => {
                let mut v = self.openai_base("text_completion");
                set(
                    &mut v,
                    "choices",
                    json!([{
                        "text": piece, "index": 0, "logprobs": null, "finish_reason": null,
                    }]),
                );
                v
            }
            Route::V1Chat => {
                let mut v = self.openai_base("chat.completion.chunk");
                set(
                    &mut v,
                    "choices",
                    json!([{
                        "finish_reason": null, "index": 0, "delta": {"content": piece},
                    }]),
                );
                v
            }
        };
        sse(&v)
    }

    /// The closing SSE events: final chunk with `timings` (and `usage`),
    /// then `data: [DONE]` on the OpenAI endpoints.
    pub fn stream_end(&self, t: &Timings) -> String {
        match self.req.route {
            Route::Completion => {
                // The stream's last chunk repeats everything but the text.
                sse(&self.native_final("", t))
            }
            Route::V1Completions | Route::V1Chat => {
                let chat = self.req.route == Route::V1Chat;
                let object = if chat {
                    "chat.completion.chunk"
                } else {
                    "text_completion"
                };
                let mut last = self.openai_base(object);
                let choice = if chat {
                    json!({"finish_reason": self.finish_reason(), "index": 0, "delta": {}})
                } else {
                    json!({"text": "", "index": 0, "logprobs": null,
                           "finish_reason": self.finish_reason()})
                };
                set(&mut last, "choices", json!([choice]));
                set(&mut last, "timings", self.timings(t));
                let mut out = String::new();
                match self.dialect {
                    Dialect::B4748 => {
                        set(&mut last, "usage", self.usage(t));
                        out.push_str(&sse(&last));
                    }
                    Dialect::Recent => {
                        out.push_str(&sse(&last));
                        if self.req.include_usage {
                            let mut u = self.openai_base(object);
                            set(&mut u, "choices", json!([]));
                            set(&mut u, "usage", self.usage(t));
                            set(&mut u, "timings", self.timings(t));
                            out.push_str(&sse(&u));
                        }
                    }
                }
                out.push_str("data: [DONE]\n\n");
                out
            }
        }
    }
}

/// One SSE event.
pub fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::request::parse;

    fn shape(route: Route, dialect: Dialect, body: &[u8]) -> Shape {
        Shape {
            dialect,
            model: "m".into(),
            id: "chatcmpl-x".into(),
            created: 1,
            n_ctx: 2048,
            req: parse(route, body).unwrap(),
            limited: true,
        }
    }

    const T: Timings = Timings {
        slot: 0,
        cache_n: 0,
        prompt_n: 2,
        prompt_ms: 2.0,
        predicted_n: 3,
        predicted_ms: 30.0,
    };

    #[test]
    fn chat_stream_end_per_dialect() {
        let s = shape(
            Route::V1Chat,
            Dialect::Recent,
            br#"{"messages":[],"stream":true}"#,
        );
        let end = s.stream_end(&T);
        assert!(end.ends_with("data: [DONE]\n\n"));
        assert!(!end.contains("usage"));
        let s = shape(
            Route::V1Chat,
            Dialect::Recent,
            br#"{"messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
        );
        assert!(s.stream_end(&T).contains(r#""choices":[]"#));
        let s = shape(
            Route::V1Chat,
            Dialect::B4748,
            br#"{"messages":[],"stream":true}"#,
        );
        assert!(s.stream_end(&T).contains("usage"));
        assert!(s.stream_start().is_empty());
    }

    #[test]
    fn native_stream_has_no_done() {
        let s = shape(
            Route::Completion,
            Dialect::Recent,
            br#"{"prompt":"hi","stream":true}"#,
        );
        assert!(!s.stream_end(&T).contains("[DONE]"));
    }
}
