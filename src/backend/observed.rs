//! What the scrape loop last learned about one backend, published whole.
//!
//! The scrape loop builds a fresh [`Observed`] after each round and swaps it
//! in; the request path only reads it (no lock). Times are `Instant`s so the
//! age of every figure is known.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::load::LoadSnapshot;
use super::promtext::Family;
use super::router::RouterView;

/// What `/health` said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Health {
    /// Not asked yet.
    #[default]
    Unknown,
    Ok,
    /// `503 "Loading model"`: up, but not serving yet.
    Loading,
    /// Anything else, with its cause: the breaker trips on a refusal as
    /// such, and `/status` and logs show the cause.
    Down(DownCause),
}

impl Health {
    /// The `/status` and log value: `unknown`, `ok`, `loading` or `down`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Loading => "loading",
            Health::Down(_) => "down",
        }
    }
}

/// Why `/health` counts as down; set by the scrape loop from the HTTP
/// client's error or the answer's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownCause {
    /// No connection: refused or unreachable (nothing listens there).
    Refused,
    /// No answer within the scrape timeout.
    Timeout,
    /// A status other than 2xx and "Loading model" 503.
    Status(u16),
    /// `503` with another body (its first characters).
    Unavailable(String),
    /// A 3xx answer: scrapes never follow redirects (described: status and
    /// `Location`).
    Redirect(String),
    /// Any other client error, described.
    Other(String),
}

impl fmt::Display for DownCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownCause::Refused => f.write_str("connection failed (refused or unreachable)"),
            DownCause::Timeout => f.write_str("timed out"),
            DownCause::Status(code) => write!(f, "HTTP {code}"),
            DownCause::Unavailable(body) => write!(f, "HTTP 503: {body}"),
            DownCause::Redirect(what) => f.write_str(what),
            DownCause::Other(why) => f.write_str(why),
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
    /// `total_slots` from `/props`, at most `routing.max_slots`.
    pub slots: Option<u32>,
    /// What `/props` claimed when that was more than `routing.max_slots`.
    pub slots_claimed: Option<u64>,
    /// The model names `/v1/models` lists; `None` until it answered.
    pub models: Option<Arc<Vec<String>>>,
    /// `Some` when `/props` says this is a llama-server router: its
    /// `GET /models` with each model's status ([`super::router`]).
    pub router: Option<Arc<RouterView>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_causes_read_as_before() {
        assert_eq!(Health::Down(DownCause::Refused).as_str(), "down");
        assert_eq!(
            DownCause::Refused.to_string(),
            "connection failed (refused or unreachable)"
        );
        assert_eq!(DownCause::Timeout.to_string(), "timed out");
        assert_eq!(DownCause::Status(500).to_string(), "HTTP 500");
        assert_eq!(
            DownCause::Unavailable("busy".into()).to_string(),
            "HTTP 503: busy"
        );
    }
}
