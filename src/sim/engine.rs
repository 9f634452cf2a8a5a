//! Drives the pure [`Model`] on the tokio clock and routes its events to
//! the requests waiting for them.
//!
//! One task per server sleeps until the model's next exact transition (a
//! prompt done, a request finished) or, for streamed tokens, until the next
//! token but at least one `tick` later: at high rates tokens go out in
//! batches while finish times stay exact. Request handlers submit and
//! cancel under the same lock and wake the task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::model::{
    Event, MetricsSnapshot, Model, ModelConfig, ModelCounters, ReqId, RequestSpec, SlotView,
};

/// The model plus the channels of the requests in it.
pub struct Engine {
    state: Mutex<State>,
    wake: Notify,
    tick: Duration,
}

struct State {
    model: Model,
    readers: HashMap<ReqId, mpsc::UnboundedSender<Event>>,
}

/// Cancels its request when dropped before the request finished: a
/// dropped handler future or response body means the client went away.
pub struct RequestGuard {
    engine: Arc<Engine>,
    pub id: ReqId,
    pub done: bool,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if !self.done {
            self.engine.cancel(self.id);
        }
    }
}

// === impl Engine ===

impl Engine {
    pub fn new(cfg: ModelConfig, tick: Duration) -> Arc<Engine> {
        Arc::new(Engine {
            state: Mutex::new(State {
                model: Model::new(cfg, Instant::now()),
                readers: HashMap::new(),
            }),
            wake: Notify::new(),
            tick: tick.max(Duration::from_millis(1)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the model half
        // updated in a way worse than stopping the simulator; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a request; its events arrive on the returned receiver.
    pub fn submit(
        self: &Arc<Self>,
        spec: RequestSpec,
    ) -> (RequestGuard, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        let (id, events) = st.model.submit(Instant::now(), spec);
        st.readers.insert(id, tx);
        dispatch(&mut st, events);
        drop(st);
        self.wake.notify_one();
        let guard = RequestGuard {
            engine: self.clone(),
            id,
            done: false,
        };
        (guard, rx)
    }

    /// The client of `id` went away.
    pub fn cancel(&self, id: ReqId) {
        let mut st = self.lock();
        st.readers.remove(&id);
        let events = st.model.cancel(Instant::now(), id);
        dispatch(&mut st, events);
        drop(st);
        self.wake.notify_one();
    }

    /// A restart of the server: the prompt caches are empty again.
    pub fn clear_cache(&self) {
        self.lock().model.clear_cache();
    }

    pub fn set_speed(&self, speed: f64) {
        let mut st = self.lock();
        let events = st.model.set_speed(Instant::now(), speed);
        dispatch(&mut st, events);
        drop(st);
        self.wake.notify_one();
    }

    pub fn scrape(&self) -> MetricsSnapshot {
        let mut st = self.lock();
        let (snap, events) = st.model.scrape(Instant::now());
        dispatch(&mut st, events);
        snap
    }

    pub fn counters(&self) -> ModelCounters {
        let mut st = self.lock();
        let events = st.model.advance(Instant::now());
        dispatch(&mut st, events);
        st.model.counters()
    }

    pub fn slots(&self) -> Vec<SlotView> {
        let mut st = self.lock();
        let events = st.model.advance(Instant::now());
        dispatch(&mut st, events);
        st.model.slots()
    }

    /// The clock task; ends when `shutdown` turns true or its sender goes.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let next = {
                let mut st = self.lock();
                let now = Instant::now();
                let events = st.model.advance(now);
                dispatch(&mut st, events);
                let token = st.model.next_token().map(|t| t.max(now + self.tick));
                match (st.model.next_transition(), token) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            };
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.wake.notified() => {}
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
    }
}

fn dispatch(st: &mut State, events: Vec<Event>) {
    for ev in events {
        let (id, last) = match &ev {
            Event::Started { id, .. } | Event::Tokens { id, .. } => (*id, false),
            Event::Finished { id, .. } | Event::Dropped { id } => (*id, true),
        };
        if let Some(tx) = st.readers.get(&id) {
            let _ = tx.send(ev);
        }
        if last {
            st.readers.remove(&id);
        }
    }
}
