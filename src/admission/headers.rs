//! The request headers admission reads: `x-sluice-deadline` (the wait
//! budget) and `x-sluice-priority`, and what the OpenAI SDKs say about
//! themselves: their timeout (Python `x-stainless-read-timeout`, seconds, a
//! float; JS `x-stainless-timeout`, whole seconds) and which attempt this is
//! (`x-stainless-retry-count`; header names are case-insensitive, so the JS
//! spelling `X-Stainless-Retry-Count` is the same header). Any string gives
//! a value or a `400 bad_header`; nothing a client sends can panic here.
//!
//! ## The wait budget ([`wait_budget`])
//!
//! `x-sluice-deadline` when present (it wins over the SDK's timeout);
//! otherwise the client's declared timeout minus the time the request
//! itself will take (the fleet's typical request duration), so that a
//! request admitted at the end of its wait still finishes before the client
//! gives up, but not below the default (nor above the timeout): a client
//! that declares less patience than a typical request takes is served like
//! one that says nothing, never refused for saying it; otherwise the
//! gateway's default. Always at most
//! `queue.max_wait_cap`. A patient client queues longer, but not without
//! bound: under sustained overload the queue's standing-queue rule (LIFO
//! and `queue.overload_max_wait`, see `admission::queue`) cuts every wait.

use std::time::Duration;

use super::queue::Priority;
use super::retry_after::Retries;
use crate::reject::Reject;

/// The client's wait budget (see [`parse_wait`]).
pub const DEADLINE: &str = "x-sluice-deadline";
/// The client's priority (see [`parse_priority`]).
pub const PRIORITY: &str = "x-sluice-priority";
/// The Python SDK's read timeout, seconds (`"30.0"`, `"600"`).
pub const PY_TIMEOUT: &str = "x-stainless-read-timeout";
/// The JS SDK's timeout, whole seconds (`Math.trunc(ms / 1000)`).
pub const JS_TIMEOUT: &str = "x-stainless-timeout";
/// Retries taken before this attempt (both SDKs).
pub const RETRY_COUNT: &str = "x-stainless-retry-count";

/// Timeouts above this are read as this (a day: no wait budget or hint is
/// longer, and `Duration` arithmetic stays far from overflow).
const MAX_PATIENCE: Duration = Duration::from_secs(86_400);

/// What a client says about its own timeout and attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientHeaders {
    /// `x-stainless-read-timeout`, else `x-stainless-timeout`.
    pub patience: Option<Duration>,
    /// `x-stainless-retry-count`.
    pub retries_taken: Option<u32>,
}

impl ClientHeaders {
    /// As the retry decision reads it.
    pub fn retries(self) -> Retries {
        Retries {
            taken: self.retries_taken,
            patience: self.patience,
        }
    }
}

/// Reads the SDK headers: `py` = `x-stainless-read-timeout`, `js` =
/// `x-stainless-timeout`, `count` = `x-stainless-retry-count`. A timeout of
/// 0 means none (the JS SDK truncates a sub-second timeout to 0).
pub fn parse_client(
    py: Option<&str>,
    js: Option<&str>,
    count: Option<&str>,
) -> Result<ClientHeaders, Reject> {
    let patience = match (py, js) {
        (Some(raw), _) => parse_timeout(PY_TIMEOUT, raw)?,
        (None, Some(raw)) => parse_timeout(JS_TIMEOUT, raw)?,
        (None, None) => None,
    };
    let retries_taken = match count {
        None => None,
        Some(raw) => {
            let raw = raw.trim();
            Some(raw.parse::<u32>().map_err(|_| Reject::BadHeader {
                name: RETRY_COUNT,
                why: format!("{raw:?} is not a whole number of retries"),
            })?)
        }
    };
    Ok(ClientHeaders {
        patience,
        retries_taken,
    })
}

/// Seconds as a non-negative finite number; 0 = no timeout.
fn parse_timeout(name: &'static str, raw: &str) -> Result<Option<Duration>, Reject> {
    let raw = raw.trim();
    let bad = |why: &str| Reject::BadHeader {
        name,
        why: format!("{raw:?} {why}"),
    };
    match raw.parse::<f64>() {
        Ok(s) if !s.is_finite() => Err(bad("is not a finite number of seconds")),
        Ok(s) if s < 0.0 => Err(bad("must not be negative")),
        Ok(0.0) => Ok(None),
        Ok(s) => Ok(Some(
            Duration::try_from_secs_f64(s)
                .unwrap_or(MAX_PATIENCE)
                .min(MAX_PATIENCE),
        )),
        Err(_) => Err(bad("is not a number of seconds")),
    }
}

/// The wait budget of a request (see the module docs): `deadline` is the
/// raw `x-sluice-deadline`, `patience` the client's declared timeout,
/// `service` the time the request itself will likely take, `default` the
/// budget of a request that says nothing, `max` the cap.
pub fn wait_budget(
    deadline: Option<&str>,
    patience: Option<Duration>,
    service: Duration,
    default: Duration,
    max: Duration,
) -> Result<Duration, Reject> {
    match (deadline, patience) {
        (Some(_), _) | (None, None) => parse_wait(deadline, default, max),
        (None, Some(p)) => Ok(p.saturating_sub(service).max(default.min(p)).min(max)),
    }
}

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
    fn sdk_headers() {
        let c = parse_client(Some("30.0"), None, Some("1")).unwrap();
        assert_eq!(c.patience, Some(Duration::from_secs(30)));
        assert_eq!(c.retries_taken, Some(1));
        // JS: whole seconds; Python wins when both are sent.
        let c = parse_client(None, Some("45"), Some(" 0 ")).unwrap();
        assert_eq!(c.patience, Some(Duration::from_secs(45)));
        assert_eq!(c.retries_taken, Some(0));
        let c = parse_client(Some("2.5"), Some("45"), None).unwrap();
        assert_eq!(c.patience, Some(Duration::from_millis(2500)));
        assert_eq!(
            parse_client(None, None, None).unwrap(),
            ClientHeaders::default()
        );
        // 0: no timeout (JS truncates 0.5 s to 0).
        assert_eq!(parse_client(None, Some("0"), None).unwrap().patience, None);
        assert_eq!(
            parse_client(Some("1e30"), None, None).unwrap().patience,
            Some(MAX_PATIENCE)
        );
        for (py, js, n) in [
            (Some("soon"), None, None),
            (Some("-1"), None, None),
            (Some("NaN"), None, None),
            (Some("inf"), None, None),
            (None, Some("60s"), None),
            (None, None, Some("-1")),
            (None, None, Some("1.5")),
            (None, None, Some("99999999999")),
        ] {
            let e = parse_client(py, js, n).unwrap_err();
            assert_eq!(e.status(), 400, "{py:?} {js:?} {n:?}");
            assert_eq!(e.reason(), "bad_header");
        }
        match parse_client(None, Some("x"), None).unwrap_err() {
            Reject::BadHeader { name, .. } => assert_eq!(name, JS_TIMEOUT),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn budget_is_the_declared_patience_minus_service_capped() {
        let s = Duration::from_secs;
        let (service, default, max) = (s(2), s(1), s(60));
        let b = |d, p| wait_budget(d, p, service, default, max);
        assert_eq!(b(None, None).unwrap(), default);
        assert_eq!(b(None, Some(s(30))).unwrap(), s(28));
        assert_eq!(b(None, Some(s(600))).unwrap(), max);
        // Less patience than the request takes: the default, within the
        // timeout.
        assert_eq!(b(None, Some(s(2))).unwrap(), default);
        assert_eq!(b(None, Some(s(1))).unwrap(), default);
        let half = Duration::from_millis(500);
        assert_eq!(b(None, Some(half)).unwrap(), half);
        assert_eq!(
            wait_budget(None, Some(s(3)), s(10), s(5), max).unwrap(),
            s(3)
        );
        // x-sluice-deadline wins, and is still checked.
        assert_eq!(b(Some("5"), Some(s(30))).unwrap(), s(5));
        assert_eq!(b(Some("soon"), Some(s(30))).unwrap_err().status(), 400);
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

        #[test]
        fn prop_sdk_headers_never_panic(
            raw in any::<String>(),
            num in any::<f64>(),
            service_ms in any::<u64>(),
        ) {
            let n = num.to_string();
            for (py, js, c) in [(Some(raw.as_str()), None, None), (None, Some(raw.as_str()), Some(raw.as_str())), (Some(n.as_str()), Some(n.as_str()), Some(n.as_str()))] {
                if let Ok(h) = parse_client(py, js, c) {
                    prop_assert!(h.patience.is_none_or(|p| p <= MAX_PATIENCE));
                    let max = Duration::from_secs(60);
                    let w = wait_budget(None, h.patience, Duration::from_millis(service_ms), Duration::ZERO, max).unwrap();
                    prop_assert!(w <= max);
                }
            }
        }
    }
}
