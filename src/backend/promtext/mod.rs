//! Prometheus text exposition → metric families, for llama-server's `/metrics`.
//!
//! ## Backend text is untrusted input
//!
//! Everything read here is re-exported on the gateway's own `/metrics`, so a
//! broken or hostile backend must not be able to break the gateway's scrape.
//! This is a strict parser of its own (not `prometheus-parse`, whose `\w+`
//! names accept Unicode letters and leading digits, drop `:` and split label
//! values on `,` and `=`), and it decides at parse time, so everything
//! downstream holds clean data:
//!
//! - a line that is not exposition format at all (garbage, an unterminated
//!   label set, a value that is not a number) makes the whole text an error:
//!   a scrape that silently lost its lines would look like an idle backend;
//! - a well-formed sample whose metric name is not
//!   `[a-zA-Z_:][a-zA-Z0-9_:]*` is dropped and counted ([`Dropped`]); so is
//!   one with a label name that is not `[a-zA-Z_][a-zA-Z0-9_]*`, starts with
//!   `__` (reserved) or appears twice, and a second sample of the same
//!   series; [`Parsed::without_reserved`] also drops, for re-export, what
//!   would clash with the gateway's own series (`sluice_*` names, a
//!   `backend` label);
//! - label values are unescaped here and escaped again on export; `NaN` and
//!   `±Inf` values are kept (the format has them); HELP text is made one
//!   line of at most [`MAX_HELP`] characters without control characters;
//! - more than [`MAX_SAMPLES`] kept samples make the text an error.
//!
//! Histograms and summaries are read but flattened away: llama-server emits
//! neither, and the gateway only re-exports counters, gauges and untyped.

mod lex;

use lex::{clean_help, sample_line, split_token, truncate};
pub use lex::{valid_label_name, valid_metric_name};

use std::collections::{HashMap, HashSet};
use std::fmt;

/// Most samples kept from one backend's `/metrics` (llama-server emits ~15).
pub const MAX_SAMPLES: usize = 10_000;
/// Longest HELP text kept, in characters.
pub const MAX_HELP: usize = 1024;

/// The declared type of a family (`# TYPE`); `Untyped` when not declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Untyped,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Untyped => "untyped",
        }
    }
}

/// One sample: its labels (sorted by name) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A metric family: every sample sharing one name, with its help and type.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: String,
    pub samples: Vec<Sample>,
}

impl Family {
    /// The value of the first sample without labels, or of the only sample.
    pub fn value(&self) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.labels.is_empty())
            .or_else(|| (self.samples.len() == 1).then(|| &self.samples[0]))
            .map(|s| s.value)
    }
}

/// Well-formed samples left out of the families, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dropped {
    /// The metric name is not `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    pub invalid_name: u64,
    /// A label name is not `[a-zA-Z_][a-zA-Z0-9_]*`, starts with `__`, or
    /// appears twice in one sample.
    pub invalid_label: u64,
    /// The gateway's own namespace: a `sluice_*` name or a `backend` label.
    pub reserved_name: u64,
    /// The same name and labels again.
    pub duplicate_series: u64,
}

impl Dropped {
    /// Each reason (the metric's `reason` label) and its count.
    pub fn by_reason(&self) -> [(&'static str, u64); 4] {
        [
            ("invalid_name", self.invalid_name),
            ("invalid_label", self.invalid_label),
            ("reserved_name", self.reserved_name),
            ("duplicate_series", self.duplicate_series),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_reason()
            .iter()
            .fold(0u64, |t, (_, n)| t.saturating_add(*n))
    }
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .by_reason()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        write!(f, "dropped {} series ({})", self.total(), parts.join(", "))
    }
}

/// What one text gave: the families, and what was left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    pub families: Vec<Family>,
    pub dropped: Dropped,
}

impl Parsed {
    /// Drops (and counts) what would clash with the gateway's own series
    /// on its `/metrics`: names in its `sluice_` namespace and samples that
    /// carry a `backend` label (the label the re-export adds).
    pub fn without_reserved(mut self) -> Parsed {
        let dropped = &mut self.dropped;
        self.families.retain_mut(|f| {
            if f.name.starts_with("sluice_") {
                dropped.reserved_name += f.samples.len() as u64;
                return false;
            }
            let before = f.samples.len();
            f.samples
                .retain(|s| !s.labels.iter().any(|(k, _)| k == "backend"));
            dropped.reserved_name += (before - f.samples.len()) as u64;
            !f.samples.is_empty()
        });
        self
    }
}

/// Why a `/metrics` text could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromTextError {
    /// The body was empty or only whitespace.
    Empty,
    /// A line that is neither a comment nor a valid sample.
    Malformed { line: usize, text: String },
    /// More than [`MAX_SAMPLES`] samples.
    TooManySamples { limit: usize },
}

impl fmt::Display for PromTextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromTextError::Empty => write!(f, "metrics text is empty"),
            PromTextError::Malformed { line, text } => {
                write!(
                    f,
                    "metrics line {line} is not valid exposition format: {text:?}"
                )
            }
            PromTextError::TooManySamples { limit } => {
                write!(f, "metrics text has more than {limit} samples")
            }
        }
    }
}

impl std::error::Error for PromTextError {}

/// Parses exposition text into families, in order of first appearance;
/// dropped samples are left out (see [`parse_counted`] for their count).
pub fn parse(text: &str) -> Result<Vec<Family>, PromTextError> {
    parse_counted(text).map(|p| p.families)
}

/// Parses exposition text into families and counts what was dropped.
pub fn parse_counted(text: &str) -> Result<Parsed, PromTextError> {
    if text.trim().is_empty() {
        return Err(PromTextError::Empty);
    }
    let mut fams = Families::default();
    let mut dropped = Dropped::default();
    let mut seen: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    let mut kept = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            fams.directive(comment);
            continue;
        }
        let s = sample_line(line).ok_or_else(|| PromTextError::Malformed {
            line: i + 1,
            text: truncate(raw),
        })?;
        if fams.is_complex(&s.name) {
            continue;
        }
        if !valid_metric_name(&s.name) {
            dropped.invalid_name += 1;
            continue;
        }
        let mut labels = s.labels;
        labels.sort();
        if labels.iter().any(|(k, _)| !valid_label_name(k))
            || labels.windows(2).any(|w| w[0].0 == w[1].0)
        {
            dropped.invalid_label += 1;
            continue;
        }
        if !seen.insert((s.name.clone(), labels.clone())) {
            dropped.duplicate_series += 1;
            continue;
        }
        kept += 1;
        if kept > MAX_SAMPLES {
            return Err(PromTextError::TooManySamples { limit: MAX_SAMPLES });
        }
        fams.push(
            s.name,
            Sample {
                labels,
                value: s.value,
            },
        );
    }
    Ok(Parsed {
        families: fams.finish(),
        dropped,
    })
}

/// Families under construction: declared types and help, samples in order.
#[derive(Default)]
struct Families {
    order: Vec<Family>,
    index: HashMap<String, usize>,
    kinds: HashMap<String, Kind>,
    helps: HashMap<String, String>,
    /// Histogram and summary names: their samples are skipped.
    complex: HashSet<String>,
}

impl Families {
    /// A `#` line: `HELP` and `TYPE` with a valid name are kept, the rest ignored.
    fn directive(&mut self, comment: &str) {
        let comment = comment.trim_start();
        let (word, rest) = split_token(comment);
        let (name, rest) = split_token(rest);
        if !valid_metric_name(name) {
            return;
        }
        match word {
            "HELP" => {
                self.helps
                    .entry(name.to_string())
                    .or_insert_with(|| clean_help(rest));
            }
            "TYPE" => {
                let kind = match rest.trim() {
                    "counter" => Some(Kind::Counter),
                    "gauge" => Some(Kind::Gauge),
                    "histogram" | "summary" | "gaugehistogram" => None,
                    _ => Some(Kind::Untyped),
                };
                match kind {
                    Some(k) => {
                        self.kinds.entry(name.to_string()).or_insert(k);
                    }
                    None => {
                        self.complex.insert(name.to_string());
                    }
                }
            }
            _ => {}
        }
    }

    /// A sample of a histogram or summary (flattened away).
    fn is_complex(&self, name: &str) -> bool {
        if self.complex.is_empty() {
            return false;
        }
        self.complex.contains(name)
            || ["_bucket", "_sum", "_count", "_created"].iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|base| self.complex.contains(base))
            })
    }

    fn push(&mut self, name: String, sample: Sample) {
        let i = match self.index.get(&name) {
            Some(&i) => i,
            None => {
                self.order.push(Family {
                    name: name.clone(),
                    kind: Kind::Untyped,
                    help: String::new(),
                    samples: Vec::new(),
                });
                self.index.insert(name, self.order.len() - 1);
                self.order.len() - 1
            }
        };
        self.order[i].samples.push(sample);
    }

    /// Types and help apply wherever their lines stood.
    fn finish(mut self) -> Vec<Family> {
        for f in &mut self.order {
            f.kind = self.kinds.get(&f.name).copied().unwrap_or(Kind::Untyped);
            f.help = self.helps.remove(&f.name).unwrap_or_default();
        }
        self.order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/llama-server");

    fn fixture(path: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{path}")).expect("fixture")
    }

    fn find<'a>(fams: &'a [Family], name: &str) -> &'a Family {
        fams.iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn reads_every_llamacpp_series_of_the_2026_build() {
        let fams = parse(&fixture("2026-10/metrics-idle.txt")).unwrap();
        assert_eq!(fams.len(), 15, "{fams:#?}");
        assert!(fams.iter().all(|f| f.name.starts_with("llamacpp:")));
        let deferred = find(&fams, "llamacpp:requests_deferred");
        assert_eq!(deferred.kind, Kind::Gauge);
        assert_eq!(deferred.help, "Number of requests deferred");
        assert_eq!(
            find(&fams, "llamacpp:prompt_tokens_total").kind,
            Kind::Counter
        );
    }

    #[test]
    fn reads_the_b4748_dialect_under_load() {
        let fams = parse(&fixture("b4748/metrics-under-load.txt")).unwrap();
        assert_eq!(
            find(&fams, "llamacpp:n_busy_slots_per_decode").kind,
            Kind::Counter
        );
        assert_eq!(
            find(&fams, "llamacpp:tokens_predicted_total").value(),
            Some(600.0)
        );
        assert!(fams.iter().any(|f| f.name == "llamacpp:kv_cache_tokens"));
    }

    #[test]
    fn keeps_labels_and_plain_names() {
        let text = "# TYPE a:b gauge\na:b{x=\"1\",b=\"2\"} 3\nplain_total 4\n";
        let fams = parse(text).unwrap();
        assert_eq!(fams[0].name, "a:b");
        assert_eq!(
            fams[0].samples[0].labels,
            vec![("b".into(), "2".into()), ("x".into(), "1".into())]
        );
        assert_eq!(fams[1].name, "plain_total");
        assert_eq!(fams[1].kind, Kind::Untyped);
        assert_eq!(fams[1].value(), Some(4.0));
    }

    #[test]
    fn help_text_with_colons_is_untouched() {
        let text =
            "# HELP llamacpp:x Speculative: drafts\n# TYPE llamacpp:x counter\nllamacpp:x 1\n";
        assert_eq!(parse(text).unwrap()[0].help, "Speculative: drafts");
    }

    #[test]
    fn rejects_empty_and_garbage() {
        assert_eq!(parse(""), Err(PromTextError::Empty));
        assert_eq!(parse("  \n\n"), Err(PromTextError::Empty));
        assert!(matches!(
            parse("llamacpp:requests_deferred 1\n<html>oops</html>\n"),
            Err(PromTextError::Malformed { line: 2, .. })
        ));
        assert!(parse("llamacpp:requests_deferred one\n").is_err());
    }

    #[test]
    fn hostile_names_are_dropped_and_counted() {
        let text = "# HELP llamacpp:requests_deferred Deferred\\nsecond line\n\
                    # TYPE llamacpp:requests_deferred gauge\n\
                    llamacpp:requests_deferred 0\n\
                    llamacpp:bad-name{la-bel=\"x\"} 1\n\
                    1abc 2\n\
                    llamacpp:caf\u{e9} 3\n\
                    llamacpp:x{__reserved=\"y\"} 4\n\
                    llamacpp:y{a=\"1\",a=\"2\"} 5\n\
                    llamacpp:z{b-c=\"1\"} 6\n\
                    sluice_requests_total 7\n\
                    llamacpp:w{backend=\"other\"} 8\n\
                    llamacpp:requests_deferred 9\n\
                    llamacpp:ok{v=\"a,b=c\\\\\\\"}\"} 10\n";
        let p = parse_counted(text).unwrap().without_reserved();
        let names: Vec<&str> = p.families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["llamacpp:requests_deferred", "llamacpp:ok"]);
        assert_eq!(p.families[0].help, "Deferred second line");
        assert_eq!(p.families[0].samples.len(), 1);
        assert_eq!(
            p.families[1].samples[0].labels,
            vec![("v".into(), "a,b=c\\\"}".into())]
        );
        assert_eq!(
            p.dropped,
            Dropped {
                invalid_name: 3,
                invalid_label: 3,
                reserved_name: 2,
                duplicate_series: 1,
            }
        );
        assert_eq!(p.dropped.total(), 9);
    }

    #[test]
    fn special_values_timestamps_and_histograms() {
        let text = "a NaN\nb +Inf\nc -Inf 1700000000000\n\
                    # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 2\nh_count 1\n";
        let fams = parse(text).unwrap();
        assert_eq!(fams.len(), 3);
        assert!(fams[0].value().unwrap().is_nan());
        assert_eq!(fams[1].value(), Some(f64::INFINITY));
        assert_eq!(fams[2].value(), Some(f64::NEG_INFINITY));
        for bad in [
            "a 1 notatime",
            "a 1 2 3",
            "a{x=\"1\" 2",
            "a{x=1} 2",
            "a",
            "a{} ",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn too_many_samples_is_an_error() {
        let mut text = String::new();
        for i in 0..=MAX_SAMPLES {
            text += &format!("m{{i=\"{i}\"}} 1\n");
        }
        assert_eq!(
            parse(&text),
            Err(PromTextError::TooManySamples { limit: MAX_SAMPLES })
        );
    }

    #[test]
    fn help_is_one_clean_bounded_line() {
        let long = "x".repeat(5000);
        let text = format!("# HELP m a\\\\b\\n\u{7}c {long}\nm 1\n");
        let help = &parse(&text).unwrap()[0].help;
        assert!(help.starts_with("a\\b  c x"), "{help}");
        assert_eq!(help.chars().count(), MAX_HELP);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_keeps_only_valid_names(text in "(?s).{0,400}") {
            if let Ok(p) = parse_counted(&text) {
                for f in &p.families {
                    proptest::prop_assert!(valid_metric_name(&f.name));
                    proptest::prop_assert!(!f.help.contains('\n'));
                    for s in &f.samples {
                        for (k, _) in &s.labels {
                            proptest::prop_assert!(valid_label_name(k));
                        }
                    }
                }
            }
        }

        #[test]
        fn sample_shaped_lines_never_panic(
            lines in proptest::collection::vec(
                "[a-z_:1\\-é]{0,6}(\\{[a-z_\\-]{0,4}=\"[a-z\\\\\"},=]{0,5}\"(,[a-z]{1,3}=\"\")?\\})? ?[-+0-9.eEaNIinf]{0,6}( [0-9]{0,3})?",
                0..20,
            )
        ) {
            let text = lines.join("\n");
            if let Ok(p) = parse_counted(&text) {
                let kept: usize = p.families.iter().map(|f| f.samples.len()).sum();
                proptest::prop_assert!(kept <= lines.len());
                for f in &p.families {
                    proptest::prop_assert!(valid_metric_name(&f.name));
                }
            }
        }
    }
}
