//! The admin `/metrics` page: the gateway's own series with the gauges that
//! mirror the fleet set just before, then every scraped `llamacpp:*` series
//! re-exported with a `backend` label.
//!
//! Why re-export: llama-server's `*_tokens_seconds` gauges are averages since
//! the *previous* `/metrics` call, so a second scraper (Prometheus) and the
//! gateway would reset each other's figures. The gateway scrapes; Prometheus
//! scrapes only the gateway, and takes rates from the `*_total` counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tokio::time::Instant;

use super::breaker::BreakerState;
use super::fleet::Fleet;
use super::observed::Health;
use super::promtext::Kind;
use crate::telemetry::{BackendGauges, Metrics};

/// The whole `/metrics` text: own series, then re-exported backend series.
pub fn render(metrics: &Metrics, fleet: &Fleet, now: Instant) -> String {
    for b in fleet.backends().iter() {
        let obs = b.observed();
        let (a, cap) = fleet.assess(b, now);
        metrics.set_backend_gauges(
            b.name(),
            &BackendGauges {
                in_flight: b.in_flight(),
                cap,
                eligible: a.verdict.is_ok(),
                up: obs.health == Health::Ok,
                breaker_state: match b.breaker_state(now) {
                    BreakerState::Closed => 0,
                    BreakerState::HalfOpen => 1,
                    BreakerState::Open { .. } => 2,
                },
                scrape_age: obs.load_age(now),
            },
        );
    }
    metrics.ready.set(i64::from(fleet.ready(now)));
    metrics.queue_depth.set(fleet.released.waiting() as i64);
    let mut out = metrics.encode();
    reexport(fleet, &mut out);
    out
}

/// Appends every backend's scraped families, merged by name, with a
/// `backend` label. One HELP/TYPE per family, as the format requires.
/// Names, label names and help were checked when the text was parsed
/// (`promtext`); values are escaped here.
fn reexport(fleet: &Fleet, out: &mut String) {
    struct Merged {
        kind: Kind,
        help: String,
        lines: Vec<String>,
    }
    let mut merged: BTreeMap<String, Merged> = BTreeMap::new();
    for b in fleet.backends().iter() {
        let obs = b.observed();
        for fam in obs.families.iter() {
            let m = merged.entry(fam.name.clone()).or_insert_with(|| Merged {
                kind: fam.kind,
                help: fam.help.clone(),
                lines: Vec::new(),
            });
            for s in &fam.samples {
                let mut labels = format!("backend=\"{}\"", escape(b.name()));
                for (k, v) in &s.labels {
                    if k != "backend" {
                        let _ = write!(labels, ",{k}=\"{}\"", escape(v));
                    }
                }
                m.lines
                    .push(format!("{}{{{labels}}} {}", fam.name, value(s.value)));
            }
        }
    }
    for (name, m) in merged {
        let _ = writeln!(out, "# HELP {name} {}", help(&m.help));
        let _ = writeln!(out, "# TYPE {name} {}", m.kind.as_str());
        for l in m.lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text: one line, `\` and newlines escaped as the format requires.
fn help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the format spells it (`NaN`, `+Inf`, `-Inf`).
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_help_are_spelled_as_the_format_wants() {
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(f64::INFINITY), "+Inf");
        assert_eq!(value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(value(1.5), "1.5");
        assert_eq!(help("a\\b\nc"), "a\\\\b\\nc");
        assert_eq!(escape("x\"\\\n"), "x\\\"\\\\\\n");
    }
}
