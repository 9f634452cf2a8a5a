//! The JSON the page polls (`GET /ui/state.json?since=SEQ`): the `/status`
//! document as the admin listener builds it (so the cards show exactly what
//! `/status` shows), the gateway's "now", and the ring's points newer than
//! `since`, so a page that has the history fetches one point a second.

use serde_json::{json, Value};

use super::history::CAPACITY;
use super::sampler::{Console, TICK};

/// The poll's answer. `status` is the admin listener's `/status` document.
pub fn document(console: &Console, since: u64, status: Value) -> Value {
    let h = console.history();
    let points: Vec<_> = h.since(since).collect();
    json!({
        "seq": h.last_seq(),
        "capacity": CAPACITY,
        "tick_seconds": TICK.as_secs_f64(),
        "sampler_tick_seconds": console.last_tick().as_secs_f64(),
        "status": status,
        "now": h.now(),
        "points": points,
    })
}

/// The `since` query parameter (absent or unreadable: everything).
pub fn since(query: Option<&str>) -> u64 {
    query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("since="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::reading::Reading;
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn since_is_read_leniently() {
        assert_eq!(since(None), 0);
        assert_eq!(since(Some("since=42")), 42);
        assert_eq!(since(Some("x=1&since=7")), 7);
        assert_eq!(since(Some("since=-1")), 0);
        assert_eq!(since(Some("since=")), 0);
    }

    #[test]
    fn the_document_carries_status_now_and_new_points_only() {
        let t = Instant::now();
        let c = Console::new(t);
        for i in 0..4u64 {
            c.history()
                .record(Reading::default(), t + Duration::from_secs(i));
        }
        let d = document(&c, 0, json!({"backends": []}));
        assert_eq!(d["seq"], 3);
        assert_eq!(d["points"].as_array().unwrap().len(), 3);
        assert_eq!(d["status"]["backends"], json!([]));
        assert_eq!(d["now"]["queue_depth"], 0);
        let d = document(&c, 2, json!({}));
        assert_eq!(d["points"].as_array().unwrap().len(), 1);
        assert_eq!(d["points"][0]["seq"], 3);
    }
}
