//! Starting a simulated server and its accept loop: a listener that can
//! stop (closing every open connection, like a dead process) and resume on
//! the same port.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::routes;
use super::shared::{unix_now, HttpStats, ListenCmd, Shared};
use crate::sim::engine::Engine;
use crate::sim::model::{CacheParams, ModelConfig};
use crate::sim::options::SimOptions;

/// Binds `addr` and starts the server tasks on the current runtime.
pub async fn start(addr: SocketAddr, opts: SimOptions) -> io::Result<Arc<Shared>> {
    opts.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    opts.faults
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let engine = Engine::new(
        ModelConfig {
            slots: opts.slots,
            prompt_tps: opts.prompt_tps,
            gen_tps: opts.gen_tps,
            curve: opts.curve.clone(),
            keep_abandoned_deferred: opts.keep_abandoned_deferred,
            abandon_delay: opts.abandon_delay,
            n_ctx: opts.n_ctx,
            cache: CacheParams {
                similarity: opts.slot_prompt_similarity,
                host_tokens: opts.host_cache_tokens(),
            },
        },
        opts.token_tick,
    );
    engine.set_speed(opts.faults.speed());
    let (ctl, cmds) = mpsc::unbounded_channel();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        faults: Mutex::new(opts.faults.clone()),
        loading: AtomicBool::new(!opts.load_time.is_zero()),
        listening: AtomicBool::new(true),
        connections: AtomicU64::new(0),
        stats: Mutex::new(HttpStats::default()),
        rng: Mutex::new(SmallRng::seed_from_u64(opts.seed)),
        addr,
        ctl,
        shutdown,
        start_unix: AtomicU64::new(unix_now().as_secs()),
        engine: engine.clone(),
        opts,
    });
    tokio::spawn(engine.run(shutdown_rx.clone()));
    if !shared.opts.load_time.is_zero() {
        let s = shared.clone();
        let mut sd = shutdown_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(s.opts.load_time) => s.loading.store(false, Ordering::SeqCst),
                _ = sd.changed() => {}
            }
        });
    }
    tokio::spawn(accept_loop(shared.clone(), listener, cmds, shutdown_rx));
    Ok(shared)
}

// === listener ===

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut cmds: mpsc::UnboundedReceiver<ListenCmd>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut listener = Some(listener);
    // Bumped to close every open connection (a dead process keeps none).
    let (kill, _) = watch::channel(0u64);
    loop {
        let accept = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            res = accept => match res {
                Ok((stream, _)) => {
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(serve_connection(shared.clone(), stream, kill.subscribe(), shutdown.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            cmd = cmds.recv() => match cmd {
                Some(ListenCmd::Stop(ack)) => {
                    listener = None;
                    kill.send_modify(|g| *g += 1);
                    shared.listening.store(false, Ordering::SeqCst);
                    let _ = ack.send(());
                }
                Some(ListenCmd::Resume(std_listener, ack)) => {
                    if let Ok(l) = TcpListener::from_std(std_listener) {
                        listener = Some(l);
                        shared.listening.store(true, Ordering::SeqCst);
                    }
                    let _ = ack.send(());
                }
                None => break,
            },
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    kill.send_modify(|g| *g += 1);
                    break;
                }
            }
        }
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    mut kill: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let svc = service_fn(move |req| routes::handle(shared.clone(), req));
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        _ = kill.changed() => {}
        _ = shutdown.changed() => {}
    }
}
