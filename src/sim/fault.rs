//! Injected faults: the ways a llama-server misbehaves that the gateway must
//! survive. Set at start (flags), at run time through the in-process
//! handle, or with `POST /sim/fault` (JSON, same field names as [`FaultSet`];
//! `POST /sim/clear` clears them all).
//!
//! Refusing connections is not a field: it closes the listener and every
//! open connection, like a dead process (see `SimHandle::stop_listening`,
//! or `{"refuse_for_ms": N}` on the control endpoint).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What `/metrics` does instead of answering normally.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricsFault {
    #[default]
    Ok,
    /// 200 with text the Prometheus format cannot parse.
    Malformed,
    /// 200 with an empty body.
    Empty,
    /// 501, as a server started without `--metrics`.
    Disabled,
}

/// The faults active on one simulated server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSet {
    /// Read requests, never answer (except `/sim/*`).
    pub hang: bool,
    /// Everything takes `slow` times longer (1.0 = normal).
    pub slow: Option<f64>,
    /// Fraction (0..=1) of inference requests answered with `error_status`.
    pub error_rate: Option<f64>,
    /// Status for `error_rate` (default 500).
    pub error_status: Option<u16>,
    /// Close the connection after this many generated tokens.
    pub reset_after_tokens: Option<u32>,
    pub metrics: MetricsFault,
    /// Delay before `/metrics` answers, in milliseconds.
    pub metrics_delay_ms: Option<u64>,
}

/// One fault, for [`SimHandle::set_fault`](super::SimHandle::set_fault).
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    Hang,
    Slow(f64),
    ErrorRate { fraction: f64, status: u16 },
    ResetAfterTokens(u32),
    Metrics(MetricsFault),
    MetricsDelay(Duration),
}

// === impl FaultSet ===

impl FaultSet {
    /// Adds one fault to the set.
    pub fn apply(&mut self, fault: Fault) {
        match fault {
            Fault::Hang => self.hang = true,
            Fault::Slow(f) => self.slow = Some(f),
            Fault::ErrorRate { fraction, status } => {
                self.error_rate = Some(fraction);
                self.error_status = Some(status);
            }
            Fault::ResetAfterTokens(n) => self.reset_after_tokens = Some(n),
            Fault::Metrics(m) => self.metrics = m,
            Fault::MetricsDelay(d) => self.metrics_delay_ms = Some(d.as_millis() as u64),
        }
    }

    /// Overlays the fields set in a control-endpoint JSON body onto `self`.
    pub fn merge_json(&mut self, v: &serde_json::Value) -> Result<(), String> {
        let obj = v.as_object().ok_or("fault body must be a JSON object")?;
        let mut patch = serde_json::to_value(&*self).map_err(|e| e.to_string())?;
        if let Some(p) = patch.as_object_mut() {
            for (k, val) in obj {
                if k == "refuse_for_ms" || k == "loading" {
                    continue; // handled by the server, not the set
                }
                p.insert(k.clone(), val.clone());
            }
        }
        let next: FaultSet = serde_json::from_value(patch).map_err(|e| e.to_string())?;
        next.validate()?;
        *self = next;
        Ok(())
    }

    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = self.slow {
            if !(s.is_finite() && s > 0.0) {
                return Err(format!("slow = {s} is not valid: must be > 0"));
            }
        }
        if let Some(r) = self.error_rate {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("error_rate = {r} is not valid: must be in 0..=1"));
            }
        }
        if let Some(s) = self.error_status {
            if !(500..=599).contains(&s) {
                return Err(format!("error_status = {s} is not valid: must be a 5xx"));
            }
        }
        Ok(())
    }

    /// Speed multiplier for the model (inverse of `slow`).
    pub fn speed(&self) -> f64 {
        match self.slow {
            Some(s) if s.is_finite() && s > 0.0 => 1.0 / s,
            _ => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_json_overlays_fields() {
        let mut f = FaultSet::default();
        f.merge_json(&serde_json::json!({"slow": 3.0, "metrics": "malformed"}))
            .unwrap();
        f.merge_json(&serde_json::json!({"error_rate": 0.5}))
            .unwrap();
        assert_eq!(f.slow, Some(3.0));
        assert_eq!(f.metrics, MetricsFault::Malformed);
        assert_eq!(f.error_rate, Some(0.5));
        assert!((f.speed() - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn merge_json_rejects_bad_values_and_keeps_state() {
        let mut f = FaultSet::default();
        assert!(f.merge_json(&serde_json::json!({"slow": -1.0})).is_err());
        assert!(f.merge_json(&serde_json::json!({"nope": 1})).is_err());
        assert!(f.merge_json(&serde_json::json!({"hang": "yes"})).is_err());
        assert!(f.merge_json(&serde_json::json!([1])).is_err());
        assert_eq!(f, FaultSet::default());
    }
}
