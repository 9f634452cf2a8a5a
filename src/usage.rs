//! Token counts and generation speed read from the end of a completion
//! response, for per-key usage (billing) and the adaptive limit's per-token
//! latency signal.
//!
//! llama-server puts them at the end of the body: `usage` (OpenAI routes;
//! in streams only with `stream_options.include_usage`), `timings`
//! (`prompt_n`, `predicted_n`, `predicted_per_token_ms`) and on the native
//! `/completion` route `tokens_evaluated` / `tokens_predicted`. Only the last
//! few KiB are kept ([`Tail`]) and searched for the *last* occurrence of each
//! key, which in a stream is the final chunk. No JSON parse of whole bodies.

/// Keeps the last `cap` bytes of a body.
#[derive(Debug)]
pub struct Tail {
    buf: Vec<u8>,
    cap: usize,
}

/// Enough for the final chunk of any llama-server response (~1–2 KiB),
/// whose `usage` and `timings` are all this module reads.
pub const TAIL_BYTES: usize = 4 * 1024;

impl Tail {
    pub fn new(cap: usize) -> Tail {
        // No allocation until the first body chunk.
        Tail {
            buf: Vec::new(),
            cap,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        let chunk = &chunk[chunk.len().saturating_sub(self.cap)..];
        let overflow = (self.buf.len() + chunk.len()).saturating_sub(self.cap);
        if overflow > 0 {
            self.buf.drain(..overflow);
        }
        self.buf.extend_from_slice(chunk);
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
}

/// What the end of a response says about its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Milliseconds per generated token.
    pub per_token_ms: Option<f64>,
}

/// Reads the usage figures from a body's tail.
pub fn scan(tail: &[u8]) -> Usage {
    // The tail may start inside a UTF-8 sequence: skip to a char boundary.
    let start = tail
        .iter()
        .take(4)
        .position(|b| (*b as i8) >= -0x40)
        .unwrap_or(0);
    let text = match std::str::from_utf8(&tail[start..]) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&tail[start..start + e.valid_up_to()]).unwrap_or(""),
    };
    let first = |keys: &[&str]| keys.iter().find_map(|k| last_number(text, k));
    Usage {
        prompt_tokens: first(&[
            "\"prompt_tokens\":",
            "\"tokens_evaluated\":",
            "\"prompt_n\":",
        ])
        .map(|v| v as u64),
        completion_tokens: first(&[
            "\"completion_tokens\":",
            "\"tokens_predicted\":",
            "\"predicted_n\":",
        ])
        .map(|v| v as u64),
        per_token_ms: last_number(text, "\"predicted_per_token_ms\":"),
    }
}

/// The number after the last occurrence of `key` (which includes the colon).
fn last_number(hay: &str, key: &str) -> Option<f64> {
    // `rfind` is a two-way substring search: linear, no per-window compare.
    let pos = hay.rfind(key)?;
    let rest = &hay.as_bytes()[pos + key.len()..];
    let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let len = rest
        .iter()
        .take_while(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'e' | b'E' | b'+'))
        .count();
    let v: f64 = std::str::from_utf8(&rest[..len]).ok()?.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/llama-server");
        std::fs::read(format!("{dir}/{path}")).unwrap()
    }

    #[test]
    fn openai_usage_wins() {
        let u = scan(&fixture("2026-10/chat.txt"));
        assert_eq!(u.prompt_tokens, Some(29));
        assert_eq!(u.completion_tokens, Some(5));
        let u = scan(&fixture("2026-10/chat-stream-usage.txt"));
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(29), Some(3)));
    }

    #[test]
    fn native_completion_and_plain_streams() {
        let u = scan(&fixture("2026-10/completion.txt"));
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(2), Some(4)));
        assert!((u.per_token_ms.unwrap() - 7.022).abs() < 0.01);
        // The stream's last chunk carries the final count.
        let u = scan(&fixture("2026-10/completion-stream.txt"));
        assert_eq!(u.completion_tokens, Some(4));
        let u = scan(&fixture("b4748/chat-stream.txt"));
        assert!(u.completion_tokens.is_some());
    }

    #[test]
    fn tail_keeps_only_the_end() {
        let mut t = Tail::new(8);
        t.push(b"hello ");
        t.push(b"world, again");
        assert_eq!(t.as_slice(), b"d, again");
        t.push(b"0123456789");
        assert_eq!(t.as_slice(), b"23456789");
        assert_eq!(scan(b"garbage \"prompt_tokens\": x"), Usage::default());
    }
}
