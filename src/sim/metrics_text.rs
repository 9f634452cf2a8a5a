//! `/metrics` in the Prometheus text format, with the series, HELP texts,
//! TYPE lines and number formatting of each real build (see
//! `tests/fixtures/llama-server/*/metrics-*.txt`).

use std::fmt::Write;

use super::model::MetricsSnapshot;
use super::options::Dialect;

/// Content type of the real `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// A body that the Prometheus text format rejects (the "malformed" fault).
pub const MALFORMED: &str = "# HELP llamacpp:requests_processing Number of requests processing\n\
# TYPE llamacpp:requests_processing gauge\n\
llamacpp:requests_processing{slot=\"0\" 2\n\
llamacpp:requests_deferred not-a-number\n\
# TYPE broken\n";

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Renders one scrape in `dialect`.
pub fn render(dialect: Dialect, m: &MetricsSnapshot) -> String {
    let mut out = String::with_capacity(2800);
    let mut put = |name: &str, kind: Kind, help: &str, v: f64| {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = write!(
            out,
            "# HELP llamacpp:{name} {help}\n# TYPE llamacpp:{name} {kind}\nllamacpp:{name} {}\n",
            fmt_g(v)
        );
    };
    use Kind::{Counter, Gauge};
    match dialect {
        Dialect::B4748 => {
            put(
                "prompt_tokens_total",
                Counter,
                "Number of prompt tokens processed.",
                m.prompt_tokens_total as f64,
            );
            put(
                "prompt_seconds_total",
                Counter,
                "Prompt process time",
                m.prompt_seconds_total,
            );
            put(
                "tokens_predicted_total",
                Counter,
                "Number of generation tokens processed.",
                m.tokens_predicted_total as f64,
            );
            put(
                "tokens_predicted_seconds_total",
                Counter,
                "Predict process time",
                m.tokens_predicted_seconds_total,
            );
            put(
                "n_decode_total",
                Counter,
                "Total number of llama_decode() calls",
                m.n_decode_total as f64,
            );
            put(
                "n_busy_slots_per_decode",
                Counter,
                "Average number of busy slots per llama_decode() call",
                m.n_busy_slots_per_decode,
            );
            put(
                "prompt_tokens_seconds",
                Gauge,
                "Average prompt throughput in tokens/s.",
                m.prompt_tokens_seconds,
            );
            put(
                "predicted_tokens_seconds",
                Gauge,
                "Average generation throughput in tokens/s.",
                m.predicted_tokens_seconds,
            );
            put(
                "kv_cache_usage_ratio",
                Gauge,
                "KV-cache usage. 1 means 100 percent usage.",
                m.kv_cache_usage_ratio,
            );
            put(
                "kv_cache_tokens",
                Gauge,
                "KV-cache tokens.",
                m.kv_cache_tokens as f64,
            );
            put(
                "requests_processing",
                Gauge,
                "Number of requests processing.",
                m.requests_processing as f64,
            );
            put(
                "requests_deferred",
                Gauge,
                "Number of requests deferred.",
                m.requests_deferred as f64,
            );
        }
        Dialect::Recent => {
            put(
                "prompt_tokens_total",
                Counter,
                "Number of prompt tokens processed, excluding cached tokens",
                m.prompt_tokens_total as f64,
            );
            put(
                "prompt_tokens_cached_total",
                Counter,
                "Number of prompt tokens reused from the cache",
                m.prompt_tokens_cached_total as f64,
            );
            put(
                "prompt_seconds_total",
                Counter,
                "Total time spent processing prompts",
                m.prompt_seconds_total,
            );
            put(
                "tokens_predicted_total",
                Counter,
                "Number of generation tokens processed",
                m.tokens_predicted_total as f64,
            );
            put(
                "tokens_predicted_seconds_total",
                Counter,
                "Total time spent generating tokens",
                m.tokens_predicted_seconds_total,
            );
            put("n_decode_total", Counter, "Total number of llama_decode() calls, excluding speculative decoding and multimodal decoding", m.n_decode_total as f64);
            put(
                "n_tokens_max",
                Counter,
                "Largest observed sequence length (prompt + generation)",
                m.n_tokens_max as f64,
            );
            put(
                "spec_decode_num_draft_tokens_total",
                Counter,
                "Speculative: Total draft tokens generated",
                0.0,
            );
            put(
                "spec_decode_num_accepted_tokens_total",
                Counter,
                "Speculative: Total draft tokens accepted by the target model",
                0.0,
            );
            put(
                "spec_decode_num_drafts_total",
                Counter,
                "Speculative: Total speculative decoding verification steps",
                0.0,
            );
            put(
                "prompt_tokens_seconds",
                Gauge,
                "Average prompt throughput in tokens/s",
                m.prompt_tokens_seconds,
            );
            put(
                "predicted_tokens_seconds",
                Gauge,
                "Average generation throughput in tokens/s",
                m.predicted_tokens_seconds,
            );
            put(
                "requests_processing",
                Gauge,
                "Number of requests processing",
                m.requests_processing as f64,
            );
            put(
                "requests_deferred",
                Gauge,
                "Number of requests deferred",
                m.requests_deferred as f64,
            );
            put(
                "n_busy_slots_per_decode",
                Gauge,
                "Average number of busy slots per llama_decode() call",
                m.n_busy_slots_per_decode,
            );
        }
    }
    out
}

/// Formats like C++ `std::ostream << double` (`%g`, 6 significant digits),
/// which is what llama-server prints: `0.132887`, `1.99501`, `996.683`.
pub fn fmt_g(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "nan".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    if !(-5..6).contains(&exp) {
        let s = format!("{v:.5e}");
        let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim_zeros(mant), e.abs());
    }
    let decimals = (5 - exp).max(0) as usize;
    trim_zeros(&format!("{v:.decimals$}")).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_ostream() {
        assert_eq!(fmt_g(0.0), "0");
        assert_eq!(fmt_g(800.0), "800");
        assert_eq!(fmt_g(0.132887), "0.132887");
        assert_eq!(fmt_g(1.995012), "1.99501");
        assert_eq!(fmt_g(996.68301), "996.683");
        assert_eq!(fmt_g(8.5215), "8.5215");
        assert_eq!(fmt_g(1234567.0), "1.23457e+06");
        assert_eq!(fmt_g(0.0000012), "1.2e-06");
    }

    #[test]
    fn idle_recent_matches_capture_exactly() {
        let real = include_str!("../../tests/fixtures/llama-server/2026-10/metrics-idle.txt");
        assert_eq!(render(Dialect::Recent, &MetricsSnapshot::default()), real);
    }

    #[test]
    fn under_load_b4748_matches_capture_exactly() {
        let real = include_str!("../../tests/fixtures/llama-server/b4748/metrics-under-load.txt");
        let m = MetricsSnapshot {
            prompt_tokens_total: 1821,
            prompt_seconds_total: 1.856,
            tokens_predicted_total: 600,
            tokens_predicted_seconds_total: 4.693,
            n_decode_total: 628,
            n_busy_slots_per_decode: 1.04299,
            kv_cache_usage_ratio: 0.017334,
            kv_cache_tokens: 71,
            requests_processing: 2,
            requests_deferred: 6,
            ..MetricsSnapshot::default()
        };
        assert_eq!(render(Dialect::B4748, &m), real);
    }
}
