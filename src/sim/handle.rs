//! The in-process handle on a running simulated server: its address, its
//! counters, and the fault switches.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::fault::Fault;
use super::options::SimOptions;
use super::server::{self, Shared, SimCounters};

/// Starts a simulated llama-server on 127.0.0.1, port 0, in the current
/// tokio runtime.
pub async fn spawn(opts: SimOptions) -> io::Result<SimHandle> {
    spawn_at(SocketAddr::from(([127, 0, 0, 1], 0)), opts).await
}

/// Starts a simulated llama-server on `addr` in the current tokio runtime.
pub async fn spawn_at(addr: SocketAddr, opts: SimOptions) -> io::Result<SimHandle> {
    Ok(SimHandle {
        shared: server::start(addr, opts).await?,
    })
}

/// Starts `n` servers with the same options but distinct seeds (`seed + i`).
pub async fn spawn_fleet(n: usize, opts: SimOptions) -> io::Result<Vec<SimHandle>> {
    let mut fleet = Vec::with_capacity(n);
    for i in 0..n {
        let mut o = opts.clone();
        o.seed = opts.seed.wrapping_add(i as u64);
        fleet.push(spawn(o).await?);
    }
    Ok(fleet)
}

/// A running simulated server. Cheap to clone; every clone controls the
/// same server.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

// === impl SimHandle ===

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub fn options(&self) -> &SimOptions {
        &self.shared.opts
    }

    pub fn counters(&self) -> SimCounters {
        server::read_counters(&self.shared)
    }

    /// Adds one fault (others stay).
    pub fn set_fault(&self, fault: Fault) {
        let speed = {
            let mut f = self.shared.lock_faults();
            f.apply(fault);
            f.speed()
        };
        self.shared.engine.set_speed(speed);
    }

    /// Clears every fault, including the loading state.
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// Closes the listener and every open connection (a dead process):
    /// new connections are refused until [`resume_listening`](Self::resume_listening).
    pub async fn stop_listening(&self) {
        self.shared.stop_listening().await;
    }

    /// Listens again on the same address.
    pub async fn resume_listening(&self) -> io::Result<()> {
        self.shared.resume_listening().await
    }

    /// Restarts the "process": open connections close (their requests are
    /// cancelled), the prompt caches empty, `Process-Start-Time-Unix`
    /// moves later, and the server listens again on the same address.
    pub async fn restart(&self) -> io::Result<()> {
        self.shared.restart().await
    }

    /// Enters or leaves the "Loading model" state (every endpoint 503).
    pub fn set_loading(&self, loading: bool) {
        self.shared.loading.store(loading, Ordering::SeqCst);
    }

    /// Whether the server is in the "Loading model" state.
    pub fn is_loading(&self) -> bool {
        self.shared.loading.load(Ordering::SeqCst)
    }

    /// Whether the server accepts connections (see
    /// [`stop_listening`](Self::stop_listening)).
    pub fn is_listening(&self) -> bool {
        self.shared.listening.load(Ordering::SeqCst)
    }

    /// Stops the server: listener, connections and clock task.
    pub fn shutdown(&self) {
        let _ = self.shared.shutdown.send(true);
    }
}
