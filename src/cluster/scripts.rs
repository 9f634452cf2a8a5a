//! The four Lua scripts replicas share state through, and their typed
//! calls. Each runs atomically in Redis (one script = one step for every
//! replica) and reads Redis's own clock (`TIME`), so replicas whose clocks
//! disagree still count in one time line. Calls go by EVALSHA; a Redis that
//! does not know the script yet (a restart, a fail-over) gets it with
//! SCRIPT LOAD and the call is repeated (`redis::Script` does both).
//!
//! Keys are `{prefix}:rl:{key}` (rate), `{prefix}:tb:{key}` (tokens) and
//! `{prefix}:replicas`, `{prefix}:inflight:{id}` (a replica's requests in flight
//! per backend), plus `{prefix}:tb:{key}:settled:{id}` markers (a
//! settlement applied once), where `{key}` is the key's *name* (or `ip:addr`),
//! never its secret. Every key carries a TTL of about the time its bucket
//! takes to refill, after which it is the same as a fresh key: idle keys
//! expire by themselves.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisResult, Script};

use crate::admission::budget::TokenQuota;
use crate::admission::ratelimit::KeyQuota;

/// GCRA (the generic cell rate algorithm) on one stored number, the
/// theoretical arrival time `tat` in µs. `free` = the cells that conform
/// now, `⌊(now + burst × interval − tat) ÷ interval⌋`; a request conforms
/// when `free ≥ 1` and moves `tat` on by one interval per cell granted.
/// Same arithmetic as governor's, so one replica with Redis and one without
/// agree on every answer. A grant may hold several cells (a lease, see
/// `super::lease`): at most `ARGV[3]`, and at most `free ÷ (20 × ARGV[4]
/// replicas)`, so the replicas together hold at most 5 % of what is free
/// and near the limit every grant is one cell.
/// Returns `{granted (0 = refused), remaining, reset_us, retry_us}`.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local replicas = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local free = math.floor((now + burst * interval - tat) / interval)
if free < 1 then
  local allow_at = tat + interval - interval * burst
  return {0, 0, math.floor(tat - now), math.ceil(allow_at - now)}
end
local grant = math.max(1, math.min(want, math.floor(free / (20 * replicas))))
local new_tat = tat + grant * interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {grant, free - grant, math.floor(new_tat - now), 0}
"#;

/// A token bucket in a hash `{l = level, t = µs}`, mirroring
/// [`crate::admission::budget::TokenBudget`]: `charge` admits when the level
/// holds the estimate (or, for an estimate above the burst, when the bucket
/// is full) and may go into debt down to `-max_debt`; `settle` adds
/// `estimated − actual` back, clamped to `[-max_debt, burst]`, once per
/// settlement id: `KEYS[2]` marks it applied for `ARGV[6]` ms, so a
/// settlement sent again after a timeout (`super::ledger`) is not counted
/// twice. ARGV: mode, tokens per second, burst, max_debt, estimate (charge)
/// or delta (settle), marker TTL (ms). Returns `{allowed, remaining,
/// reset_us, retry_us}`.
const BUDGET: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[2]) / 1000000
local burst = tonumber(ARGV[3])
local debt = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local h = redis.call('HMGET', KEYS[1], 'l', 't')
local level = burst
if h[1] then
  local dt = now - tonumber(h[2])
  if dt < 0 then dt = 0 end
  level = math.min(burst, tonumber(h[1]) + dt * rate)
end
local after
if ARGV[1] == 'charge' then
  local need = math.min(n, burst)
  if level < need then
    local rem = level
    if rem < 0 then rem = 0 end
    return {0, math.floor(rem), math.ceil((burst - level) / rate), math.ceil((need - level) / rate)}
  end
  after = math.max(level - n, -debt)
elseif redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[6]) then
  after = math.min(math.max(level + n, -debt), burst)
else
  after = level
end
if after >= burst then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'l', tostring(after), 't', string.format('%d', now))
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - after) / rate / 1000) + 1000)
end
local rem = after
if rem < 0 then rem = 0 end
return {1, math.floor(rem), math.ceil((burst - after) / rate), 0}
"#;

/// Heartbeat: this replica's id in a sorted set scored by Redis time (ms);
/// ids not seen for `ARGV[2]` ms are dropped. Returns `{live count, rank}`,
/// the rank being this id's place among the live ids in byte order (an
/// order every replica agrees on, unlike the scores, which move).
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
table.sort(ids)
local rank = 0
for i, id in ipairs(ids) do
  if id == ARGV[1] then rank = i - 1 end
end
return {#ids, rank}
"#;

static GCRA_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA));
static BUDGET_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(BUDGET));
static HEARTBEAT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(HEARTBEAT));

/// What a script decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Cells granted (rate limits; 1 for budgets when allowed).
    pub granted: u32,
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset: Duration,
    /// On refusal: time until the request would pass.
    pub retry_after: Duration,
}

impl Verdict {
    fn from_reply(r: (i64, i64, i64, i64)) -> Verdict {
        let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Verdict {
            allowed: r.0 >= 1,
            granted: u32::try_from(r.0).unwrap_or(0),
            remaining: u64::try_from(r.1).unwrap_or(0),
            reset: us(r.2),
            retry_after: us(r.3),
        }
    }
}

/// One request against `key`'s rate quota, asking for up to `want` cells
/// (`replicas` live: see the script).
pub async fn gcra(
    con: &mut ConnectionManager,
    key: &str,
    q: KeyQuota,
    want: u32,
    replicas: u32,
) -> RedisResult<Verdict> {
    let interval_us = 60_000_000.0 / f64::from(q.requests_per_minute.max(1));
    let reply = GCRA_SCRIPT
        .key(key)
        .arg(interval_us)
        .arg(q.burst)
        .arg(want.max(1))
        .arg(replicas.max(1))
        .invoke_async(con)
        .await?;
    Ok(Verdict::from_reply(reply))
}

/// How a budget call moves the level.
#[derive(Debug, Clone, Copy)]
pub enum BudgetOp {
    /// Admission: take the estimate if it fits.
    Charge(u64),
    /// Usage known: add back `estimated − actual` (may be negative), once
    /// for this id.
    Settle { delta: i64, id: u64 },
}

/// One charge or settlement of `key`'s token bucket.
pub async fn budget(
    con: &mut ConnectionManager,
    key: &str,
    q: TokenQuota,
    op: BudgetOp,
) -> RedisResult<Verdict> {
    let (mode, n, id) = match op {
        BudgetOp::Charge(e) => ("charge", i64::try_from(e).unwrap_or(i64::MAX), 0),
        BudgetOp::Settle { delta, id } => ("settle", delta, id),
    };
    // The marker outlives the time a retry could still matter.
    let marker_ms = super::ledger::refill_time(q)
        .min(Duration::from_secs(86_400))
        .as_millis()
        .max(1)
        + 60_000;
    let reply = BUDGET_SCRIPT
        .key(key)
        .key(format!("{key}:settled:{id:016x}"))
        .arg(mode)
        .arg(q.tokens_per_minute as f64 / 60.0)
        .arg(q.burst)
        .arg(q.max_debt)
        .arg(n)
        .arg(marker_ms as u64)
        .invoke_async(con)
        .await?;
    Ok(Verdict::from_reply(reply))
}

/// Announces `replica` as live for `ttl`; the live replicas now and this
/// one's rank among them.
pub async fn heartbeat(
    con: &mut ConnectionManager,
    key: &str,
    replica: &str,
    ttl: Duration,
) -> RedisResult<(u32, u32)> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    HEARTBEAT_SCRIPT
        .key(key)
        .arg(replica)
        .arg(ms)
        .invoke_async(con)
        .await
}

/// Writes this replica's in-flight counts (`ARGV[4..]`: backend, count
/// pairs, the non-zero ones) to `{prefix}:inflight:{id}` for `ARGV[3]` ms
/// and returns the other live replicas' (`KEYS[1]`: the heartbeat set)
/// summed per backend, as flat name, count pairs (counts as strings).
const PEERS: &str = r#"
local mine = ARGV[1] .. ARGV[2]
redis.call('DEL', mine)
if #ARGV > 3 then
  redis.call('HSET', mine, unpack(ARGV, 4))
  redis.call('PEXPIRE', mine, tonumber(ARGV[3]))
end
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local sums, names = {}, {}
for _, id in ipairs(ids) do
  if id ~= ARGV[2] then
    local h = redis.call('HGETALL', ARGV[1] .. id)
    for i = 1, #h, 2 do
      local n = h[i]
      if sums[n] == nil then
        sums[n] = 0
        table.insert(names, n)
      end
      sums[n] = sums[n] + tonumber(h[i + 1])
    end
  end
end
local out = {}
for _, n in ipairs(names) do
  table.insert(out, n)
  table.insert(out, tostring(sums[n]))
end
return out
"#;

static PEERS_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PEERS));

/// Publishes `mine` (backend name, in-flight) as `replica`'s for `ttl`
/// under `{prefix}:inflight:`; the other live replicas' (the set `replicas`)
/// in-flight, summed per backend.
pub async fn peers(
    con: &mut ConnectionManager,
    prefix: &str,
    replicas: &str,
    replica: &str,
    ttl: Duration,
    mine: &[(String, u32)],
) -> RedisResult<Vec<(String, u32)>> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut inv = PEERS_SCRIPT.key(replicas);
    inv.arg(format!("{prefix}:inflight:")).arg(replica).arg(ms);
    for (name, n) in mine.iter().filter(|(_, n)| *n > 0) {
        inv.arg(name).arg(*n);
    }
    let flat: Vec<String> = inv.invoke_async(con).await?;
    Ok(flat
        .chunks_exact(2)
        .map(|p| (p[0].clone(), p[1].parse().unwrap_or(0)))
        .collect())
}
