//! The gateway's own sections: `[server]`, `[admin]`, `[scrape]`,
//! `[routing]`, with their defaults and why.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::edge::{body_pace, connections, cors, trusted_proxies};
use super::file::{FileAdmin, FileRouting, FileScrape, FileServer};
use super::problems::{quoted, Problems};
use crate::backend::router::UnloadedModel;
use crate::backend::spec::ScrapeConfig;
use crate::edge::cors::CorsParams;
use crate::edge::{BodyPace, ConnLimits, Routes, TrustedProxies};

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
    /// Connection caps and the request-header clock.
    pub connections: ConnLimits,
    /// How long a client may take to send its body.
    pub body: BodyPace,
    /// Longest a write to a client may block (a client that stopped
    /// reading): the request ends and frees its backend slot.
    pub write_timeout: Duration,
    /// Serve the proxy listener over TLS with this PEM certificate chain and key.
    pub tls: Option<TlsFiles>,
    /// Browser origins allowed to read answers (backend CORS headers are
    /// always dropped); empty: no CORS headers at all.
    pub cors: CorsParams,
    /// Peers whose `X-Forwarded-For` names the client (default: none).
    pub trusted_proxies: TrustedProxies,
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
    /// Which routes pass (llama-server's public API plus these).
    pub routes: Routes,
    /// Most passthrough requests (reads, tokenizer helpers) open at once.
    pub max_passthrough: usize,
    /// The model of inference requests that name none (and of chunked
    /// bodies, which are not read ahead) in a multi-model fleet; unset: any backend.
    pub default_model: Option<String>,
    /// A request for a model a llama-server router lists but none has
    /// loaded: `wait` while a router loads it, or `refuse`.
    pub unloaded_model: UnloadedModel,
    /// Prompt-cache affinity: a long prompt's prefix prefers its home
    /// backend (default on; off gives the plain least-busy choice).
    pub affinity: bool,
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

/// A client that accepts no byte for this long has stopped reading: its
/// request ends and frees the backend slot. Long enough for a phone that
/// loses signal for a moment; short next to a generation.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Reads and tokenizer calls are cheap for llama-server but each holds an
/// HTTP thread there: a few dozen at once is plenty and bounds what a flood
/// of them can take from inference.
const DEFAULT_MAX_PASSTHROUGH: usize = 32;

/// Default `server.threads`: one proxy worker per two cores, at least one.
///
/// A proxied request is mostly kernel work (the loopback or NIC sends and
/// receives are charged to the sending process) plus a few wake-ups; with
/// as many workers as cores the workers steal each other's tasks and wake
/// each other across cores, and on a machine the proxy shares with its load
/// or its backends that cost more CPU per request than one worker did
/// (79.6 µs against 57.6 on 2 cores, loadtest/RESULTS.md). Half the cores
/// leaves the other half to the network stack and co-located processes;
/// a dedicated many-core gateway host that needs more throughput sets
/// `threads` to its core count.
fn default_threads() -> i64 {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)) as i64
}

// === checking ===

pub(crate) fn server(s: &FileServer, p: &mut Problems) -> ServerConfig {
    ServerConfig {
        listen: p.addr("server.listen", s.listen.as_deref(), "127.0.0.1:8080"),
        threads: p.int("server.threads", s.threads, 1, 256, default_threads()) as usize,
        grace_period: p.duration(
            "server.grace_period",
            s.grace_period.as_deref(),
            Duration::from_secs(30),
        ),
        max_clients: p.int("server.max_clients", s.max_clients, 1, 1_000_000, 4096) as usize,
        client_timeout: p.duration(
            "server.client_timeout",
            s.client_timeout.as_deref(),
            Duration::from_secs(30),
        ),
        connections: connections(s, p),
        body: body_pace(s, p),
        write_timeout: p.duration(
            "server.write_timeout",
            s.write_timeout.as_deref(),
            DEFAULT_WRITE_TIMEOUT,
        ),
        tls: tls_files(s, p),
        trusted_proxies: trusted_proxies(s, p),
        cors: cors(s, p),
    }
}

pub(crate) fn admin(a: &FileAdmin, server: &ServerConfig, p: &mut Problems) -> AdminConfig {
    let token = a
        .token_file
        .as_deref()
        .and_then(|path| match std::fs::read_to_string(path) {
            Ok(t) if t.trim().len() >= 16 => {
                super::secrets::private_file(p, "admin.token_file", path, "a token file");
                Some(t.trim().to_string())
            }
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
        listen: p.addr("admin.listen", a.listen.as_deref(), DEFAULT_ADMIN),
        token,
    };
    if admin.listen == server.listen {
        p.invalid(
            "admin.listen",
            quoted(&admin.listen.to_string()),
            "must differ from server.listen",
        );
    }
    admin
}

pub(crate) fn scrape(s: &FileScrape, p: &mut Problems) -> ScrapeConfig {
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
        // Set from `routing.max_slots` by the caller.
        max_slots: DEFAULT_MAX_SLOTS,
    };
    if scrape.stale_after < scrape.interval {
        p.invalid(
            "scrape.stale_after",
            quoted(&humantime::format_duration(scrape.stale_after).to_string()),
            "must be at least scrape.interval, or every backend is always stale",
        );
    }
    scrape
}

pub(crate) fn routing(r: &FileRouting, p: &mut Problems) -> RoutingConfig {
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
        routes: match Routes::new(r.open_routes.clone().unwrap_or_default()) {
            Ok(routes) => routes,
            Err(why) => {
                p.invalid(
                    "routing.open_routes",
                    format!("{:?}", r.open_routes.clone().unwrap_or_default()),
                    &why,
                );
                Routes::default()
            }
        },
        max_passthrough: p.int(
            "routing.max_passthrough",
            r.max_passthrough,
            1,
            100_000,
            DEFAULT_MAX_PASSTHROUGH as i64,
        ) as usize,
        default_model: r.default_model.clone(),
        unloaded_model: match r.unloaded_model.as_deref() {
            None => UnloadedModel::default(),
            Some(v) => UnloadedModel::parse(v).unwrap_or_else(|| {
                p.invalid(
                    "routing.unloaded_model",
                    quoted(v),
                    "use \"wait\" (a router loads the model while the request waits) or \
                     \"refuse\" (503 model_not_loaded)",
                );
                UnloadedModel::default()
            }),
        },
        affinity: r.affinity.unwrap_or(true),
    };
    if let Some(m) = &routing.default_model {
        if m.trim().is_empty() || m.len() > 256 || m.chars().any(char::is_control) {
            p.invalid(
                "routing.default_model",
                quoted(m),
                "must be a model name (1-256 characters, no control characters) \
                 that backends list in /v1/models or in backends[].models",
            );
        }
    }
    if routing.idle_timeout >= Duration::from_secs(5) {
        p.invalid(
            "routing.idle_timeout",
            quoted(&humantime::format_duration(routing.idle_timeout).to_string()),
            "must be under 5s: llama-server closes idle connections after 5 s, and a \
             request sent on a connection it just closed fails with 502",
        );
    }
    routing
}

/// Most slots a backend's `/props` may claim: a backend claiming 4 billion
/// would otherwise become the sink of all traffic.
const DEFAULT_MAX_SLOTS: u32 = 512;
const MAX_MAX_SLOTS: i64 = 65_536;

/// `routing.max_slots`: the cap on the slot count a backend reports.
pub(crate) fn max_slots(r: &FileRouting, p: &mut Problems) -> u32 {
    match r.max_slots {
        None => DEFAULT_MAX_SLOTS,
        Some(v) if (1..=MAX_MAX_SLOTS).contains(&v) => v as u32,
        Some(v) => {
            p.invalid(
                "routing.max_slots",
                v,
                &format!(
                    "must be between 1 and {MAX_MAX_SLOTS}: it caps the total_slots a \
                     backend's /props may claim"
                ),
            );
            DEFAULT_MAX_SLOTS
        }
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
            super::secrets::private_file(p, "server.tls_key", k, "a private key");
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
