//! One line of the exposition format at a time: names checked against the
//! format's grammar, HELP text cleaned, a sample line split into its name,
//! labels and value.

use super::MAX_HELP;

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// The first whitespace-separated token and the rest (leading space trimmed).
pub(super) fn split_token(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    (&s[..end], s[end..].trim_start())
}

/// HELP text: `\\` and `\n` unescaped, then one line without control
/// characters, at most [`MAX_HELP`] characters.
pub(super) fn clean_help(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.trim_end().chars();
    while let Some(c) = chars.next() {
        let c = match c {
            '\\' => match chars.next() {
                Some('\\') => '\\',
                Some('n') => ' ',
                Some(other) => {
                    out.push('\\');
                    other
                }
                None => '\\',
            },
            c => c,
        };
        out.push(if c.is_control() { ' ' } else { c });
    }
    out.chars().take(MAX_HELP).collect()
}

/// A sample line as written; its names are not checked yet.
pub(super) struct RawSample {
    pub(super) name: String,
    pub(super) labels: Vec<(String, String)>,
    pub(super) value: f64,
}

/// `name[{label="value",...}] value [timestamp]`, or `None` when the line
/// is not exposition format at all.
pub(super) fn sample_line(line: &str) -> Option<RawSample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.contains(['}', '"', '=', ',']) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.trim_start().strip_prefix('{') {
        rest = label_set(after, &mut labels)?;
    }
    let (value, rest) = split_token(rest);
    let (timestamp, rest) = split_token(rest);
    if !rest.is_empty() || (!timestamp.is_empty() && timestamp.parse::<i64>().is_err()) {
        return None;
    }
    Some(RawSample {
        name: name.to_string(),
        labels,
        value: parse_value(value)?,
    })
}

/// Reads `label="value",...}` into `labels`; returns what follows the `}`.
pub(super) fn label_set<'a>(mut s: &'a str, labels: &mut Vec<(String, String)>) -> Option<&'a str> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some(after);
        }
        let end = s.find(|c: char| matches!(c, '=' | ',' | '}' | '"') || c.is_whitespace())?;
        let key = &s[..end];
        if key.is_empty() {
            return None;
        }
        s = s[end..].trim_start().strip_prefix('=')?;
        s = s.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let close = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = s[close + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

/// A sample value: a float, `NaN`, `+Inf` or `-Inf` (any case).
pub(super) fn parse_value(s: &str) -> Option<f64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    s.parse::<f64>().ok()
}

pub(super) fn truncate(line: &str) -> String {
    line.chars().take(120).collect()
}
