//! The admission-control sections of the file: `[queue]`, `[rate_limit]`,
//! `[breaker]`, `[limiter]`, `[[api_keys]]`, `[auth]`.
//!
//! Each maps onto the policy module's own config struct, whose `Default`
//! documents every default and why; here we only read, range-check and name
//! the key in every error. The policy constructors validate again (they are
//! the last word on what can work) and their messages are passed through.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::{quoted, Problems};
use crate::admission::budget::{BudgetConfig, TokenBudget, TokenQuota};
use crate::admission::drain::DrainConfig;
use crate::admission::queue::{AdmissionQueue, QueueConfig};
use crate::admission::ratelimit::{KeyQuota, RateLimitConfig, RateLimits};
use crate::backend::breaker::BreakerConfig;
use crate::backend::limiter::LimiterConfig;

// === validated ===

/// Everything admission control needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionConfig {
    /// `None`: no queue, shed at once when the fleet is full.
    pub queue: Option<QueueConfig>,
    /// Wait budget of a request that names none (`x-sluice-deadline`);
    /// `None` = auto: half the fleet's typical request duration.
    pub default_wait: Option<Duration>,
    /// Largest wait budget a client may ask for.
    pub max_wait: Duration,
    pub drain: DrainConfig,
    /// `None`: no rate limits.
    pub rate_limit: Option<RateLimitConfig>,
    /// `None`: no token budgets.
    pub token_budget: Option<BudgetConfig>,
    /// Completion tokens charged up front when a request is admitted (the
    /// prompt is estimated from the body size); reconciled from `usage`.
    pub completion_estimate: u64,
    pub breaker: BreakerConfig,
    pub limiter: LimiterConfig,
    /// `None`: the static slot count (or `max_in_flight`) is the cap.
    pub adaptive: bool,
    pub api_keys: Vec<ApiKey>,
    /// Refuse requests without a known API key (401).
    pub require_key: bool,
}

/// A named API key. The key itself never appears in logs or metrics.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub name: String,
    pub key: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}, <redacted>)", self.name)
    }
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            queue: Some(QueueConfig::default()),
            default_wait: None,
            max_wait: MAX_WAIT,
            drain: DrainConfig::default(),
            rate_limit: None,
            token_budget: None,
            completion_estimate: COMPLETION_ESTIMATE,
            breaker: BreakerConfig::default(),
            limiter: LimiterConfig {
                lookahead: LOOKAHEAD,
                ..LimiterConfig::default()
            },
            adaptive: true,
            api_keys: Vec::new(),
            require_key: false,
        }
    }
}

/// A typical chat answer; requests that generate more pay the difference
/// when their `usage` arrives.
const COMPLETION_ESTIMATE: u64 = 256;

/// A client may ask to wait up to a minute (batch jobs), no longer.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Requests allowed beyond the slot count. 0, not the limiter's generic 2:
/// Sluice holds its own queue, and a request sent beyond the free slots
/// waits inside llama-server, bound to that backend, where no deadline or
/// cancellation reaches it. The round trip a lookahead would hide is
/// milliseconds against generations of seconds.
const LOOKAHEAD: u32 = 0;

// === file format ===

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileQueue {
    capacity: Option<i64>,
    max_wait: Option<String>,
    max_wait_cap: Option<String>,
    tenant_share: Option<f64>,
    target_wait: Option<String>,
    overload_interval: Option<String>,
    overload_max_wait: Option<String>,
    max_retry_after: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRateLimit {
    enabled: Option<bool>,
    requests_per_minute: Option<i64>,
    burst: Option<i64>,
    #[serde(default)]
    overrides: Vec<FileOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileOverride {
    key: Option<String>,
    requests_per_minute: Option<i64>,
    burst: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTokenBudget {
    enabled: Option<bool>,
    tokens_per_minute: Option<i64>,
    burst: Option<i64>,
    completion_estimate: Option<i64>,
    #[serde(default)]
    overrides: Vec<FileTokenOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTokenOverride {
    key: Option<String>,
    tokens_per_minute: Option<i64>,
    burst: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBreaker {
    consecutive_failures: Option<i64>,
    failure_rate: Option<f64>,
    window: Option<String>,
    min_requests: Option<i64>,
    base_backoff: Option<String>,
    max_backoff: Option<String>,
    half_open_probes: Option<i64>,
    successes_to_close: Option<i64>,
    max_ejected_share: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileLimiter {
    enabled: Option<bool>,
    lookahead: Option<i64>,
    deferred_allowance: Option<i64>,
    decrease_factor: Option<f64>,
    min_change_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileApiKey {
    name: Option<String>,
    key: Option<String>,
    key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAuth {
    require_key: Option<bool>,
}

pub(crate) struct FileAdmission {
    pub queue: FileQueue,
    pub rate_limit: FileRateLimit,
    pub token_budget: FileTokenBudget,
    pub breaker: FileBreaker,
    pub limiter: FileLimiter,
    pub api_keys: Vec<FileApiKey>,
    pub auth: FileAuth,
}

// === validation ===

fn fraction(p: &mut Problems, key: &str, raw: Option<f64>, lo_open: bool, default: f64) -> f64 {
    match raw {
        None => default,
        Some(v) if v.is_finite() && (if lo_open { v > 0.0 } else { v >= 0.0 }) && v <= 1.0 => v,
        Some(v) => {
            let range = if lo_open { "(0, 1]" } else { "[0, 1]" };
            p.invalid(key, v, &format!("must be in {range}"));
            default
        }
    }
}

pub(crate) fn validate(f: FileAdmission, p: &mut Problems) -> AdmissionConfig {
    let d = AdmissionConfig::default();
    let q = &f.queue;
    let qd = QueueConfig::default();
    let capacity = p.int("queue.capacity", q.capacity, 0, 100_000, qd.capacity as i64) as usize;
    let queue_cfg = QueueConfig {
        capacity: capacity.max(1),
        max_tenant_share: fraction(
            p,
            "queue.tenant_share",
            q.tenant_share,
            true,
            qd.max_tenant_share,
        ),
        target_wait: p.duration(
            "queue.target_wait",
            q.target_wait.as_deref(),
            qd.target_wait,
        ),
        overload_interval: p.duration(
            "queue.overload_interval",
            q.overload_interval.as_deref(),
            qd.overload_interval,
        ),
        overload_max_wait: p.duration(
            "queue.overload_max_wait",
            q.overload_max_wait.as_deref(),
            qd.overload_max_wait,
        ),
    };
    if let Err(e) = AdmissionQueue::<()>::new(queue_cfg.clone()) {
        p.0.push(format!("queue: {e}"));
    }
    let default_wait = match q.max_wait.as_deref() {
        None | Some("auto") => None,
        Some(raw) => Some(p.duration("queue.max_wait", Some(raw), Duration::from_secs(2))),
    };
    let max_wait = p.duration("queue.max_wait_cap", q.max_wait_cap.as_deref(), d.max_wait);
    if default_wait.is_some_and(|w| max_wait < w) {
        p.invalid(
            "queue.max_wait_cap",
            quoted(&humantime::format_duration(max_wait).to_string()),
            "must be at least queue.max_wait",
        );
    }
    let drain = DrainConfig {
        max_retry_after: p.int(
            "queue.max_retry_after",
            q.max_retry_after,
            1,
            3600,
            i64::from(d.drain.max_retry_after),
        ) as u32,
        ..d.drain.clone()
    };

    let r = &f.rate_limit;
    let rd = RateLimitConfig::default();
    let quota = |p: &mut Problems, key: &str, rpm: Option<i64>, burst: Option<i64>| KeyQuota {
        requests_per_minute: p.int(
            &format!("{key}.requests_per_minute"),
            rpm,
            1,
            10_000_000,
            i64::from(rd.default.requests_per_minute),
        ) as u32,
        burst: p.int(
            &format!("{key}.burst"),
            burst,
            1,
            10_000_000,
            i64::from(rd.default.burst),
        ) as u32,
    };
    let default_quota = quota(p, "rate_limit", r.requests_per_minute, r.burst);
    let mut overrides = HashMap::new();
    for (i, o) in r.overrides.iter().enumerate() {
        let key = format!("rate_limit.overrides[{i}]");
        let Some(name) = o.key.clone() else {
            p.missing(
                &format!("{key}.key"),
                "name the API key (its name in [[api_keys]]) or \"ip:ADDRESS\"",
            );
            continue;
        };
        let q = quota(p, &key, o.requests_per_minute, o.burst);
        if overrides.insert(name.clone(), q).is_some() {
            p.invalid(
                &format!("{key}.key"),
                quoted(&name),
                "another override has this key",
            );
        }
    }
    let rate_limit = r.enabled.unwrap_or(false).then_some(RateLimitConfig {
        default: default_quota,
        overrides,
    });
    if let Some(rl) = &rate_limit {
        if let Err(e) = RateLimits::new(rl) {
            p.0.push(format!("rate_limit: {e}"));
        }
    }

    let t = &f.token_budget;
    let td = BudgetConfig::default();
    let tquota = |p: &mut Problems, key: &str, tpm: Option<i64>, burst: Option<i64>| {
        let tokens_per_minute = p.int(
            &format!("{key}.tokens_per_minute"),
            tpm,
            1,
            1_000_000_000,
            td.default.tokens_per_minute as i64,
        ) as u64;
        let burst = p.int(
            &format!("{key}.burst"),
            burst,
            1,
            1_000_000_000,
            tokens_per_minute as i64,
        ) as u64;
        TokenQuota {
            tokens_per_minute,
            burst,
            max_debt: burst,
        }
    };
    let tdefault = tquota(p, "token_budget", t.tokens_per_minute, t.burst);
    let mut toverrides = HashMap::new();
    for (i, o) in t.overrides.iter().enumerate() {
        let key = format!("token_budget.overrides[{i}]");
        let Some(name) = o.key.clone() else {
            p.missing(
                &format!("{key}.key"),
                "name the API key (its name in [[api_keys]])",
            );
            continue;
        };
        let q = tquota(p, &key, o.tokens_per_minute, o.burst);
        if toverrides.insert(name.clone(), q).is_some() {
            p.invalid(
                &format!("{key}.key"),
                quoted(&name),
                "another override has this key",
            );
        }
    }
    let token_budget = t.enabled.unwrap_or(false).then_some(BudgetConfig {
        default: tdefault,
        overrides: toverrides,
    });
    if let Some(b) = &token_budget {
        if let Err(e) = TokenBudget::new(b.clone()) {
            p.0.push(format!("token_budget: {e}"));
        }
    }
    let completion_estimate = p.int(
        "token_budget.completion_estimate",
        t.completion_estimate,
        0,
        10_000_000,
        COMPLETION_ESTIMATE as i64,
    ) as u64;

    let b = &f.breaker;
    let bd = BreakerConfig::default();
    let breaker = BreakerConfig {
        consecutive_failures: p.int(
            "breaker.consecutive_failures",
            b.consecutive_failures,
            1,
            1000,
            i64::from(bd.consecutive_failures),
        ) as u32,
        failure_rate: fraction(
            p,
            "breaker.failure_rate",
            b.failure_rate,
            true,
            bd.failure_rate,
        ),
        window: p.duration("breaker.window", b.window.as_deref(), bd.window),
        min_requests: p.int(
            "breaker.min_requests",
            b.min_requests,
            1,
            100_000,
            i64::from(bd.min_requests),
        ) as u32,
        base_backoff: p.duration(
            "breaker.base_backoff",
            b.base_backoff.as_deref(),
            bd.base_backoff,
        ),
        max_backoff: p.duration(
            "breaker.max_backoff",
            b.max_backoff.as_deref(),
            bd.max_backoff,
        ),
        half_open_probes: p.int(
            "breaker.half_open_probes",
            b.half_open_probes,
            1,
            1000,
            i64::from(bd.half_open_probes),
        ) as u32,
        successes_to_close: p.int(
            "breaker.successes_to_close",
            b.successes_to_close,
            1,
            1000,
            i64::from(bd.successes_to_close),
        ) as u32,
        max_ejected_share: fraction(
            p,
            "breaker.max_ejected_share",
            b.max_ejected_share,
            true,
            bd.max_ejected_share,
        ),
        ..bd
    };
    if let Err(e) = breaker.validate() {
        p.0.push(format!("breaker: {e}"));
    }

    let l = &f.limiter;
    let ld = LimiterConfig::default();
    let limiter = LimiterConfig {
        lookahead: p.int(
            "limiter.lookahead",
            l.lookahead,
            0,
            1000,
            i64::from(LOOKAHEAD),
        ) as u32,
        deferred_allowance: p.int(
            "limiter.deferred_allowance",
            l.deferred_allowance,
            0,
            1000,
            i64::from(ld.deferred_allowance),
        ) as u32,
        decrease_factor: match l.decrease_factor {
            None => ld.decrease_factor,
            Some(v) if v > 0.0 && v < 1.0 => v,
            Some(v) => {
                p.invalid("limiter.decrease_factor", v, "must be in (0, 1)");
                ld.decrease_factor
            }
        },
        min_change_interval: p.duration(
            "limiter.min_change_interval",
            l.min_change_interval.as_deref(),
            ld.min_change_interval,
        ),
        ..ld
    };
    if let Err(e) = limiter.validate() {
        p.0.push(format!("limiter: {e}"));
    }

    let mut api_keys = Vec::new();
    for (i, k) in f.api_keys.into_iter().enumerate() {
        let key = |field: &str| format!("api_keys[{i}].{field}");
        let Some(name) = k.name else {
            p.missing(
                &key("name"),
                "every API key needs a name (used in logs and metrics)",
            );
            continue;
        };
        let secret = match (k.key, k.key_file) {
            (Some(s), None) => s,
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(s) => s.trim().to_string(),
                Err(e) => {
                    p.invalid(
                        &key("key_file"),
                        quoted(&path),
                        &format!("cannot be read: {e}"),
                    );
                    continue;
                }
            },
            (Some(_), Some(_)) => {
                p.invalid(&key("key"), "(hidden)", "set key or key_file, not both");
                continue;
            }
            (None, None) => {
                p.missing(
                    &key("key_file"),
                    "give the file holding the key (or key = \"...\")",
                );
                continue;
            }
        };
        if secret.len() < 8 {
            p.invalid(&key("key"), "(hidden)", "must be at least 8 characters");
            continue;
        }
        if api_keys.iter().any(|a: &ApiKey| a.name == name) {
            p.invalid(&key("name"), quoted(&name), "another API key has this name");
        }
        api_keys.push(ApiKey { name, key: secret });
    }
    let require_key = f.auth.require_key.unwrap_or(false);
    if require_key && api_keys.is_empty() {
        p.invalid(
            "auth.require_key",
            true,
            "needs at least one [[api_keys]] entry",
        );
    }

    AdmissionConfig {
        queue: (capacity > 0).then_some(queue_cfg),
        default_wait,
        max_wait,
        drain,
        rate_limit,
        token_budget,
        completion_estimate,
        breaker,
        limiter,
        adaptive: f.limiter.enabled.unwrap_or(true),
        api_keys,
        require_key,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const B: &str = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n";

    #[test]
    fn defaults_queue_on_rate_limit_off() {
        let c = Config::parse(B).unwrap();
        assert!(c.admission.queue.is_some());
        assert!(c.admission.rate_limit.is_none());
        assert!(c.admission.adaptive);
    }

    #[test]
    fn sections_are_read_and_checked() {
        let c = Config::parse(&format!(
            "{B}[queue]\ncapacity = 0\n[rate_limit]\nenabled = true\nrequests_per_minute = 60\nburst = 10\n\
             [[rate_limit.overrides]]\nkey = \"team\"\nrequests_per_minute = 600\nburst = 100\n"
        ))
        .unwrap();
        assert!(c.admission.queue.is_none());
        let rl = c.admission.rate_limit.unwrap();
        assert_eq!(rl.default.requests_per_minute, 60);
        assert_eq!(rl.overrides["team"].burst, 100);

        let e = Config::parse(&format!(
            "{B}[breaker]\nfailure_rate = 1.5\n[limiter]\ndecrease_factor = 1.0\n[queue]\ntenant_share = 0\n"
        ))
        .unwrap_err()
        .problems;
        assert!(
            e.iter()
                .any(|m| m.starts_with("breaker.failure_rate = 1.5 is not valid")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("limiter.decrease_factor = 1 is not valid")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("queue.tenant_share = 0 is not valid")),
            "{e:?}"
        );
    }

    #[test]
    fn api_keys_never_show_their_secret() {
        let c = Config::parse(&format!(
            "{B}[[api_keys]]\nname = \"team-a\"\nkey = \"sk-0123456789\"\n[auth]\nrequire_key = true\n"
        ))
        .unwrap();
        assert!(!format!("{:?}", c.admission.api_keys).contains("sk-0123"));
        let e = Config::parse(&format!("{B}[[api_keys]]\nname = \"x\"\nkey = \"short\"\n"))
            .unwrap_err()
            .problems;
        assert_eq!(
            e,
            vec!["api_keys[0].key = (hidden) is not valid: must be at least 8 characters"]
        );
    }
}
