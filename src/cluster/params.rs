//! What the cluster client is built from, checked once by `config`
//! (`[cluster]`), with its defaults and why.

use std::fmt;
use std::time::Duration;

/// What a replica does while Redis is slow or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisDown {
    /// Each replica enforces its share of every limit (limit ÷ the live
    /// replicas it last saw): the fleet stays open, the sum stays about
    /// right. The default.
    Share,
    /// Refuse every limited request with 429 and `Retry-After` until Redis
    /// answers again: no key can exceed its quota, at the price of an
    /// outage.
    FailClosed,
}

impl OnRedisDown {
    pub fn as_str(self) -> &'static str {
        match self {
            OnRedisDown::Share => "share",
            OnRedisDown::FailClosed => "fail_closed",
        }
    }
}

/// `[cluster]`: replicas share per-key limits through one Redis.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterParams {
    /// `redis://[user:password@]host:port[/db]`.
    pub redis_url: String,
    /// Every key this gateway writes starts with `{key_prefix}:`, so several
    /// gateways (or other tenants) can share one Redis.
    pub key_prefix: String,
    /// Longest a Redis round trip may take on the request path before Redis
    /// counts as slow (and the replica falls back until a heartbeat answers).
    pub timeout: Duration,
    pub on_redis_down: OnRedisDown,
    /// How often a replica announces itself; it counts as live for three
    /// heartbeats.
    pub heartbeat: Duration,
}

/// The URL without its password, for logs and messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl fmt::Debug for ClusterParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterParams")
            .field("redis_url", &redacted(&self.redis_url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("on_redis_down", &self.on_redis_down)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redacted("redis://:hunter2@10.0.0.5:6379/0"),
            "redis://***@10.0.0.5:6379/0"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
