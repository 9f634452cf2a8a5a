//! API keys held as SHA-256 digests and looked up in constant time.
//!
//! The gateway never keeps a key in plain text after loading it: each
//! configured key (or its digest, `key_sha256`, so the secret need not be on
//! disk at all) becomes a 32-byte digest. A bearer token is hashed once and
//! compared against every digest with a constant-time comparison that does
//! not stop at the first match, so neither the comparison nor the position of
//! the key in the list leaks through timing.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::queue::Priority;

/// A configured key: its name (safe to log), digest and entitlements.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub name: Arc<str>,
    digest: [u8; 32],
    /// The highest `x-sluice-priority` this key may ask for.
    pub max_priority: Priority,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyEntry({}, <digest>)", self.name)
    }
}

impl KeyEntry {
    /// From the secret itself.
    pub fn from_secret(name: &str, secret: &str, max_priority: Priority) -> KeyEntry {
        KeyEntry {
            name: Arc::from(name),
            digest: digest(secret),
            max_priority,
        }
    }

    /// From a hex SHA-256 digest of the secret (64 hex digits).
    pub fn from_hex_digest(
        name: &str,
        hex_digest: &str,
        max_priority: Priority,
    ) -> Result<KeyEntry, String> {
        let raw = hex::decode(hex_digest.trim())
            .map_err(|e| format!("is not a hex SHA-256 digest: {e}"))?;
        let digest: [u8; 32] = raw
            .try_into()
            .map_err(|v: Vec<u8>| format!("has {} bytes, a SHA-256 digest has 32", v.len()))?;
        Ok(KeyEntry {
            name: Arc::from(name),
            digest,
            max_priority,
        })
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Every configured key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRing {
    entries: Vec<KeyEntry>,
}

impl KeyRing {
    pub fn new(entries: Vec<KeyEntry>) -> KeyRing {
        KeyRing { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The names of the configured keys (the only key label values).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| &*e.name)
    }

    /// The key whose secret is `token`, compared in constant time against
    /// every configured key.
    pub fn find(&self, token: &str) -> Option<&KeyEntry> {
        let d = digest(token);
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(&d)) && found.is_none() {
                found = Some(e);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_key_by_secret_or_by_digest_and_nothing_else() {
        let hex_of_beta = hex::encode(digest("beta-secret"));
        let ring = KeyRing::new(vec![
            KeyEntry::from_secret("alpha", "alpha-secret", Priority::Critical),
            KeyEntry::from_hex_digest("beta", &hex_of_beta, Priority::Normal).unwrap(),
        ]);
        assert_eq!(&*ring.find("alpha-secret").unwrap().name, "alpha");
        assert_eq!(&*ring.find("beta-secret").unwrap().name, "beta");
        assert!(ring.find("alpha-secreT").is_none());
        assert!(ring.find("").is_none());
        assert!(ring.find(&hex_of_beta).is_none(), "a digest is not a key");
        assert_eq!(ring.names().collect::<Vec<_>>(), ["alpha", "beta"]);
    }

    #[test]
    fn bad_digests_say_why() {
        let e = KeyEntry::from_hex_digest("k", "zz", Priority::Normal).unwrap_err();
        assert!(e.contains("hex"), "{e}");
        let e = KeyEntry::from_hex_digest("k", "abcd", Priority::Normal).unwrap_err();
        assert!(e.contains("2 bytes"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_digest() {
        let e = KeyEntry::from_secret("alpha", "alpha-secret", Priority::Normal);
        assert_eq!(format!("{e:?}"), "KeyEntry(alpha, <digest>)");
    }
}
