//! What one `/metrics` scrape says about a backend's load.
//!
//! `requests_processing` and `requests_deferred` are required: without them we
//! cannot tell an idle backend from a swamped one, so the snapshot is unusable.
//! Everything else is optional because series come and go between llama.cpp
//! builds (see `tests/fixtures/llama-server/README.md`).
//!
//! The figures are a backend's word: a required one that is not a finite,
//! non-negative number makes the snapshot unusable; an optional one that is
//! not is left out.

use super::promtext::Family;

pub const PROCESSING: &str = "llamacpp:requests_processing";
pub const DEFERRED: &str = "llamacpp:requests_deferred";

/// The scraped load figures of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoadSnapshot {
    /// Busy slots.
    pub processing: u32,
    /// Requests accepted by llama-server that wait for a slot inside it.
    pub deferred: u32,
    pub prompt_tokens_total: Option<f64>,
    pub tokens_predicted_total: Option<f64>,
    pub n_decode_total: Option<f64>,
    /// An average, declared a counter by b4748 and a gauge later.
    pub busy_slots_per_decode: Option<f64>,
}

impl LoadSnapshot {
    /// Reads the snapshot, or names the first required series that is missing.
    pub fn from_families(families: &[Family]) -> Result<LoadSnapshot, String> {
        let get = |name: &str| {
            families
                .iter()
                .find(|f| f.name == name)
                .and_then(Family::value)
        };
        let required = |name: &str| -> Result<u32, String> {
            match get(name) {
                Some(v) if v.is_finite() && v >= 0.0 => Ok(v.min(u32::MAX as f64) as u32),
                Some(v) => Err(format!("{name} has an impossible value {v}")),
                None => Err(format!("{name} is missing from /metrics")),
            }
        };
        let optional = |name: &str| get(name).filter(|v| v.is_finite() && *v >= 0.0);
        Ok(LoadSnapshot {
            processing: required(PROCESSING)?,
            deferred: required(DEFERRED)?,
            prompt_tokens_total: optional("llamacpp:prompt_tokens_total"),
            tokens_predicted_total: optional("llamacpp:tokens_predicted_total"),
            n_decode_total: optional("llamacpp:n_decode_total"),
            busy_slots_per_decode: optional("llamacpp:n_busy_slots_per_decode"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::promtext::parse;

    fn fixture(path: &str) -> String {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/llama-server");
        let text = std::fs::read_to_string(format!("{dir}/{path}")).unwrap();
        // Some captures keep the HTTP response head; the body follows the blank line.
        match text.strip_prefix("HTTP/") {
            Some(_) => text
                .split_once("\r\n\r\n")
                .or_else(|| text.split_once("\n\n"))
                .unwrap()
                .1
                .to_string(),
            None => text,
        }
    }

    #[test]
    fn both_dialects_give_a_snapshot() {
        for f in [
            "2026-10/metrics-idle.txt",
            "2026-10/metrics-after-load.txt",
            "b4748/metrics-idle-fresh.txt",
            "b4748/metrics-under-load.txt",
        ] {
            let s = LoadSnapshot::from_families(&parse(&fixture(f)).unwrap());
            assert!(s.is_ok(), "{f}: {s:?}");
        }
        let s =
            LoadSnapshot::from_families(&parse(&fixture("b4748/metrics-under-load.txt")).unwrap())
                .unwrap();
        assert_eq!(s.tokens_predicted_total, Some(600.0));
    }

    #[test]
    fn missing_required_series_is_named() {
        let fams = parse("llamacpp:requests_processing 1\n").unwrap();
        assert_eq!(
            LoadSnapshot::from_families(&fams).unwrap_err(),
            "llamacpp:requests_deferred is missing from /metrics"
        );
        let fams =
            parse("llamacpp:requests_processing -1\nllamacpp:requests_deferred 0\n").unwrap();
        assert!(LoadSnapshot::from_families(&fams).is_err());
    }

    #[test]
    fn absurd_figures_are_refused_or_clamped() {
        for bad in ["NaN", "+Inf", "-Inf", "-0.5"] {
            let fams = parse(&format!(
                "llamacpp:requests_processing {bad}\nllamacpp:requests_deferred 0\n"
            ))
            .unwrap();
            assert!(LoadSnapshot::from_families(&fams).is_err(), "{bad}");
        }
        let fams = parse(
            "llamacpp:requests_processing 1e30\nllamacpp:requests_deferred 4294967296\n\
             llamacpp:prompt_tokens_total NaN\nllamacpp:tokens_predicted_total -1\n\
             llamacpp:n_decode_total +Inf\nllamacpp:n_busy_slots_per_decode 1.5\n",
        )
        .unwrap();
        let s = LoadSnapshot::from_families(&fams).unwrap();
        assert_eq!((s.processing, s.deferred), (u32::MAX, u32::MAX));
        assert_eq!(
            (
                s.prompt_tokens_total,
                s.tokens_predicted_total,
                s.n_decode_total
            ),
            (None, None, None)
        );
        assert_eq!(s.busy_slots_per_decode, Some(1.5));
    }
}
