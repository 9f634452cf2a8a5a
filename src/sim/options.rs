//! Simulator settings: what kind of llama-server to pretend to be.

use std::time::Duration;

use super::fault::FaultSet;

/// KV cache bytes per token of the tiny captured model: K and V, F16,
/// 6 layers × 768 = 2 × 2 × 6 × 768.
pub const TINY_KV_BYTES_PER_TOKEN: u32 = 18_432;

/// Which llama-server build to imitate: metric series, HELP texts, JSON
/// shapes and the fate of abandoned deferred requests differ between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Dialect {
    /// llama.cpp b4748 (2025-02): `kv_cache_*` gauges, `n_busy_slots_per_decode`
    /// declared a counter, no `role` delta in chat streams, `usage` always in
    /// the final chat chunk.
    B4748,
    /// llama.cpp 2026-10 (commit 0c1e570): cached-prompt and speculative
    /// counters, no `kv_cache_*`, `usage` only with `include_usage`.
    #[default]
    Recent,
}

impl Dialect {
    /// `build_info` / `system_fingerprint` of the captured builds.
    pub fn build_info(self) -> &'static str {
        match self {
            Dialect::B4748 => "b4748-c392e5094",
            Dialect::Recent => "b1-0c1e570",
        }
    }
}

/// How aggregate generation throughput grows with the number of busy slots.
///
/// Batching several sequences in one decode is cheaper per token than
/// decoding them apart, but not free: the aggregate grows sub-linearly.
#[derive(Clone, Debug, PartialEq)]
pub enum ThroughputCurve {
    /// aggregate(n) = gen_tps × n^exponent. The default exponent,
    /// log2(190 / 120) ≈ 0.663, reproduces the measured figures in
    /// shared/llama-server/README.md: one request ~120 tok/s, two busy slots
    /// together ~190 tok/s.
    Power { exponent: f64 },
    /// aggregate(n) = gen_tps × factors[n - 1]; beyond the table the last
    /// factor holds (the server is saturated).
    Table(Vec<f64>),
}

impl Default for ThroughputCurve {
    fn default() -> Self {
        ThroughputCurve::Power {
            exponent: (190.0f64 / 120.0).log2(),
        }
    }
}

impl ThroughputCurve {
    /// Aggregate throughput multiplier with `busy` slots busy (≥ 1).
    pub fn factor(&self, busy: usize) -> f64 {
        let n = busy.max(1);
        let f = match self {
            ThroughputCurve::Power { exponent } => (n as f64).powf(*exponent),
            ThroughputCurve::Table(t) => match t.get(n - 1).or(t.last()) {
                Some(f) => *f,
                None => 1.0,
            },
        };
        if f.is_finite() && f > 0.0 {
            f
        } else {
            1.0
        }
    }
}

/// Generation length for requests that do not set `n_predict`/`max_tokens`:
/// uniform in `min..=max`, drawn from the seeded generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenLength {
    pub min: u32,
    pub max: u32,
}

impl Default for GenLength {
    fn default() -> Self {
        GenLength { min: 32, max: 256 }
    }
}

/// Everything a simulated server is. `Default` is a realistic 2026-10 server
/// with 4 slots and the tiny model's measured speed.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Parallel slots (`-np`).
    pub slots: usize,
    /// Prompt processing rate of one request, tokens/s.
    pub prompt_tps: f64,
    /// Generation rate of a single busy slot, tokens/s.
    pub gen_tps: f64,
    /// Aggregate throughput as a function of busy slots.
    pub curve: ThroughputCurve,
    /// Time during which every endpoint answers 503 "Loading model".
    pub load_time: Duration,
    /// Seed of every random choice (lengths, text, error faults, ids).
    pub seed: u64,
    pub dialect: Dialect,
    /// b4748 behaviour: a deferred request whose client went away stays
    /// queued and later runs with no reader. When false (2026-10), it is
    /// dropped after `abandon_delay`.
    pub keep_abandoned_deferred: bool,
    /// How long the newer server takes to notice a deferred request's client
    /// is gone (measured: within 1-2 s).
    pub abandon_delay: Duration,
    /// Length of requests that do not ask for one.
    pub gen_length: GenLength,
    /// Context size per slot (`n_ctx` in `/props` and `/slots`).
    pub n_ctx: u32,
    /// Model name reported in responses and `/v1/models`.
    pub model: String,
    /// Granularity of streamed tokens at high rates: tokens that fall due
    /// within one tick are sent together. Finish times stay exact.
    pub token_tick: Duration,
    /// Faults active from the start.
    pub faults: FaultSet,
    /// `--cache-ram`: host-memory prompt cache in MiB (-1 no limit, 0 off;
    /// default 8192 as in the 2026-10 build; b4748 has none).
    pub cache_ram_mib: i64,
    /// KV cache bytes of one token, turning `cache_ram_mib` into tokens.
    pub kv_bytes_per_token: u32,
    /// `--cache-prompt` / `--no-cache-prompt`: whether a request without
    /// `cache_prompt` reuses its slot's cached prefix.
    pub cache_prompt: bool,
    /// `--slot-prompt-similarity` (default 0.1).
    pub slot_prompt_similarity: f32,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            slots: 4,
            prompt_tps: 1000.0,
            gen_tps: 120.0,
            curve: ThroughputCurve::default(),
            load_time: Duration::ZERO,
            seed: 0,
            dialect: Dialect::Recent,
            keep_abandoned_deferred: false,
            abandon_delay: Duration::from_secs(1),
            gen_length: GenLength::default(),
            n_ctx: 2048,
            model: "models/tiny.gguf".to_string(),
            token_tick: Duration::from_millis(5),
            faults: FaultSet::default(),
            cache_ram_mib: 8192,
            kv_bytes_per_token: TINY_KV_BYTES_PER_TOKEN,
            cache_prompt: true,
            slot_prompt_similarity: 0.1,
        }
    }
}

impl SimOptions {
    /// The host-memory prompt cache in tokens: `cache_ram_mib` over the KV
    /// bytes per token; 0 when off (and in b4748, which has none),
    /// `u64::MAX` without limit.
    pub fn host_cache_tokens(&self) -> u64 {
        match (self.dialect, self.cache_ram_mib) {
            (Dialect::B4748, _) | (_, 0) => 0,
            (_, m) if m < 0 => u64::MAX,
            (_, m) => ((m as u64) << 20) / u64::from(self.kv_bytes_per_token.max(1)),
        }
    }

    /// Checks the values that would make the model meaningless.
    pub fn validate(&self) -> Result<(), String> {
        if self.slots == 0 {
            return Err("slots = 0 is not valid: must be at least 1".into());
        }
        for (name, v) in [("prompt_tps", self.prompt_tps), ("gen_tps", self.gen_tps)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} = {v} is not valid: must be > 0"));
            }
        }
        if self.gen_length.min > self.gen_length.max {
            return Err(format!(
                "gen_length = {}..{} is not valid: min must not exceed max",
                self.gen_length.min, self.gen_length.max
            ));
        }
        let s = self.slot_prompt_similarity;
        if !(s.is_finite() && (0.0..=1.0).contains(&s)) {
            return Err(format!(
                "slot_prompt_similarity = {s} is not valid: must be within 0..=1"
            ));
        }
        if self.cache_ram_mib < -1 {
            return Err(format!(
                "cache_ram_mib = {} is not valid: must be -1 (no limit), 0 (off) or more",
                self.cache_ram_mib
            ));
        }
        if self.n_ctx < 8 {
            return Err(format!(
                "n_ctx = {} is not valid: must be at least 8",
                self.n_ctx
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_curve_matches_measured_figures() {
        let c = ThroughputCurve::default();
        assert!((120.0 * c.factor(1) - 120.0).abs() < 1e-9);
        assert!((120.0 * c.factor(2) - 190.0).abs() < 1e-6);
        assert!(c.factor(4) > c.factor(2));
    }

    #[test]
    fn table_curve_holds_last_value() {
        let c = ThroughputCurve::Table(vec![1.0, 1.5]);
        assert_eq!(c.factor(3), 1.5);
        assert_eq!(ThroughputCurve::Table(vec![]).factor(2), 1.0);
    }
}
