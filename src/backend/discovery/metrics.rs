//! Discovery's series, registered into the gateway's registry.

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use super::members::Outcome;
use crate::telemetry::Metrics;

pub struct DiscoveryMetrics {
    resolutions: IntCounterVec,
    members: IntGaugeVec,
}

impl DiscoveryMetrics {
    pub fn new(m: &Metrics) -> DiscoveryMetrics {
        let resolutions = IntCounterVec::new(
            Opts::new(
                "sluice_discovery_resolutions_total",
                "Lookups of a discovered entry's DNS name, by entry and outcome \
                 (ok: addresses; empty: NXDOMAIN or none, members removed; \
                 error: failed, members kept).",
            ),
            &["backend", "outcome"],
        )
        .expect("valid counter");
        let members = IntGaugeVec::new(
            Opts::new(
                "sluice_discovery_members",
                "Member backends a discovered entry has now.",
            ),
            &["backend"],
        )
        .expect("valid gauge");
        m.registry
            .register(Box::new(resolutions.clone()))
            .expect("unique name");
        m.registry
            .register(Box::new(members.clone()))
            .expect("unique name");
        DiscoveryMetrics {
            resolutions,
            members,
        }
    }

    /// An entry is known: its series exist from the start, at zero.
    pub fn entry(&self, name: &str) {
        for o in Outcome::ALL {
            self.resolutions.with_label_values(&[name, o.as_str()]);
        }
        self.members.with_label_values(&[name]).set(0);
    }

    pub fn resolved(&self, name: &str, outcome: Outcome, members: usize) {
        self.resolutions
            .with_label_values(&[name, outcome.as_str()])
            .inc();
        self.members.with_label_values(&[name]).set(members as i64);
    }

    /// An entry is gone (a reload removed it): so are its series.
    pub fn forget(&self, name: &str) {
        for o in Outcome::ALL {
            let _ = self.resolutions.remove_label_values(&[name, o.as_str()]);
        }
        let _ = self.members.remove_label_values(&[name]);
    }
}
