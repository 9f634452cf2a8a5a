//! Prompt-cache affinity through the gateway: every turn of a conversation
//! goes to the backend that served its first turn (where llama-server keeps
//! its prompt cache), while conversations that share one long system prompt
//! still spread over the fleet.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use support::{fast, Harness};

fn chat(system: &str, turns: &[String]) -> serde_json::Value {
    let mut messages = vec![json!({"role": "system", "content": system})];
    for (i, t) in turns.iter().enumerate() {
        messages.push(json!({"role": "user", "content": t}));
        if i + 1 < turns.len() {
            messages.push(json!({"role": "assistant", "content": format!("answer {i}")}));
        }
    }
    json!({"messages": messages, "max_tokens": 4})
}

#[test]
fn conversations_stay_home_and_a_shared_system_prompt_still_spreads() {
    let h = Harness::start(vec![fast(4), fast(4)], "", &[]);
    h.wait_all_eligible();
    let system = "You are a careful assistant. ".repeat(200);
    let mut homes: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for turn in 1..=3 {
        for conv in 0..16 {
            let turns: Vec<String> = (1..=turn)
                .map(|t| format!("conversation {conv}, question {t}"))
                .collect();
            let r = h.post("/v1/chat/completions", chat(&system, &turns));
            assert_eq!(r.status, 200, "{}", r.body);
            let backend = r.header("x-sluice-backend").unwrap_or("-").to_string();
            homes.entry(conv).or_default().insert(backend);
        }
    }
    let moved: Vec<_> = homes.iter().filter(|(_, b)| b.len() > 1).collect();
    assert!(moved.is_empty(), "conversations changed backend: {moved:?}");
    let used: BTreeSet<_> = homes.values().flatten().collect();
    let per: BTreeMap<&String, usize> = used
        .iter()
        .map(|b| (*b, homes.values().filter(|s| s.contains(*b)).count()))
        .collect();
    println!("16 conversations x 3 turns, one shared 5.8 KB system prompt: homes {per:?}");
    assert_eq!(
        used.len(),
        2,
        "a shared system prompt piled every conversation on one backend"
    );
}
