//! Several replicas, one set of limits: per-key rate limits and token
//! budgets kept in one Redis that every replica of the gateway shares.
//!
//! ## Where the round trip happens, and why there
//!
//! The proxy awaits [`Cluster::rate_check`] and [`Cluster::charge_tokens`]
//! in `proxy::admit` in place of the gate's local checks; the gate's queue
//! and dispatch stay synchronous and local. One Lua script call per
//! decision (GCRA for rates, a token bucket for budgets, see `scripts`) is
//! exact across replicas. Its mean is well under the 1 ms, but its
//! tail is another process's scheduling; so far from a key's limit the
//! GCRA script grants a few cells at once, spent locally and refetched in
//! the background (`lease.rs`: all replicas together hold at most 5 % of
//! the free cells; near the limit every decision is one exact call).
//! Measured on loopback, see `tests/cluster_redis.rs`. Settling a budget
//! from `usage` is off the request path: it is sent from the cluster's own
//! runtime, and kept in `ledger.rs` while Redis is away.
//!
//! ## When Redis is slow or down
//!
//! A call that fails or takes longer than `cluster.timeout` marks Redis
//! down: logged once, `sluice_cluster_fallback` = 1, and from then on no
//! request waits for Redis. The replica enforces its share (`share`: each
//! limit ÷ the live replicas last seen) or, with
//! `on_redis_down = "fail_closed"`, refuses limited requests with 429 and
//! `Retry-After`. The heartbeat (every `cluster.heartbeat`, on the
//! cluster's own runtime) keeps trying; its first answer marks Redis up
//! again (logged once), without a restart. Requests admitted meanwhile are
//! untouched: a permit never depends on Redis.
//!
//! ## Replicas
//!
//! Each replica writes its id into a sorted set scored by Redis time; ids
//! not refreshed for three heartbeats drop out. The count is what the
//! fallback's shares are divided by, and what `/status` shows. The count
//! and this replica's rank among the live ids also go to the fleet
//! ([`crate::backend::replica_share`]): each replica takes its part of
//! every backend's slots, so replicas do not dispatch into each other's
//! slots (measured in `tests/cluster_fleet.rs`). Every 20 ms each replica
//! also writes its requests in flight per backend and reads the others'
//! (`peers.rs`): the fleet lends the slots they leave idle from that view,
//! fresher than a scrape. While Redis is down the last count and rank stay
//! in force, and loans go back to the scrape's view.
//!
//! Files: `params.rs` (`[cluster]`), `scripts.rs` (the Lua scripts),
//! `heartbeat.rs` (replicas, up/down transitions), `share.rs` (the
//! fallback's local shares), `lease.rs` (rate cells granted ahead),
//! `ledger.rs` (settlements waiting for Redis), `settle.rs` (settling a
//! charge, now or from the ledger), `peers.rs` (the replicas' in-flight
//! exchange, fresher than scrapes for loans of idle slots), `metrics.rs` (the series),
//! `probe.rs` (`sluice check`), this file (the client, the state, the
//! hot-path calls).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::runtime::{Handle, Runtime};
use tokio::time::Instant;

use crate::admission::budget::BudgetExceeded;
use crate::admission::gate::{Gate, Identity};
use crate::admission::ratelimit::{KeyQuota as RateQuota, RateLimited};
use crate::backend::fleet::Fleet;
use crate::reject::Reject;
use crate::telemetry::Metrics;

mod heartbeat;
mod lease;
mod ledger;
mod metrics;
mod params;
mod peers;
mod probe;
mod scripts;
mod settle;
mod share;

pub use metrics::ClusterMetrics;
pub use params::{redacted, ClusterParams, OnRedisDown};
pub use probe::probe;
pub use scripts::BudgetOp;
pub use share::Share;

use heartbeat::{replica_id, Failure};
use lease::Leases;
use ledger::Ledger;
use scripts::Verdict;

/// Heartbeats a replica may miss before the others stop counting it.
const LIVE_HEARTBEATS: u32 = 3;
/// Longest wait for a TCP connection to Redis (start-up, reconnects).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A token charge made on admission, to settle from `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub tokens: u64,
    /// Charged in Redis (else in this replica's share).
    pub shared: bool,
}

/// The cluster client and what this replica knows of the cluster.
pub struct Cluster {
    inner: Arc<Inner>,
    /// Runs the connection and the heartbeat; shut down with the cluster.
    rt: Mutex<Option<Runtime>>,
}

struct Inner {
    params: ClusterParams,
    /// This replica's id in the heartbeat set.
    replica: String,
    con: ConnectionManager,
    /// The request path's own connection, made on the runtime of the first
    /// request that needs it (no hop to the cluster's runtime per call) and
    /// made afresh each time Redis comes back.
    hot: ArcSwapOption<ConnectionManager>,
    client: redis::Client,
    cfg: ConnectionManagerConfig,
    handle: Handle,
    up: AtomicBool,
    /// Live replicas as last seen (at least 1).
    replicas: AtomicU32,
    /// The fallback's local shares, built when first needed.
    share: ArcSwapOption<Share>,
    /// Settlements Redis did not take, sent when it answers again.
    ledger: Mutex<Ledger>,
    /// Rate-limit cells granted ahead of need (`lease.rs`).
    leases: Mutex<Leases>,
    metrics: ClusterMetrics,
    /// Told this replica's rank and the replica count (slot shares).
    fleet: Arc<Fleet>,
}

// === impl Cluster ===

impl Cluster {
    /// Connects to the Redis `params` names and announces this replica.
    /// `Err` only when Redis cannot be reached and `on_redis_down` is
    /// `fail_closed`; in `share` mode an unreachable Redis is a warning
    /// (logged) and the replica starts in fallback.
    pub fn start(
        params: &ClusterParams,
        metrics: &Metrics,
        fleet: &Arc<Fleet>,
    ) -> Result<Arc<Cluster>, String> {
        let shown = redacted(&params.redis_url);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-cluster")
            .enable_all()
            .build()
            .map_err(|e| format!("cluster runtime: {e}"))?;
        let client = redis::Client::open(params.redis_url.as_str())
            .map_err(|e| format!("cluster.redis_url = {shown:?}: {e}"))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let con = {
            let _in = rt.enter();
            ConnectionManager::new_lazy_with_config(client.clone(), cfg.clone())
                .map_err(|e| format!("cluster.redis_url = {shown:?}: {e}"))?
        };
        let inner = Arc::new(Inner {
            params: params.clone(),
            replica: replica_id(),
            con,
            hot: ArcSwapOption::empty(),
            client,
            cfg,
            handle: rt.handle().clone(),
            up: AtomicBool::new(false),
            replicas: AtomicU32::new(1),
            share: ArcSwapOption::empty(),
            ledger: Mutex::new(Ledger::default()),
            leases: Mutex::new(Leases::default()),
            metrics: ClusterMetrics::new(metrics),
            fleet: Arc::clone(fleet),
        });
        inner.metrics.fallback.set(1);
        inner.metrics.replicas.set(1);
        // The first heartbeat before serving: the replica count and whether
        // Redis answers are known from the first request on.
        let first = {
            let i = Arc::clone(&inner);
            std::thread::scope(|s| {
                s.spawn(|| rt.block_on(async move { i.beat_once(CONNECT_TIMEOUT).await }))
                    .join()
                    .unwrap_or(Err(Failure::Connection))
            })
        };
        if let Err(f) = first {
            let why = format!(
                "cluster.redis_url = {shown:?}: Redis does not answer ({})",
                f.kind()
            );
            match params.on_redis_down {
                OnRedisDown::FailClosed => return Err(why),
                OnRedisDown::Share => tracing::warn!(
                    "{why}; each replica enforces its share of every limit until it does"
                ),
            }
        }
        rt.spawn(Arc::clone(&inner).heartbeats());
        rt.spawn(Arc::clone(&inner).exchange_peers());
        Ok(Arc::new(Cluster {
            inner,
            rt: Mutex::new(Some(rt)),
        }))
    }

    /// Whether Redis answered the last call.
    pub fn redis_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// Live replicas as last seen.
    pub fn replicas(&self) -> u32 {
        self.inner.replicas.load(Ordering::Acquire)
    }

    /// The `cluster` object of `/status`.
    pub fn status(&self) -> serde_json::Value {
        let up = self.redis_up();
        serde_json::json!({
            "redis_url": redacted(&self.inner.params.redis_url),
            "redis_reachable": up,
            "replicas": self.replicas(),
            "rank": self.inner.fleet.replica_share.get().0,
            "replica_id": self.inner.replica,
            "fallback": !up,
            "on_redis_down": self.inner.params.on_redis_down.as_str(),
        })
    }

    /// Counts the request against its key's rate limit, across replicas.
    pub async fn rate_check(&self, gate: &Gate, id: &Identity, now: Instant) -> Result<(), Reject> {
        let Some(q) = gate.rate_quota(&id.rate_key) else {
            return Ok(());
        };
        let i = &self.inner;
        if self.redis_up() {
            if i.leases().take(&id.rate_key, now) {
                i.metrics.from_lease.inc();
                i.refill(&id.rate_key, q, now);
                return Ok(());
            }
            let key = i.key("rl", &id.rate_key);
            let mut con = i.hot_con();
            let want = lease::MAX_GRANT;
            match i
                .call(scripts::gcra(&mut con, &key, q, want, self.replicas()))
                .await
            {
                Ok(v) if v.allowed => {
                    if v.granted > 1 {
                        i.leases().add(&id.rate_key, v.granted - 1, now);
                        i.refill(&id.rate_key, q, now);
                    }
                    return Ok(());
                }
                Ok(v) => {
                    return Err(gate.rate_refusal(RateLimited {
                        retry_after: v.retry_after,
                        limit: q.requests_per_minute,
                        remaining: 0,
                        reset: v.reset,
                        overflow: false,
                    }))
                }
                Err(f) => i.went_down(f),
            }
        }
        match i.params.on_redis_down {
            OnRedisDown::FailClosed => Err(gate.rate_refusal(RateLimited {
                retry_after: i.params.heartbeat,
                limit: q.requests_per_minute,
                remaining: 0,
                reset: i.params.heartbeat,
                overflow: false,
            })),
            OnRedisDown::Share => match i.share(gate).rate_check(&id.rate_key, now) {
                Some(Err(l)) => Err(gate.rate_refusal(l)),
                _ => Ok(()),
            },
        }
    }

    /// Charges the key's token budget an estimate, across replicas;
    /// `Ok(Some(charge))` must later be settled ([`Cluster::settle_tokens`]).
    pub async fn charge_tokens(
        &self,
        gate: &Gate,
        id: &Identity,
        estimate: u64,
        now: Instant,
    ) -> Result<Option<Charge>, Reject> {
        let Some(q) = gate.budget_quota(&id.rate_key) else {
            return Ok(None);
        };
        let i = &self.inner;
        let refused = |v: Verdict| BudgetExceeded {
            retry_after: v.retry_after,
            limit: q.tokens_per_minute,
            remaining: v.remaining,
            reset: v.reset,
            overflow: false,
        };
        if self.redis_up() {
            let key = i.key("tb", &id.rate_key);
            let mut con = i.hot_con();
            let op = BudgetOp::Charge(estimate);
            match i.call(scripts::budget(&mut con, &key, q, op)).await {
                Ok(v) if v.allowed => {
                    return Ok(Some(Charge {
                        tokens: estimate,
                        shared: true,
                    }))
                }
                Ok(v) => return Err(gate.budget_refusal(refused(v))),
                Err(f) => i.went_down(f),
            }
        }
        match i.params.on_redis_down {
            OnRedisDown::FailClosed => Err(gate.budget_refusal(BudgetExceeded {
                retry_after: i.params.heartbeat,
                limit: q.tokens_per_minute,
                remaining: 0,
                reset: i.params.heartbeat,
                overflow: false,
            })),
            OnRedisDown::Share => match i.share(gate).charge(&id.rate_key, estimate, now) {
                Some(Err(e)) => Err(gate.budget_refusal(e)),
                Some(Ok(_)) => Ok(Some(Charge {
                    tokens: estimate,
                    shared: false,
                })),
                None => Ok(None),
            },
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let rt = self.rt.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(rt) = rt {
            // Safe from async contexts too (a test's runtime).
            rt.shutdown_background();
        }
    }
}

// === impl Inner ===

impl Inner {
    /// The request path's connection (see `hot`).
    fn hot_con(&self) -> ConnectionManager {
        if let Some(c) = self.hot.load_full() {
            return (*c).clone();
        }
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.cfg.clone()) {
            Ok(c) => {
                self.hot.store(Some(Arc::new(c.clone())));
                c
            }
            Err(_) => self.con.clone(),
        }
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.params.key_prefix)
    }

    /// One call within `cluster.timeout`, timed.
    async fn call<T>(&self, f: impl Future<Output = redis::RedisResult<T>>) -> Result<T, Failure> {
        let start = std::time::Instant::now();
        let r = tokio::time::timeout(self.params.timeout, f).await;
        self.metrics
            .round_trip
            .observe(start.elapsed().as_secs_f64());
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::of(&e)),
            Err(_) => Err(Failure::Timeout),
        }
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetches the next lease of `key` in the background when the one it
    /// holds runs low (`lease.rs`), from the cluster's runtime.
    fn refill(self: &Arc<Self>, key: &str, q: RateQuota, now: Instant) {
        if !self.leases().start_fetch(key, lease::MAX_GRANT, now) {
            return;
        }
        let i = Arc::clone(self);
        let key = key.to_string();
        self.handle.spawn(async move {
            let mut con = i.con.clone();
            let rkey = i.key("rl", &key);
            let n = i.replicas.load(Ordering::Acquire);
            let got = match i
                .call(scripts::gcra(&mut con, &rkey, q, lease::MAX_GRANT, n))
                .await
            {
                Ok(v) => v.granted,
                Err(f) => {
                    i.went_down(f);
                    0
                }
            };
            i.leases().fetched(&key, got, Instant::now());
        });
    }

    /// The fallback's shares, built on first use after Redis went away.
    fn share(&self, gate: &Gate) -> Arc<Share> {
        if let Some(s) = self.share.load_full() {
            return s;
        }
        let (rate, budget) = gate.limit_configs();
        let s = Arc::new(Share::new(
            self.replicas.load(Ordering::Acquire),
            rate.as_ref(),
            budget.as_ref(),
        ));
        // A racing request may have built one first: keep that one.
        let prev = self
            .share
            .compare_and_swap(&None::<Arc<Share>>, Some(Arc::clone(&s)));
        match &*prev {
            Some(p) => Arc::clone(p),
            None => s,
        }
    }
}
