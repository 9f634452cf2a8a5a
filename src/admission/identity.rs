//! Who sent a request, as far as admission cares: the API key's name (safe
//! to log), the key its rate limit and token budget count against, and its
//! fairness tenant in the queue.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use crate::reject::Reject;

/// A named API key. The key itself never appears in logs or metrics.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub name: String,
    pub key: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}, <redacted>)", self.name)
    }
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The API key's configured name, `key-<hash>` for an unknown bearer
    /// token, or `anonymous`. Safe to log; never the key itself.
    pub name: Arc<str>,
    /// The rate-limit key: the key name, or `ip:<address>` without one.
    pub rate_key: Arc<str>,
    /// Fairness tenant (a hash of `rate_key`).
    pub tenant: u64,
}

/// The configured API keys.
pub struct Keys {
    keys: Vec<ApiKey>,
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
    pub fn new(keys: Vec<ApiKey>, require_key: bool) -> Keys {
        Keys {
            keys,
            require_key,
            anonymous: Arc::from("anonymous"),
        }
    }

    /// Names the sender from its bearer token and address.
    pub fn identify(&self, bearer: Option<&str>, ip: Option<IpAddr>) -> Result<Identity, Reject> {
        let known = bearer.and_then(|t| self.keys.iter().find(|k| k.key == t));
        let (name, rate_key): (Arc<str>, Arc<str>) = match (known, bearer) {
            (Some(k), _) => {
                let n: Arc<str> = Arc::from(k.name.as_str());
                (n.clone(), n)
            }
            (None, _) if self.require_key => return Err(Reject::Unauthorized),
            (None, Some(t)) => {
                let n: Arc<str> = Arc::from(format!("key-{:08x}", hash(t) as u32));
                (n.clone(), n)
            }
            (None, None) => (
                Arc::clone(&self.anonymous),
                Arc::from(ip.map_or_else(|| "ip:unknown".to_string(), |ip| format!("ip:{ip}"))),
            ),
        };
        let tenant = hash(&rate_key);
        Ok(Identity {
            name,
            rate_key,
            tenant,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(require_key: bool) -> Keys {
        let k = ApiKey {
            name: "team-a".into(),
            key: "sk-secret".into(),
        };
        Keys::new(vec![k], require_key)
    }

    #[test]
    fn a_known_key_is_named_by_its_configured_name() {
        let id = keys(false).identify(Some("sk-secret"), None).unwrap();
        assert_eq!(&*id.name, "team-a");
        assert_eq!(&*id.rate_key, "team-a");
        assert_eq!(id.tenant, hash("team-a"));
    }

    #[test]
    fn an_unknown_key_is_hashed_never_shown() {
        let id = keys(false).identify(Some("sk-guess"), None).unwrap();
        assert!(
            id.name.starts_with("key-") && id.name.len() == 12,
            "{}",
            id.name
        );
        assert!(!id.name.contains("guess"));
        assert_eq!(id.name, id.rate_key);
        assert_eq!(keys(false).identify(Some("sk-guess"), None).unwrap(), id);
    }

    #[test]
    fn without_a_key_the_address_counts() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let id = keys(false).identify(None, Some(ip)).unwrap();
        assert_eq!(&*id.name, "anonymous");
        assert_eq!(&*id.rate_key, "ip:10.0.0.7");
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
}
