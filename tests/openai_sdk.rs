//! The real OpenAI Python client (the `openai` package, default settings:
//! `max_retries = 2`, here a 30 s timeout) through the gateway in front of a
//! simulated fleet of 2 × 4 slots, in a transient overload: 1.5× capacity
//! for 6 s, then 0.5× for 6 s, a backlog the fleet can clear in the second
//! half (issue 15; `loadtest/openai-overload` runs the 20 s + 20 s version
//! side by side with HAProxy).
//!
//! The driver is `tests/real/openai_overload.py`; `SLUICE_OPENAI_PYTHON`
//! names a python with the package (`.ci/real.sh` sets it, as for the
//! real-llama tier). Without it the test prints `NOT RUN` and returns (cargo
//! counts it as passed, so the line says so); under `CI` it fails.
//!
//! ```sh
//! SLUICE_OPENAI_PYTHON=~/.cache/sluice/venv-openai/bin/python \
//!     cargo test --test openai_sdk -- --test-threads=1
//! ```

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use sluice::sim::{SimOptions, ThroughputCurve};
use support::{fast, Harness};

fn is_ci() -> bool {
    matches!(std::env::var("CI"), Ok(v) if !v.is_empty() && v != "false" && v != "0")
}

fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The python to run, or `None` (said; under CI a failure).
fn python(test: &str) -> Option<String> {
    match std::env::var("SLUICE_OPENAI_PYTHON") {
        Ok(p) if !p.is_empty() => {
            assert!(
                Path::new(&p).exists(),
                "SLUICE_OPENAI_PYTHON={p} does not exist"
            );
            Some(p)
        }
        _ => {
            assert!(
                !is_ci(),
                "openai_sdk::{test}: SLUICE_OPENAI_PYTHON is not set. CI is set, so \
                 this is a failure, not a skip: .ci/real.sh exports it"
            );
            say(&format!(
                "openai_sdk::{test}: NOT RUN (cargo counts it as passed): \
                 SLUICE_OPENAI_PYTHON (a python with the `openai` package) is not set"
            ));
            None
        }
    }
}

/// One simulated backend: 4 slots, each 40 tokens/s whatever the others
/// do (a linear curve, so capacity is plain arithmetic): a 20-token answer
/// takes about 0.5 s, and the fleet of two serves about 16 calls a second.
fn backend(seed: u64) -> SimOptions {
    SimOptions {
        gen_tps: 40.0,
        curve: ThroughputCurve::Power { exponent: 1.0 },
        seed,
        ..fast(4)
    }
}

/// Calls per second the fleet serves at 20 tokens a call.
const CAPACITY: f64 = 16.0;

/// Runs the driver through a fresh gateway in front of the fleet; the
/// summary JSON, after the invariants every run must keep: every call
/// ended, the SDK said what it is, nothing but service or a retryable
/// refusal came back, and every refusal said when to come back in both
/// units.
fn run(python: &str, phases: &[(f64, u32)], timeout: &str) -> Value {
    let h = Harness::start(vec![backend(1), backend(2)], "", &[]);
    h.wait_all_eligible();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real/openai_overload.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .args(["--base-url", &format!("{}/v1", h.gw().proxy_url())])
        .args([
            "--timeout",
            timeout,
            "--max-tokens",
            "20",
            "--unloaded",
            "5",
        ]);
    for (x, secs) in phases {
        cmd.args(["--phase", &format!("{}:{secs}", CAPACITY * x)]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout.lines().last().unwrap_or("");
    let v: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("no JSON summary ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    say(&format!("openai_sdk: openai_overload.py: {line}"));
    assert!(
        out.status.success() && v["ok"] == true,
        "not every call ended ({}): {v:#}\nstderr:\n{stderr}",
        out.status
    );
    let want: u64 = phases
        .iter()
        .map(|(x, s)| (CAPACITY * x) as u64 * u64::from(*s))
        .sum();
    assert_eq!(v["calls"].as_u64(), Some(want), "{v:#}");
    let sent = v["sent_timeouts"].as_array().unwrap();
    assert!(
        !sent.is_empty(),
        "the SDK sent no x-stainless-read-timeout: {v:#}"
    );
    assert!(v["sent_counts"].as_array().unwrap().contains(&"0".into()));
    assert_eq!(v["other_statuses"], serde_json::json!([]), "{v:#}");
    for (status, _) in v["failures"].as_object().unwrap() {
        assert!(
            status == "503" || status == "429",
            "a call failed with {status}: {v:#}"
        );
    }
    let refusals = v["refusals"].as_u64().unwrap();
    assert_eq!(
        v["refusals_with_retry_after"].as_u64(),
        Some(refusals),
        "{v:#}"
    );
    assert_eq!(v["refusals_with_ms"].as_u64(), Some(refusals), "{v:#}");
    v
}

/// Named like the real-llama tier's module so that the plain `cargo test
/// -- --skip real_server::` leaves these to `.ci/real.sh`, which sets
/// `SLUICE_OPENAI_PYTHON`.
mod real_server {
    use super::*;

    #[test]
    fn the_real_sdk_is_served_through_a_transient_overload() {
        let test = "the_real_sdk_is_served_through_a_transient_overload";
        let Some(python) = python(test) else {
            return;
        };
        let v = run(&python, &[(1.5, 6), (0.5, 6)], "30");
        assert_eq!(v["sent_timeouts"], serde_json::json!(["30.0"]), "{v:#}");
        // The fleet can clear the backlog in the second half, so nearly every
        // call is served (the 20 s + 20 s benchmark's goal is at least
        // HAProxy's 92 %; this short run on a shared machine is held to 85 %),
        // and not by retrying everything (today's gateway: 1.64 attempts a
        // call; the goal: 1.2).
        let share = v["success_share"].as_f64().unwrap();
        assert!(
            share >= 0.85,
            "only {:.0} % of calls served: {v:#}",
            share * 100.0
        );
        let attempts = v["attempts_per_call"].as_f64().unwrap();
        assert!(attempts <= 1.5, "{attempts:.2} attempts per call: {v:#}");
    }

    #[test]
    fn impatient_sdk_clients_are_refused_with_hints_they_can_use() {
        let test = "impatient_sdk_clients_are_refused_with_hints_they_can_use";
        let Some(python) = python(test) else {
            return;
        };
        // A 2 s timeout leaves 1.5 s of wait: at 2x capacity for 4 s the queue
        // cannot hold everyone, so there are refusals, each with both hints
        // (checked in `run`), and the SDK never makes more than its 3 attempts.
        let v = run(&python, &[(2.0, 4), (0.25, 4)], "2");
        assert_eq!(v["sent_timeouts"], serde_json::json!(["2.0"]), "{v:#}");
        let refusals = v["refusals"].as_u64().unwrap();
        assert!(refusals > 0, "no refusals to check: {v:#}");
        let attempts = v["attempts_per_call"].as_f64().unwrap();
        assert!(attempts <= 3.0, "{attempts:.2} attempts per call: {v:#}");
        // Told when to come back, most calls are served in the end.
        let share = v["success_share"].as_f64().unwrap();
        assert!(
            share >= 0.5,
            "only {:.0} % of calls served: {v:#}",
            share * 100.0
        );
    }
}
