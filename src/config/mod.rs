//! The TOML file format → a validated [`Config`].
//!
//! The file is read into `File*` structs that mirror the text (unknown keys
//! rejected by serde), then checked field by field into [`Config`], whose
//! values cannot be wrong. Every problem is collected, not just the first, and
//! each message names the key, the value and the reason:
//! `backends[1].url = "htp://x" is not valid: scheme must be http`.

use std::collections::HashSet;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod admission;
pub use admission::{AdmissionConfig, ApiKey};

// === the validated configuration ===

/// The gateway's whole configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub scrape: ScrapeConfig,
    pub routing: RoutingConfig,
    pub admission: AdmissionConfig,
    pub backends: Vec<BackendConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// The proxy listener.
    pub listen: SocketAddr,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// How long in-flight requests may run on after a graceful stop begins.
    pub grace_period: Duration,
    /// Most client requests open at once (queued included); more get 503.
    pub max_clients: usize,
    /// Longest a client may stay silent while sending its request body.
    pub client_timeout: Duration,
    /// Serve the proxy listener over TLS with this PEM certificate chain and key.
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, PartialEq)]
pub struct AdminConfig {
    /// The admin listener (`/metrics`, `/status`, ...); loopback by default.
    pub listen: SocketAddr,
    /// Bearer token for operator actions (drain); `None` disables them.
    pub token: Option<String>,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

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
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoutingConfig {
    /// A backend whose `requests_deferred` exceeds this gets no new work.
    pub max_deferred: u32,
    pub connect_timeout: Duration,
    /// Longest silence from a backend (also the first-byte timeout).
    pub read_timeout: Duration,
    /// Pooled upstream connections are closed after this much idleness;
    /// must stay under llama-server's 5 s keep-alive.
    pub idle_timeout: Duration,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
}

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
}

// === defaults (and why) ===

/// Loopback: the admin listener exposes internals and operator actions.
const DEFAULT_ADMIN: &str = "127.0.0.1:9090";
/// Twice a second: llama requests last seconds, so 500 ms staleness is small
/// next to them, and a scrape costs the server microseconds.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Missing three scrapes in a row means we no longer know the backend.
const STALE_INTERVALS: u32 = 3;
/// llama-server's default body limit is far larger; 16 MiB fits any prompt
/// that fits a context window and bounds what one client can make us hold.
const DEFAULT_MAX_BODY: usize = 16 << 20;

// === the file format ===

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    admin: FileAdmin,
    #[serde(default)]
    scrape: FileScrape,
    #[serde(default)]
    routing: FileRouting,
    #[serde(default)]
    backends: Vec<FileBackend>,
    #[serde(default)]
    queue: admission::FileQueue,
    #[serde(default)]
    rate_limit: admission::FileRateLimit,
    #[serde(default)]
    token_budget: admission::FileTokenBudget,
    #[serde(default)]
    breaker: admission::FileBreaker,
    #[serde(default)]
    limiter: admission::FileLimiter,
    #[serde(default)]
    api_keys: Vec<admission::FileApiKey>,
    #[serde(default)]
    auth: admission::FileAuth,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    listen: Option<String>,
    threads: Option<i64>,
    grace_period: Option<String>,
    max_clients: Option<i64>,
    client_timeout: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    listen: Option<String>,
    token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileScrape {
    interval: Option<String>,
    timeout: Option<String>,
    stale_after: Option<String>,
    slow: Option<String>,
    props_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRouting {
    max_deferred: Option<i64>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_body_bytes: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackend {
    name: Option<String>,
    url: Option<String>,
    weight: Option<i64>,
    max_in_flight: Option<i64>,
    drain: Option<bool>,
}

// === errors ===

/// Everything wrong with a configuration file, one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects problems while a file is checked.
#[derive(Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    pub(crate) fn invalid(&mut self, key: &str, value: impl fmt::Display, why: &str) {
        self.0.push(format!("{key} = {value} is not valid: {why}"));
    }
    pub(crate) fn missing(&mut self, key: &str, why: &str) {
        self.0.push(format!("{key} is missing: {why}"));
    }

    pub(crate) fn duration(&mut self, key: &str, raw: Option<&str>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match humantime::parse_duration(raw) {
            Ok(d) if d.is_zero() => {
                self.invalid(key, quoted(raw), "must be greater than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.invalid(
                    key,
                    quoted(raw),
                    &format!("{e} (write a duration such as \"500ms\", \"2s\" or \"1m\")"),
                );
                default
            }
        }
    }

    pub(crate) fn addr(&mut self, key: &str, raw: Option<&str>, default: &str) -> SocketAddr {
        let raw = raw.unwrap_or(default);
        match raw.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.invalid(
                    key,
                    quoted(raw),
                    "must be an IP address and port such as \"127.0.0.1:8080\"",
                );
                default.parse().expect("default address parses")
            }
        }
    }

    pub(crate) fn int(
        &mut self,
        key: &str,
        raw: Option<i64>,
        min: i64,
        max: i64,
        default: i64,
    ) -> i64 {
        match raw {
            None => default,
            Some(v) if v < min || v > max => {
                self.invalid(key, v, &format!("must be between {min} and {max}"));
                default
            }
            Some(v) => v,
        }
    }
}

pub(crate) fn quoted(s: &str) -> String {
    format!("{s:?}")
}

// === loading ===

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![format!("cannot read {}: {e}", path.display())],
        })?;
        Config::parse(&text)
    }

    /// Validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![e.to_string().trim_end().to_string()],
        })?;
        let mut p = Problems::default();
        let config = validate(file, &mut p);
        if p.0.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems: p.0 })
        }
    }
}

fn validate(file: FileConfig, p: &mut Problems) -> Config {
    let server = ServerConfig {
        listen: p.addr(
            "server.listen",
            file.server.listen.as_deref(),
            "127.0.0.1:8080",
        ),
        threads: p.int("server.threads", file.server.threads, 1, 256, 2) as usize,
        grace_period: p.duration(
            "server.grace_period",
            file.server.grace_period.as_deref(),
            Duration::from_secs(30),
        ),
        max_clients: p.int(
            "server.max_clients",
            file.server.max_clients,
            1,
            1_000_000,
            4096,
        ) as usize,
        client_timeout: p.duration(
            "server.client_timeout",
            file.server.client_timeout.as_deref(),
            Duration::from_secs(30),
        ),
        tls: tls_files(&file.server, p),
    };
    let token =
        file.admin
            .token_file
            .as_deref()
            .and_then(|path| match std::fs::read_to_string(path) {
                Ok(t) if t.trim().len() >= 16 => Some(t.trim().to_string()),
                Ok(_) => {
                    p.invalid(
                        "admin.token_file",
                        quoted(path),
                        "the token in it must be at least 16 characters",
                    );
                    None
                }
                Err(e) => {
                    p.invalid(
                        "admin.token_file",
                        quoted(path),
                        &format!("cannot be read: {e}"),
                    );
                    None
                }
            });
    let admin = AdminConfig {
        listen: p.addr("admin.listen", file.admin.listen.as_deref(), DEFAULT_ADMIN),
        token,
    };
    if admin.listen == server.listen {
        p.invalid(
            "admin.listen",
            quoted(&admin.listen.to_string()),
            "must differ from server.listen",
        );
    }
    let s = &file.scrape;
    let interval = p.duration("scrape.interval", s.interval.as_deref(), DEFAULT_INTERVAL);
    let timeout = p.duration("scrape.timeout", s.timeout.as_deref(), DEFAULT_TIMEOUT);
    let scrape = ScrapeConfig {
        interval,
        timeout,
        stale_after: p.duration(
            "scrape.stale_after",
            s.stale_after.as_deref(),
            interval * STALE_INTERVALS,
        ),
        slow: p.duration("scrape.slow", s.slow.as_deref(), timeout / 2),
        props_interval: p.duration(
            "scrape.props_interval",
            s.props_interval.as_deref(),
            Duration::from_secs(30),
        ),
    };
    if scrape.stale_after < scrape.interval {
        p.invalid(
            "scrape.stale_after",
            quoted(&humantime::format_duration(scrape.stale_after).to_string()),
            "must be at least scrape.interval, or every backend is always stale",
        );
    }
    let r = &file.routing;
    let routing = RoutingConfig {
        max_deferred: p.int("routing.max_deferred", r.max_deferred, 0, 1_000_000, 0) as u32,
        connect_timeout: p.duration(
            "routing.connect_timeout",
            r.connect_timeout.as_deref(),
            Duration::from_secs(1),
        ),
        read_timeout: p.duration(
            "routing.read_timeout",
            r.read_timeout.as_deref(),
            Duration::from_secs(300),
        ),
        idle_timeout: p.duration(
            "routing.idle_timeout",
            r.idle_timeout.as_deref(),
            Duration::from_secs(3),
        ),
        max_body_bytes: p.int(
            "routing.max_body_bytes",
            r.max_body_bytes,
            1,
            1 << 32,
            DEFAULT_MAX_BODY as i64,
        ) as usize,
    };
    if routing.idle_timeout >= Duration::from_secs(5) {
        p.invalid(
            "routing.idle_timeout",
            quoted(&humantime::format_duration(routing.idle_timeout).to_string()),
            "must be under 5s: llama-server closes idle connections after 5 s, and a \
             request sent on a connection it just closed fails with 502",
        );
    }
    let backends = backends(file.backends, p);
    let admission = admission::validate(
        admission::FileAdmission {
            queue: file.queue,
            rate_limit: file.rate_limit,
            token_budget: file.token_budget,
            breaker: file.breaker,
            limiter: file.limiter,
            api_keys: file.api_keys,
            auth: file.auth,
        },
        p,
    );
    Config {
        server,
        admin,
        scrape,
        routing,
        admission,
        backends,
    }
}

fn tls_files(s: &FileServer, p: &mut Problems) -> Option<TlsFiles> {
    let readable = |p: &mut Problems, key: &str, path: &str| match std::fs::read_to_string(path) {
        Ok(text) if text.contains("-----BEGIN") => true,
        Ok(_) => {
            p.invalid(key, quoted(path), "is not a PEM file");
            false
        }
        Err(e) => {
            p.invalid(key, quoted(path), &format!("cannot be read: {e}"));
            false
        }
    };
    match (&s.tls_cert, &s.tls_key) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            let ok = readable(p, "server.tls_cert", c) & readable(p, "server.tls_key", k);
            ok.then(|| TlsFiles {
                cert: PathBuf::from(c),
                key: PathBuf::from(k),
            })
        }
        (Some(_), None) => {
            p.missing(
                "server.tls_key",
                "server.tls_cert needs the matching private key",
            );
            None
        }
        (None, Some(_)) => {
            p.missing(
                "server.tls_cert",
                "server.tls_key needs the matching certificate",
            );
            None
        }
    }
}

fn backends(raw: Vec<FileBackend>, p: &mut Problems) -> Vec<BackendConfig> {
    if raw.is_empty() {
        p.missing(
            "backends",
            "add at least one [[backends]] table with a name and a url",
        );
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let mut out = Vec::new();
    for (i, b) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("backends[{i}].{field}");
        let name = match b.name {
            None => {
                p.missing(&key("name"), "every backend needs a unique name");
                continue;
            }
            Some(n) if !valid_name(&n) => {
                p.invalid(
                    &key("name"),
                    quoted(&n),
                    "use 1-64 letters, digits, '-', '_' or '.'",
                );
                continue;
            }
            Some(n) => n,
        };
        if !names.insert(name.clone()) {
            p.invalid(
                &key("name"),
                quoted(&name),
                "another backend already has this name",
            );
        }
        let Some(url) = b.url else {
            p.missing(
                &key("url"),
                "write the backend's base URL, e.g. \"http://127.0.0.1:8080\"",
            );
            continue;
        };
        let addr = match parse_url(&url) {
            Ok(a) => a,
            Err(why) => {
                p.invalid(&key("url"), quoted(&url), &why);
                continue;
            }
        };
        if !addrs.insert(addr) {
            p.invalid(
                &key("url"),
                quoted(&url),
                &format!("another backend already uses {addr}"),
            );
        }
        let weight = p.int(&key("weight"), b.weight, 1, 1000, 1) as u32;
        let max_in_flight = b
            .max_in_flight
            .map(|v| p.int(&key("max_in_flight"), Some(v), 1, 100_000, 1) as u32);
        out.push(BackendConfig {
            name,
            url: url.trim_end_matches('/').to_string(),
            addr,
            weight,
            max_in_flight,
            drain: b.drain.unwrap_or(false),
        });
    }
    out
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `http://host:port[/]` → the address to connect to.
fn parse_url(url: &str) -> Result<SocketAddr, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(if url.starts_with("https://") {
            "scheme must be http (TLS to backends is not supported; llama-server on a \
             private network speaks plain HTTP)"
                .into()
        } else {
            "scheme must be http".into()
        });
    };
    let hostport = rest.trim_end_matches('/');
    if hostport.contains('/') {
        return Err("must be a base URL without a path, e.g. \"http://10.0.0.5:8080\"".into());
    }
    if hostport.is_empty() {
        return Err("host is missing".into());
    }
    let with_port = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !hostport.ends_with(']')
    {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host: {e}"))?
        .next()
        .ok_or_else(|| "host resolves to no address".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:18080\"\n";

    fn errors(text: &str) -> Vec<String> {
        Config::parse(text).unwrap_err().problems
    }

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.scrape.interval, Duration::from_millis(500));
        assert_eq!(c.scrape.stale_after, Duration::from_millis(1500));
        assert_eq!(c.routing.max_deferred, 0);
        assert_eq!(c.backends[0].addr.to_string(), "127.0.0.1:18080");
        assert_eq!(c.backends[0].weight, 1);
    }

    #[test]
    fn bad_url_names_key_value_and_reason() {
        let e = errors(
            "[[backends]]\nname=\"a\"\nurl=\"http://127.0.0.1:1\"\n[[backends]]\nname=\"b\"\nurl=\"htp://x\"\n",
        );
        assert_eq!(
            e,
            vec!["backends[1].url = \"htp://x\" is not valid: scheme must be http"]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let e = errors(
            "[scrape]\ninterval = \"0s\"\ntimeout = \"soon\"\n[routing]\nidle_timeout = \"10s\"\n",
        );
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(
            e[0].starts_with("scrape.interval = \"0s\" is not valid: must be greater than zero")
        );
        assert!(e[1].starts_with("scrape.timeout = \"soon\" is not valid"));
        assert!(e[2].starts_with("routing.idle_timeout = \"10s\""));
        assert!(e[3].starts_with("backends is missing"));
    }

    #[test]
    fn duplicates_are_rejected() {
        let e = errors(
            "[[backends]]\nname=\"a\"\nurl=\"http://127.0.0.1:1\"\n[[backends]]\nname=\"a\"\nurl=\"http://127.0.0.1:1/\"\n",
        );
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[0].contains("backends[1].name = \"a\""));
        assert!(e[1].contains("another backend already uses 127.0.0.1:1"));
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = errors(&format!("{MINIMAL}[scrape]\nintreval = \"1s\"\n"));
        assert!(e[0].contains("intreval"), "{e:?}");
    }

    #[test]
    fn weights_and_ranges() {
        let e = errors("[[backends]]\nname=\"a\"\nurl=\"http://127.0.0.1:1\"\nweight=0\n");
        assert_eq!(
            e,
            vec!["backends[0].weight = 0 is not valid: must be between 1 and 1000"]
        );
        let e = errors("[[backends]]\nname=\"a b\"\nurl=\"http://127.0.0.1:1\"\n");
        assert!(e[0].starts_with("backends[0].name = \"a b\" is not valid"));
        let e = errors("[[backends]]\nname=\"a\"\nurl=\"http://127.0.0.1:1/v1\"\n");
        assert!(e[0].contains("without a path"));
    }
}
