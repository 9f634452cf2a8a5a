//! Prometheus text exposition → metric families, for llama-server's `/metrics`.
//!
//! ## Why not call `prometheus-parse` directly
//!
//! `prometheus-parse` 0.2.5 matches metric names with `\w+`, and `:` is not
//! `\w`: every `llamacpp:*` series would be dropped *silently*. We rewrite the
//! name token of each line (`# HELP`, `# TYPE` and sample lines) so colons
//! become a placeholder, parse, and map the names back. The crate also skips
//! lines it does not understand without a word; a scrape that silently lost
//! its lines would look like an idle backend, so here any sample line that
//! does not parse makes the whole text an error.
//!
//! Histograms and summaries are read but flattened away: llama-server emits
//! neither, and the gateway only re-exports counters, gauges and untyped.

use std::collections::HashMap;
use std::fmt;

use prometheus_parse::{LineInfo, Scrape, Value};

/// Stands in for `:` in metric names while `prometheus-parse` reads them.
const COLON: &str = "__sluice_colon__";

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

/// Why a `/metrics` text could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromTextError {
    /// The body was empty or only whitespace.
    Empty,
    /// A line that is neither a comment nor a valid sample.
    Malformed { line: usize, text: String },
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
        }
    }
}

impl std::error::Error for PromTextError {}

/// Parses exposition text into families, in order of first appearance.
pub fn parse(text: &str) -> Result<Vec<Family>, PromTextError> {
    if text.trim().is_empty() {
        return Err(PromTextError::Empty);
    }
    let mut normalized = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = escape_name(line);
        if let LineInfo::Ignored = LineInfo::parse(&line) {
            if !line.trim_start().starts_with('#') {
                return Err(PromTextError::Malformed {
                    line: i + 1,
                    text: truncate(text.lines().nth(i).unwrap_or_default()),
                });
            }
        }
        normalized.push(line);
    }
    let scrape =
        Scrape::parse(normalized.into_iter().map(Ok)).map_err(|e| PromTextError::Malformed {
            line: 0,
            text: e.to_string(),
        })?;
    let sample_lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .count();
    if scrape.samples.len() < sample_lines && !has_histograms(&scrape) {
        // prometheus-parse drops samples whose value does not parse.
        return Err(PromTextError::Malformed {
            line: 0,
            text: format!(
                "{} of {sample_lines} samples could not be read",
                sample_lines - scrape.samples.len()
            ),
        });
    }
    Ok(families(scrape))
}

fn has_histograms(scrape: &Scrape) -> bool {
    scrape
        .samples
        .iter()
        .any(|s| matches!(s.value, Value::Histogram(_) | Value::Summary(_)))
}

fn families(scrape: Scrape) -> Vec<Family> {
    let mut order: Vec<Family> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for sample in scrape.samples {
        let (kind, value) = match sample.value {
            Value::Counter(v) => (Kind::Counter, v),
            Value::Gauge(v) => (Kind::Gauge, v),
            Value::Untyped(v) => (Kind::Untyped, v),
            Value::Histogram(_) | Value::Summary(_) => continue,
        };
        let mut labels: Vec<(String, String)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let i = *index.entry(sample.metric.clone()).or_insert_with(|| {
            order.push(Family {
                name: sample.metric.replace(COLON, ":"),
                kind,
                help: scrape.docs.get(&sample.metric).cloned().unwrap_or_default(),
                samples: Vec::new(),
            });
            order.len() - 1
        });
        order[i].samples.push(Sample { labels, value });
    }
    order
}

/// Replaces `:` with [`COLON`] in the metric-name token of one line.
fn escape_name(line: &str) -> String {
    let trimmed = line.trim_start();
    for directive in ["# HELP ", "# TYPE "] {
        if let Some(rest) = trimmed.strip_prefix(directive) {
            let rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            return format!(
                "{directive}{}{}",
                rest[..end].replace(':', COLON),
                &rest[end..]
            );
        }
    }
    if trimmed.starts_with('#') {
        return trimmed.to_string();
    }
    let end = trimmed
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(trimmed.len());
    format!("{}{}", trimmed[..end].replace(':', COLON), &trimmed[end..])
}

fn truncate(line: &str) -> String {
    line.chars().take(120).collect()
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
}
