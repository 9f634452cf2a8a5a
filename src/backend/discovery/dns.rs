//! One discovered entry's lookup, as pingora's
//! [`ServiceDiscovery`]: the A and AAAA records of its name, each address at
//! the entry's port and weight. A name that does not exist (NXDOMAIN) or
//! has no address answers an empty set; any other failure (SERVFAIL, a
//! timeout, no nameserver reachable) is an error, which keeps the members
//! ([`super::members::next`]).
//!
//! The resolver is `hickory-resolver`: asynchronous (no blocking
//! `getaddrinfo` thread per lookup), asks the configured nameservers at
//! their ports, and caches each answer for its TTL, so a name whose TTL is
//! longer than `resolve_every` changes members only as fast as its owner
//! lets resolvers know.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::{Error, ErrorType};

use super::DnsEntry;

/// How long one nameserver gets to answer, and how many tries: a lookup
/// ends within a few seconds, before the next round of a 5 s period.
const TIMEOUT: Duration = Duration::from_secs(1);
const ATTEMPTS: usize = 2;

/// A resolver asking `nameservers` (UDP, then TCP for a truncated answer),
/// or, with none, the system's (`/etc/resolv.conf`, and `/etc/hosts`).
pub fn resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?
    } else {
        let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
        for ns in nameservers {
            let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
            udp.port = ns.port();
            tcp.port = ns.port();
            config.add_name_server(NameServerConfig::new(ns.ip(), true, vec![udp, tcp]));
        }
        let mut b = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        // Only the configured nameservers answer.
        b.options_mut().use_hosts_file = ResolveHosts::Never;
        b
    };
    let opts = builder.options_mut();
    opts.timeout = TIMEOUT;
    opts.attempts = ATTEMPTS;
    // A dual-stack fleet has members of both families.
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder
        .build()
        .map_err(|e| format!("cannot build the DNS resolver: {e}"))
}

/// An entry's name, looked up with a shared resolver.
pub struct DnsDiscovery {
    pub resolver: TokioResolver,
    pub host: String,
    pub port: u16,
    pub weight: usize,
}

impl DnsDiscovery {
    pub fn new(resolver: TokioResolver, entry: &DnsEntry) -> DnsDiscovery {
        DnsDiscovery {
            resolver,
            host: entry.host.clone(),
            port: entry.port,
            weight: entry.weight as usize,
        }
    }

    /// The addresses, or why the lookup failed: what
    /// [`super::members::next`] takes.
    pub async fn addresses(&self) -> Result<Vec<SocketAddr>, String> {
        match self.discover().await {
            Ok((set, _)) => Ok(set
                .iter()
                .filter_map(|b| b.addr.as_inet().copied())
                .collect()),
            Err(e) => Err(e
                .context
                .as_ref()
                .map_or_else(|| e.to_string(), |c| c.to_string())),
        }
    }
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut set = BTreeSet::new();
        match self.resolver.lookup_ip(self.host.as_str()).await {
            Ok(answer) => {
                for ip in answer.iter() {
                    set.insert(Backend {
                        addr: PeerAddr::Inet(SocketAddr::new(ip, self.port)),
                        weight: self.weight,
                        ext: Default::default(),
                    });
                }
            }
            // NXDOMAIN, or the name has no A/AAAA record: no members.
            Err(e) if e.is_no_records_found() => {}
            Err(e) => {
                return Err(Error::explain(
                    ErrorType::Custom("dns lookup failed"),
                    format!("looking up {}: {e}", self.host),
                ))
            }
        }
        // Every member is enabled; health is the scrape loop's business.
        Ok((set, HashMap::new()))
    }
}
