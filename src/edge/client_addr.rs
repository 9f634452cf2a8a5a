//! Who the client is, by address: the TCP peer, unless that peer is a
//! trusted proxy, in which case the right-most `X-Forwarded-For` entry that is
//! not itself a trusted proxy.
//!
//! Any client can write `X-Forwarded-For`; believing it from anyone would let
//! each request pick its own rate-limit identity. Only the hops listed in
//! `server.trusted_proxies` may speak for the client, and the list is walked
//! from the right (the entry appended by the nearest proxy) so a client
//! cannot prepend a forged address.

use std::net::IpAddr;

use ipnet::IpNet;

/// Address ranges whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// From entries such as `10.0.0.0/8`, `192.168.1.7` or `::1`.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for raw in entries {
            let raw = raw.trim();
            let net = match raw.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => match raw.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "{raw:?} is not an address or a CIDR range (e.g. \"10.0.0.0/8\")"
                        ))
                    }
                },
            };
            nets.push(net);
        }
        Ok(TrustedProxies { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for a request from `peer` carrying `forwarded`
    /// (the `X-Forwarded-For` values, in header order).
    pub fn client(&self, peer: IpAddr, forwarded: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let Some(list) = forwarded else { return peer };
        let mut client = peer;
        for hop in list.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.contains(client) {
                        return client;
                    }
                }
                // Garbage in the chain: stop at the last hop we could read.
                Err(_) => return client,
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_speak_only_for_themselves() {
        let t = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        assert_eq!(
            t.client(ip("203.0.113.9"), Some("1.2.3.4")),
            ip("203.0.113.9")
        );
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("127.0.0.1"), Some("1.2.3.4")),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let t = TrustedProxies::parse(["10.0.0.0/8", "192.168.1.7"]).unwrap();
        // The client forged "6.6.6.6"; the nearest proxy appended the real one.
        assert_eq!(
            t.client(ip("10.1.1.1"), Some("6.6.6.6, 198.51.100.4, 192.168.1.7")),
            ip("198.51.100.4")
        );
        assert_eq!(t.client(ip("10.1.1.1"), None), ip("10.1.1.1"));
        assert_eq!(t.client(ip("10.1.1.1"), Some("10.2.2.2")), ip("10.2.2.2"));
        assert_eq!(
            t.client(ip("10.1.1.1"), Some("junk, 10.3.3.3")),
            ip("10.3.3.3")
        );
    }

    #[test]
    fn mapped_addresses_match_v4_ranges() {
        let t = TrustedProxies::parse(["127.0.0.0/8"]).unwrap();
        assert!(t.contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn bad_entries_say_why() {
        let e = TrustedProxies::parse(["10.0.0.0/33"]).unwrap_err();
        assert!(e.contains("10.0.0.0/33"), "{e}");
    }

    proptest! {
        #[test]
        fn any_header_gives_an_address_never_a_panic(h in ".{0,200}") {
            let t = TrustedProxies::parse(["0.0.0.0/0", "::/0"]).unwrap();
            let _ = t.client(ip("127.0.0.1"), Some(&h));
        }
    }
}
