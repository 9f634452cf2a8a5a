//! Open client connections, counted in total and per client address, and the
//! header clock of each one: pure bookkeeping, time passed in.
//!
//! ## Why a total header deadline
//!
//! pingora's HTTP/1 reader times out each *read*, so a client that sends one
//! header byte every few seconds is never cut off, and a kept-alive
//! connection waits for its next request as long as the keep-alive timeout
//! allows. Here every connection has one clock: from accept (or from the end
//! of its previous response) until its next request header is complete, it
//! gets `header_timeout` (plus `keepalive_timeout` after a response, the idle
//! wait a well-behaved client may take before its next request). Past that
//! the connection is closed, however often bytes trickle in.
//!
//! ## Why caps per address
//!
//! Each open connection costs a task and buffers; without a cap a single
//! client can open them until the process runs out of file descriptors.
//! The per-address map holds only addresses with an open connection, so its
//! size is bounded by `max_total`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// Limits on client connections (validated by the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most open client connections in total.
    pub max_total: usize,
    /// Most open connections from one client address.
    pub max_per_client: usize,
    /// Longest a client may take to send a complete request header.
    pub header_timeout: Duration,
    /// Longest a kept-alive connection may sit idle between requests.
    pub keepalive_timeout: Duration,
}

impl Default for ConnLimits {
    /// Defaults a public edge can use: a few thousand connections (each
    /// holds a request or waits for one; the fleet serves tens at once),
    /// 256 per address (a busy NAT, or a client pool under load, not one
    /// client's thousands),
    /// 10 s for a header (HAProxy's recommended `timeout http-request`) and
    /// 5 s idle between requests (llama-server's own keep-alive).
    fn default() -> Self {
        ConnLimits {
            max_total: 4096,
            max_per_client: 256,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a connection was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    /// `max_total` connections are open.
    Total,
    /// This address holds `max_per_client` connections.
    PerClient,
}

impl ConnRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnRefusal::Total => "too_many_connections",
            ConnRefusal::PerClient => "too_many_client_connections",
        }
    }
}

/// Counts of open connections.
#[derive(Debug, Default)]
pub struct ConnTable {
    total: usize,
    per_client: HashMap<IpAddr, u32>,
}

impl ConnTable {
    /// Counts a new connection from `ip`, or says why it may not open.
    pub fn open(&mut self, ip: Option<IpAddr>, limits: &ConnLimits) -> Result<(), ConnRefusal> {
        if self.total >= limits.max_total {
            return Err(ConnRefusal::Total);
        }
        if let Some(ip) = ip {
            let n = self.per_client.entry(ip).or_insert(0);
            if *n as usize >= limits.max_per_client {
                return Err(ConnRefusal::PerClient);
            }
            *n += 1;
        }
        self.total += 1;
        Ok(())
    }

    /// A connection counted by [`ConnTable::open`] closed.
    pub fn close(&mut self, ip: Option<IpAddr>) {
        self.total = self.total.saturating_sub(1);
        if let Some(ip) = ip {
            if let Some(n) = self.per_client.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_client.remove(&ip);
                }
            }
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Addresses with at least one open connection.
    pub fn clients(&self) -> usize {
        self.per_client.len()
    }
}

/// Where one connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnPhase {
    /// Waiting for a complete request header since `since`; `reused` once a
    /// response was sent on it (the idle allowance applies).
    AwaitingHeader { since: Instant, reused: bool },
    /// A request is being served: its own deadlines apply.
    Serving,
}

impl ConnPhase {
    /// When the connection must be closed if it is still in this phase.
    pub fn deadline(self, limits: &ConnLimits) -> Option<Instant> {
        match self {
            ConnPhase::AwaitingHeader { since, reused } => {
                let idle = if reused {
                    limits.keepalive_timeout
                } else {
                    Duration::ZERO
                };
                Some(since + idle + limits.header_timeout)
            }
            ConnPhase::Serving => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            max_total: 3,
            max_per_client: 2,
            ..ConnLimits::default()
        }
    }

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, n]))
    }

    #[test]
    fn per_client_cap_then_total_cap() {
        let l = limits();
        let mut t = ConnTable::default();
        assert_eq!(t.open(ip(1), &l), Ok(()));
        assert_eq!(t.open(ip(1), &l), Ok(()));
        assert_eq!(t.open(ip(1), &l), Err(ConnRefusal::PerClient));
        assert_eq!(t.open(ip(2), &l), Ok(()));
        assert_eq!(t.open(ip(3), &l), Err(ConnRefusal::Total));
        assert_eq!((t.total(), t.clients()), (3, 2));
        t.close(ip(1));
        assert_eq!(t.open(ip(3), &l), Ok(()));
    }

    #[test]
    fn closed_addresses_are_forgotten() {
        let l = ConnLimits::default();
        let mut t = ConnTable::default();
        for n in 0..200u8 {
            t.open(ip(n), &l).unwrap();
        }
        for n in 0..200u8 {
            t.close(ip(n));
        }
        assert_eq!((t.total(), t.clients()), (0, 0));
    }

    #[test]
    fn header_clock_allows_idle_time_only_after_a_response() {
        let l = ConnLimits::default();
        let t0 = Instant::now();
        let fresh = ConnPhase::AwaitingHeader {
            since: t0,
            reused: false,
        };
        let reused = ConnPhase::AwaitingHeader {
            since: t0,
            reused: true,
        };
        assert_eq!(fresh.deadline(&l), Some(t0 + l.header_timeout));
        assert_eq!(
            reused.deadline(&l),
            Some(t0 + l.keepalive_timeout + l.header_timeout)
        );
        assert_eq!(ConnPhase::Serving.deadline(&l), None);
    }
}
