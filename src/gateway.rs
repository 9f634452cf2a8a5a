//! The composition root: turns a validated [`Config`] into the parts and
//! wires them. It creates the [`Metrics`] registry, the [`Fleet`] (handed the
//! metrics and its backends' parameters), the [`Gate`] (handed the fleet and
//! its own parameters), and the pingora services that share them: the proxy,
//! the admin listener, the scrape loop, the queue dispatcher and, with a file
//! to re-read, the SIGHUP reloader. No other module builds any of these.
//!
//! [`RunningGateway`] runs one on its own thread with a shutdown trigger, for
//! tests and `sluice demo` (pingora's `run_forever` would exit the process).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::GenBackgroundService;
use pingora::services::listening::Service;
use tokio::sync::Notify;

use crate::admin::{AdminApp, AdminToken};
use crate::admission::dispatcher::Dispatcher;
use crate::admission::gate::Gate;
use crate::backend::discovery::task::{first_round, DiscoveryLoop};
use crate::backend::discovery::Roster;
use crate::backend::eligibility::Rules;
use crate::backend::fleet::Fleet;
use crate::backend::scrape::{self, ScrapeLoop};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::console::{Console, Sampler};
use crate::edge::{Connections, Guarded};
use crate::proxy::SluiceProxy;
use crate::reload::{Live, Reloader};
use crate::telemetry::Metrics;

/// What the services share.
#[derive(Clone)]
pub struct Shared {
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<Metrics>,
    pub gate: Arc<Gate>,
    /// The proxy listener's client connections.
    pub connections: Arc<Connections>,
    pub admin_token: Arc<AdminToken>,
    /// The fleet's list: configured backends plus discovered members.
    pub roster: Arc<Roster>,
}

impl Shared {
    /// What a reload changes in place.
    pub fn live(&self) -> Live {
        Live {
            fleet: Arc::clone(&self.fleet),
            gate: Arc::clone(&self.gate),
            admin_token: Arc::clone(&self.admin_token),
            roster: Arc::clone(&self.roster),
        }
    }
}

/// Where pingora keeps its pid file and upgrade socket.
#[derive(Debug, Clone)]
pub struct RuntimeFiles {
    pub pid_file: PathBuf,
    pub upgrade_sock: PathBuf,
}

impl RuntimeFiles {
    /// Files in a directory of their own under the system temp dir.
    pub fn temporary() -> RuntimeFiles {
        let dir = std::env::temp_dir().join(format!(
            "sluice-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let _ = std::fs::create_dir_all(&dir);
        RuntimeFiles {
            pid_file: dir.join("sluice.pid"),
            upgrade_sock: dir.join("upgrade.sock"),
        }
    }
}

/// The fleet a configuration describes, reporting into `metrics`.
pub fn fleet(config: &Config, metrics: Arc<Metrics>) -> Arc<Fleet> {
    let rules = Rules {
        max_deferred: config.routing.max_deferred,
        stale_after: config.scrape.stale_after,
        slow_scrape: config.scrape.slow,
        unloaded_model: config.routing.unloaded_model,
    };
    Arc::new(Fleet::new(
        rules,
        config.admission.policy.clone(),
        &config.backends,
        metrics,
    ))
}

/// Builds the server with its services. With `reload_from`, SIGHUP re-reads
/// that file (see [`crate::reload`]).
pub fn build(
    config: &Config,
    opt: Option<Opt>,
    files: &RuntimeFiles,
    reload_from: Option<PathBuf>,
) -> Result<(Server, Shared), String> {
    let conf = ServerConf {
        threads: config.server.threads,
        pid_file: files.pid_file.display().to_string(),
        upgrade_sock: files.upgrade_sock.display().to_string(),
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.grace_period.as_secs().max(1)),
        daemon: opt.as_ref().is_some_and(|o| o.daemon),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // In an upgrade this waits for the old process to hand over its sockets
    // (it keeps serving meanwhile).
    server.bootstrap();
    let metrics = Arc::new(Metrics::new());
    let fleet = fleet(config, Arc::clone(&metrics));
    let roster = Arc::new(Roster::new(
        Arc::clone(&fleet),
        &metrics,
        &config.backends,
        &config.discovery.entries,
    ));
    // The members DNS knows now, then (with them) the fleet, before serving
    first_round(&roster, &config.discovery.nameservers);
    // Know the fleet before serving (see `warm_up`); listeners open in `run`.
    scrape::warm_up(&fleet, &config.scrape);
    let gate = Arc::new(Gate::new(Arc::clone(&fleet), config.admission.gate.clone()));
    let cluster = match &config.cluster {
        Some(p) => Some(Cluster::start(p, &metrics, &fleet)?),
        None => None,
    };
    let connections = Arc::new(Connections::new(
        config.server.connections,
        Arc::clone(&metrics),
    ));
    let shared = Shared {
        fleet: Arc::clone(&fleet),
        metrics: Arc::clone(&metrics),
        gate: Arc::clone(&gate),
        admin_token: Arc::new(AdminToken::new(config.admin.token.as_deref())),
        connections: Arc::clone(&connections),
        roster: Arc::clone(&roster),
    };

    // The proxy app behind the connection guard (caps, header clock).
    let mut app = HttpProxy::new(
        SluiceProxy {
            fleet: Arc::clone(&fleet),
            metrics: Arc::clone(&metrics),
            gate: Arc::clone(&gate),
            routing: config.routing.clone(),
            server: config.server.clone(),
            open_clients: Arc::new(AtomicUsize::new(0)),
            open_passthrough: Arc::new(AtomicUsize::new(0)),
            connections: Arc::clone(&connections),
            cluster: cluster.clone(),
        },
        Arc::clone(&server.configuration),
    );
    app.handle_init_modules();
    let mut proxy = Service::new(
        "sluice proxy".to_string(),
        Guarded {
            app: Arc::new(app),
            connections,
        },
    );
    match &config.server.tls {
        Some(tls) => {
            if let Err(e) = proxy.add_tls(
                &config.server.listen.to_string(),
                &tls.cert.display().to_string(),
                &tls.key.display().to_string(),
            ) {
                tracing::error!(error = %e, "cannot set up TLS on the proxy listener");
                return Err(format!("TLS on {}: {e}", config.server.listen));
            }
        }
        None => proxy.add_listener(crate::proxy::listener::tcp(
            &config.server.listen.to_string(),
        )),
    }

    let console = Arc::new(Console::new(tokio::time::Instant::now()));
    let mut admin = Service::new(
        "sluice admin".to_string(),
        HttpServer::new_app(AdminApp {
            fleet: Arc::clone(&fleet),
            metrics: Arc::clone(&metrics),
            console: Arc::clone(&console),
            token: Arc::clone(&shared.admin_token),
            cluster: cluster.clone(),
            roster: Some(Arc::clone(&roster)),
        }),
    );
    admin.add_tcp(&config.admin.listen.to_string());
    admin.threads = Some(1);

    let heartbeat = Arc::new(scrape::Heartbeat::new(tokio::time::Instant::now()));
    let scrape_loop = GenBackgroundService::new(
        "sluice scrape".to_string(),
        Arc::new(ScrapeLoop {
            fleet,
            config: config.scrape.clone(),
            heartbeat: Arc::clone(&heartbeat),
        }),
    );
    let dispatcher = GenBackgroundService::new(
        "sluice dispatcher".to_string(),
        Arc::new(Dispatcher {
            gate: Arc::clone(&gate),
            fleet: Arc::clone(&shared.fleet),
        }),
    );
    // The console's once-a-second reading (off the request path).
    let sampler = GenBackgroundService::new(
        "sluice console".to_string(),
        Arc::new(Sampler {
            console,
            fleet: Arc::clone(&shared.fleet),
            gate: Arc::clone(&gate),
            metrics: Arc::clone(&metrics),
        }),
    );
    server.add_service(GenBackgroundService::new(
        "sluice discovery".to_string(),
        Arc::new(DiscoveryLoop {
            roster,
            nameservers: config.discovery.nameservers.clone(),
        }),
    ));
    server.add_service(scrape_loop);
    server.add_service(sampler);
    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(dispatcher);
    if let Some(path) = reload_from {
        server.add_service(GenBackgroundService::new(
            "sluice reload".to_string(),
            Arc::new(Reloader::new(path, shared.live(), config.clone())),
        ));
    }
    // Under systemd (Type=notify): READY=1 once listening, then watchdog
    // keep-alives while the scrape loop beats.
    let listeners = vec![config.server.listen, config.admin.listen];
    if let Some(w) = crate::systemd::Watchdog::from_env(heartbeat, listeners) {
        server.add_service(GenBackgroundService::new(
            "sluice watchdog".to_string(),
            Arc::new(w),
        ));
    }
    Ok((server, shared))
}

/// Stops a server when notified (tests, the demo).
struct NotifyShutdown(Arc<Notify>);

#[async_trait]
impl ShutdownSignalWatch for NotifyShutdown {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}

/// A gateway running on a thread of its own.
pub struct RunningGateway {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: Shared,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl RunningGateway {
    /// Starts the gateway and waits until both listeners accept connections.
    pub fn start(config: &Config) -> std::io::Result<RunningGateway> {
        let files = RuntimeFiles::temporary();
        let (server, shared) = build(config, None, &files, None).map_err(std::io::Error::other)?;
        let stop = Arc::new(Notify::new());
        let watch = NotifyShutdown(Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("sluice-gateway".into())
            .spawn(move || {
                server.run(RunArgs {
                    shutdown_signal: Box::new(watch),
                });
                let _ = std::fs::remove_dir_all(files.pid_file.parent().unwrap_or(&files.pid_file));
            })?;
        let gw = RunningGateway {
            proxy_addr: config.server.listen,
            admin_addr: config.admin.listen,
            shared,
            stop,
            thread: Some(thread),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in [gw.proxy_addr, gw.admin_addr] {
            while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
                if Instant::now() > deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("gateway did not start listening on {addr} within 10 s"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(gw)
    }

    /// Applies a new configuration in place, as SIGHUP does: backends,
    /// keys, auth, rate limits, budgets, admin token ([`Live::apply`]).
    pub fn reload(&self, config: &Config) -> crate::backend::fleet::FleetChanges {
        self.shared.live().apply(config)
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// Stops the gateway and waits for its thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// A loopback port that was free a moment ago, and not handed out by this
/// process recently. pingora cannot bind port 0 and report the port, so
/// tests and the demo pick one this way; the kernel may give the same
/// ephemeral port to two binds in a row once the first is closed (seen in
/// CI as `server.listen` and `admin.listen` on one port), so the last
/// ports given are remembered and skipped.
pub fn free_port() -> u16 {
    const REMEMBERED: usize = 4096;
    static GIVEN: std::sync::Mutex<std::collections::VecDeque<u16>> =
        std::sync::Mutex::new(std::collections::VecDeque::new());
    for _ in 0..64 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if port != 0 && !given.contains(&port) {
            if given.len() >= REMEMBERED {
                given.pop_front();
            }
            given.push_back(port);
            return port;
        }
    }
    0
}
