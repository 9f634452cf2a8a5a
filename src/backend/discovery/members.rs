//! The pure rules of discovery: what an answer makes of an entry's
//! members, what a member is called and configured as, and how members
//! and configured backends merge into the fleet's one list.
//!
//! ## Keep on error, remove on "no such name"
//!
//! A failed lookup (SERVFAIL, a timeout, an unreachable nameserver) says
//! nothing about the fleet: the members stay, so a DNS outage never empties
//! a working fleet. NXDOMAIN or an answer without addresses is the fleet's
//! owner saying there is none: the members leave (drained, not cut).

use std::collections::HashSet;
use std::net::SocketAddr;

use super::DnsEntry;
use crate::backend::spec::BackendConfig;

/// At most this many members per entry: a name answering with more
/// addresses (a misconfigured wildcard, a huge pool) keeps the lowest ones.
/// Each member costs a scrape task and a few series; 256 is well past the
/// fleets Sluice fronts (the 100-backend simulation) and bounds a bad
/// answer's cost.
pub const MAX_MEMBERS: usize = 256;

/// What one resolution round did, the `outcome` label of
/// `sluice_discovery_resolutions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Addresses came back: they are the members.
    Ok,
    /// NXDOMAIN or no address: no members.
    Empty,
    /// The lookup failed: the members stay as they were.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Empty, Outcome::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Empty => "empty",
            Outcome::Error => "error",
        }
    }
}

/// The members after an answer, sorted and without repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    pub members: Vec<SocketAddr>,
    pub outcome: Outcome,
    /// Addresses beyond [`MAX_MEMBERS`] left out.
    pub dropped: usize,
}

/// The members after `answer` (`Ok`: the addresses, possibly none; `Err`:
/// the lookup failed) when they were `previous`.
pub fn next(previous: &[SocketAddr], answer: &Result<Vec<SocketAddr>, String>) -> Next {
    match answer {
        Err(_) => Next {
            members: previous.to_vec(),
            outcome: Outcome::Error,
            dropped: 0,
        },
        Ok(addrs) => {
            let mut members = addrs.clone();
            members.sort();
            members.dedup();
            let dropped = members.len().saturating_sub(MAX_MEMBERS);
            members.truncate(MAX_MEMBERS);
            let outcome = if members.is_empty() {
                Outcome::Empty
            } else {
                Outcome::Ok
            };
            Next {
                members,
                outcome,
                dropped,
            }
        }
    }
}

/// Who joined and who left between two member lists.
pub fn diff(old: &[SocketAddr], new: &[SocketAddr]) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let joined = new.iter().filter(|a| !old.contains(a)).copied().collect();
    let left = old.iter().filter(|a| !new.contains(a)).copied().collect();
    (joined, left)
}

/// A member's name: the entry's, a slash, the address (`pool/10.0.0.5`,
/// `pool/fd00::5`). Stable while the address is, at most 64 + 1 + 39
/// characters, and never a configured name (those have no slash), as a
/// router's `router/model` sub-backends are named.
pub fn member_name(entry: &str, addr: SocketAddr) -> String {
    format!("{entry}/{}", addr.ip())
}

/// The backend a member is: the entry's settings at the member's address.
pub fn member_config(entry: &DnsEntry, addr: SocketAddr) -> BackendConfig {
    BackendConfig {
        name: member_name(&entry.name, addr),
        url: format!("http://{addr}"),
        addr,
        weight: entry.weight,
        max_in_flight: entry.max_in_flight,
        drain: entry.drain,
        models: entry.models.clone(),
        instance: None,
    }
}

/// The fleet's list: the configured backends, then each entry's members.
/// A member at an address some backend already has (a configured one, or
/// another entry's member) is left out, one backend per address; the
/// names left out are returned for a warning.
pub fn merge<'a>(
    configured: &[BackendConfig],
    discovered: impl IntoIterator<Item = (&'a DnsEntry, &'a [SocketAddr])>,
) -> (Vec<BackendConfig>, Vec<String>) {
    let mut taken: HashSet<SocketAddr> = configured.iter().map(|b| b.addr).collect();
    let mut out = configured.to_vec();
    let mut skipped = Vec::new();
    for (entry, members) in discovered {
        for &addr in members {
            let c = member_config(entry, addr);
            if taken.insert(addr) {
                out.push(c);
            } else {
                skipped.push(c.name);
            }
        }
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn entry(name: &str) -> DnsEntry {
        DnsEntry {
            name: name.into(),
            url: "http://llama.fleet.test:8080".into(),
            host: "llama.fleet.test".into(),
            port: 8080,
            resolve_every: Duration::from_secs(5),
            weight: 3,
            max_in_flight: Some(4),
            drain: false,
            models: vec!["m".into()],
        }
    }

    #[test]
    fn a_failed_lookup_keeps_the_members_and_no_records_removes_them() {
        let old = vec![a("10.0.0.1:80"), a("10.0.0.2:80")];
        let kept = next(&old, &Err("SERVFAIL".into()));
        assert_eq!(kept.members, old);
        assert_eq!(kept.outcome, Outcome::Error);
        let gone = next(&old, &Ok(vec![]));
        assert!(gone.members.is_empty());
        assert_eq!(gone.outcome, Outcome::Empty);
        let fresh = next(&[], &Err("timeout".into()));
        assert!(fresh.members.is_empty(), "nothing known, nothing kept");
    }

    #[test]
    fn answers_are_sorted_deduplicated_and_capped() {
        let n = next(
            &[],
            &Ok(vec![a("10.0.0.9:80"), a("10.0.0.1:80"), a("10.0.0.9:80")]),
        );
        assert_eq!(n.members, vec![a("10.0.0.1:80"), a("10.0.0.9:80")]);
        assert_eq!((n.outcome, n.dropped), (Outcome::Ok, 0));
        let many: Vec<SocketAddr> = (0..300u32)
            .rev()
            .map(|i| SocketAddr::from(([10, 1, (i / 256) as u8, (i % 256) as u8], 80)))
            .collect();
        let n = next(&[], &Ok(many));
        assert_eq!(n.members.len(), MAX_MEMBERS);
        assert_eq!(n.dropped, 300 - MAX_MEMBERS);
        assert_eq!(n.members[0], a("10.1.0.0:80"), "the lowest are kept");
    }

    #[test]
    fn joins_and_leaves() {
        let (j, l) = diff(
            &[a("10.0.0.1:80"), a("10.0.0.2:80")],
            &[a("10.0.0.2:80"), a("10.0.0.3:80")],
        );
        assert_eq!(j, vec![a("10.0.0.3:80")]);
        assert_eq!(l, vec![a("10.0.0.1:80")]);
    }

    #[test]
    fn members_are_named_by_address_and_take_the_entry_settings() {
        let e = entry("pool");
        let c = member_config(&e, a("10.0.0.5:8080"));
        assert_eq!(c.name, "pool/10.0.0.5");
        assert_eq!(c.url, "http://10.0.0.5:8080");
        assert_eq!((c.weight, c.max_in_flight), (3, Some(4)));
        assert_eq!(c.models, vec!["m".to_string()]);
        let v6 = member_config(&e, a("[fd00::5]:8080"));
        assert_eq!(v6.name, "pool/fd00::5");
        assert_eq!(v6.url, "http://[fd00::5]:8080");
    }

    #[test]
    fn merge_keeps_one_backend_per_address() {
        let configured = vec![member_config(&entry("static"), a("10.0.0.1:8080"))];
        let (e1, e2) = (entry("p"), entry("q"));
        let m1 = [a("10.0.0.1:8080"), a("10.0.0.2:8080")];
        let m2 = [a("10.0.0.2:8080"), a("10.0.0.3:8080")];
        let (list, skipped) = merge(&configured, [(&e1, &m1[..]), (&e2, &m2[..])]);
        let names: Vec<_> = list.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, vec!["static/10.0.0.1", "p/10.0.0.2", "q/10.0.0.3"]);
        assert_eq!(skipped, vec!["p/10.0.0.1", "q/10.0.0.2"]);
    }
}
