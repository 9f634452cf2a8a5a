//! What the configuration tells the backend layer, as plain values: one
//! backend ([`BackendConfig`]), the scrape loop ([`ScrapeConfig`]) and the
//! per-backend policy ([`PolicyParams`]). `config` builds and checks them;
//! nothing here reads a file.

use std::net::SocketAddr;
use std::time::Duration;

use super::breaker::BreakerConfig;
use super::limiter::LimiterConfig;

/// One backend as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub name: String,
    /// The base URL as written, without a trailing slash.
    pub url: String,
    /// The resolved address the proxy connects to.
    pub addr: SocketAddr,
    pub weight: u32,
    /// Caps in-flight requests; `None` = the slot count from `/props`.
    pub max_in_flight: Option<u32>,
    /// Start drained: no new requests (maintenance).
    pub drain: bool,
    /// Model names this backend serves besides (or before) what its
    /// `/v1/models` lists: aliases, or a pin when discovery is not wanted.
    pub models: Vec<String>,
    /// `Some`: one model instance of a llama-server router (see
    /// [`super::router`]), added by the fleet while that model is loaded;
    /// `None`: a configured backend.
    pub instance: Option<Instance>,
}

/// Which router and model a sub-backend stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The configured router backend's name.
    pub parent: String,
    /// The model's id in the router's `/models`.
    pub model: String,
}

/// The scrape loop's timing.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeConfig {
    pub interval: Duration,
    pub timeout: Duration,
    /// A scrape older than this makes the backend unknown (= saturated).
    pub stale_after: Duration,
    /// A `/metrics` answer slower than this counts as a saturation signal.
    pub slow: Duration,
    /// How often `/props` (slot count) is re-read.
    pub props_interval: Duration,
    /// A larger `total_slots` from `/props` is capped to this
    /// (`routing.max_slots`).
    pub max_slots: u32,
}

/// Every backend's breaker and adaptive limit, as validated by `config`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyParams {
    pub breaker: BreakerConfig,
    pub limiter: LimiterConfig,
    /// `false`: the static slot count (or `max_in_flight`) is the cap.
    pub adaptive: bool,
}

impl Default for PolicyParams {
    /// The breaker's and limiter's defaults, adaptive, with no lookahead:
    /// the limiter's generic 2 requests beyond the slot count would wait
    /// inside llama-server, bound to that backend, where no deadline or
    /// cancellation reaches them, while Sluice holds its own queue. The
    /// round trip a lookahead hides is milliseconds against generations of
    /// seconds.
    fn default() -> Self {
        PolicyParams {
            breaker: BreakerConfig::default(),
            limiter: LimiterConfig {
                lookahead: 0,
                ..LimiterConfig::default()
            },
            adaptive: true,
        }
    }
}
