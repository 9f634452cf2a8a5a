//! The TOML file format → a validated [`Config`].
//!
//! The file is read into `File*` structs that mirror the text (unknown keys
//! rejected by serde), then checked field by field into [`Config`], whose
//! values cannot be wrong: the policies take them as they are. Every problem
//! is collected, not just the first, and each message names the key, the
//! value and the reason:
//! `backends[1].url = "htp://x" is not valid: scheme must be http`.
//!
//! - `file`: the `File*` structs (the text as written).
//! - `problems`: [`ConfigError`] and the collector that names key and value.
//! - `server`: `[server]`, `[admin]`, `[scrape]`, `[routing]`.
//! - `backends`: `[[backends]]`.
//! - `admission`: `[queue]`, `[rate_limit]`, `[token_budget]`, `[[api_keys]]`, `[auth]`.
//! - `policy`: `[breaker]`, `[limiter]`.
//! - `cluster`: `[cluster]` (the Redis replicas share limits through).
//! - `discovery`: `discover = "dns"` entries and `[discovery]`.
//! - `secrets`: files holding secrets must be private (key, token, TLS key
//!   files refused when group or others may read them; a world-readable
//!   configuration with inline keys warned about).

use std::path::Path;

mod admission;
mod backends;
mod cluster;
mod discovery;
mod edge;
mod file;
mod policy;
mod problems;
mod secrets;
mod server;

pub use crate::admission::gate::{GateParams, KeyEntry, KeyRing};
pub use crate::backend::spec::{BackendConfig, PolicyParams, ScrapeConfig};
pub use admission::AdmissionConfig;
pub use problems::ConfigError;
pub use server::{AdminConfig, RoutingConfig, ServerConfig, TlsFiles};

use file::FileConfig;
use problems::Problems;

/// The gateway's whole configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub scrape: ScrapeConfig,
    pub routing: RoutingConfig,
    pub admission: AdmissionConfig,
    /// The fixed backends (a URL resolved once).
    pub backends: Vec<BackendConfig>,
    /// `[discovery]` and the `[[backends]]` entries with `discover = "dns"`.
    pub discovery: crate::backend::discovery::DiscoveryParams,
    /// `[cluster]`: `None` for a gateway on its own.
    pub cluster: Option<crate::cluster::ClusterParams>,
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![format!("cannot read {}: {e}", path.display())],
        })?;
        Config::parse(&text)
    }

    /// What is risky but allowed about the file at `path` (one line each):
    /// API keys written inline in a file others can read.
    pub fn file_warnings(path: &Path) -> Vec<String> {
        match std::fs::read_to_string(path) {
            Ok(text) => secrets::file_warnings(path, &text),
            Err(_) => Vec::new(),
        }
    }

    /// Validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![e.to_string().trim_end().to_string()],
        })?;
        let mut p = Problems::default();
        let config = validate(file, &mut p);
        if p.0.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems: p.0 })
        }
    }
}

/// Checks every section, in file order, so problems are reported in it.
fn validate(file: FileConfig, p: &mut Problems) -> Config {
    let server = server::server(&file.server, p);
    let admin = server::admin(&file.admin, &server, p);
    let mut scrape = server::scrape(&file.scrape, p);
    let routing = server::routing(&file.routing, p);
    scrape.max_slots = server::max_slots(&file.routing, p);
    let (backends, discovered) = backends::backends(file.backends, p);
    let discovery = discovery::discovery(&file.discovery, discovered, p);
    let admission = admission::validate(
        admission::FileAdmission {
            queue: file.queue,
            rate_limit: file.rate_limit,
            token_budget: file.token_budget,
            breaker: file.breaker,
            limiter: file.limiter,
            api_keys: file.api_keys,
            auth: file.auth,
        },
        p,
    );
    let cluster = cluster::cluster(&file.cluster, p);
    Config {
        server,
        admin,
        scrape,
        routing,
        admission,
        backends,
        discovery,
        cluster,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MINIMAL: &str = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:18080\"\n";

    fn errors(text: &str) -> Vec<String> {
        Config::parse(text).unwrap_err().problems
    }

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.scrape.interval, Duration::from_millis(500));
        assert_eq!(c.scrape.stale_after, Duration::from_millis(1500));
        assert_eq!(c.routing.max_deferred, 0);
        assert_eq!(c.backends[0].addr.to_string(), "127.0.0.1:18080");
        assert_eq!(c.backends[0].weight, 1);
    }

    #[test]
    fn max_slots_defaults_to_512_and_is_bounded() {
        assert_eq!(Config::parse(MINIMAL).unwrap().scrape.max_slots, 512);
        let c = Config::parse(&format!("{MINIMAL}[routing]\nmax_slots = 8\n")).unwrap();
        assert_eq!(c.scrape.max_slots, 8);
        for bad in ["0", "65537", "-1"] {
            let e = errors(&format!("{MINIMAL}[routing]\nmax_slots = {bad}\n"));
            assert_eq!(
                e,
                vec![format!(
                    "routing.max_slots = {bad} is not valid: must be between 1 and 65536: \
                     it caps the total_slots a backend's /props may claim"
                )]
            );
        }
    }

    #[test]
    fn bad_url_names_key_value_and_reason() {
        let e = errors(
            "[[backends]]\nname=\"a\"\nurl=\"http://127.0.0.1:1\"\n[[backends]]\nname=\"b\"\nurl=\"htp://x\"\n",
        );
        assert_eq!(
            e,
            vec!["backends[1].url = \"htp://x\" is not valid: scheme must be http"]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let e = errors(
            "[scrape]\ninterval = \"0s\"\ntimeout = \"soon\"\n[routing]\nidle_timeout = \"10s\"\n",
        );
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(
            e[0].starts_with("scrape.interval = \"0s\" is not valid: must be greater than zero")
        );
        assert!(e[1].starts_with("scrape.timeout = \"soon\" is not valid"));
        assert!(e[2].starts_with("routing.idle_timeout = \"10s\""));
        assert!(e[3].starts_with("backends is missing"));
    }

    #[test]
    fn duplicates_are_rejected() {
        let e = errors(
            "[[backends]]\nname=\"a\"\nurl=\"http://127.0.0.1:1\"\n[[backends]]\nname=\"a\"\nurl=\"http://127.0.0.1:1/\"\n",
        );
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[0].contains("backends[1].name = \"a\""));
        assert!(e[1].contains("another backend already uses 127.0.0.1:1"));
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = errors(&format!("{MINIMAL}[scrape]\nintreval = \"1s\"\n"));
        assert!(e[0].contains("intreval"), "{e:?}");
    }

    #[test]
    fn weights_and_ranges() {
        let e = errors("[[backends]]\nname=\"a\"\nurl=\"http://127.0.0.1:1\"\nweight=0\n");
        assert_eq!(
            e,
            vec!["backends[0].weight = 0 is not valid: must be between 1 and 1000"]
        );
        let e = errors("[[backends]]\nname=\"a b\"\nurl=\"http://127.0.0.1:1\"\n");
        assert!(e[0].starts_with("backends[0].name = \"a b\" is not valid"));
        let e = errors("[[backends]]\nname=\"a\"\nurl=\"http://127.0.0.1:1/v1\"\n");
        assert!(e[0].contains("without a path"));
    }
}
