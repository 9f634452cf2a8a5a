//! DNS-discovered fleets: a `[[backends]]` entry with `discover = "dns"`
//! names a DNS name whose A/AAAA records are asked again every
//! `resolve_every`; each address is a member backend `entry/<ip>` with the
//! entry's weight, cap and models, so a fleet grows and shrinks without
//! editing the file. A member that leaves is drained, not cut: the fleet
//! gives it no new requests and lets those in flight finish
//! ([`super::fleet::Fleet::reconfigure`]).
//!
//! - [`members`]: the pure rules: an answer → the next members (kept on a
//!   failed lookup, removed on NXDOMAIN or an empty answer, capped at
//!   [`members::MAX_MEMBERS`]), member names, joins and leaves, the merge
//!   with the configured backends.
//! - [`dns`]: pingora's `ServiceDiscovery` over a `hickory-resolver`.
//! - [`roster`]: the one owner of the fleet's list of backends: configured
//!   ones (replaced by a reload) plus every entry's members (replaced by
//!   the discovery loop); each change goes through it to the fleet.
//! - [`task`]: the loop asking each entry's name when it is due.
//! - [`metrics`]: the `sluice_discovery_*` series.

use std::net::SocketAddr;
use std::time::Duration;

pub mod dns;
pub mod members;
pub mod metrics;
pub mod roster;
pub mod task;

pub use roster::Roster;

/// How often a discovered entry's name is asked again unless configured:
/// CoreDNS's Kubernetes plugin answers with a 5 s TTL, so a shorter period
/// would mostly read its cache, and a longer one leaves a new replica idle
/// (or a gone one asked) for longer than a scrape round or two.
pub const DEFAULT_RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// One `[[backends]]` entry with `discover = "dns"`, as validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsEntry {
    /// The entry's name; its members are `name/<ip>`.
    pub name: String,
    /// The URL as written (`http://llama.fleet.internal:8080`).
    pub url: String,
    /// The DNS name whose A/AAAA records are the members.
    pub host: String,
    /// Every member's port (the URL's).
    pub port: u16,
    pub resolve_every: Duration,
    pub weight: u32,
    pub max_in_flight: Option<u32>,
    pub drain: bool,
    pub models: Vec<String>,
}

/// `[discovery]` and every discovered entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiscoveryParams {
    /// The nameservers asked (`ip:port`); empty: the system's
    /// (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    pub entries: Vec<DnsEntry>,
}
