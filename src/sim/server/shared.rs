//! The state shared by the listener, every connection and every handle,
//! and the switches that act on it (faults, stop and resume listening).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use rand::rngs::SmallRng;
use tokio::sync::{mpsc, oneshot, watch};

use crate::sim::engine::Engine;
use crate::sim::fault::FaultSet;
use crate::sim::options::SimOptions;

/// Counters kept by the HTTP layer.
#[derive(Clone, Debug, Default)]
pub struct HttpStats {
    pub received: u64,
    pub late_arrivals: u64,
    pub max_late_ms: u64,
    pub errors_injected: u64,
    pub resets_injected: u64,
    pub bad_requests: u64,
    pub metrics_scrapes: u64,
    pub last_headers: HeaderMap,
    pub request_ids: Vec<String>,
}

/// What a handle asks of the accept loop.
pub enum ListenCmd {
    Stop(oneshot::Sender<()>),
    Resume(std::net::TcpListener, oneshot::Sender<()>),
}

/// State shared by the listener, every connection and every handle.
pub struct Shared {
    pub opts: SimOptions,
    pub engine: Arc<Engine>,
    pub faults: Mutex<FaultSet>,
    pub loading: AtomicBool,
    pub listening: AtomicBool,
    pub connections: AtomicU64,
    pub stats: Mutex<HttpStats>,
    pub(super) rng: Mutex<SmallRng>,
    pub addr: SocketAddr,
    pub ctl: mpsc::UnboundedSender<ListenCmd>,
    pub shutdown: watch::Sender<bool>,
    /// When the "process" started (`Process-Start-Time-Unix`); a restart
    /// moves it.
    pub(super) start_unix: AtomicU64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

// === impl Shared ===

impl Shared {
    pub fn clear_faults(&self) {
        *lock(&self.faults) = FaultSet::default();
        self.loading.store(false, Ordering::SeqCst);
        self.engine.set_speed(1.0);
    }

    /// `Process-Start-Time-Unix` of the current "process".
    pub fn start_unix(&self) -> u64 {
        self.start_unix.load(Ordering::SeqCst)
    }

    /// A process restart: connections dropped (their requests cancelled),
    /// every prompt cache emptied, a later start time, listening again.
    pub async fn restart(&self) -> io::Result<()> {
        self.stop_listening().await;
        self.engine.clear_cache();
        let now = unix_now().as_secs();
        let _ = self
            .start_unix
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(now.max(t + 1)));
        self.resume_listening().await
    }

    pub async fn stop_listening(&self) {
        let (ack, done) = oneshot::channel();
        if self.ctl.send(ListenCmd::Stop(ack)).is_ok() {
            let _ = done.await;
        }
    }

    pub async fn resume_listening(&self) -> io::Result<()> {
        if self.listening.load(Ordering::SeqCst) {
            return Ok(());
        }
        let l = std::net::TcpListener::bind(self.addr)?;
        l.set_nonblocking(true)?;
        let (ack, done) = oneshot::channel();
        self.ctl
            .send(ListenCmd::Resume(l, ack))
            .map_err(|_| io::Error::other("simulator shut down"))?;
        let _ = done.await;
        Ok(())
    }

    /// A copy of the HTTP layer's counters.
    pub fn http_stats(&self) -> HttpStats {
        lock(&self.stats).clone()
    }

    /// Locked access to the fault switches.
    pub fn lock_faults(&self) -> MutexGuard<'_, FaultSet> {
        lock(&self.faults)
    }
}
