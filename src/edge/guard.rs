//! The connection guard: a pingora [`ServerApp`] around the proxy that counts
//! every client connection for its whole life, refuses those over the caps
//! with a `503` before reading anything, and closes a connection whose next
//! request header is not complete in time (see [`super::conn_table`]).
//!
//! pingora's HTTP/1 app serves all requests of a kept-alive connection inside
//! one `process_new` call, so holding a guard across that call counts the
//! connection exactly. The proxy tells the guard when a request header has
//! arrived ([`Connections::request_started`]) and when its response ended
//! ([`Connections::request_ended`]); the connection's watchdog sleeps on that
//! and closes it when its header clock runs out.
//!
//! The guard's future lives as long as its connection (a held SSE stream
//! too), so it stays small: nothing large is kept in it across an `await`
//! (see loadtest/RESULTS.md, "Memory per open stream: where it goes").

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::conn_table::{ConnLimits, ConnPhase, ConnRefusal, ConnTable};
use crate::reject::Reject;
use crate::telemetry::Metrics;

/// How long a refused connection may take to send its request head before
/// the gateway closes it without an answer.
const REFUSAL_READ: std::time::Duration = std::time::Duration::from_secs(1);

/// One open connection's phase, shared by the proxy and its watchdog.
struct ConnSlot {
    phase: Mutex<ConnPhase>,
    changed: Notify,
}

/// Every open client connection of one proxy listener.
pub struct Connections {
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    table: Mutex<ConnTable>,
    by_peer: Mutex<HashMap<SocketAddr, Arc<ConnSlot>>>,
    /// Connections refused at accept, by cause.
    pub refused_total: AtomicU64,
    pub refused_per_client: AtomicU64,
    /// Connections closed because a request header did not arrive in time.
    pub header_timeouts: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Connections {
    pub fn new(limits: ConnLimits, metrics: Arc<Metrics>) -> Connections {
        Connections {
            limits,
            metrics,
            table: Mutex::new(ConnTable::default()),
            by_peer: Mutex::new(HashMap::new()),
            refused_total: AtomicU64::new(0),
            refused_per_client: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
        }
    }

    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    /// Open connections now, and how many client addresses hold them.
    pub fn open(&self) -> (usize, usize) {
        let t = lock(&self.table);
        (t.total(), t.clients())
    }

    fn admit(&self, peer: Option<SocketAddr>, now: Instant) -> Result<Open<'_>, ConnRefusal> {
        let ip: Option<IpAddr> = peer.map(|p| p.ip());
        if let Err(r) = lock(&self.table).open(ip, &self.limits) {
            match r {
                ConnRefusal::Total => &self.refused_total,
                ConnRefusal::PerClient => &self.refused_per_client,
            }
            .fetch_add(1, Ordering::Relaxed);
            self.metrics
                .connections_refused
                .with_label_values(&[r.as_str()])
                .inc();
            return Err(r);
        }
        self.metrics.connections_open.inc();
        let slot = Arc::new(ConnSlot {
            phase: Mutex::new(ConnPhase::AwaitingHeader {
                since: now,
                reused: false,
            }),
            changed: Notify::new(),
        });
        if let Some(p) = peer {
            lock(&self.by_peer).insert(p, Arc::clone(&slot));
        }
        Ok(Open {
            conns: self,
            peer,
            slot,
        })
    }

    fn set(&self, peer: SocketAddr, phase: ConnPhase) {
        let slot = lock(&self.by_peer).get(&peer).cloned();
        if let Some(s) = slot {
            *lock(&s.phase) = phase;
            s.changed.notify_one();
        }
    }

    /// A request header from `peer` is complete: its clock stops.
    pub fn request_started(&self, peer: SocketAddr) {
        self.set(peer, ConnPhase::Serving);
    }

    /// The response to `peer` ended: the idle and header clock restarts.
    pub fn request_ended(&self, peer: SocketAddr, now: Instant) {
        self.set(
            peer,
            ConnPhase::AwaitingHeader {
                since: now,
                reused: true,
            },
        );
    }
}

/// A counted connection; uncounted on drop.
struct Open<'a> {
    conns: &'a Connections,
    peer: Option<SocketAddr>,
    slot: Arc<ConnSlot>,
}

impl Open<'_> {
    /// Returns when the connection's header clock has run out.
    async fn expired(&self) {
        loop {
            let phase = *lock(&self.slot.phase);
            match phase.deadline(&self.conns.limits) {
                Some(at) if Instant::now() >= at => return,
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.slot.changed.notified() => {}
                    }
                }
                None => self.slot.changed.notified().await,
            }
        }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.peer {
            let mut map = lock(&self.conns.by_peer);
            // A new connection may reuse the port only after this one closed,
            // but check it is ours before removing.
            if map.get(&p).is_some_and(|s| Arc::ptr_eq(s, &self.slot)) {
                map.remove(&p);
            }
        }
        lock(&self.conns.table).close(self.peer.map(|p| p.ip()));
        self.conns.metrics.connections_open.dec();
    }
}

/// The proxy app behind the connection guard.
pub struct Guarded<A> {
    pub app: Arc<A>,
    pub connections: Arc<Connections>,
}

fn peer_of(stream: &Stream) -> Option<SocketAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied())
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = peer_of(&stream);
        let open = match self.connections.admit(peer, Instant::now()) {
            Ok(o) => o,
            Err(r) => {
                // Answer the request the client sends (a response before
                // any request confuses HTTP clients), then close; a client
                // that sends nothing within a second just loses the socket.
                let reply = Reject::TooManyConnections {
                    per_client: r == ConnRefusal::PerClient,
                }
                .http1_bytes();
                let _ = tokio::time::timeout(REFUSAL_READ, async {
                    // On the heap, not in the future: an array here made
                    // every open connection's future 4 KiB larger.
                    let mut buf = vec![0u8; 4096];
                    let mut head: Vec<u8> = Vec::new();
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() > 16 * 1024 {
                            break;
                        }
                    }
                    let _ = stream.write_all(&reply).await;
                    let _ = stream.flush().await;
                })
                .await;
                return None;
            }
        };
        tokio::select! {
            // The HTTP/1 app serves every request of the connection in here.
            reused = self.app.process_new(stream, shutdown) => reused,
            _ = open.expired() => {
                self.connections.header_timeouts.fetch_add(1, Ordering::Relaxed);
                self.connections.metrics.header_timeouts.inc();
                tracing::debug!(peer = ?peer, "closing a connection whose request header did not arrive in time");
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An app that serves nothing: only the guard's own future is measured.
    struct Idle;

    #[async_trait]
    impl ServerApp for Idle {
        async fn process_new(
            self: &Arc<Self>,
            _stream: Stream,
            _shutdown: &ShutdownWatch,
        ) -> Option<Stream> {
            None
        }
    }

    /// One guard future is held per open connection for its whole life: it
    /// must not carry the refusal path's read buffer (4,464 bytes before,
    /// measured with heaptrack at 1,000 open streams).
    #[tokio::test]
    async fn the_future_held_per_connection_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(server));
        let guarded = Arc::new(Guarded {
            app: Arc::new(Idle),
            connections: Arc::new(Connections::new(
                ConnLimits::default(),
                Arc::new(Metrics::new()),
            )),
        });
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let fut = guarded.process_new(stream, &shutdown);
        let bytes = std::mem::size_of_val(&*fut);
        assert!(bytes < 1024, "the guard's future is {bytes} bytes");
        assert_eq!(fut.await.map(|_| ()), None);
        drop(client);
    }
}
