//! The discovery loop: each entry's name asked when due (every
//! `resolve_every`, and at once for an entry a reload adds), the answers
//! handed to the [`Roster`]. Thin glue: the rules are in
//! [`super::members`], the list in the roster.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::Instant;

use super::dns::{resolver, DnsDiscovery};
use super::{DnsEntry, Roster};

pub struct DiscoveryLoop {
    pub roster: Arc<Roster>,
    /// `[discovery] nameservers`; empty: the system's.
    pub nameservers: Vec<SocketAddr>,
}

/// Which lookup an entry is: a reload changing the name or port makes it a
/// new one, asked at once.
type Key = (String, String, u16);

fn key(e: &DnsEntry) -> Key {
    (e.name.clone(), e.host.clone(), e.port)
}

/// Looks up `entries` together and hands each answer to the roster.
pub async fn round(roster: &Roster, resolver: &TokioResolver, entries: &[DnsEntry]) {
    let lookups = entries.iter().map(|e| async move {
        let answer = DnsDiscovery::new(resolver.clone(), e).addresses().await;
        roster.resolved(e, &answer, Instant::now());
    });
    futures::future::join_all(lookups).await;
}

/// Looks up `entries` once, on a thread and runtime of their own (so it
/// works inside or outside a runtime and leaves no thread behind for
/// `--daemon`'s fork), bounded by the resolver's timeouts: one answer per
/// entry, or why there is none.
pub fn lookup_once(
    nameservers: &[SocketAddr],
    entries: &[DnsEntry],
) -> Vec<Result<Vec<SocketAddr>, String>> {
    let nameservers = nameservers.to_vec();
    let entries = entries.to_vec();
    let n = entries.len();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let r = resolver(&nameservers)?;
            let all = entries
                .iter()
                .map(|e| async { DnsDiscovery::new(r.clone(), e).addresses().await });
            tokio::time::timeout(LOOKUP_BOUND, futures::future::join_all(all))
                .await
                .map_err(|_| format!("no answer within {LOOKUP_BOUND:?}"))
        })
    });
    match thread.join() {
        Ok(Ok(answers)) => answers,
        Ok(Err(e)) => vec![Err(e); n],
        Err(_) => vec![Err("the lookup thread panicked".to_string()); n],
    }
}

/// A one-off lookup's bound: the resolver's own timeouts end it first.
const LOOKUP_BOUND: Duration = Duration::from_secs(5);

/// One round before the listeners open, so the gateway starts with the
/// members DNS knows (and the scrape warm-up sees them). A name that does
/// not resolve yet leaves its entry empty; the loop asks again.
pub fn first_round(roster: &Arc<Roster>, nameservers: &[SocketAddr]) {
    let entries = roster.entries();
    if entries.is_empty() {
        return;
    }
    let answers = lookup_once(nameservers, &entries);
    for (e, answer) in entries.iter().zip(&answers) {
        roster.resolved(e, answer, Instant::now());
    }
}

/// `sluice check`: one line per discovered entry whose name gives no
/// member now. A warning, not an error: the fleet may come later, and
/// `run` starts with no members from it and keeps asking.
pub fn check(nameservers: &[SocketAddr], entries: &[DnsEntry]) -> Vec<String> {
    if entries.is_empty() {
        return Vec::new();
    }
    let answers = lookup_once(nameservers, entries);
    entries
        .iter()
        .zip(answers)
        .filter_map(|(e, a)| {
            let why = match a {
                Ok(addrs) if !addrs.is_empty() => return None,
                Ok(_) => "no such name, or no A/AAAA record".to_string(),
                Err(e) => e,
            };
            Some(format!(
                "discovered backend {:?}: {} gives no member now ({why}); the gateway would \
                 start without members from it and ask again every {}",
                e.name,
                e.host,
                humantime::format_duration(e.resolve_every)
            ))
        })
        .collect()
}

#[async_trait]
impl BackgroundService for DiscoveryLoop {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Made when some entry needs it: a gateway without discovered
        // entries reads no resolver configuration.
        let mut resolver_ = None;
        let mut due: HashMap<Key, Instant> = HashMap::new();
        loop {
            let entries = self.roster.entries();
            due.retain(|k, _| entries.iter().any(|e| key(e) == *k));
            let now = Instant::now();
            let ready: Vec<DnsEntry> = entries
                .iter()
                .filter(|e| due.get(&key(e)).is_none_or(|d| *d <= now))
                .cloned()
                .collect();
            if !ready.is_empty() && resolver_.is_none() {
                match resolver(&self.nameservers) {
                    Ok(r) => resolver_ = Some(r),
                    Err(e) => {
                        tracing::error!(error = %e, "DNS discovery is off: discovered entries keep the members they have");
                        return;
                    }
                }
            }
            if let Some(r) = &resolver_ {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = round(&self.roster, r, &ready) => {}
                }
            }
            let ended = Instant::now();
            for e in &ready {
                due.insert(key(e), ended + e.resolve_every);
            }
            let next = due.values().min().copied();
            let wake = next.unwrap_or(ended + Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.roster.changed.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}
