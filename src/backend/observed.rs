//! What the scrape loop last learned about one backend, published whole.
//!
//! The scrape loop builds a fresh [`Observed`] after each round and swaps it
//! in; the request path only reads it (no lock). Times are `Instant`s so the
//! age of every figure is known.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::load::LoadSnapshot;
use super::promtext::Family;

/// What `/health` said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Health {
    /// Not asked yet.
    #[default]
    Unknown,
    Ok,
    /// `503 "Loading model"`: up, but not serving yet.
    Loading,
    /// Anything else: refused, timed out, another status.
    Down(String),
}

impl Health {
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Loading => "loading",
            Health::Down(_) => "down",
        }
    }
}

/// The published result of the latest scrape round.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub health: Health,
    /// When `/health` last answered.
    pub health_at: Option<Instant>,
    /// The latest usable `/metrics` figures and when they were read.
    pub load: Option<(LoadSnapshot, Instant)>,
    /// How long the latest `/metrics` call took (also when it failed).
    pub metrics_latency: Option<Duration>,
    /// `total_slots` from `/props`.
    pub slots: Option<u32>,
    /// The latest scrape problem, for `/status` and logs; `None` when fine.
    pub last_error: Option<String>,
    /// Every family of the latest `/metrics`, re-exported with a `backend` label.
    pub families: Arc<Vec<Family>>,
    /// This gateway's own in-flight requests there when `load` was read:
    /// the scraped figures include them, so what exceeds it is other
    /// clients' load.
    pub ours_at_scrape: u32,
}

impl Observed {
    /// Age of the load figures, `None` if never read.
    pub fn load_age(&self, now: Instant) -> Option<Duration> {
        self.load
            .as_ref()
            .map(|(_, at)| now.saturating_duration_since(*at))
    }
}
