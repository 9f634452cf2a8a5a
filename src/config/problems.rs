//! Collecting what is wrong with a file: [`Problems`] while checking,
//! [`ConfigError`] at the end, and the readers of durations, addresses and
//! integers that name the key, the value and the reason.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything wrong with a configuration file, one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects problems while a file is checked.
#[derive(Default)]
pub(crate) struct Problems(pub(crate) Vec<String>);

impl Problems {
    pub(crate) fn invalid(&mut self, key: &str, value: impl fmt::Display, why: &str) {
        self.0.push(format!("{key} = {value} is not valid: {why}"));
    }

    pub(crate) fn missing(&mut self, key: &str, why: &str) {
        self.0.push(format!("{key} is missing: {why}"));
    }

    /// A policy's own check failed; its message already names the field.
    pub(crate) fn rejected(&mut self, section: &str, why: impl fmt::Display) {
        self.0.push(format!("{section}: {why}"));
    }

    pub(crate) fn duration(&mut self, key: &str, raw: Option<&str>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match humantime::parse_duration(raw) {
            Ok(d) if d.is_zero() => {
                self.invalid(key, quoted(raw), "must be greater than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.invalid(
                    key,
                    quoted(raw),
                    &format!("{e} (write a duration such as \"500ms\", \"2s\" or \"1m\")"),
                );
                default
            }
        }
    }

    pub(crate) fn addr(&mut self, key: &str, raw: Option<&str>, default: &str) -> SocketAddr {
        let raw = raw.unwrap_or(default);
        match raw.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.invalid(
                    key,
                    quoted(raw),
                    "must be an IP address and port such as \"127.0.0.1:8080\"",
                );
                default.parse().expect("default address parses")
            }
        }
    }

    pub(crate) fn int(
        &mut self,
        key: &str,
        raw: Option<i64>,
        min: i64,
        max: i64,
        default: i64,
    ) -> i64 {
        match raw {
            None => default,
            Some(v) if v < min || v > max => {
                self.invalid(key, v, &format!("must be between {min} and {max}"));
                default
            }
            Some(v) => v,
        }
    }

    /// A fraction in (0, 1] (`lo_open`) or [0, 1].
    pub(crate) fn fraction(
        &mut self,
        key: &str,
        raw: Option<f64>,
        lo_open: bool,
        default: f64,
    ) -> f64 {
        match raw {
            None => default,
            Some(v) if v.is_finite() && (if lo_open { v > 0.0 } else { v >= 0.0 }) && v <= 1.0 => v,
            Some(v) => {
                let range = if lo_open { "(0, 1]" } else { "[0, 1]" };
                self.invalid(key, v, &format!("must be in {range}"));
                default
            }
        }
    }
}

/// A value as written in TOML, quotes and escapes included.
pub(crate) fn quoted(s: &str) -> String {
    format!("{s:?}")
}
