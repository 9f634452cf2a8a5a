//! A simulated llama-server in router mode (`sluice sim --router-models
//! a,b`): one front that lists several models and loads each on demand into
//! a simulated server of its own, as the real router starts a child
//! `llama-server` per model and proxies to it.
//!
//! Copied from the real 2026-10 build (captures in
//! `tests/fixtures/llama-server/2026-10-router/`, facts in
//! `crate::backend::router`): `GET /models` and `/v1/models` list every
//! model with `status.value` (`unloaded`, `loading`, `loaded`); `/props`
//! without a model is the router's (`"role":"router"`); `/metrics`,
//! `/slots` without a model answer 400 "model name is missing from the
//! request"; `/props`, `/metrics`, `/slots` with `?model=NAME` answer from
//! that model's instance, **loading it first unless `autoload=false`**
//! (then 400 "model is not loaded"); a completion naming an unloaded model
//! loads it and is answered once loaded; `POST /models/load` and
//! `/models/unload` do what they say. At most `models_max` models are
//! loaded: loading one more unloads the least recently used.
//!
//! `loads()` counts every load, whatever started it: a gateway that only
//! scrapes must leave it at 0.
//!
//! - `front`: the listener and the routes above.
//! - `proxy`: forwarding a request to an instance, its answer streamed back.

mod front;
mod proxy;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::handle::{spawn, SimHandle};
use super::options::SimOptions;

/// What a simulated router is.
#[derive(Clone, Debug)]
pub struct RouterOptions {
    /// The model names it lists (`--models-dir` file stems).
    pub models: Vec<String>,
    /// `--models-max`: most models loaded at once (0 = unlimited).
    pub models_max: usize,
    /// How long loading one model takes.
    pub load_time: Duration,
    /// `--models-autoload` (default on); off, nothing loads but through
    /// `POST /models/load`.
    pub autoload: bool,
    /// Each instance's settings (its `model` is replaced by the name).
    pub instance: SimOptions,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            models: vec!["tiny-a".into(), "tiny-b".into()],
            models_max: 4,
            load_time: Duration::from_millis(200),
            autoload: true,
            instance: SimOptions::default(),
        }
    }
}

/// One listed model's state.
#[derive(Clone)]
enum State {
    Unloaded,
    Loading,
    Loaded(SimHandle),
}

struct Entry {
    name: String,
    state: State,
    /// Bumped on each use, for least-recently-used eviction.
    used: u64,
}

pub(super) struct Shared {
    opts: RouterOptions,
    addr: SocketAddr,
    models: Mutex<Vec<Entry>>,
    loads: AtomicU64,
    /// `GET /props` without a model (a gateway's scrape rounds).
    pub(super) props_reads: AtomicU64,
    uses: AtomicU64,
    /// Bumped on every state change; loaders' waiters watch it.
    changed: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    created: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a model cannot be had.
pub(super) enum Refusal {
    Unknown,
    NotLoaded,
}

impl Shared {
    fn knows(&self, model: &str) -> bool {
        self.opts.models.iter().any(|m| m == model)
    }

    /// The instance of a loaded `model`, if loaded.
    fn loaded(&self, model: &str) -> Option<SimHandle> {
        let mut all = lock(&self.models);
        let e = all.iter_mut().find(|e| e.name == model)?;
        e.used = self.uses.fetch_add(1, Ordering::Relaxed);
        match &e.state {
            State::Loaded(h) => Some(h.clone()),
            _ => None,
        }
    }

    /// `model`'s instance: loaded now, or after this call (or another)
    /// loads it; `autoload = false` never loads.
    pub(super) async fn instance(
        self: &Arc<Self>,
        model: &str,
        autoload: bool,
    ) -> Result<SimHandle, Refusal> {
        if !self.knows(model) {
            return Err(Refusal::Unknown);
        }
        let mut changes = self.changed.subscribe();
        loop {
            if let Some(h) = self.loaded(model) {
                return Ok(h);
            }
            if !(autoload && self.opts.autoload) {
                return Err(Refusal::NotLoaded);
            }
            self.start_load(model);
            if changes.changed().await.is_err() {
                return Err(Refusal::NotLoaded);
            }
        }
    }

    /// Starts loading `model` unless it is loaded or loading.
    pub(super) fn start_load(self: &Arc<Self>, model: &str) {
        {
            let mut all = lock(&self.models);
            let Some(e) = all.iter_mut().find(|e| e.name == model) else {
                return;
            };
            if !matches!(e.state, State::Unloaded) {
                return;
            }
            e.state = State::Loading;
        }
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.changed.send_modify(|n| *n += 1);
        let me = Arc::clone(self);
        let model = model.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(me.opts.load_time).await;
            me.evict_for_one_more();
            let mut o = me.opts.instance.clone();
            o.model = model.clone();
            o.load_time = Duration::ZERO;
            let state = match spawn(o).await {
                Ok(h) => State::Loaded(h),
                Err(_) => State::Unloaded,
            };
            if let Some(e) = lock(&me.models).iter_mut().find(|e| e.name == model) {
                e.state = state;
            }
            me.changed.send_modify(|n| *n += 1);
        });
    }

    /// At `models_max` loaded, unloads the least recently used.
    fn evict_for_one_more(&self) {
        let max = self.opts.models_max;
        let mut all = lock(&self.models);
        let loaded = all
            .iter()
            .filter(|e| matches!(e.state, State::Loaded(_)))
            .count();
        if max == 0 || loaded < max {
            return;
        }
        if let Some(e) = all
            .iter_mut()
            .filter(|e| matches!(e.state, State::Loaded(_)))
            .min_by_key(|e| e.used)
        {
            if let State::Loaded(h) = &e.state {
                h.shutdown();
            }
            e.state = State::Unloaded;
        }
    }

    /// Unloads `model`; `false` if it is not known.
    pub(super) fn unload(&self, model: &str) -> bool {
        let mut all = lock(&self.models);
        let Some(e) = all.iter_mut().find(|e| e.name == model) else {
            return false;
        };
        if let State::Loaded(h) = &e.state {
            h.shutdown();
        }
        e.state = State::Unloaded;
        drop(all);
        self.changed.send_modify(|n| *n += 1);
        true
    }

    /// Every model and its status value, in listing order.
    pub(super) fn statuses(&self) -> Vec<(String, &'static str)> {
        lock(&self.models)
            .iter()
            .map(|e| {
                let s = match e.state {
                    State::Unloaded => "unloaded",
                    State::Loading => "loading",
                    State::Loaded(_) => "loaded",
                };
                (e.name.clone(), s)
            })
            .collect()
    }
}

/// Starts a simulated router on 127.0.0.1, port 0.
pub async fn spawn_router(opts: RouterOptions) -> io::Result<RouterHandle> {
    spawn_router_at(SocketAddr::from(([127, 0, 0, 1], 0)), opts).await
}

/// Starts a simulated router on `addr` in the current tokio runtime.
pub async fn spawn_router_at(addr: SocketAddr, opts: RouterOptions) -> io::Result<RouterHandle> {
    if opts.models.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "router-models is empty: list at least one model",
        ));
    }
    opts.instance
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let (shutdown, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        addr: listener.local_addr()?,
        models: Mutex::new(
            opts.models
                .iter()
                .map(|m| Entry {
                    name: m.clone(),
                    state: State::Unloaded,
                    used: 0,
                })
                .collect(),
        ),
        opts,
        loads: AtomicU64::new(0),
        props_reads: AtomicU64::new(0),
        uses: AtomicU64::new(1),
        changed: watch::channel(0).0,
        shutdown,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    tokio::spawn(front::accept_loop(Arc::clone(&shared), listener));
    Ok(RouterHandle { shared })
}

/// A running simulated router; clones control the same one.
#[derive(Clone)]
pub struct RouterHandle {
    shared: Arc<Shared>,
}

impl RouterHandle {
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Models loaded so far, by any cause (requests, scrapes without
    /// `autoload=false`, `POST /models/load`).
    pub fn loads(&self) -> u64 {
        self.shared.loads.load(Ordering::SeqCst)
    }

    /// `GET /props` answered without a model: one per gateway scrape round.
    pub fn props_reads(&self) -> u64 {
        self.shared.props_reads.load(Ordering::SeqCst)
    }

    /// `model`'s status value (`unloaded`, `loading`, `loaded`), if listed.
    pub fn status(&self, model: &str) -> Option<&'static str> {
        self.shared
            .statuses()
            .into_iter()
            .find(|(m, _)| m == model)
            .map(|(_, s)| s)
    }

    /// The simulated server serving `model` while it is loaded.
    pub fn instance(&self, model: &str) -> Option<SimHandle> {
        self.shared.loaded(model)
    }

    /// Stops the front and every instance.
    pub fn shutdown(&self) {
        for (m, _) in self.shared.statuses() {
            self.shared.unload(&m);
        }
        let _ = self.shared.shutdown.send(true);
    }
}
