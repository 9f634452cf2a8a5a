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
//!
//! The figures are the backend's word, so they are read saturating: a value
//! that is not a finite, non-negative number is ignored, counts are clamped
//! to [`MAX_TOKENS`] and the per-token time to [`MAX_PER_TOKEN_MS`]; what
//! consumes them adds with saturation.

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

/// Most tokens one response may account for: 100× the largest context
/// window of any model, far below where sums of them could overflow.
pub const MAX_TOKENS: u64 = 1_000_000_000;

/// Longest per-token time believed: an hour.
pub const MAX_PER_TOKEN_MS: f64 = 3_600_000.0;

/// What the end of a response says about its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// At most [`MAX_TOKENS`].
    pub prompt_tokens: Option<u64>,
    /// At most [`MAX_TOKENS`].
    pub completion_tokens: Option<u64>,
    /// Milliseconds per generated token: finite, in `0..=MAX_PER_TOKEN_MS`.
    pub per_token_ms: Option<f64>,
    /// Milliseconds per processed prompt token (`timings.prompt_per_token_ms`),
    /// in the same range.
    pub prompt_per_token_ms: Option<f64>,
}

/// Keys read, each without its opening quote, in [`scan`]'s slot order.
const KEYS: [&[u8]; 9] = [
    b"prompt_tokens\":",
    b"tokens_evaluated\":",
    b"prompt_n\":",
    b"completion_tokens\":",
    b"tokens_predicted\":",
    b"predicted_n\":",
    b"predicted_per_token_ms\":",
    b"cache_n\":",
    b"prompt_per_token_ms\":",
];

/// Reads the usage figures from a body's tail: one pass over the bytes,
/// remembering where the value of each key last starts.
pub fn scan(tail: &[u8]) -> Usage {
    let mut last = [None::<usize>; KEYS.len()];
    each_at(tail, b'"', |i| {
        let rest = &tail[i + 1..];
        // Every key starts with `p`, `t` or `c`: most quotes open none of
        // them, and one byte says so (a tenth of the cost per response).
        let Some(&first) = rest.first() else { return };
        if !matches!(first, b'p' | b't' | b'c') {
            return;
        }
        for (k, key) in KEYS.iter().enumerate() {
            if key[0] == first && rest.starts_with(key) {
                last[k] = Some(i + 1 + key.len());
            }
        }
    });
    let value = |k: usize| last[k].and_then(|at| number_at(&tail[at..]));
    let first = |ks: &[usize]| ks.iter().copied().find_map(value);
    // `number_at` gives finite, non-negative values only.
    let count = |v: f64| (v.min(MAX_TOKENS as f64) as u64).min(MAX_TOKENS);
    // `timings.prompt_n` counts only the tokens processed; the prompt is
    // those plus the ones reused from the cache (`cache_n`).
    let from_timings = value(2).map(|n| count(n).saturating_add(value(7).map_or(0, count)));
    Usage {
        prompt_tokens: first(&[0, 1])
            .map(count)
            .or(from_timings.map(|n| n.min(MAX_TOKENS))),
        completion_tokens: first(&[3, 4, 5]).map(count),
        per_token_ms: value(6).map(|v| v.min(MAX_PER_TOKEN_MS)),
        prompt_per_token_ms: value(8).map(|v| v.min(MAX_PER_TOKEN_MS)),
    }
}

/// Calls `f` with every place of `byte` in `bytes`, in order, found eight
/// bytes at a time.
///
/// Byte-by-byte loops here were the largest part of the gateway's own
/// instructions: the quotes of a 1.6 KiB `/completion` answer (16.7 k of
/// 155 k per request), the newlines of a stream (2 k per event);
/// `memchr_iter` cost as much again in per-match calls, as a typical answer
/// has a quote every eight bytes (loadtest/RESULTS.md, "Instructions per
/// request").
fn each_at(bytes: &[u8], byte: u8, mut f: impl FnMut(usize)) {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut base = 0;
    for word in &mut words {
        let x =
            u64::from_le_bytes(word.try_into().expect("eight bytes")) ^ (ONES * u64::from(byte));
        // The high bit of each byte of `nonzero` is set where that byte of
        // `x` is not zero (no carry crosses bytes: 0x7f + 0x7f < 0x100), so
        // `found` marks exactly the bytes sought, the first in the lowest.
        let nonzero = ((x & !HIGH).wrapping_add(!HIGH)) | x;
        let mut found = !nonzero & HIGH;
        while found != 0 {
            f(base + found.trailing_zeros() as usize / 8);
            found &= found - 1;
        }
        base += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        if b == byte {
            f(base + i);
        }
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

/// Counts the events of a server-sent-event stream as they pass (each
/// `data:` line of llama-server's streams is one token, or the final chunk
/// and `[DONE]`): what was streamed when a stream ends before its `usage`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamCount {
    events: u64,
    /// How many bytes of `\ndata:` the previous chunk ended with.
    partial: usize,
}

const EVENT: &[u8] = b"\ndata:";

impl StreamCount {
    pub fn push(&mut self, chunk: &[u8]) {
        // A match begun in the previous chunk is finished byte by byte; a
        // byte that breaks it is looked at again below (it may be a newline).
        let mut from = 0;
        let mut matched = self.partial;
        while matched > 0 && from < chunk.len() {
            if chunk[from] != EVENT[matched] {
                matched = 0;
                break;
            }
            from += 1;
            matched += 1;
            if matched == EVENT.len() {
                self.events += 1;
                matched = 0;
            }
        }
        // Then every newline, found eight bytes at a time: an event where
        // `data:` follows it, a match to finish in the next chunk where the
        // chunk ends inside it. (`data:` holds no newline, so matches never
        // overlap.)
        let rest = &chunk[from..];
        each_at(rest, b'\n', |i| {
            let after = &rest[i + 1..];
            if after.len() >= EVENT.len() - 1 {
                if after.starts_with(&EVENT[1..]) {
                    self.events += 1;
                }
            } else if EVENT[1..].starts_with(after) {
                matched = 1 + after.len();
            }
        });
        self.partial = matched;
    }

    /// Events seen (the first one counts once a newline precedes it; a
    /// stream's first event follows its headers, so `push` is given a
    /// leading newline by [`StreamCount::new`]).
    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn new() -> StreamCount {
        StreamCount {
            events: 0,
            partial: 1,
        }
    }
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
        // Without `usage`, the prompt is what was processed plus what the
        // cache held (cache_n 28 + prompt_n 1).
        let u = scan(&fixture("2026-10/chat-stream.txt"));
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(29), Some(5)));
        assert!((u.prompt_per_token_ms.unwrap() - 5.87).abs() < 0.01);
    }

    /// Where `each_at` finds the quotes, and where they are.
    fn quotes_found_and_there(b: &[u8]) -> (Vec<usize>, Vec<usize>) {
        let mut found = Vec::new();
        each_at(b, b'"', |i| found.push(i));
        let there = b
            .iter()
            .enumerate()
            .filter(|(_, &c)| c == b'"')
            .map(|(i, _)| i);
        (found, there.collect())
    }

    #[test]
    fn each_quote_is_found_where_it_is() {
        let (found, there) = quotes_found_and_there(&fixture("2026-10/completion.txt"));
        assert_eq!(found, there);
        // Bytes that differ from a quote in one bit, high bytes, quotes at
        // every place of a word and in the remainder.
        let tricky: Vec<u8> = (0..=255u8)
            .chain(*b"\"\"\"\"\"\"\"\"\"\"\xa2!#\x22")
            .collect();
        for start in 0..9 {
            let (found, there) = quotes_found_and_there(&tricky[start..]);
            assert_eq!(found, there);
        }
    }

    #[test]
    fn every_key_starts_with_a_byte_the_scan_looks_at() {
        for key in KEYS {
            assert!(matches!(key[0], b'p' | b't' | b'c'), "{key:?}");
        }
    }

    #[test]
    fn stream_events_are_counted_across_chunk_boundaries() {
        let body = fixture("2026-10/chat-stream.txt");
        let text = String::from_utf8_lossy(&body);
        let want = text.lines().filter(|l| l.starts_with("data:")).count() as u64;
        assert!(want >= 7, "{want}");
        for size in [1, 2, 5, 97, body.len()] {
            let mut c = StreamCount::new();
            for part in body.chunks(size) {
                c.push(part);
            }
            assert_eq!(c.events(), want, "chunks of {size}");
        }
        let mut c = StreamCount::new();
        c.push(b"dat");
        c.push(b"a: x\n\nd");
        c.push(b"ata: y\n\ndata");
        assert_eq!(c.events(), 2);
        c.push(b": z");
        assert_eq!(c.events(), 3);
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

    #[test]
    fn absurd_figures_are_clamped_or_ignored() {
        let u = scan(
            br#"{"usage":{"prompt_tokens":1e30,"completion_tokens":18446744073709551616},
                "timings":{"predicted_per_token_ms":1e300}}"#,
        );
        assert_eq!(u.prompt_tokens, Some(MAX_TOKENS));
        assert_eq!(u.completion_tokens, Some(MAX_TOKENS));
        assert_eq!(u.per_token_ms, Some(MAX_PER_TOKEN_MS));
        let u = scan(
            br#"{"prompt_tokens":-5,"tokens_evaluated":7,"completion_tokens":NaN,
                "predicted_n":Infinity,"predicted_per_token_ms":-5}"#,
        );
        assert_eq!(u.prompt_tokens, Some(7));
        assert_eq!(u.completion_tokens, None);
        assert_eq!(u.per_token_ms, None);
        let u = scan(br#"{"prompt_tokens":1e999,"predicted_per_token_ms":-0}"#);
        assert_eq!(u.prompt_tokens, None);
        assert_eq!(u.per_token_ms, Some(0.0));
    }

    fn in_range(u: &Usage) -> bool {
        u.prompt_tokens.is_none_or(|t| t <= MAX_TOKENS)
            && u.completion_tokens.is_none_or(|t| t <= MAX_TOKENS)
            && u.per_token_ms
                .is_none_or(|ms| ms.is_finite() && (0.0..=MAX_PER_TOKEN_MS).contains(&ms))
    }

    proptest::proptest! {
        #[test]
        fn quotes_are_every_quote(bytes in proptest::collection::vec(
            proptest::sample::select(vec![b'"', b'p', 0xa2, 0x22 ^ 0x80, 0, 0xff]), 0..80)) {
            let (found, there) = quotes_found_and_there(&bytes);
            proptest::prop_assert_eq!(found, there);
        }

        #[test]
        fn stream_events_are_what_a_byte_at_a_time_match_counts(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec!["\n", "data:", "\ndata:", "d", "dat", "ta:", ":", " x"]),
                0..60),
            cuts in proptest::collection::vec(0usize..300, 0..8),
        ) {
            let bytes = pieces.concat().into_bytes();
            // The plain state machine over the whole stream, a newline first.
            let mut want = 0;
            let mut matched = 1;
            for &b in &bytes {
                if b == EVENT[matched] {
                    matched += 1;
                    if matched == EVENT.len() {
                        want += 1;
                        matched = 0;
                    }
                } else {
                    matched = usize::from(b == EVENT[0]);
                }
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut c = StreamCount::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                c.push(&bytes[at..cut]);
                at = cut;
            }
            proptest::prop_assert_eq!(c.events(), want);
        }

        #[test]
        fn scan_never_panics_and_stays_in_range(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            proptest::prop_assert!(in_range(&scan(&bytes)));
        }

        #[test]
        fn usage_shaped_tails_stay_in_range(
            parts in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "prompt_tokens", "tokens_evaluated", "prompt_n", "completion_tokens",
                        "tokens_predicted", "predicted_n", "predicted_per_token_ms",
                    ]),
                    "[-+0-9.eE]{0,12}|NaN|Infinity|1e30|-1e300|18446744073709551616",
                ),
                0..12,
            )
        ) {
            let body: String = parts.iter().map(|(k, v)| format!("\"{k}\": {v},")).collect();
            let u = scan(body.as_bytes());
            proptest::prop_assert!(in_range(&u));
            // Split anywhere through a tail: same rules.
            let mut t = Tail::new(64);
            for c in body.as_bytes().chunks(7) {
                t.push(c);
            }
            proptest::prop_assert!(in_range(&scan(t.as_slice())));
        }
    }
}
