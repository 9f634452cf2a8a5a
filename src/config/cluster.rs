//! `[cluster]`: the Redis that replicas share limits through
//! ([`crate::cluster`]), checked into [`ClusterParams`].

use std::time::Duration;

use super::file::FileCluster;
use super::problems::{quoted, Problems};
use crate::cluster::{redacted, ClusterParams, OnRedisDown};

/// A loopback Redis answers in a fraction of a millisecond and one on the
/// same network in about one; 50 ms is unmistakably slow, and an admitted
/// request pays it at most once per outage (the replica then falls back
/// until a heartbeat answers).
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Once a second: a replica that stops is forgotten within three seconds,
/// and the heartbeat costs Redis one script call per replica per second.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// `None` without a `[cluster]` table or without `redis_url` in it.
pub(crate) fn cluster(c: &Option<FileCluster>, p: &mut Problems) -> Option<ClusterParams> {
    let c = c.as_ref()?;
    let Some(url) = c.redis_url.as_deref() else {
        p.missing(
            "cluster.redis_url",
            "a [cluster] table needs the Redis the replicas share, e.g. \"redis://127.0.0.1:6379\"",
        );
        return None;
    };
    check_url(url, p);
    let key_prefix = c.key_prefix.clone().unwrap_or_else(|| "sluice".to_string());
    if key_prefix.is_empty()
        || key_prefix.len() > 64
        || !key_prefix
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.:".contains(ch))
    {
        p.invalid(
            "cluster.key_prefix",
            quoted(&key_prefix),
            "must be 1 to 64 characters of letters, digits, '-', '_', '.' or ':'",
        );
    }
    let timeout = p.duration("cluster.timeout", c.timeout.as_deref(), DEFAULT_TIMEOUT);
    if timeout > Duration::from_secs(5) {
        p.invalid(
            "cluster.timeout",
            quoted(c.timeout.as_deref().unwrap_or_default()),
            "must be at most 5s: every admitted request may wait this long for Redis",
        );
    }
    let heartbeat = p.duration(
        "cluster.heartbeat",
        c.heartbeat.as_deref(),
        DEFAULT_HEARTBEAT,
    );
    let on_redis_down = match c.on_redis_down.as_deref() {
        None | Some("share") => OnRedisDown::Share,
        Some("fail_closed") => OnRedisDown::FailClosed,
        Some(other) => {
            p.invalid(
                "cluster.on_redis_down",
                quoted(other),
                "must be \"share\" (each replica enforces limit ÷ live replicas) or \"fail_closed\" (refuse with 429)",
            );
            OnRedisDown::Share
        }
    };
    Some(ClusterParams {
        redis_url: url.to_string(),
        key_prefix,
        timeout,
        on_redis_down,
        heartbeat,
    })
}

fn check_url(url: &str, p: &mut Problems) {
    let shown = quoted(&redacted(url));
    if url.starts_with("rediss://") {
        p.invalid(
            "cluster.redis_url",
            shown,
            "TLS to Redis (rediss://) is not built into this gateway: use redis:// on a private network or through a TLS tunnel",
        );
        return;
    }
    if !url.starts_with("redis://") {
        p.invalid(
            "cluster.redis_url",
            shown,
            "must be a redis:// URL such as \"redis://127.0.0.1:6379\"",
        );
        return;
    }
    if let Err(e) = redis::Client::open(url) {
        p.invalid("cluster.redis_url", shown, &format!("not a Redis URL: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const MINIMAL: &str = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:18080\"\n";

    fn errors(extra: &str) -> Vec<String> {
        Config::parse(&format!("{MINIMAL}{extra}"))
            .unwrap_err()
            .problems
    }

    #[test]
    fn defaults_and_a_full_table() {
        assert!(Config::parse(MINIMAL).unwrap().cluster.is_none());
        let c = Config::parse(&format!(
            "{MINIMAL}[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n"
        ))
        .unwrap();
        let c = c.cluster.unwrap();
        assert_eq!(c.key_prefix, "sluice");
        assert_eq!(c.timeout, std::time::Duration::from_millis(50));
        assert_eq!(c.on_redis_down, crate::cluster::OnRedisDown::Share);
        let c = Config::parse(&format!(
            "{MINIMAL}[cluster]\nredis_url = \"redis://r:6379/2\"\nkey_prefix = \"gw-a\"\ntimeout = \"10ms\"\non_redis_down = \"fail_closed\"\n"
        ))
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(
            (c.key_prefix.as_str(), c.on_redis_down.as_str()),
            ("gw-a", "fail_closed")
        );
    }

    #[test]
    fn mistakes_name_key_value_and_why() {
        assert_eq!(
            errors("[cluster]\nredis_url = \"http://127.0.0.1:6379\"\n"),
            vec!["cluster.redis_url = \"http://127.0.0.1:6379\" is not valid: must be a redis:// URL such as \"redis://127.0.0.1:6379\""]
        );
        let e = errors("[cluster]\nredis_url = \"rediss://:pw@r:6380\"\n");
        assert!(
            e[0].starts_with("cluster.redis_url = \"rediss://***@r:6380\" is not valid: TLS"),
            "{e:?}"
        );
        assert_eq!(
            errors("[cluster]\nredis_url = \"redis://r:1\"\non_redis_down = \"open\"\n"),
            vec!["cluster.on_redis_down = \"open\" is not valid: must be \"share\" (each replica enforces limit ÷ live replicas) or \"fail_closed\" (refuse with 429)"]
        );
        assert_eq!(
            errors("[cluster]\nkey_prefix = \"x\"\n"),
            vec!["cluster.redis_url is missing: a [cluster] table needs the Redis the replicas share, e.g. \"redis://127.0.0.1:6379\""]
        );
        let e = errors(
            "[cluster]\nredis_url = \"redis://r:1\"\nkey_prefix = \"a b\"\ntimeout = \"10s\"\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("cluster.key_prefix = \"a b\" is not valid"));
        assert!(e[1].starts_with("cluster.timeout = \"10s\" is not valid: must be at most 5s"));
    }
}
