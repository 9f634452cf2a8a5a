//! The `[server]` keys of the client edge: connection caps and the header
//! clock, the body pace, trusted proxies and CORS origins.

use std::time::Duration;

use super::file::FileServer;
use super::problems::{quoted, Problems};
use crate::edge::cors::CorsParams;
use crate::edge::{BodyPace, ConnLimits, TrustedProxies};

pub(super) fn cors(s: &FileServer, p: &mut Problems) -> CorsParams {
    let mut origins: Vec<String> = Vec::new();
    for (i, raw) in s.cors_origins.iter().flatten().enumerate() {
        match crate::edge::cors::parse_origin(raw) {
            Ok(o) if origins.contains(&o) => p.invalid(
                &format!("server.cors_origins[{i}]"),
                quoted(raw),
                "listed twice",
            ),
            Ok(o) => origins.push(o),
            Err(why) => p.invalid(&format!("server.cors_origins[{i}]"), quoted(raw), why),
        }
    }
    let allow_credentials = s.cors_allow_credentials.unwrap_or(false);
    if allow_credentials && origins.is_empty() {
        p.invalid(
            "server.cors_allow_credentials",
            true,
            "needs server.cors_origins: credentials are only ever allowed to listed origins",
        );
    }
    CorsParams {
        origins,
        allow_credentials,
    }
}

pub(super) fn trusted_proxies(s: &FileServer, p: &mut Problems) -> TrustedProxies {
    let entries = s.trusted_proxies.as_deref().unwrap_or_default();
    let mut ok = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match TrustedProxies::parse([e.as_str()]) {
            Ok(_) => ok.push(e.as_str()),
            Err(_) => p.invalid(
                &format!("server.trusted_proxies[{i}]"),
                quoted(e),
                "is not an address or a CIDR range (e.g. \"10.0.0.0/8\")",
            ),
        }
    }
    TrustedProxies::parse(ok).unwrap_or_default()
}

pub(super) fn connections(s: &FileServer, p: &mut Problems) -> ConnLimits {
    let d = ConnLimits::default();
    let limits = ConnLimits {
        max_total: p.int(
            "server.max_connections",
            s.max_connections,
            1,
            10_000_000,
            d.max_total as i64,
        ) as usize,
        max_per_client: p.int(
            "server.max_connections_per_client",
            s.max_connections_per_client,
            1,
            10_000_000,
            d.max_per_client as i64,
        ) as usize,
        header_timeout: p.duration(
            "server.header_timeout",
            s.header_timeout.as_deref(),
            d.header_timeout,
        ),
        keepalive_timeout: p.duration(
            "server.keepalive_timeout",
            s.keepalive_timeout.as_deref(),
            d.keepalive_timeout,
        ),
    };
    if limits.header_timeout.is_zero() {
        p.invalid(
            "server.header_timeout",
            quoted("0s"),
            "must be more than 0: no request could ever arrive",
        );
    }
    if limits.keepalive_timeout > Duration::ZERO
        && limits.keepalive_timeout < Duration::from_secs(1)
    {
        p.invalid(
            "server.keepalive_timeout",
            quoted(&humantime::format_duration(limits.keepalive_timeout).to_string()),
            "must be 0 (no keep-alive) or at least 1s: pingora counts it in whole seconds",
        );
    }
    limits
}

pub(super) fn body_pace(s: &FileServer, p: &mut Problems) -> BodyPace {
    let d = BodyPace::default();
    BodyPace {
        grace: p.duration("server.body_grace", s.body_grace.as_deref(), d.grace),
        min_rate: p.int(
            "server.min_body_rate",
            s.min_body_rate,
            1,
            1 << 40,
            d.min_rate as i64,
        ) as u64,
    }
}
