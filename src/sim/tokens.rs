//! The simulator's tokenizer: a prompt as a token sequence, so the prompt
//! cache can find common prefixes exactly.
//!
//! The sim has no vocabulary; it estimates one token per 4 bytes of text
//! (see [`estimate_tokens`](super::request::estimate_tokens)). To compare
//! prompts it needs the sequence, not only its length, so every 4-byte
//! chunk of text becomes one token (its little-endian value, a shorter last
//! chunk padded with zeros) and the chat template's special tokens are
//! markers whose top byte (0xFF, or 0xFE for client-given token ids) never
//! occurs in UTF-8 text, so no text chunk equals a marker. The sequence is
//! exactly as long as the estimate, and two prompts share a prefix of
//! tokens exactly when their rendered texts share it chunk by chunk.
//! Cost: one pass over the prompt bytes, one `u32` per 4 bytes.

/// One simulated token.
pub type Token = u32;

/// Beginning of sequence.
pub const BOS: Token = 0xFF00_0001;
/// `<|im_start|>` before a message's role.
pub const IM_START: Token = 0xFF00_0002;
/// The newline between role and content.
pub const ROLE_END: Token = 0xFF00_0003;
/// `<|im_end|>` after a message's content.
pub const IM_END: Token = 0xFF00_0004;
/// The newline after `<|im_end|>`.
pub const MSG_END: Token = 0xFF00_0005;
/// The assistant header that ends a chat prompt (three tokens).
pub const GEN_PROMPT: [Token; 3] = [0xFF00_0006, 0xFF00_0007, 0xFF00_0008];

/// Appends the tokens of `text`: one per 4-byte chunk.
pub fn push_text(out: &mut Vec<Token>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len().div_ceil(4));
    let mut chunks = bytes.chunks_exact(4);
    for c in &mut chunks {
        out.push(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 4];
        b[..rest.len()].copy_from_slice(rest);
        out.push(u32::from_le_bytes(b));
    }
}

/// A token id given by the client (`"prompt": [1, 2, 3]`).
pub fn id_token(id: u64) -> Token {
    0xFE00_0000 | (id as u32 & 0x00FF_FFFF)
}

/// Appends one chat message as the template renders it:
/// `<|im_start|>role\ncontent<|im_end|>\n`, four markers around the text.
pub fn push_message(out: &mut Vec<Token>, role: &str, content: &str) {
    out.push(IM_START);
    push_text(out, role);
    out.push(ROLE_END);
    push_text(out, content);
    out.push(IM_END);
    out.push(MSG_END);
}

/// Length of the common prefix of two sequences.
pub fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::request::estimate_tokens;

    #[test]
    fn one_token_per_four_bytes_like_the_estimate() {
        for s in ["", "a", "abcd", "abcde", "héllo wörld, 日本語"] {
            let mut v = Vec::new();
            push_text(&mut v, s);
            assert_eq!(v.len() as u32, estimate_tokens(s), "{s:?}");
        }
    }

    #[test]
    fn prefixes_are_found_chunk_by_chunk_and_markers_never_match_text() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        push_message(&mut a, "system", "You are kind. Answer briefly.");
        push_message(&mut b, "system", "You are kind. Answer briefly.");
        push_message(&mut a, "user", "first question");
        push_message(&mut b, "user", "other question");
        let sys = 4 + 2 + 8; // markers + "system" + 29 bytes
        assert_eq!(common_prefix(&a, &b), sys + 3); // IM_START, "user", ROLE_END
        let mut t = Vec::new();
        push_text(&mut t, "\u{FF}\u{FE}xyz");
        assert!(t.iter().all(|x| x >> 24 != 0xFF && x >> 24 != 0xFE));
    }
}
