//! What reading an inference body once costs: `cargo bench --bench parse_cost`.
//!
//! Chat bodies of about 1 KiB and 100 KiB (a system prompt, alternating
//! turns, the OpenAI fields a client sends) parsed into the facts routing
//! needs, as the gateway does for every inference request it reads ahead.
//! Reports nanoseconds per body and MiB/s, the median of 9 rounds.

use std::hint::black_box;
use std::time::Instant;

use serde_json::json;

fn chat_body(target: usize) -> Vec<u8> {
    let mut messages =
        vec![json!({"role": "system", "content": "You are a careful assistant. ".repeat(8)})];
    let mut turn = 0;
    loop {
        let body = json!({
            "model": "chat-8b", "stream": true, "max_tokens": 256, "temperature": 0.7,
            "stream_options": {"include_usage": true}, "messages": messages,
        });
        let bytes = serde_json::to_vec(&body).unwrap();
        if bytes.len() >= target {
            return bytes;
        }
        let role = if turn % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": format!("turn {turn}: tell me about \"caches\" and \\u00e9 {}", "lorem ipsum dolor sit amet ".repeat(3))}));
        turn += 1;
    }
}

fn main() {
    println!("| body | bytes | ns per parse | MiB/s |");
    println!("|---|---|---|---|");
    for (name, target) in [("1 KiB", 1024), ("100 KiB", 100 * 1024)] {
        let body = chat_body(target);
        let facts = sluice::proxy::read_body_facts(&body).expect("a valid body");
        assert!(facts.prompt_tokens > 0 && facts.prefix.is_some());
        let iters = (50_000_000 / body.len()).max(200);
        let mut rounds: Vec<f64> = (0..9)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(sluice::proxy::read_body_facts(black_box(&body)).unwrap());
                }
                t.elapsed().as_nanos() as f64 / iters as f64
            })
            .collect();
        rounds.sort_by(|a, b| a.total_cmp(b));
        let ns = rounds[4];
        let mib_s = body.len() as f64 / ns * 1e9 / (1024.0 * 1024.0);
        println!("| {name} | {} | {ns:.0} | {mib_s:.0} |", body.len());
    }
}
