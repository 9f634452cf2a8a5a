//! `[[backends]]`: unique names and addresses, URLs resolved once.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};

use super::file::FileBackend;
use super::problems::{quoted, Problems};
use crate::backend::spec::BackendConfig;

pub(crate) fn backends(raw: Vec<FileBackend>, p: &mut Problems) -> Vec<BackendConfig> {
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
            models: b.models.clone().unwrap_or_default(),
            instance: None,
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
