//! The request headers admission reads: `x-sluice-deadline` (the wait
//! budget) and `x-sluice-priority`. Any string gives a value or a
//! `400 bad_header`; nothing a client sends can panic here.

use std::time::Duration;

use super::queue::Priority;
use crate::reject::Reject;

const DEADLINE: &str = "x-sluice-deadline";
const PRIORITY: &str = "x-sluice-priority";

/// Reads `x-sluice-deadline`: how long the request may wait at the gateway
/// for a backend, as seconds (`"2.5"`) or a duration (`"500ms"`, `"3s"`).
/// Values above `max` (however large, `"1e20"`, `"inf"`) are capped to it.
pub fn parse_wait(raw: Option<&str>, default: Duration, max: Duration) -> Result<Duration, Reject> {
    let Some(raw) = raw else { return Ok(default) };
    let raw = raw.trim();
    let bad = |why: String| Reject::BadHeader {
        name: DEADLINE,
        why,
    };
    let d = match raw.parse::<f64>() {
        Ok(s) if s.is_nan() => return Err(bad(format!("{raw:?} is not a number"))),
        Ok(s) if s < 0.0 => return Err(bad(format!("{raw:?} must not be negative"))),
        // Too large for a `Duration` is above any `max`. (`-0` is 0.)
        Ok(s) => Duration::try_from_secs_f64(s.abs()).unwrap_or(max),
        Err(_) => humantime::parse_duration(raw).map_err(|e| {
            bad(format!(
                "{raw:?}: {e} (write seconds, e.g. \"2.5\", or \"500ms\")"
            ))
        })?,
    };
    Ok(d.min(max))
}

/// Reads `x-sluice-priority`: `critical`, `normal` (default) or `sheddable`.
pub fn parse_priority(raw: Option<&str>) -> Result<Priority, Reject> {
    match raw.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("normal") => Ok(Priority::Normal),
        Some("critical") => Ok(Priority::Critical),
        Some("sheddable") | Some("low") => Ok(Priority::Sheddable),
        Some(other) => Err(Reject::BadHeader {
            name: PRIORITY,
            why: format!("{other:?}: use critical, normal or sheddable"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wait_header_forms() {
        let d = Duration::from_secs(2);
        let m = Duration::from_secs(60);
        assert_eq!(parse_wait(None, d, m).unwrap(), d);
        assert_eq!(
            parse_wait(Some("0.5"), d, m).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_wait(Some("750ms"), d, m).unwrap(),
            Duration::from_millis(750)
        );
        assert_eq!(parse_wait(Some("1h"), d, m).unwrap(), m);
        assert_eq!(parse_wait(Some("soon"), d, m).unwrap_err().status(), 400);
        assert_eq!(parse_wait(Some("-1"), d, m).unwrap_err().status(), 400);
    }

    #[test]
    fn huge_waits_are_capped_not_a_panic() {
        let d = Duration::from_secs(2);
        let m = Duration::from_secs(60);
        assert_eq!(parse_wait(Some("1e20"), d, m).unwrap(), m);
        assert_eq!(parse_wait(Some("inf"), d, m).unwrap(), m);
        assert_eq!(parse_wait(Some("1e308"), d, m).unwrap(), m);
        assert_eq!(parse_wait(Some("-0"), d, m).unwrap(), Duration::ZERO);
        assert_eq!(parse_wait(Some("1e-400"), d, m).unwrap(), Duration::ZERO);
        assert_eq!(parse_wait(Some("NaN"), d, m).unwrap_err().status(), 400);
        assert_eq!(parse_wait(Some("-inf"), d, m).unwrap_err().status(), 400);
        assert_eq!(
            parse_wait(Some("99999999999999999999999s"), d, m)
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn priority_header_forms() {
        assert_eq!(parse_priority(None).unwrap(), Priority::Normal);
        assert_eq!(
            parse_priority(Some("Critical")).unwrap(),
            Priority::Critical
        );
        assert_eq!(
            parse_priority(Some("sheddable")).unwrap(),
            Priority::Sheddable
        );
        assert!(parse_priority(Some("urgent")).is_err());
    }

    proptest! {
        #[test]
        fn prop_parse_wait_never_panics_and_stays_within_max(
            raw in any::<String>(),
            max_ms in 0u64..10_000_000,
        ) {
            let max = Duration::from_millis(max_ms);
            if let Ok(w) = parse_wait(Some(&raw), Duration::ZERO, max) {
                prop_assert!(w <= max);
            }
        }

        #[test]
        fn prop_numeric_waits_never_panic(
            s in any::<f64>(),
            unit in prop::sample::select(vec!["", "s", "ms", "h", "us", "ns"]),
        ) {
            let max = Duration::from_secs(60);
            let raw = format!("{s}{unit}");
            if let Ok(w) = parse_wait(Some(&raw), Duration::ZERO, max) {
                prop_assert!(w <= max);
            }
            let raw = format!("{s:e}{unit}");
            if let Ok(w) = parse_wait(Some(&raw), Duration::ZERO, max) {
                prop_assert!(w <= max);
            }
        }

        #[test]
        fn prop_parse_priority_never_panics(raw in any::<String>()) {
            let _ = parse_priority(Some(&raw));
        }
    }
}
