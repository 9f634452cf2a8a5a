//! Whether Redis answers, and how many replicas are live: the heartbeat
//! loop, the failures a call can meet, and the up/down transitions (each
//! logged once, shown in the gauges).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{redacted, scripts, Inner, LIVE_HEARTBEATS};

/// What went wrong with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    Timeout,
    Connection,
    Script,
}

impl Failure {
    pub(super) fn kind(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Connection => "connection",
            Failure::Script => "script",
        }
    }

    pub(super) fn of(e: &redis::RedisError) -> Failure {
        if e.is_timeout() {
            Failure::Timeout
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            Failure::Connection
        } else {
            Failure::Script
        }
    }
}

pub(super) fn replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "sluice".to_string());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl Inner {
    pub(super) fn went_down(&self, f: Failure) {
        self.metrics.errors.with_label_values(&[f.kind()]).inc();
        if self.up.swap(false, Ordering::AcqRel) {
            self.metrics.redis_up.set(0);
            self.metrics.fallback.set(1);
            tracing::warn!(
                redis = %redacted(&self.params.redis_url),
                error = f.kind(),
                replicas = self.replicas.load(Ordering::Acquire),
                mode = self.params.on_redis_down.as_str(),
                "Redis is slow or down: limits fall back (share: each replica enforces limit ÷ replicas; fail_closed: limited requests refused)"
            );
        }
    }

    fn went_up(&self, replicas: u32, rank: u32) {
        let n = replicas.max(1);
        self.replicas.store(n, Ordering::Release);
        self.fleet.replica_share.set(rank, n);
        self.metrics.replicas.set(i64::from(n));
        if !self.up.swap(true, Ordering::AcqRel) {
            self.share.store(None);
            self.hot.store(None);
            self.metrics.redis_up.set(1);
            self.metrics.fallback.set(0);
            tracing::info!(
                redis = %redacted(&self.params.redis_url),
                replicas = n,
                "Redis answers: limits are shared again"
            );
        }
    }

    pub(super) async fn beat_once(&self, timeout: Duration) -> Result<(u32, u32), Failure> {
        let ttl = self.params.heartbeat * LIVE_HEARTBEATS;
        let mut con = self.con.clone();
        let key = format!("{}:replicas", self.params.key_prefix);
        let r = tokio::time::timeout(
            timeout,
            scripts::heartbeat(&mut con, &key, &self.replica, ttl),
        )
        .await;
        let r = match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::of(&e)),
            Err(_) => Err(Failure::Timeout),
        };
        match r {
            Ok((n, rank)) => self.went_up(n, rank),
            Err(f) => self.went_down(f),
        }
        r
    }

    pub(super) async fn heartbeats(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.params.heartbeat).await;
            let up = self
                .beat_once(self.params.timeout.max(Duration::from_millis(250)))
                .await
                .is_ok();
            if up && !self.ledger().is_empty() {
                self.settle_pending().await;
            }
        }
    }
}
