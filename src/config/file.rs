//! The file format: structs that mirror the TOML text, every key optional,
//! unknown keys rejected by serde (so a typo is named, not ignored).

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    #[serde(default)]
    pub server: FileServer,
    #[serde(default)]
    pub admin: FileAdmin,
    #[serde(default)]
    pub scrape: FileScrape,
    #[serde(default)]
    pub routing: FileRouting,
    #[serde(default)]
    pub backends: Vec<FileBackend>,
    #[serde(default)]
    pub queue: FileQueue,
    #[serde(default)]
    pub rate_limit: FileRateLimit,
    #[serde(default)]
    pub token_budget: FileTokenBudget,
    #[serde(default)]
    pub breaker: FileBreaker,
    #[serde(default)]
    pub limiter: FileLimiter,
    #[serde(default)]
    pub api_keys: Vec<FileApiKey>,
    #[serde(default)]
    pub auth: FileAuth,
    pub cluster: Option<FileCluster>,
    pub discovery: Option<FileDiscovery>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileServer {
    pub listen: Option<String>,
    pub threads: Option<i64>,
    pub grace_period: Option<String>,
    pub max_clients: Option<i64>,
    pub client_timeout: Option<String>,
    pub max_connections: Option<i64>,
    pub max_connections_per_client: Option<i64>,
    pub header_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub body_grace: Option<String>,
    pub min_body_rate: Option<i64>,
    pub write_timeout: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub cors_origins: Option<Vec<String>>,
    pub cors_allow_credentials: Option<bool>,
    pub trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAdmin {
    pub listen: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileScrape {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub stale_after: Option<String>,
    pub slow: Option<String>,
    pub props_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRouting {
    pub max_deferred: Option<i64>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_body_bytes: Option<i64>,
    pub open_routes: Option<Vec<String>>,
    pub max_passthrough: Option<i64>,
    pub max_slots: Option<i64>,
    pub default_model: Option<String>,
    pub unloaded_model: Option<String>,
    pub affinity: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBackend {
    pub name: Option<String>,
    pub url: Option<String>,
    pub weight: Option<i64>,
    pub max_in_flight: Option<i64>,
    pub drain: Option<bool>,
    pub models: Option<Vec<String>>,
    pub discover: Option<String>,
    pub resolve_every: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileQueue {
    pub capacity: Option<i64>,
    pub max_wait: Option<String>,
    pub max_wait_cap: Option<String>,
    pub tenant_share: Option<f64>,
    pub target_wait: Option<String>,
    pub overload_interval: Option<String>,
    pub overload_max_wait: Option<String>,
    pub max_retry_after: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRateLimit {
    pub enabled: Option<bool>,
    pub requests_per_minute: Option<i64>,
    pub burst: Option<i64>,
    pub max_tracked_keys: Option<i64>,
    #[serde(default)]
    pub overrides: Vec<FileOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileOverride {
    pub key: Option<String>,
    pub requests_per_minute: Option<i64>,
    pub burst: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTokenBudget {
    pub enabled: Option<bool>,
    pub tokens_per_minute: Option<i64>,
    pub burst: Option<i64>,
    pub completion_estimate: Option<i64>,
    pub max_tracked_keys: Option<i64>,
    #[serde(default)]
    pub overrides: Vec<FileTokenOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTokenOverride {
    pub key: Option<String>,
    pub tokens_per_minute: Option<i64>,
    pub burst: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBreaker {
    pub consecutive_failures: Option<i64>,
    pub failure_rate: Option<f64>,
    pub window: Option<String>,
    pub min_requests: Option<i64>,
    pub base_backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub half_open_probes: Option<i64>,
    pub successes_to_close: Option<i64>,
    pub max_ejected_share: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileLimiter {
    pub enabled: Option<bool>,
    pub lookahead: Option<i64>,
    pub deferred_allowance: Option<i64>,
    pub decrease_factor: Option<f64>,
    pub min_change_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileApiKey {
    pub name: Option<String>,
    pub key: Option<String>,
    pub key_file: Option<String>,
    pub key_sha256: Option<String>,
    pub max_priority: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAuth {
    pub require_key: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCluster {
    pub redis_url: Option<String>,
    pub key_prefix: Option<String>,
    pub timeout: Option<String>,
    pub on_redis_down: Option<String>,
    pub heartbeat: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDiscovery {
    pub nameservers: Option<Vec<String>>,
}
