//! `sluice sim`: one simulated llama-server as a process.

use std::net::SocketAddr;
use std::time::Duration;

use super::fault::{FaultSet, MetricsFault};
use super::handle::spawn_at;
use super::options::{Dialect, GenLength, SimOptions, ThroughputCurve};
use super::router::{spawn_router_at, RouterOptions};

/// Command-line options of `sluice sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub listen: SocketAddr,
    /// Serve this many simulated servers from one process, on consecutive
    /// ports from `--listen`'s (port 0: each on a free port), seeds
    /// `seed`, `seed + 1`, ...; each listen address is printed on a line.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub count: u16,
    /// Parallel slots (llama-server `-np`).
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// Prompt processing rate of one request, tokens/s.
    #[arg(long, default_value_t = 1000.0)]
    pub prompt_tps: f64,
    /// Generation rate of one busy slot, tokens/s.
    #[arg(long, default_value_t = 120.0)]
    pub gen_tps: f64,
    /// Aggregate throughput grows as busy^EXP (default: 190/120 for 2 slots).
    #[arg(long)]
    pub curve_exponent: Option<f64>,
    /// Time answering 503 "Loading model" after start (e.g. `5s`).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub load_time: Duration,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which build to imitate: `recent` (2026-10) or `b4748`.
    #[arg(long, default_value = "recent", value_parser = parse_dialect)]
    pub dialect: Dialect,
    /// Keep deferred requests whose client went away and run them later
    /// (b4748 behaviour). Default: drop them after about a second.
    #[arg(long)]
    pub keep_abandoned_deferred: bool,
    /// Length of requests that set no n_predict: `N` or `MIN..MAX`.
    #[arg(long, default_value = "32..256", value_parser = parse_gen_len)]
    pub gen_len: GenLength,
    /// Context size per slot.
    #[arg(long, default_value_t = 2048)]
    pub n_ctx: u32,
    #[arg(long, default_value = "models/tiny.gguf")]
    pub model: String,
    /// Host-memory prompt cache in MiB, as llama-server's `--cache-ram`
    /// (-1 no limit, 0 off; 2026-10 only).
    #[arg(long, default_value_t = 8192, allow_negative_numbers = true)]
    pub cache_ram: i64,
    /// Requests reuse a slot's cached prefix only with `"cache_prompt": true`.
    #[arg(long)]
    pub no_cache_prompt: bool,
    /// Least shared-prefix share to pick a slot by similarity (0 = LRU only).
    #[arg(long, default_value_t = 0.1)]
    pub slot_prompt_similarity: f32,
    /// Fault: read requests, never answer.
    #[arg(long)]
    pub fault_hang: bool,
    /// Fault: everything takes FACTOR times longer.
    #[arg(long, value_name = "FACTOR")]
    pub fault_slow: Option<f64>,
    /// Fault: answer this fraction of inference requests with a 500.
    #[arg(long, value_name = "FRACTION")]
    pub fault_error_rate: Option<f64>,
    /// Fault: close the connection after N generated tokens.
    #[arg(long, value_name = "N")]
    pub fault_reset_after: Option<u32>,
    /// Fault: `/metrics` answers `malformed`, `empty` or `disabled` (501).
    #[arg(long, value_parser = parse_metrics_fault)]
    pub fault_metrics: Option<MetricsFault>,
    /// Fault: `/metrics` answers after this delay (e.g. `2s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub fault_metrics_delay: Option<Duration>,
    /// Router mode (llama-server `--models-dir`): list these models, load
    /// each on demand into a server with the options above.
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub router_models: Vec<String>,
    /// Router mode: most models loaded at once (`--models-max`; 0 = no limit).
    #[arg(long, default_value_t = 4)]
    pub models_max: usize,
    /// Router mode: how long loading one model takes.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub model_load_time: Duration,
    /// Router mode: load models only through `POST /models/load`.
    #[arg(long)]
    pub no_models_autoload: bool,
}

fn parse_dialect(s: &str) -> Result<Dialect, String> {
    match s {
        "recent" | "2026-10" => Ok(Dialect::Recent),
        "b4748" => Ok(Dialect::B4748),
        _ => Err(format!(
            "dialect = {s:?} is not valid: use `recent` or `b4748`"
        )),
    }
}

fn parse_gen_len(s: &str) -> Result<GenLength, String> {
    let bad = || format!("gen-len = {s:?} is not valid: use N or MIN..MAX");
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    let min = a.trim().parse().map_err(|_| bad())?;
    let max = b.trim().parse().map_err(|_| bad())?;
    if min > max {
        return Err(bad());
    }
    Ok(GenLength { min, max })
}

fn parse_metrics_fault(s: &str) -> Result<MetricsFault, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!("fault-metrics = {s:?} is not valid: use malformed, empty or disabled")
    })
}

impl SimArgs {
    /// The options these flags describe.
    pub fn options(&self) -> SimOptions {
        let defaults = SimOptions::default();
        SimOptions {
            slots: self.slots,
            prompt_tps: self.prompt_tps,
            gen_tps: self.gen_tps,
            curve: self
                .curve_exponent
                .map_or(ThroughputCurve::default(), |exponent| {
                    ThroughputCurve::Power { exponent }
                }),
            load_time: self.load_time,
            seed: self.seed,
            dialect: self.dialect,
            keep_abandoned_deferred: self.keep_abandoned_deferred,
            gen_length: self.gen_len,
            n_ctx: self.n_ctx,
            model: self.model.clone(),
            cache_ram_mib: self.cache_ram,
            cache_prompt: !self.no_cache_prompt,
            slot_prompt_similarity: self.slot_prompt_similarity,
            faults: FaultSet {
                hang: self.fault_hang,
                slow: self.fault_slow,
                error_rate: self.fault_error_rate,
                error_status: None,
                reset_after_tokens: self.fault_reset_after,
                metrics: self.fault_metrics.unwrap_or_default(),
                metrics_delay_ms: self.fault_metrics_delay.map(|d| d.as_millis() as u64),
            },
            ..defaults
        }
    }
}

/// Runs one simulated server until Ctrl-C or SIGTERM. Builds its own
/// multi-thread runtime; prints the listen address on stdout.
pub fn run_cli(args: SimArgs) -> Result<(), Box<dyn std::error::Error>> {
    let opts = args.options();
    opts.validate()?;
    opts.faults.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if !args.router_models.is_empty() {
            let router = spawn_router_at(
                args.listen,
                RouterOptions {
                    models: args.router_models.clone(),
                    models_max: args.models_max,
                    load_time: args.model_load_time,
                    autoload: !args.no_models_autoload,
                    instance: opts,
                },
            )
            .await?;
            println!("sluice sim (router mode) listening on {}", router.url());
            wait_for_signal().await;
            router.shutdown();
            return Ok(());
        }
        let mut sims = Vec::with_capacity(usize::from(args.count));
        for i in 0..args.count {
            let mut addr = args.listen;
            if addr.port() != 0 {
                let port = addr.port().checked_add(i).ok_or_else(|| {
                    format!(
                        "count = {} is not valid from port {}: the ports run past 65535",
                        args.count,
                        args.listen.port()
                    )
                })?;
                addr.set_port(port);
            }
            let mut o = opts.clone();
            o.seed = opts.seed.wrapping_add(u64::from(i));
            let sim = spawn_at(addr, o).await?;
            println!("sluice sim listening on {}", sim.url());
            sims.push(sim);
        }
        wait_for_signal().await;
        for sim in &sims {
            sim.shutdown();
        }
        Ok(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn flags_map_to_options() {
        let cli = Cli::try_parse_from([
            "sim",
            "--slots",
            "2",
            "--gen-tps",
            "2000",
            "--dialect",
            "b4748",
            "--gen-len",
            "10..20",
            "--load-time",
            "2s",
            "--fault-metrics",
            "disabled",
            "--fault-slow",
            "3",
            "--cache-ram",
            "-1",
            "--no-cache-prompt",
        ])
        .unwrap();
        let c = cli.sim.options();
        assert_eq!((c.cache_ram_mib, c.cache_prompt), (-1, false));
        let o = cli.sim.options();
        assert_eq!(o.slots, 2);
        assert_eq!(o.dialect, Dialect::B4748);
        assert_eq!(o.gen_length, GenLength { min: 10, max: 20 });
        assert_eq!(o.load_time, Duration::from_secs(2));
        assert_eq!(o.faults.metrics, MetricsFault::Disabled);
        assert_eq!(o.faults.slow, Some(3.0));
        assert!(cli.sim.router_models.is_empty());
        let cli =
            Cli::try_parse_from(["sim", "--router-models", "a,b", "--models-max", "1"]).unwrap();
        assert_eq!(cli.sim.router_models, ["a", "b"]);
        assert_eq!(cli.sim.models_max, 1);
    }

    #[test]
    fn bad_flags_are_rejected() {
        assert!(Cli::try_parse_from(["sim", "--dialect", "x"]).is_err());
        assert!(Cli::try_parse_from(["sim", "--gen-len", "9..3"]).is_err());
        assert!(Cli::try_parse_from(["sim", "--fault-metrics", "odd"]).is_err());
    }
}
