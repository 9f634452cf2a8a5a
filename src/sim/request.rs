//! Reading an inference request body the way llama-server does: invalid
//! JSON is a 500 `server_error`, a missing `prompt`/`messages` a 400, and
//! fields of the wrong type fall back to their defaults (llama-server's
//! `json_value` does the same).

use std::sync::Arc;

use serde_json::Value;

use super::tokens::{self, Token};

/// The inference endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /completion` (native).
    Completion,
    /// `POST /v1/completions`.
    V1Completions,
    /// `POST /v1/chat/completions`.
    V1Chat,
}

/// What the simulator needs from an inference request.
#[derive(Clone, Debug, PartialEq)]
pub struct Inference {
    pub route: Route,
    pub stream: bool,
    /// `stream_options.include_usage` (OpenAI streams).
    pub include_usage: bool,
    /// Asked length (`n_predict`, `max_tokens`, `max_completion_tokens`);
    /// `None` when absent or negative.
    pub n_predict: Option<u32>,
    pub ignore_eos: bool,
    /// Deterministic estimate of the prompt length in tokens.
    pub prompt_tokens: u32,
    /// The prompt as llama-server echoes it (`"prompt"` of `/completion`).
    pub prompt_text: String,
    /// The prompt as tokens ([`tokens`]), BOS first; as long as
    /// `prompt_tokens` (unless that saturated).
    pub tokens: Arc<[Token]>,
    /// `cache_prompt` of the body; `None` when absent (the server's default).
    pub cache_prompt: Option<bool>,
}

/// A rejection with llama-server's status and error type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
}

impl ApiError {
    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
        }
    }

    pub fn server_error(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 500,
            message: message.into(),
            kind: "server_error",
        }
    }
}

/// Token estimate of a text: one token per 4 bytes, rounded up.
pub fn estimate_tokens(text: &str) -> u32 {
    text.len().div_ceil(4).min(u32::MAX as usize) as u32
}

/// Parses and checks one inference request body.
pub fn parse(route: Route, body: &[u8]) -> Result<Inference, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        let what = if body.iter().all(|b| b.is_ascii_whitespace()) {
            "attempting to parse an empty input; check that your input string or stream contains the expected JSON".to_string()
        } else {
            format!("syntax error while parsing value - {e}")
        };
        ApiError::server_error(format!(
            "[json.exception.parse_error.101] parse error at line {}, column {}: {what}",
            e.line().max(1),
            e.column().max(1)
        ))
    })?;
    let Some(obj) = v.as_object() else {
        return Err(ApiError::server_error(format!(
            "[json.exception.type_error.306] cannot use value() with {}",
            type_name(&v)
        )));
    };
    let mut seq = vec![tokens::BOS];
    let prompt_text = match route {
        Route::Completion | Route::V1Completions => {
            let p = obj
                .get("prompt")
                .ok_or_else(|| ApiError::invalid_request("\"prompt\" must be provided"))?;
            prompt_of(p, &mut seq)?
        }
        Route::V1Chat => {
            let msgs = obj
                .get("messages")
                .and_then(Value::as_array)
                .ok_or_else(|| ApiError::invalid_request("Expected 'messages' to be an array"))?;
            chat_prompt(msgs, &mut seq)?
        }
    };
    let int = |k: &str| obj.get(k).and_then(Value::as_i64);
    let asked = match route {
        Route::Completion => int("n_predict").or(int("max_tokens")),
        _ => int("max_completion_tokens")
            .or(int("max_tokens"))
            .or(int("n_predict")),
    };
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Inference {
        route,
        stream: flag("stream"),
        include_usage,
        n_predict: asked.and_then(|n| u32::try_from(n).ok()),
        ignore_eos: flag("ignore_eos"),
        prompt_tokens: seq.len().min(u32::MAX as usize) as u32,
        prompt_text,
        tokens: seq.into(),
        cache_prompt: obj.get("cache_prompt").and_then(Value::as_bool),
    })
}

fn prompt_of(p: &Value, seq: &mut Vec<Token>) -> Result<String, ApiError> {
    match p {
        Value::String(s) => {
            tokens::push_text(seq, s);
            Ok(format!("<s> {s}"))
        }
        Value::Array(items) => {
            let mut text = String::new();
            for it in items {
                match it {
                    Value::Number(n) => seq.push(tokens::id_token(n.as_u64().unwrap_or(0))),
                    Value::String(s) => {
                        tokens::push_text(seq, s);
                        text.push_str(s);
                    }
                    _ => {
                        return Err(ApiError::invalid_request(
                            "\"prompt\" elements must be strings or tokens",
                        ))
                    }
                }
            }
            Ok(format!("<s> {text}"))
        }
        _ => Err(ApiError::invalid_request(
            "\"prompt\" must be a string or an array",
        )),
    }
}

/// The chat template of the captured model wraps each message in
/// `<|im_start|>role\n...<|im_end|>\n` (4 tokens besides role and content)
/// and ends with the assistant header (3); see [`tokens`].
fn chat_prompt(msgs: &[Value], seq: &mut Vec<Token>) -> Result<String, ApiError> {
    let mut text = String::new();
    for m in msgs {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
            Some(Value::Null) | None => String::new(),
            Some(_) => return Err(ApiError::invalid_request("Invalid 'content' type")),
        };
        tokens::push_message(seq, role, &content);
        text.push_str(&format!("<|im_start|>{role}\n{content}<|im_end|>\n"));
    }
    text.push_str("<|im_start|>assistant\n");
    seq.extend_from_slice(&tokens::GEN_PROMPT);
    Ok(text)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_prompt_estimate_matches_captures() {
        // "hi" → tokens_evaluated 2; "Hello, my name is" → 6.
        let r = parse(Route::Completion, br#"{"prompt":"hi","n_predict":4}"#).unwrap();
        assert_eq!((r.prompt_tokens, r.n_predict), (2, Some(4)));
        let r = parse(Route::Completion, br#"{"prompt":"Hello, my name is"}"#).unwrap();
        assert_eq!((r.prompt_tokens, r.n_predict), (6, None));
    }

    #[test]
    fn openai_fields() {
        let r = parse(
            Route::V1Chat,
            br#"{"messages":[{"role":"user","content":"hello there"}],"max_tokens":7,
                 "stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(r.n_predict, Some(7));
        assert!(r.stream && r.include_usage);
        let r = parse(Route::V1Completions, br#"{"prompt":"x","max_tokens":-1}"#).unwrap();
        assert_eq!(r.n_predict, None);
    }

    #[test]
    fn a_later_turn_shares_the_earlier_prompt_as_tokens() {
        let t1 = parse(
            Route::V1Chat,
            br#"{"messages":[{"role":"system","content":"Be brief, be kind."},
                 {"role":"user","content":"hello"}]}"#,
        )
        .unwrap();
        let t2 = parse(
            Route::V1Chat,
            br#"{"messages":[{"role":"system","content":"Be brief, be kind."},
                 {"role":"user","content":"hello"},{"role":"assistant","content":"hi"},
                 {"role":"user","content":"more"}],"cache_prompt":false}"#,
        )
        .unwrap();
        assert_eq!(t1.tokens.len() as u32, t1.prompt_tokens);
        assert_eq!(t2.tokens.len() as u32, t2.prompt_tokens);
        // Everything but the closing assistant header.
        let shared = tokens::common_prefix(&t1.tokens, &t2.tokens);
        assert_eq!(shared, t1.tokens.len() - tokens::GEN_PROMPT.len());
        assert_eq!((t1.cache_prompt, t2.cache_prompt), (None, Some(false)));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let e = parse(Route::Completion, b"{b").unwrap_err();
        assert_eq!((e.status, e.kind), (500, "server_error"));
        assert!(e.message.starts_with("[json.exception.parse_error.101]"));
        assert_eq!(parse(Route::Completion, b"").unwrap_err().status, 500);
        assert_eq!(parse(Route::Completion, b"[1,2]").unwrap_err().status, 500);
        assert_eq!(parse(Route::Completion, b"{}").unwrap_err().status, 400);
        assert_eq!(
            parse(Route::V1Chat, br#"{"messages":3}"#)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse(Route::Completion, br#"{"prompt":{}}"#)
                .unwrap_err()
                .status,
            400
        );
        // Wrong types of optional fields fall back to defaults.
        let r = parse(
            Route::Completion,
            br#"{"prompt":"a","n_predict":"x","stream":1}"#,
        )
        .unwrap();
        assert_eq!((r.n_predict, r.stream), (None, false));
    }
}
