//! The facts routing and admission need from an inference request's body,
//! read once: the model, whether it streams, how many tokens it may generate,
//! how large its prompt is, and a fingerprint of the prompt's beginning.
//!
//! The fingerprint of a chat is its *conversation start*: the messages up to
//! and including the first user message (the first [`PREFIX_BYTES`] of the
//! leading system/developer messages and the first [`USER_BYTES`] of the
//! first user message). Every later turn of the conversation repeats it, so
//! every turn gets the same fingerprint, while conversations that share a
//! long system prompt but start differently get different ones — a system
//! prompt common to all users does not send all of them to one backend. A
//! raw `prompt` is fingerprinted by its first [`PREFIX_BYTES`].
//!
//! The body is deserialized into a struct of just these fields (serde skips
//! everything else without building it), so the cost is one pass over the
//! bytes. A body that is not JSON is the client's error: it is answered
//! `400` at the gateway and never reaches a backend, where llama-server's
//! answer would count against the backend's breaker.

use std::hash::{Hash, Hasher};

use serde::Deserialize;

/// How many bytes of the prompt's beginning the fingerprint covers: enough
/// to tell conversations with different system prompts apart.
const PREFIX_BYTES: usize = 2048;
/// How much of a chat's first user message the fingerprint covers.
const USER_BYTES: usize = 1024;
/// Characters per token, for the prompt-size estimate (English text with
/// the JSON escapes removed runs at about 4).
const CHARS_PER_TOKEN: u64 = 4;

/// What the body says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyFacts {
    pub model: Option<String>,
    pub stream: bool,
    /// `max_tokens`, `max_completion_tokens` or `n_predict` when positive.
    pub max_tokens: Option<u64>,
    /// Prompt size estimate in tokens (text length ÷ 4).
    pub prompt_tokens: u64,
    /// Hash of the prompt's first [`PREFIX_BYTES`]; `None` without a prompt.
    pub prefix: Option<u64>,
    /// llama-server's `cache_prompt` (default on).
    pub cache_prompt: bool,
    /// For a later turn of a chat (an assistant message before the last
    /// user message): the estimated tokens after the last assistant
    /// message, all that the backend that served the earlier turns has not
    /// processed yet.
    pub new_tokens: Option<u64>,
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBody(pub String);

#[derive(Deserialize)]
struct Wire {
    model: Option<String>,
    stream: Option<bool>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    n_predict: Option<i64>,
    cache_prompt: Option<bool>,
    prompt: Option<Text>,
    messages: Option<Vec<Message>>,
    input: Option<Text>,
    content: Option<Text>,
    input_prefix: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    role: Option<String>,
    content: Option<Text>,
}

/// A prompt field: a string, a list of strings or parts, or token ids.
#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    One(String),
    Many(Vec<Piece>),
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Piece {
    Str(String),
    Part { text: Option<String> },
    Other(serde::de::IgnoredAny),
}

/// Collects the fingerprinted part of the prompt and counts all of it.
struct Prompt {
    head: Vec<u8>,
    /// Where the fingerprinted part may grow to; 0 once it is complete.
    limit: usize,
    chars: u64,
    any: bool,
}

impl Default for Prompt {
    fn default() -> Self {
        Prompt {
            head: Vec::new(),
            limit: PREFIX_BYTES,
            chars: 0,
            any: false,
        }
    }
}

impl Prompt {
    fn push(&mut self, s: &str) {
        self.any = true;
        self.chars = self.chars.saturating_add(s.chars().count() as u64);
        let room = self.limit.saturating_sub(self.head.len());
        self.head
            .extend_from_slice(&s.as_bytes()[..s.len().min(room)]);
    }

    /// The fingerprinted part ends here (the first user message is in).
    fn close(&mut self) {
        self.limit = 0;
    }

    fn text(&mut self, t: &Text) {
        match t {
            Text::One(s) => self.push(s),
            Text::Many(parts) => {
                for p in parts {
                    match p {
                        Piece::Str(s) => self.push(s),
                        Piece::Part { text: Some(s) } => self.push(s),
                        Piece::Part { text: None } | Piece::Other(_) => {
                            // Token ids or media: count each as one token.
                            self.any = true;
                            self.chars = self.chars.saturating_add(CHARS_PER_TOKEN);
                        }
                    }
                }
            }
            Text::Other(_) => {}
        }
    }
}

fn positive(v: Option<i64>) -> Option<u64> {
    v.filter(|&n| n > 0).map(|n| n as u64)
}

/// Reads the facts from a complete JSON body; an empty body has none.
pub fn parse(body: &[u8]) -> Result<BodyFacts, BadBody> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(BodyFacts {
            cache_prompt: true,
            ..BodyFacts::default()
        });
    }
    let w: Wire = serde_json::from_slice(body).map_err(|e| BadBody(e.to_string()))?;
    let mut p = Prompt::default();
    for t in [&w.prompt, &w.input, &w.content].into_iter().flatten() {
        p.text(t);
    }
    if let Some(prefix) = &w.input_prefix {
        p.push(prefix);
    }
    // Prompt characters up to the end of the last assistant message.
    let mut answered_at: Option<u64> = None;
    for m in w.messages.iter().flatten() {
        let user = m.role.as_deref() == Some("user");
        let assistant = m.role.as_deref() == Some("assistant");
        if user && p.limit > 0 {
            // The first user message: a window of its own after the
            // (capped) leading messages.
            p.limit = p.head.len().min(PREFIX_BYTES) + USER_BYTES;
        }
        if let Some(role) = &m.role {
            p.push(role);
        }
        if let Some(c) = &m.content {
            p.text(c);
        }
        if user {
            p.close();
        }
        if assistant {
            answered_at = Some(p.chars);
        }
    }
    let prefix = p.any.then(|| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        p.head.hash(&mut h);
        h.finish()
    });
    Ok(BodyFacts {
        model: w.model.filter(|m| !m.is_empty()),
        stream: w.stream.unwrap_or(false),
        max_tokens: positive(w.max_completion_tokens)
            .or(positive(w.max_tokens))
            .or(positive(w.n_predict)),
        prompt_tokens: p.chars.div_ceil(CHARS_PER_TOKEN),
        prefix,
        cache_prompt: w.cache_prompt.unwrap_or(true),
        new_tokens: answered_at
            .filter(|&at| at < p.chars)
            .map(|at| (p.chars - at).div_ceil(CHARS_PER_TOKEN)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_later_turn_says_how_much_is_new() {
        let f = parse(
            br#"{"messages":[{"role":"system","content":"You are terse."},
                 {"role":"user","content":"first question"},
                 {"role":"assistant","content":"first answer"},
                 {"role":"user","content":"second question, 32 characters"}]}"#,
        )
        .unwrap();
        // "user" + the question: 4 + 30 characters.
        assert_eq!(f.new_tokens, Some(9));
        assert!(f.prompt_tokens > 9);
        let first = parse(br#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(first.new_tokens, None);
        let raw = parse(br#"{"prompt":"hello"}"#).unwrap();
        assert_eq!(raw.new_tokens, None);
    }

    #[test]
    fn chat_body() {
        let f = parse(
            br#"{"model":"chat-8b","stream":true,"max_tokens":64,
                 "messages":[{"role":"system","content":"You are terse."},
                             {"role":"user","content":[{"type":"text","text":"Hello there"}]}]}"#,
        )
        .unwrap();
        assert_eq!(f.model.as_deref(), Some("chat-8b"));
        assert!(f.stream && f.cache_prompt);
        assert_eq!(f.max_tokens, Some(64));
        // "system" + "You are terse." + "user" + "Hello there" = 35 chars.
        assert_eq!(f.prompt_tokens, 9);
        assert!(f.prefix.is_some());
    }

    #[test]
    fn completion_body_and_its_limits() {
        let f = parse(br#"{"prompt":"Hello","n_predict":-1,"cache_prompt":false}"#).unwrap();
        assert_eq!(f.model, None);
        assert_eq!(f.max_tokens, None, "-1 = until the context fills");
        assert!(!f.cache_prompt);
        assert_eq!(f.prompt_tokens, 2);
        let t = parse(br#"{"prompt":[1,2,3,4],"max_completion_tokens":9,"max_tokens":5}"#).unwrap();
        assert_eq!(t.max_tokens, Some(9));
        assert_eq!(t.prompt_tokens, 4);
    }

    #[test]
    fn every_turn_of_a_conversation_shares_its_fingerprint_others_do_not() {
        let sys = "S".repeat(5000);
        let msgs = |turns: &[(&str, &str)]| {
            let mut m = vec![serde_json::json!({"role": "system", "content": sys})];
            for (role, text) in turns {
                m.push(serde_json::json!({"role": role, "content": text}));
            }
            serde_json::json!({ "messages": m }).to_string()
        };
        let fp = |body: String| parse(body.as_bytes()).unwrap().prefix;
        let turn1 = fp(msgs(&[("user", "plan a trip to Oslo")]));
        let turn3 = fp(msgs(&[
            ("user", "plan a trip to Oslo"),
            ("assistant", "Sure."),
            ("user", "and Bergen?"),
        ]));
        let other = fp(msgs(&[("user", "write a haiku")]));
        assert_eq!(turn1, turn3, "later turns repeat the conversation start");
        assert_ne!(turn1, other, "a shared system prompt is not a shared home");
    }

    #[test]
    fn raw_prompts_are_fingerprinted_by_their_beginning() {
        let head = "P".repeat(3000);
        let fp = |tail: &str| {
            let body = serde_json::json!({ "prompt": format!("{head}{tail}") }).to_string();
            parse(body.as_bytes()).unwrap().prefix
        };
        assert_eq!(fp("a"), fp("b"), "the same first 2 KiB");
        let other = serde_json::json!({"prompt": "short"}).to_string();
        assert_ne!(fp("a"), parse(other.as_bytes()).unwrap().prefix);
    }

    #[test]
    fn not_json_is_the_clients_error() {
        for bad in [&b"{"[..], b"not json", b"[1,2", b"{\"model\": 5}"] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(b"  ").unwrap().model, None);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn any_prompt_text_is_counted(s in ".{0,300}") {
            let body = serde_json::json!({"prompt": s}).to_string();
            let f = parse(body.as_bytes()).unwrap();
            prop_assert_eq!(f.prompt_tokens, (s.chars().count() as u64).div_ceil(4));
        }
    }
}
