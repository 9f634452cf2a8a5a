//! The admission sections of the file: `[queue]`, `[rate_limit]`,
//! `[token_budget]`, `[[api_keys]]`, `[auth]` (the gate's), and, through
//! [`super::policy`], `[breaker]` and `[limiter]` (every backend's).
//!
//! Each maps onto the policy module's own config struct, whose `Default`
//! documents every default and why; here we read, range-check and name the
//! key in every error, then let the policy's own check turn the struct into
//! its checked parameters (`QueueParams`, ...), once. Its messages are
//! passed through. The policies are built from those and cannot fail.

use std::collections::HashMap;
use std::time::Duration;

use super::file::{
    FileApiKey, FileAuth, FileBreaker, FileLimiter, FileQueue, FileRateLimit, FileTokenBudget,
};
use super::problems::{quoted, Problems};
use crate::admission::budget::{self, BudgetConfig, BudgetParams, TokenQuota};
use crate::admission::drain::{DrainConfig, DrainParams};
use crate::admission::gate::{GateParams, KeyEntry, KeyRing};
use crate::admission::queue::{Priority, QueueConfig, QueueParams};
use crate::admission::ratelimit::{self, KeyQuota, RateLimitConfig, RateLimitParams};
use crate::backend::spec::PolicyParams;

/// Everything admission control needs, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionConfig {
    /// The gateway queue, rate limits, token budgets and keys.
    pub gate: GateParams,
    /// Every backend's breaker and adaptive limit.
    pub policy: PolicyParams,
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

pub(crate) fn validate(f: FileAdmission, p: &mut Problems) -> AdmissionConfig {
    let d = GateParams::default();
    let q = &f.queue;
    let qd = QueueConfig::default();
    let capacity = p.int("queue.capacity", q.capacity, 0, 100_000, qd.capacity as i64) as usize;
    let queue_cfg = QueueConfig {
        capacity: capacity.max(1),
        max_tenant_share: p.fraction(
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
    let queue = match QueueParams::new(queue_cfg) {
        Ok(q) => (capacity > 0).then_some(q),
        Err(e) => {
            p.rejected("queue", e);
            None
        }
    };
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
    let dd = DrainConfig::default();
    let drain = DrainConfig {
        max_retry_after: p.int(
            "queue.max_retry_after",
            q.max_retry_after,
            1,
            3600,
            i64::from(dd.max_retry_after),
        ) as u32,
        ..dd
    };
    let drain = DrainParams::new(drain).unwrap_or_else(|e| {
        p.rejected("queue", e);
        DrainParams::default()
    });

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
    let max_keys = p.int(
        "rate_limit.max_tracked_keys",
        r.max_tracked_keys,
        1,
        10_000_000,
        ratelimit::DEFAULT_MAX_KEYS as i64,
    ) as usize;
    let rate_limit = r.enabled.unwrap_or(false).then_some(RateLimitConfig {
        default: default_quota,
        overrides,
        max_keys,
    });
    let rate_limit = rate_limit.and_then(|rl| {
        RateLimitParams::new(rl)
            .map_err(|e| p.rejected("rate_limit", e))
            .ok()
    });

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
    let tmax_keys = p.int(
        "token_budget.max_tracked_keys",
        t.max_tracked_keys,
        1,
        10_000_000,
        budget::DEFAULT_MAX_KEYS as i64,
    ) as usize;
    let token_budget = t.enabled.unwrap_or(false).then_some(BudgetConfig {
        default: tdefault,
        overrides: toverrides,
        max_keys: tmax_keys,
    });
    let token_budget = token_budget.and_then(|b| {
        BudgetParams::new(b)
            .map_err(|e| p.rejected("token_budget", e))
            .ok()
    });
    let completion_estimate = p.int(
        "token_budget.completion_estimate",
        t.completion_estimate,
        0,
        10_000_000,
        d.completion_estimate as i64,
    ) as u64;

    let policy = super::policy::validate(&f.breaker, &f.limiter, p);

    let api_keys = api_keys(f.api_keys, p);
    let require_key = f.auth.require_key.unwrap_or(false);
    if require_key && api_keys.is_empty() {
        p.invalid(
            "auth.require_key",
            true,
            "needs at least one [[api_keys]] entry",
        );
    }

    AdmissionConfig {
        gate: GateParams {
            queue,
            default_wait,
            max_wait,
            drain,
            rate_limit,
            token_budget,
            completion_estimate,
            api_keys,
            require_key,
        },
        policy,
    }
}

/// `[[api_keys]]` → digests. Each key gives exactly one of `key`,
/// `key_file` (the secret, read once) or `key_sha256` (its hex SHA-256
/// digest, so the secret need not be on the gateway at all), and may set
/// `max_priority` (default `normal`). No secret survives this function, and
/// none appears in a message.
fn api_keys(keys: Vec<FileApiKey>, p: &mut Problems) -> KeyRing {
    let mut entries: Vec<KeyEntry> = Vec::new();
    for (i, k) in keys.into_iter().enumerate() {
        let key = |field: &str| format!("api_keys[{i}].{field}");
        let Some(name) = k.name else {
            p.missing(
                &key("name"),
                "every API key needs a name (used in logs and metrics)",
            );
            continue;
        };
        let max_priority = match k.max_priority.as_deref().map(str::trim) {
            None | Some("normal") => Priority::Normal,
            Some("critical") => Priority::Critical,
            Some("sheddable") => Priority::Sheddable,
            Some(other) => {
                p.invalid(
                    &key("max_priority"),
                    quoted(other),
                    "use \"critical\", \"normal\" or \"sheddable\"",
                );
                continue;
            }
        };
        let entry = match (k.key, k.key_file, k.key_sha256) {
            (Some(s), None, None) => secret_entry(&name, s.trim(), max_priority, &key("key"), p),
            (None, Some(path), None) => match std::fs::read_to_string(&path) {
                Ok(s) => {
                    super::secrets::private_file(p, &key("key_file"), &path, "an API key file");
                    secret_entry(&name, s.trim(), max_priority, &key("key"), p)
                }
                Err(e) => {
                    p.invalid(
                        &key("key_file"),
                        quoted(&path),
                        &format!("cannot be read: {e}"),
                    );
                    None
                }
            },
            (None, None, Some(hex)) => match KeyEntry::from_hex_digest(&name, &hex, max_priority) {
                Ok(e) => Some(e),
                Err(why) => {
                    p.invalid(
                        &key("key_sha256"),
                        "(hidden)",
                        &format!("{why} (write the 64 hex digits of the key's SHA-256)"),
                    );
                    None
                }
            },
            (None, None, None) => {
                p.missing(
                    &key("key_file"),
                    "give the file holding the key (or key = \"...\", or key_sha256 = its hex SHA-256)",
                );
                None
            }
            _ => {
                p.invalid(
                    &key("key"),
                    "(hidden)",
                    "set exactly one of key, key_file or key_sha256",
                );
                None
            }
        };
        let Some(entry) = entry else { continue };
        if entries.iter().any(|a| *a.name == *name) {
            p.invalid(&key("name"), quoted(&name), "another API key has this name");
        }
        entries.push(entry);
    }
    KeyRing::new(entries)
}

/// A key given as its secret: at least 8 characters, held as its digest.
fn secret_entry(
    name: &str,
    secret: &str,
    max_priority: Priority,
    field: &str,
    p: &mut Problems,
) -> Option<KeyEntry> {
    if secret.len() < 8 {
        p.invalid(field, "(hidden)", "must be at least 8 characters");
        return None;
    }
    Some(KeyEntry::from_secret(name, secret, max_priority))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const B: &str = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n";

    #[test]
    fn no_sections_means_the_policies_own_defaults() {
        use crate::admission::drain::{DrainConfig, DrainParams};
        use crate::admission::gate::GateParams;
        use crate::admission::queue::{QueueConfig, QueueParams};
        use crate::backend::spec::PolicyParams;
        // The `Default` params skip the check; they must pass it.
        assert_eq!(
            QueueParams::new(QueueConfig::default()).unwrap(),
            QueueParams::default()
        );
        assert_eq!(
            DrainParams::new(DrainConfig::default()).unwrap(),
            DrainParams::default()
        );
        let p = PolicyParams::default();
        p.breaker.validate().unwrap();
        p.limiter.validate().unwrap();
        let c = Config::parse(B).unwrap();
        assert_eq!(c.admission.gate, GateParams::default());
        assert_eq!(c.admission.policy, p);
    }

    #[test]
    fn defaults_queue_on_rate_limit_off() {
        let c = Config::parse(B).unwrap();
        assert!(c.admission.gate.queue.is_some());
        assert!(c.admission.gate.rate_limit.is_none());
        assert!(c.admission.policy.adaptive);
    }

    #[test]
    fn sections_are_read_and_checked() {
        let c = Config::parse(&format!(
            "{B}[queue]\ncapacity = 0\n[rate_limit]\nenabled = true\nrequests_per_minute = 60\nburst = 10\n\
             [[rate_limit.overrides]]\nkey = \"team\"\nrequests_per_minute = 600\nburst = 100\n"
        ))
        .unwrap();
        assert!(c.admission.gate.queue.is_none());
        let rl = c.admission.gate.rate_limit.unwrap();
        let rl = rl.config();
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
        let shown = format!("{:?} {c:?}", c.admission.gate.api_keys);
        assert!(!shown.contains("sk-0123"), "{shown}");
        let e = Config::parse(&format!("{B}[[api_keys]]\nname = \"x\"\nkey = \"short\"\n"))
            .unwrap_err()
            .problems;
        assert_eq!(
            e,
            vec!["api_keys[0].key = (hidden) is not valid: must be at least 8 characters"]
        );
    }

    #[test]
    fn keys_by_digest_with_entitlements_and_exactly_one_secret() {
        use crate::admission::queue::Priority;
        // The digest of a key the gateway never sees.
        let hex = "5d3d4ef3b5ec1a0e7a5d0f4a9a3bd9a8f4f5d0e77a8b39a2a02b2e2bb5ec1b7d";
        let c = Config::parse(&format!(
            "{B}[[api_keys]]\nname = \"ops\"\nkey = \"sk-ops-0123456789\"\nmax_priority = \"critical\"\n\
             [[api_keys]]\nname = \"batch\"\nkey_sha256 = \"{hex}\"\nmax_priority = \"sheddable\"\n\
             [[api_keys]]\nname = \"team\"\nkey = \"sk-team-0123456789\"\n"
        ))
        .unwrap();
        let ring = &c.admission.gate.api_keys;
        assert_eq!(ring.names().collect::<Vec<_>>(), ["ops", "batch", "team"]);
        assert_eq!(
            ring.find("sk-ops-0123456789").unwrap().max_priority,
            Priority::Critical
        );
        assert_eq!(
            ring.find("sk-team-0123456789").unwrap().max_priority,
            Priority::Normal
        );
        assert!(ring.find(hex).is_none(), "a digest is not a key");
        let e = Config::parse(&format!(
            "{B}[[api_keys]]\nname = \"a\"\nkey = \"sk-0123456789\"\nkey_sha256 = \"{hex}\"\n\
             [[api_keys]]\nname = \"b\"\nkey_sha256 = \"abcd\"\n\
             [[api_keys]]\nname = \"c\"\nkey = \"sk-0123456789\"\nmax_priority = \"vip\"\n\
             [[api_keys]]\nname = \"d\"\n"
        ))
        .unwrap_err()
        .problems;
        assert_eq!(e.len(), 4, "{e:#?}");
        assert_eq!(
            e[0],
            "api_keys[0].key = (hidden) is not valid: set exactly one of key, key_file or key_sha256"
        );
        assert!(
            e[1].starts_with("api_keys[1].key_sha256 = (hidden) is not valid: has 2 bytes"),
            "{}",
            e[1]
        );
        assert!(
            e[2].starts_with("api_keys[2].max_priority = \"vip\" is not valid: use \"critical\""),
            "{}",
            e[2]
        );
        assert!(
            e[3].starts_with("api_keys[3].key_file is missing"),
            "{}",
            e[3]
        );
        assert!(!e.concat().contains(hex) && !e.concat().contains("sk-0123"));
    }

    #[test]
    fn tracked_key_caps_are_read() {
        let c = Config::parse(&format!(
            "{B}[rate_limit]\nenabled = true\nmax_tracked_keys = 500\n\
             [token_budget]\nenabled = true\nmax_tracked_keys = 700\n"
        ))
        .unwrap();
        assert_eq!(c.admission.gate.rate_limit.unwrap().config().max_keys, 500);
        assert_eq!(
            c.admission.gate.token_budget.unwrap().config().max_keys,
            700
        );
        let e = Config::parse(&format!("{B}[rate_limit]\nmax_tracked_keys = 0\n"))
            .unwrap_err()
            .problems;
        assert!(
            e[0].starts_with("rate_limit.max_tracked_keys = 0 is not valid"),
            "{e:?}"
        );
    }
}
