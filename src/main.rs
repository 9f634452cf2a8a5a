//! `sluice`: CLI → config → pingora server → run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pingora::server::configuration::Opt;
use pingora::server::RunArgs;
use sluice::config::Config;

/// jemalloc instead of glibc's malloc: the request path allocates and frees
/// many small buffers per request across threads, where glibc's arenas
/// spend ~10 % of the proxy's CPU (see loadtest/RESULTS.md, "Where the time
/// goes"). The binary only; the library and its tests keep the system one.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Admission-control gateway for fleets of llama.cpp llama-server processes.
#[derive(Parser)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a configuration file.
    Run {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Take over the listening sockets of a running instance (graceful upgrade:
        /// send SIGQUIT to the old process after starting this one).
        #[arg(short, long)]
        upgrade: bool,
        /// Detach and run in the background.
        #[arg(short, long)]
        daemon: bool,
        /// Log lines as JSON instead of text.
        #[arg(long)]
        json_logs: bool,
        /// Directory for the pid file and the upgrade socket [default:
        /// $RUNTIME_DIRECTORY (systemd RuntimeDirectory=), else /run/sluice].
        /// Created mode 0700; an existing one owned by another user or
        /// writable by group or others is refused.
        #[arg(long, value_name = "DIR")]
        run_dir: Option<PathBuf>,
    },
    /// Validate configuration files and exit (non-zero if any is invalid).
    Check {
        /// The files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Run a simulated llama-server (for tests, benchmarks and rehearsals).
    Sim(Box<sluice::sim::SimArgs>),
    /// Start a simulated fleet behind the gateway, overload it, and watch.
    Demo(sluice::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { files } => check(&files),
        Command::Run {
            config,
            upgrade,
            daemon,
            json_logs,
            run_dir,
        } => run(&config, upgrade, daemon, json_logs, run_dir),
        Command::Sim(args) => match sluice::sim::run_cli(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice sim: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo(args) => match sluice::demo::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for f in files {
        for w in Config::file_warnings(f) {
            eprintln!("{}: warning: {w}", f.display());
        }
        match Config::load(f) {
            Ok(c) if !cluster_answers(f, &c) => ok = false,
            Ok(c) => {
                let d = &c.discovery;
                for w in sluice::backend::discovery::task::check(&d.nameservers, &d.entries) {
                    eprintln!("{}: warning: {w}", f.display());
                }
                println!(
                    "{}: ok ({} backends, {} discovered)",
                    f.display(),
                    c.backends.len(),
                    d.entries.len()
                )
            }
            Err(e) => {
                ok = false;
                for p in e.problems {
                    eprintln!("{}: {p}", f.display());
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `sluice check` of a `[cluster]` table: an unreachable Redis is a
/// warning in `share` mode (the gateway would start in fallback) and an
/// error with `fail_closed` (it would not start).
fn cluster_answers(f: &std::path::Path, c: &Config) -> bool {
    use sluice::cluster::{probe, OnRedisDown};
    let Some(cl) = &c.cluster else { return true };
    match (probe(cl), cl.on_redis_down) {
        (Ok(_), _) => true,
        (Err(e), OnRedisDown::Share) => {
            eprintln!(
                "{}: warning: {e}; the gateway would start with each replica enforcing its share of every limit",
                f.display()
            );
            true
        }
        (Err(e), OnRedisDown::FailClosed) => {
            eprintln!(
                "{}: {e}; with cluster.on_redis_down = \"fail_closed\" the gateway does not start",
                f.display()
            );
            false
        }
    }
}

fn run(
    path: &std::path::Path,
    upgrade: bool,
    daemon: bool,
    json: bool,
    run_dir: Option<PathBuf>,
) -> ExitCode {
    sluice::telemetry::init_tracing(json);
    for w in Config::file_warnings(path) {
        tracing::warn!("{w}");
    }
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            for p in e.problems {
                eprintln!("{}: {p}", path.display());
            }
            return ExitCode::FAILURE;
        }
    };
    let run_dir =
        sluice::systemd::run_dir_path(run_dir, std::env::var("RUNTIME_DIRECTORY").ok().as_deref());
    match sluice::systemd::run_dir(&run_dir) {
        Ok(None) => {}
        Ok(Some(warning)) => tracing::warn!("{warning}"),
        Err(e) => {
            eprintln!("sluice run: {e}");
            return ExitCode::FAILURE;
        }
    }
    let files = sluice::gateway::RuntimeFiles {
        pid_file: run_dir.join("sluice.pid"),
        upgrade_sock: run_dir.join("upgrade.sock"),
    };
    let opt = Opt {
        upgrade,
        daemon,
        ..Opt::default()
    };
    let (server, _) =
        match sluice::gateway::build(&config, Some(opt), &files, Some(path.to_path_buf())) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        };
    tracing::info!(
        proxy = %config.server.listen,
        admin = %config.admin.listen,
        backends = config.backends.len(),
        "sluice starting"
    );
    server.run(RunArgs::default());
    ExitCode::SUCCESS
}
