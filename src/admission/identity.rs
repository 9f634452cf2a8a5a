//! Who sent a request, as far as admission cares: the API key's name (safe
//! to log), the key its rate limit and token budget count against, its
//! fairness tenant in the queue, and the highest priority it may ask for.
//!
//! ## Bounded identities
//!
//! Only a configured key names a client. A bearer token that matches no key
//! does not mint an identity of its own: without `auth.require_key` it is
//! ignored and the client address is the identity (`anonymous`, rate key
//! `ip:<address>`). So a client rotating random tokens neither grows the
//! gateway's state (rate-limit keys, budget buckets, metric label values)
//! nor escapes its address's rate limit. With `require_key` it gets 401.
//!
//! ## Entitlements
//!
//! `x-sluice-priority` is honoured up to the key's `max_priority`;
//! anonymous clients get `normal` at most ([`Identity::entitled`]).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use super::keys::KeyRing;
use super::queue::Priority;
use crate::reject::Reject;

/// The name of every client without a configured key.
pub const ANONYMOUS: &str = "anonymous";
/// The highest priority a client without a key may ask for.
pub const ANONYMOUS_MAX_PRIORITY: Priority = Priority::Normal;

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The API key's configured name, or `anonymous`. Safe to log and to
    /// use as a metric label: only configured names and `anonymous` occur.
    pub name: Arc<str>,
    /// The rate-limit key: the key name, or `ip:<address>` without one.
    pub rate_key: Arc<str>,
    /// Fairness tenant (a hash of `rate_key`).
    pub tenant: u64,
    /// The highest `x-sluice-priority` honoured for this sender.
    pub max_priority: Priority,
}

impl Identity {
    /// The priority this sender gets when it asks for `asked`, and whether
    /// it was lowered to its entitlement.
    pub fn entitled(&self, asked: Priority) -> (Priority, bool) {
        if asked > self.max_priority {
            (self.max_priority, true)
        } else {
            (asked, false)
        }
    }
}

/// The configured API keys (as digests) and whether one is required.
#[derive(Debug)]
pub struct Keys {
    ring: KeyRing,
    /// Refuse requests without a known key (401).
    require_key: bool,
    anonymous: Arc<str>,
}

fn hash(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

// === impl Keys ===

impl Keys {
    pub fn new(ring: KeyRing, require_key: bool) -> Keys {
        Keys {
            ring,
            require_key,
            anonymous: Arc::from(ANONYMOUS),
        }
    }

    /// The configured key names (the only key label values besides
    /// `anonymous`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.ring.names()
    }

    /// Names the sender from its bearer token and address.
    pub fn identify(&self, bearer: Option<&str>, ip: Option<IpAddr>) -> Result<Identity, Reject> {
        let known = bearer.and_then(|t| self.ring.find(t));
        let (name, rate_key, max_priority): (Arc<str>, Arc<str>, Priority) = match known {
            Some(k) => (Arc::clone(&k.name), Arc::clone(&k.name), k.max_priority),
            None if self.require_key => return Err(Reject::Unauthorized),
            // An unknown token is no identity: the address is.
            None => (
                Arc::clone(&self.anonymous),
                Arc::from(ip.map_or_else(|| "ip:unknown".to_string(), |ip| format!("ip:{ip}"))),
                ANONYMOUS_MAX_PRIORITY,
            ),
        };
        let tenant = hash(&rate_key);
        Ok(Identity {
            name,
            rate_key,
            tenant,
            max_priority,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::keys::KeyEntry;

    fn keys(require_key: bool) -> Keys {
        let ring = KeyRing::new(vec![
            KeyEntry::from_secret("team-a", "sk-secret", Priority::Normal),
            KeyEntry::from_secret("ops", "sk-ops-secret", Priority::Critical),
        ]);
        Keys::new(ring, require_key)
    }

    #[test]
    fn a_known_key_is_named_by_its_configured_name() {
        let id = keys(false).identify(Some("sk-secret"), None).unwrap();
        assert_eq!(&*id.name, "team-a");
        assert_eq!(&*id.rate_key, "team-a");
        assert_eq!(id.tenant, hash("team-a"));
        assert_eq!(id.max_priority, Priority::Normal);
        let ops = keys(false).identify(Some("sk-ops-secret"), None).unwrap();
        assert_eq!(ops.max_priority, Priority::Critical);
    }

    #[test]
    fn an_unknown_token_is_no_identity_the_address_is() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let k = keys(false);
        let plain = k.identify(None, Some(ip)).unwrap();
        for t in ["sk-guess", "sk-guess-2", "", "sk-secreT"] {
            let id = k.identify(Some(t), Some(ip)).unwrap();
            assert_eq!(id, plain, "token {t:?} minted an identity");
        }
        assert_eq!(&*plain.name, ANONYMOUS);
        assert_eq!(&*plain.rate_key, "ip:10.0.0.7");
    }

    #[test]
    fn without_a_key_the_address_counts() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let id = keys(false).identify(None, Some(ip)).unwrap();
        assert_eq!(&*id.name, "anonymous");
        assert_eq!(&*id.rate_key, "ip:10.0.0.7");
        assert_eq!(id.max_priority, Priority::Normal);
        let none = keys(false).identify(None, None).unwrap();
        assert_eq!(&*none.rate_key, "ip:unknown");
        assert_ne!(id.tenant, none.tenant);
    }

    #[test]
    fn required_keys_refuse_the_rest() {
        let k = keys(true);
        assert!(k.identify(Some("sk-secret"), None).is_ok());
        assert_eq!(
            k.identify(Some("sk-guess"), None),
            Err(Reject::Unauthorized)
        );
        assert_eq!(k.identify(None, None), Err(Reject::Unauthorized));
    }

    #[test]
    fn priority_is_honoured_up_to_the_entitlement() {
        let k = keys(false);
        let anon = k.identify(None, None).unwrap();
        assert_eq!(
            anon.entitled(Priority::Critical),
            (Priority::Normal, true),
            "anonymous critical is lowered, not refused"
        );
        assert_eq!(anon.entitled(Priority::Normal), (Priority::Normal, false));
        assert_eq!(
            anon.entitled(Priority::Sheddable),
            (Priority::Sheddable, false)
        );
        let ops = k.identify(Some("sk-ops-secret"), None).unwrap();
        assert_eq!(
            ops.entitled(Priority::Critical),
            (Priority::Critical, false)
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let k = keys(true);
        let d = format!("{k:?}");
        assert!(!d.contains("sk-secret") && !d.contains("sk-ops"), "{d}");
    }
}
