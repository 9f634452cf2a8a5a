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

/// Enough for the final chunk of any llama-server response (under 2 KiB),
/// whose `usage` and `timings` are all this module reads.
pub const TAIL_BYTES: usize = 2 * 1024;

impl Tail {
    pub fn new(cap: usize) -> Tail {
        // No allocation until the first body chunk.
        Tail {
            buf: Vec::new(),
            cap,
        }
    }

    /// Appends a chunk. The buffer may grow to twice `cap` before the front
    /// is dropped, so a stream of small chunks moves bytes once per `cap`
    /// bytes, not once per chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        let chunk = &chunk[chunk.len().saturating_sub(self.cap)..];
        if self.buf.len() + chunk.len() > 2 * self.cap {
            let keep = self.cap.saturating_sub(chunk.len()).min(self.buf.len());
            self.buf.drain(..self.buf.len() - keep);
        }
        self.buf.extend_from_slice(chunk);
    }

    /// At least the last `cap` bytes pushed (at most twice that).
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

/// Keys read, each without its opening quote, in [`scan`]'s slot order.
const KEYS: [&[u8]; 7] = [
    b"prompt_tokens\":",
    b"tokens_evaluated\":",
    b"prompt_n\":",
    b"completion_tokens\":",
    b"tokens_predicted\":",
    b"predicted_n\":",
    b"predicted_per_token_ms\":",
];

/// Reads the usage figures from a body's tail: one pass over the bytes,
/// remembering where the value of each key last starts.
pub fn scan(tail: &[u8]) -> Usage {
    let mut last = [None::<usize>; KEYS.len()];
    for (i, &b) in tail.iter().enumerate() {
        if b != b'"' {
            continue;
        }
        let rest = &tail[i + 1..];
        for (k, key) in KEYS.iter().enumerate() {
            if rest.starts_with(key) {
                last[k] = Some(i + 1 + key.len());
            }
        }
    }
    let value = |k: usize| last[k].and_then(|at| number_at(&tail[at..]));
    let first = |ks: [usize; 3]| ks.into_iter().find_map(value);
    Usage {
        prompt_tokens: first([0, 1, 2]).map(|v| v as u64),
        completion_tokens: first([3, 4, 5]).map(|v| v as u64),
        per_token_ms: value(6),
    }
}

/// The JSON number at the start of `rest` (after optional spaces).
fn number_at(rest: &[u8]) -> Option<f64> {
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
    fn the_tail_holds_what_the_whole_body_says() {
        for f in [
            "2026-10/chat.txt",
            "2026-10/chat-stream.txt",
            "2026-10/chat-stream-usage.txt",
            "2026-10/completion.txt",
            "2026-10/completion-stream.txt",
            "2026-10/v1-completions.txt",
            "b4748/completion.json",
            "b4748/chat-stream.txt",
        ] {
            let body = fixture(f);
            let mut t = Tail::new(TAIL_BYTES);
            for c in body.chunks(97) {
                t.push(c);
            }
            assert_eq!(scan(t.as_slice()), scan(&body), "{f}");
            assert!(scan(&body).completion_tokens.is_some(), "{f}");
        }
    }

    #[test]
    fn tail_keeps_at_least_the_end_and_at_most_twice_cap() {
        let mut t = Tail::new(8);
        t.push(b"hello ");
        t.push(b"world, again");
        assert!(t.as_slice().ends_with(b"d, again"));
        assert!(t.as_slice().len() <= 16);
        t.push(b"0123456789");
        assert!(t.as_slice().ends_with(b"23456789"));
        assert!(t.as_slice().len() <= 16);
        for _ in 0..100 {
            t.push(b"abc");
            assert!(t.as_slice().len() <= 16 && t.as_slice().ends_with(b"abc"));
        }
        assert_eq!(scan(b"garbage \"prompt_tokens\": x"), Usage::default());
    }
}
