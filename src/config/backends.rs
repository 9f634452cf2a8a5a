//! `[[backends]]`: unique names and addresses, URLs resolved once; an
//! entry with `discover` is a DNS name asked again and again
//! ([`super::discovery`]), never resolved here.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};

use super::file::FileBackend;
use super::problems::{quoted, Problems};
use crate::backend::discovery::DnsEntry;
use crate::backend::spec::BackendConfig;

/// The fixed backends and the discovered entries.
pub(crate) fn backends(
    raw: Vec<FileBackend>,
    p: &mut Problems,
) -> (Vec<BackendConfig>, Vec<DnsEntry>) {
    if raw.is_empty() {
        p.missing(
            "backends",
            "add at least one [[backends]] table with a name and a url",
        );
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let mut out = Vec::new();
    let mut discovered = Vec::new();
    for (i, b) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("backends[{i}].{field}");
        let name = match b.name.clone() {
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
        let Some(url) = b.url.clone() else {
            p.missing(
                &key("url"),
                "write the backend's base URL, e.g. \"http://127.0.0.1:8080\"",
            );
            continue;
        };
        if b.discover.is_some() {
            discovered.extend(super::discovery::entry(
                &key,
                name,
                &url,
                split_url(&url),
                &b,
                p,
            ));
            continue;
        }
        if let Some(every) = &b.resolve_every {
            p.invalid(
                &key("resolve_every"),
                quoted(every),
                "only a discovered entry (discover = \"dns\") is resolved again",
            );
        }
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
            models: b.models.clone().unwrap_or_default(),
            instance: None,
        });
    }
    (out, discovered)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `http://host:port[/]` → the address to connect to.
fn parse_url(url: &str) -> Result<SocketAddr, String> {
    let (host, port) = split_url(url)?;
    format!("{host}:{port}")
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host: {e}"))?
        .next()
        .ok_or_else(|| "host resolves to no address".to_string())
}

/// `http://host[:port][/]` → the host as written and the port (80 when
/// none), unresolved.
fn split_url(url: &str) -> Result<(String, u16), String> {
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
    match hostport.rsplit_once(':') {
        Some((host, port)) if !hostport.ends_with(']') => match port.parse::<u16>() {
            Ok(port) => Ok((host.to_string(), port)),
            Err(_) => Ok((hostport.to_string(), 80)),
        },
        _ => Ok((hostport.to_string(), 80)),
    }
}
