//! `discover = "dns"` on a `[[backends]]` entry and `[discovery]`: the DNS
//! name (never resolved here: the fleet may come later), its period, and
//! the nameservers asked.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::file::{FileBackend, FileDiscovery};
use super::problems::{quoted, Problems};
use crate::backend::discovery::{DiscoveryParams, DnsEntry, DEFAULT_RESOLVE_EVERY};

/// Below this, lookups would mostly read the resolver's cache and load the
/// nameserver for nothing.
const MIN_RESOLVE_EVERY: Duration = Duration::from_millis(100);

/// The entry `backends[i]` (`key` names its fields) with `discover` set,
/// its `name` and `url` already read, and the url split into host and port
/// (unresolved) or why it cannot be.
pub(super) fn entry(
    key: &dyn Fn(&str) -> String,
    name: String,
    url: &str,
    split: Result<(String, u16), String>,
    b: &FileBackend,
    p: &mut Problems,
) -> Option<DnsEntry> {
    let how = b.discover.as_deref().unwrap_or_default();
    if how != "dns" {
        p.invalid(
            &key("discover"),
            quoted(how),
            "must be \"dns\" (the A/AAAA records of the url's host are the members)",
        );
        return None;
    }
    let (host, port) = match split {
        Ok(hp) => hp,
        Err(why) => {
            p.invalid(&key("url"), quoted(url), &why);
            return None;
        }
    };
    if let Err(why) = dns_name(&host) {
        p.invalid(&key("url"), quoted(url), &why);
        return None;
    }
    let every_key = key("resolve_every");
    let resolve_every = p.duration(
        &every_key,
        b.resolve_every.as_deref(),
        DEFAULT_RESOLVE_EVERY,
    );
    if resolve_every < MIN_RESOLVE_EVERY {
        p.invalid(
            &every_key,
            quoted(b.resolve_every.as_deref().unwrap_or_default()),
            "must be at least 100ms: shorter periods mostly read the resolver's cache",
        );
    }
    Some(DnsEntry {
        name,
        url: url.trim_end_matches('/').to_string(),
        host,
        port,
        resolve_every,
        weight: p.int(&key("weight"), b.weight, 1, 1000, 1) as u32,
        max_in_flight: b
            .max_in_flight
            .map(|v| p.int(&key("max_in_flight"), Some(v), 1, 100_000, 1) as u32),
        drain: b.drain.unwrap_or(false),
        models: b.models.clone().unwrap_or_default(),
    })
}

/// A host a discovered entry may name: a DNS name, not an address.
fn dns_name(host: &str) -> Result<(), String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "discover = \"dns\" needs a DNS name, and {bare} is an address: \
             drop discover for a fixed backend"
        ));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return Err("the host must be a DNS name of 1 to 253 characters".into());
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(format!(
                "the host is not a DNS name: label {label:?} must be 1-63 letters, digits, \
                 '-' or '_', not starting or ending with '-'"
            ));
        }
    }
    Ok(())
}

/// `[discovery]` with the entries found in `[[backends]]`.
pub(super) fn discovery(
    raw: &Option<FileDiscovery>,
    entries: Vec<DnsEntry>,
    p: &mut Problems,
) -> DiscoveryParams {
    let mut nameservers = Vec::new();
    if let Some(list) = raw.as_ref().and_then(|d| d.nameservers.as_ref()) {
        if list.is_empty() {
            p.invalid(
                "discovery.nameservers",
                "[]",
                "list at least one \"ip:port\", or leave the key out to use /etc/resolv.conf",
            );
        }
        for (i, ns) in list.iter().enumerate() {
            match ns.parse::<SocketAddr>() {
                Ok(a) if a.port() != 0 => nameservers.push(a),
                _ => p.invalid(
                    &format!("discovery.nameservers[{i}]"),
                    quoted(ns),
                    "must be a nameserver's IP address and port, such as \"127.0.0.1:53\"",
                ),
            }
        }
    }
    DiscoveryParams {
        nameservers,
        entries,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::time::Duration;

    const POOL: &str = "[[backends]]\nname = \"pool\"\ndiscover = \"dns\"\n";

    fn errors(text: &str) -> Vec<String> {
        Config::parse(text).unwrap_err().problems
    }

    #[test]
    fn a_discovered_entry_is_not_resolved_and_gets_defaults() {
        let c = Config::parse(&format!(
            "{POOL}url = \"http://llama.fleet.invalid:8081/\"\nweight = 2\n"
        ))
        .unwrap();
        assert!(c.backends.is_empty());
        let e = &c.discovery.entries[0];
        assert_eq!((e.host.as_str(), e.port), ("llama.fleet.invalid", 8081));
        assert_eq!(e.url, "http://llama.fleet.invalid:8081");
        assert_eq!(e.resolve_every, Duration::from_secs(5));
        assert_eq!(e.weight, 2);
        assert!(c.discovery.nameservers.is_empty());
        let c = Config::parse(&format!(
            "{POOL}url = \"http://llama.svc\"\nresolve_every = \"2s\"\n\
             [discovery]\nnameservers = [\"127.0.0.1:5353\", \"[::1]:53\"]\n"
        ))
        .unwrap();
        assert_eq!(c.discovery.entries[0].port, 80);
        assert_eq!(c.discovery.entries[0].resolve_every, Duration::from_secs(2));
        assert_eq!(c.discovery.nameservers.len(), 2);
    }

    #[test]
    fn bad_discovery_keys_name_key_value_and_reason() {
        let e = errors(&format!(
            "{POOL}url = \"http://ok.-x:80\"\nresolve_every = \"0s\"\n"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("backends[0].url = \"http://ok.-x:80\" is not valid: the host is not a DNS name: label \"-x\""),
            "{e:?}"
        );
        let e = errors(&format!(
            "{POOL}url = \"http://llama.svc:80\"\nresolve_every = \"0s\"\n"
        ));
        assert_eq!(
            e,
            vec!["backends[0].resolve_every = \"0s\" is not valid: must be greater than zero"]
        );
        let e = errors(&format!(
            "{POOL}url = \"http://llama.svc:80\"\nresolve_every = \"10ms\"\n"
        ));
        assert!(e[0].contains("must be at least 100ms"), "{e:?}");
        let e = errors(&format!("{POOL}url = \"http://10.0.0.1:80\"\n"));
        assert!(e[0].contains("10.0.0.1 is an address"), "{e:?}");
        let e =
            errors("[[backends]]\nname = \"p\"\ndiscover = \"srv\"\nurl = \"http://llama.svc\"\n");
        assert!(
            e[0].starts_with("backends[0].discover = \"srv\" is not valid: must be \"dns\""),
            "{e:?}"
        );
        let e = errors(&format!(
            "{POOL}url = \"http://llama.svc\"\n[discovery]\nnameservers = [\"127.0.0.1\", \"dns.example:53\"]\n"
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[0],
            "discovery.nameservers[0] = \"127.0.0.1\" is not valid: must be a nameserver's IP \
             address and port, such as \"127.0.0.1:53\""
        );
        let e = errors(
            "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nresolve_every = \"5s\"\n",
        );
        assert!(
            e[0].starts_with("backends[0].resolve_every = \"5s\" is not valid: only a discovered"),
            "{e:?}"
        );
    }
}
