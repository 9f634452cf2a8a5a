//! The one owner of the fleet's backend list when some entries are
//! discovered: the configured backends (replaced by a reload) and each
//! entry's current members (replaced by the discovery loop). Either change
//! goes through [`Roster`], under one lock, which hands the merged list to
//! [`Fleet::reconfigure`]; so a SIGHUP never drops the members DNS found,
//! and a lookup never brings back a backend the reload removed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::members::{self, Outcome};
use super::metrics::DiscoveryMetrics;
use super::DnsEntry;
use crate::backend::fleet::{Fleet, FleetChanges};
use crate::backend::spec::BackendConfig;
use crate::telemetry::Metrics;

/// One discovered entry and what its lookups found.
#[derive(Debug, Clone)]
pub struct EntryState {
    pub entry: DnsEntry,
    /// The current members, sorted.
    pub members: Vec<SocketAddr>,
    /// Lookups so far.
    pub resolutions: u64,
    /// The last lookup's outcome and when it ended.
    pub last: Option<(Outcome, Instant)>,
    /// Why the last lookup failed; `None` after one that did not.
    pub last_error: Option<String>,
}

impl EntryState {
    fn new(entry: DnsEntry) -> EntryState {
        EntryState {
            entry,
            members: Vec::new(),
            resolutions: 0,
            last: None,
            last_error: None,
        }
    }
}

struct Inner {
    configured: Vec<BackendConfig>,
    entries: Vec<EntryState>,
}

pub struct Roster {
    fleet: Arc<Fleet>,
    metrics: DiscoveryMetrics,
    inner: Mutex<Inner>,
    /// Notified when a reload changes the entries (the loop re-plans).
    pub changed: Notify,
}

impl Roster {
    /// The roster of a fleet built from `configured`; `entries` start with
    /// no members.
    pub fn new(
        fleet: Arc<Fleet>,
        metrics: &Metrics,
        configured: &[BackendConfig],
        entries: &[DnsEntry],
    ) -> Roster {
        let m = DiscoveryMetrics::new(metrics);
        for e in entries {
            m.entry(&e.name);
        }
        Roster {
            fleet,
            metrics: m,
            inner: Mutex::new(Inner {
                configured: configured.to_vec(),
                entries: entries.iter().cloned().map(EntryState::new).collect(),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reload: new configured backends and entries. An entry with the
    /// same name, host and port keeps its members (with the new weight,
    /// cap, drain flag and models); a new one starts empty until looked up.
    pub fn configure(&self, configured: &[BackendConfig], entries: &[DnsEntry]) -> FleetChanges {
        let mut inner = self.lock();
        let mut next = Vec::with_capacity(entries.len());
        for e in entries {
            let same = |s: &&EntryState| {
                s.entry.name == e.name && s.entry.host == e.host && s.entry.port == e.port
            };
            match inner.entries.iter().find(same) {
                Some(s) => next.push(EntryState {
                    entry: e.clone(),
                    ..s.clone()
                }),
                None => {
                    self.metrics.entry(&e.name);
                    next.push(EntryState::new(e.clone()));
                }
            }
        }
        for old in &inner.entries {
            if !entries.iter().any(|e| e.name == old.entry.name) {
                self.metrics.forget(&old.entry.name);
            }
        }
        inner.configured = configured.to_vec();
        inner.entries = next;
        let changes = self.apply(&inner, false);
        drop(inner);
        self.changed.notify_one();
        changes
    }

    /// `entry`'s lookup answered `answer` at `now` (see
    /// [`members::next`]); the fleet changes when the members do. An entry
    /// a reload removed or changed meanwhile is left alone.
    pub fn resolved(
        &self,
        entry: &DnsEntry,
        answer: &Result<Vec<SocketAddr>, String>,
        now: Instant,
    ) -> Option<FleetChanges> {
        let mut inner = self.lock();
        let state = inner.entries.iter_mut().find(|s| {
            s.entry.name == entry.name && s.entry.host == entry.host && s.entry.port == entry.port
        })?;
        let next = members::next(&state.members, answer);
        let name = entry.name.as_str();
        if next.dropped > 0 {
            tracing::warn!(
                backend = name,
                host = %entry.host,
                dropped = next.dropped,
                max = members::MAX_MEMBERS,
                "discovered entry answers more addresses than the member cap; the lowest are kept"
            );
        }
        match answer {
            Err(e) if state.last_error.is_none() => tracing::warn!(
                backend = name,
                host = %entry.host,
                error = %e,
                members = state.members.len(),
                "DNS lookup failed; the members stay as they were"
            ),
            Ok(_) if state.last_error.is_some() => {
                tracing::info!(backend = name, host = %entry.host, "DNS lookups answer again")
            }
            _ => {}
        }
        let (joined, left) = members::diff(&state.members, &next.members);
        for a in &joined {
            tracing::info!(
                backend = name,
                member = members::member_name(name, *a),
                addr = %a,
                "discovered member joined"
            );
        }
        for a in &left {
            tracing::info!(
                backend = name,
                member = members::member_name(name, *a),
                addr = %a,
                "discovered member left; draining (in-flight requests finish)"
            );
        }
        state.resolutions += 1;
        state.last = Some((next.outcome, now));
        state.last_error = answer.as_ref().err().cloned();
        state.members = next.members;
        self.metrics
            .resolved(name, next.outcome, state.members.len());
        if joined.is_empty() && left.is_empty() {
            return None;
        }
        Some(self.apply(&inner, true))
    }

    /// The entries to look up.
    pub fn entries(&self) -> Vec<DnsEntry> {
        self.lock()
            .entries
            .iter()
            .map(|s| s.entry.clone())
            .collect()
    }

    /// Every entry's state (`/status`).
    pub fn status(&self) -> Vec<EntryState> {
        self.lock().entries.clone()
    }

    /// Hands the merged list to the fleet (the caller holds the lock).
    /// A reload's list sets every backend's drain flag as the file says;
    /// a lookup's (`keep_drains`) leaves each present backend's flag as it
    /// is, so a backend an operator drained stays drained when members
    /// come and go. (An operator action landing between that read and the
    /// store is lost; the window is the length of one list swap.)
    fn apply(&self, inner: &Inner, keep_drains: bool) -> FleetChanges {
        let (mut list, skipped) = members::merge(
            &inner.configured,
            inner
                .entries
                .iter()
                .map(|s| (&s.entry, s.members.as_slice())),
        );
        for name in skipped {
            tracing::warn!(
                member = name,
                "discovered member left out: another backend already has its address"
            );
        }
        if keep_drains {
            let current = self.fleet.backends();
            for c in &mut list {
                if let Some(b) = current
                    .iter()
                    .find(|b| b.name() == c.name && b.config.addr == c.addr)
                {
                    c.drain = b.is_draining();
                }
            }
        }
        self.fleet.reconfigure(&list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::eligibility::Rules;
    use crate::backend::spec::PolicyParams;
    use std::time::Duration;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn entry(host: &str) -> DnsEntry {
        DnsEntry {
            name: "pool".into(),
            url: format!("http://{host}:8080"),
            host: host.into(),
            port: 8080,
            resolve_every: Duration::from_secs(5),
            weight: 1,
            max_in_flight: None,
            drain: false,
            models: Vec::new(),
        }
    }

    fn fixed() -> BackendConfig {
        BackendConfig {
            name: "fixed".into(),
            ..members::member_config(&entry("x"), a("10.9.9.9:1"))
        }
    }

    fn roster(e: &DnsEntry) -> Roster {
        let rules = Rules {
            max_deferred: 0,
            stale_after: Duration::from_millis(1500),
            slow_scrape: Duration::from_secs(1),
            unloaded_model: Default::default(),
        };
        let metrics = Arc::new(Metrics::new());
        let fleet = Arc::new(Fleet::new(
            rules,
            PolicyParams::default(),
            &[fixed()],
            Arc::clone(&metrics),
        ));
        Roster::new(fleet, &metrics, &[fixed()], std::slice::from_ref(e))
    }

    fn names(r: &Roster) -> Vec<String> {
        let mut n: Vec<_> = r
            .fleet
            .backends()
            .iter()
            .map(|b| b.name().to_string())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn lookups_and_reloads_do_not_undo_each_other() {
        let e = entry("llama.fleet.test");
        let r = roster(&e);
        let now = Instant::now();
        let c = r
            .resolved(&e, &Ok(vec![a("10.0.0.1:8080"), a("10.0.0.2:8080")]), now)
            .unwrap();
        assert_eq!(c.added, vec!["pool/10.0.0.1", "pool/10.0.0.2"]);
        // A reload without the fixed backend keeps the members...
        r.configure(&[], std::slice::from_ref(&e));
        assert_eq!(names(&r), vec!["pool/10.0.0.1", "pool/10.0.0.2"]);
        // ...and a failed lookup keeps them too; no change, no reconfigure.
        assert!(r.resolved(&e, &Err("SERVFAIL".into()), now).is_none());
        assert_eq!(r.status()[0].last_error.as_deref(), Some("SERVFAIL"));
        assert_eq!(names(&r).len(), 2);
        // NXDOMAIN removes them.
        let c = r.resolved(&e, &Ok(vec![]), now).unwrap();
        assert_eq!(c.removed.len(), 2);
        assert!(names(&r).is_empty());
        assert_eq!(r.status()[0].resolutions, 3);
    }

    #[test]
    fn an_operator_drain_outlasts_members_coming_and_going() {
        let e = entry("llama.fleet.test");
        let r = roster(&e);
        let now = Instant::now();
        r.fleet.by_name("fixed").unwrap().set_draining(true);
        r.resolved(&e, &Ok(vec![a("10.0.0.1:8080")]), now).unwrap();
        r.fleet.by_name("pool/10.0.0.1").unwrap().set_draining(true);
        r.resolved(&e, &Ok(vec![a("10.0.0.1:8080"), a("10.0.0.2:8080")]), now)
            .unwrap();
        let draining = |n: &str| r.fleet.by_name(n).unwrap().is_draining();
        assert!(draining("fixed") && draining("pool/10.0.0.1"));
        assert!(!draining("pool/10.0.0.2"));
        // A reload says what the file says.
        r.configure(&[fixed()], std::slice::from_ref(&e));
        assert!(!draining("fixed") && !draining("pool/10.0.0.1"));
    }

    #[test]
    fn a_changed_host_starts_empty_and_ignores_the_old_lookup() {
        let e = entry("old.fleet.test");
        let r = roster(&e);
        let now = Instant::now();
        r.resolved(&e, &Ok(vec![a("10.0.0.1:8080")]), now);
        let moved = entry("new.fleet.test");
        r.configure(&[fixed()], std::slice::from_ref(&moved));
        assert_eq!(names(&r), vec!["fixed"]);
        // A lookup of the old name, in flight during the reload.
        assert!(r.resolved(&e, &Ok(vec![a("10.0.0.7:8080")]), now).is_none());
        assert_eq!(names(&r), vec!["fixed"]);
    }
}
