//! The in-process handle on a running simulated server: its address, its
//! counters, and the fault switches.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::HeaderMap;

use super::fault::Fault;
use super::options::SimOptions;
use super::server::{self, Shared};

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

/// What happened inside a simulated server so far.
#[derive(Clone, Debug, Default)]
pub struct SimCounters {
    /// Inference requests that arrived (including rejected ones).
    pub received: u64,
    /// Requests that got a slot.
    pub started: u64,
    /// Requests that generated their last token.
    pub completed: u64,
    /// Of `completed`: ran after their client had gone (b4748 mode).
    pub completed_without_reader: u64,
    /// Processing requests whose client went away.
    pub cancelled: u64,
    /// Deferred requests dropped because their client went away.
    pub dropped_deferred: u64,
    pub processing_now: usize,
    pub deferred_now: usize,
    pub max_deferred_seen: usize,
    /// ∫ deferred dt in request·seconds: divide by elapsed time for the
    /// time-weighted mean queue length.
    pub deferred_integral: f64,
    /// Requests whose `x-sluice-deadline-ms` (Unix ms) had already passed.
    pub late_arrivals: u64,
    /// Requests answered with an injected 5xx.
    pub errors_injected: u64,
    /// Connections closed by the reset-after-N-tokens fault.
    pub resets_injected: u64,
    /// Bad input (invalid JSON, missing prompt, context exceeded).
    pub bad_requests: u64,
    pub metrics_scrapes: u64,
    pub connections_accepted: u64,
    /// Headers of the last inference request.
    pub last_headers: HeaderMap,
    /// `x-request-id` of inference requests, in arrival order.
    pub request_ids: Vec<String>,
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
        let m = self.shared.engine.counters();
        let h = server::stats(&self.shared);
        SimCounters {
            received: h.received,
            started: m.started,
            completed: m.completed,
            completed_without_reader: m.completed_without_reader,
            cancelled: m.cancelled,
            dropped_deferred: m.dropped_deferred,
            processing_now: m.processing_now,
            deferred_now: m.deferred_now,
            max_deferred_seen: m.max_deferred_seen,
            deferred_integral: m.deferred_integral,
            late_arrivals: h.late_arrivals,
            errors_injected: h.errors_injected,
            resets_injected: h.resets_injected,
            bad_requests: h.bad_requests,
            metrics_scrapes: h.metrics_scrapes,
            connections_accepted: self.shared.connections.load(Ordering::Relaxed),
            last_headers: h.last_headers,
            request_ids: h.request_ids,
        }
    }

    /// Adds one fault (others stay).
    pub fn set_fault(&self, fault: Fault) {
        let speed = {
            let mut f = server::faults(&self.shared);
            f.apply(fault);
            f.speed()
        };
        self.shared.engine.set_speed(speed);
    }

    /// Clears every fault, including the loading state.
    pub fn clear_faults(&self) {
        server::clear_faults(&self.shared);
    }

    /// Closes the listener and every open connection (a dead process):
    /// new connections are refused until [`resume_listening`](Self::resume_listening).
    pub async fn stop_listening(&self) {
        server::stop_listening(&self.shared).await;
    }

    /// Listens again on the same address.
    pub async fn resume_listening(&self) -> io::Result<()> {
        server::resume_listening(&self.shared).await
    }

    /// Enters or leaves the "Loading model" state (every endpoint 503).
    pub fn set_loading(&self, loading: bool) {
        self.shared.loading.store(loading, Ordering::SeqCst);
    }

    /// Stops the server: listener, connections and clock task.
    pub fn shutdown(&self) {
        let _ = self.shared.shutdown.send(true);
    }
}

/// `GET /sim/counters`.
pub(crate) fn counters_json(shared: &Arc<Shared>) -> String {
    let c = SimHandle {
        shared: shared.clone(),
    }
    .counters();
    serde_json::json!({
        "received": c.received,
        "started": c.started,
        "completed": c.completed,
        "completed_without_reader": c.completed_without_reader,
        "cancelled": c.cancelled,
        "dropped_deferred": c.dropped_deferred,
        "processing_now": c.processing_now,
        "deferred_now": c.deferred_now,
        "max_deferred_seen": c.max_deferred_seen,
        "deferred_integral": c.deferred_integral,
        "late_arrivals": c.late_arrivals,
        "errors_injected": c.errors_injected,
        "resets_injected": c.resets_injected,
        "bad_requests": c.bad_requests,
        "metrics_scrapes": c.metrics_scrapes,
        "connections_accepted": c.connections_accepted,
    })
    .to_string()
}
