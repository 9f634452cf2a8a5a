//! The scrape loop: per backend, on an interval, read `/health` and
//! `/metrics` (and `/props` now and then) and publish an [`Observed`].
//! A llama-server router ([`super::router`]) is read through `/props` and
//! `/models` each round instead; each of its loaded models is a
//! sub-backend scraped with `?model=…&autoload=false`, never loading one.
//!
//! Each backend has its own task, so one backend whose `/metrics` hangs until
//! the timeout cannot make the others' figures stale. A failed `/metrics`
//! keeps the previous figures with their old timestamp: they go stale on their
//! own, and a stale backend is treated as saturated. The time a scrape takes
//! is published too, because a slow `/metrics` is itself a saturation signal
//! (llama-server answers it from the HTTP thread pool that surplus requests
//! also wait in).
//!
//! What a backend answers is untrusted input: bodies are read up to
//! [`MAX_SCRAPE_BODY`], redirects are never followed (a 3xx is a scrape
//! error naming it), `/metrics` keeps only valid names (`promtext`; drops
//! are counted in `sluice_backend_series_dropped_total`), and `total_slots`
//! is capped to `routing.max_slots`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::fetch::{
    fetch_health, fetch_metrics_at, fetch_models, fetch_props, fetch_router_models, Props,
};
use super::load::LoadSnapshot;
use super::observed::{Health, Observed};
use super::router;
use super::spec::ScrapeConfig;
use super::state::Backend;
use crate::backend::fleet::Fleet;

/// How often the set of scrape tasks is matched to the fleet (reloads).
const RESYNC: Duration = Duration::from_millis(200);

pub use super::fetch::MAX_SCRAPE_BODY;

pub struct ScrapeLoop {
    pub fleet: Arc<Fleet>,
    pub config: ScrapeConfig,
    /// Beaten on every pass of the loop (the systemd watchdog reads it).
    pub heartbeat: Arc<Heartbeat>,
}

/// When the scrape loop last went round: proof its runtime is alive.
#[derive(Debug)]
pub struct Heartbeat {
    base: Instant,
    /// Milliseconds after `base` of the last beat.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Heartbeat {
    pub fn new(now: Instant) -> Heartbeat {
        Heartbeat {
            base: now,
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn beat(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.base).as_millis() as u64;
        self.last_ms
            .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub fn age(&self, now: Instant) -> Duration {
        let last = self.base
            + Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

#[async_trait]
impl BackgroundService for ScrapeLoop {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = match client(&self.config) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the scrape HTTP client; no backend will be scraped");
                return;
            }
        };
        // One task per backend; the set follows the fleet across reloads.
        let mut tasks: HashMap<usize, JoinHandle<()>> = HashMap::new();
        loop {
            self.heartbeat.beat(Instant::now());
            let current = self.fleet.backends();
            for b in current.iter() {
                tasks.entry(b.id).or_insert_with(|| {
                    let b = Arc::clone(b);
                    let client = client.clone();
                    let config = self.config.clone();
                    let fleet = Arc::clone(&self.fleet);
                    tokio::spawn(async move { scrape_forever(b, client, config, fleet).await })
                });
            }
            tasks.retain(|id, t| {
                let keep = current.iter().any(|b| b.id == *id);
                if !keep {
                    t.abort();
                }
                keep
            });
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
        for t in tasks.values() {
            t.abort();
        }
    }
}

fn client(config: &ScrapeConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .pool_idle_timeout(Duration::from_secs(3))
        // A backend must not point the scraper elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// One scrape round of every backend, bounded by the scrape timeout, run
/// before any listener opens: the gateway starts (and a graceful upgrade's
/// new process takes over the sockets) already knowing its fleet, instead of
/// answering "no healthy backend" until the loop has looked. Runs on a
/// thread of its own, so it works inside or outside a tokio runtime and
/// leaves no thread behind for `--daemon`'s fork.
pub fn warm_up(fleet: &Arc<Fleet>, config: &ScrapeConfig) {
    let fleet = Arc::clone(fleet);
    let config = config.clone();
    let round = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            let client = client(&config).ok()?;
            let backends = fleet.backends();
            let rounds = backends.iter().map(|b| async {
                let obs = scrape_once(b, &client, config.max_slots, true).await;
                let fresh = obs.load.is_some();
                let round = obs.health_at.unwrap_or_else(Instant::now);
                let published = obs.clone();
                b.publish(obs);
                fleet.scraped(b, &published, !fresh, round);
                fleet.sync_instances(b, published.router.as_deref());
            });
            let limit = config.timeout + Duration::from_millis(100);
            tokio::time::timeout(limit, futures::future::join_all(rounds))
                .await
                .ok()
        })
    });
    let _ = round.join();
}

async fn scrape_forever(
    b: Arc<Backend>,
    client: reqwest::Client,
    config: ScrapeConfig,
    fleet: Arc<Fleet>,
) {
    let mut props_due: Option<Instant> = None;
    let mut next_round = Instant::now();
    loop {
        tokio::time::sleep_until(next_round).await;
        let started = Instant::now();
        next_round = started + jittered(config.interval);
        let read_props = props_due.is_none_or(|due| started >= due) || b.observed().slots.is_none();
        let next = scrape_once(&b, &client, config.max_slots, read_props).await;
        // The round's one clock reading, taken when the answers were in;
        // everything below is decided at this instant.
        let round = next.health_at.unwrap_or(started);
        if read_props && next.slots.is_some() {
            props_due = Some(round + config.props_interval);
        }
        let before = b.observed();
        if before.last_error != next.last_error {
            match &next.last_error {
                Some(e) => tracing::warn!(backend = b.name(), error = %e, "backend scrape problem"),
                None => tracing::info!(backend = b.name(), "backend scrapes healthy again"),
            }
        }
        if before.health != next.health {
            tracing::info!(
                backend = b.name(),
                health = next.health.as_str(),
                "backend health changed"
            );
        }
        let fresh = next
            .load
            .as_ref()
            .is_some_and(|(_, at)| round.saturating_duration_since(*at) < config.interval);
        let slow = next.metrics_latency.is_some_and(|d| d > config.slow);
        let obs = next.clone();
        b.publish(next);
        fleet.scraped(&b, &obs, !fresh || slow, round);
        if b.config.instance.is_none() {
            // A router's loaded models are its sub-backends.
            fleet.sync_instances(&b, obs.router.as_deref());
        }
        // Eligibility may have changed: let queued requests try again.
        fleet.released.changed();
    }
}

/// The wait between two rounds: `interval` ± 10 %, drawn afresh each
/// round. Backends, and replicas scraping the same backends, drift apart
/// instead of scraping in step (a fleet of sub-backends made at once, or
/// replicas started together, would otherwise all read and react on the
/// same instants).
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::random_range(0.9..1.1))
}

/// One round against one backend; never fails, problems go in `last_error`.
/// Reads the clock once, when the answers are in: that instant stamps the
/// figures (`health_at`, the load's time) and is the round's `now`.
/// A `total_slots` above `max_slots` is capped to it, and noted.
pub async fn scrape_once(
    b: &Backend,
    client: &reqwest::Client,
    max_slots: u32,
    read_props: bool,
) -> Observed {
    let prev = b.observed();
    let base = &b.config.url;
    let m = &b.metrics;
    let ours_before = b.in_flight();
    // A router's model instance is read through `?model=…&autoload=false`
    // (never loading a model); a router itself has no `/metrics`.
    let query = b
        .config
        .instance
        .as_ref()
        .map_or(String::new(), |i| router::instance_query(&i.model));
    let is_instance = b.config.instance.is_some();
    let (health, metrics_result, (props, models, routed)) = tokio::join!(
        fetch_health(client, base),
        async {
            match prev.router {
                Some(_) => None,
                None => Some(fetch_metrics_at(client, base, &query).await),
            }
        },
        async {
            if !read_props {
                return (Ok(None), Ok(None), None);
            }
            let (p, m) = tokio::join!(fetch_props(client, base, &query), async {
                match is_instance {
                    true => Ok(None),
                    false => fetch_models(client, base).await.map(Some),
                }
            });
            let routed = match (&p, is_instance) {
                (Ok(Props::Router { autoload }), false) => Some(
                    fetch_router_models(client, base)
                        .await
                        .map(|models| router::RouterView {
                            models,
                            autoload: *autoload,
                        }),
                ),
                _ => None,
            };
            (p.map(Some), m, routed)
        }
    );
    let now = Instant::now();
    let router_now = matches!(props, Ok(Some(Props::Router { .. }))) && !is_instance;
    let mut errors = Vec::new();
    let router = match routed {
        Some(Ok(list)) => Some(Arc::new(list)),
        Some(Err(e)) => {
            m.scrape_error("router_models");
            errors.push(format!("/models: {e}"));
            prev.router.clone()
        }
        // `/props` named slots: not (or no longer) a router.
        None if matches!(props, Ok(Some(Props::Slots(_)))) => None,
        None => prev.router.clone(),
    };
    let slots = match props {
        Ok(Some(Props::Slots(n))) => Ok(Some(n)),
        Ok(Some(Props::Router { .. })) if is_instance => {
            Err("a router's /props, not a model's".into())
        }
        Ok(_) => Ok(None),
        Err(e) => Err(e),
    };
    // A router answers `/metrics` without a model with 400: not an error
    // of the round that found it is a router.
    let metrics_result = metrics_result.filter(|_| !router_now);
    let mut next = Observed {
        health,
        health_at: Some(now),
        load: prev.load,
        metrics_latency: prev.metrics_latency,
        slots: if router.is_some() { None } else { prev.slots },
        slots_claimed: prev.slots_claimed,
        models: match models {
            Ok(Some(m)) => Some(Arc::new(m)),
            // Not read this round, or failed: keep what was known.
            _ => prev.models.clone(),
        },
        router,
        last_error: None,
        families: Arc::clone(&prev.families),
        ours_at_scrape: prev.ours_at_scrape,
    };
    let ours = ours_before.min(b.in_flight());
    if let Health::Down(why) = &next.health {
        m.scrape_error("health");
        errors.push(format!("/health: {why}"));
    }
    match metrics_result {
        None => {}
        Some((latency, Ok(parsed))) => {
            m.scrape_duration.observe(latency.as_secs_f64());
            next.metrics_latency = Some(latency);
            for (reason, n) in parsed.dropped.by_reason() {
                if n > 0 {
                    m.series_dropped(reason, n);
                }
            }
            if parsed.dropped.total() > 0 {
                errors.push(format!("/metrics: {}", parsed.dropped));
            }
            let families = parsed.families;
            match LoadSnapshot::from_families(&families) {
                Ok(load) => {
                    next.load = Some((load, now));
                    next.ours_at_scrape = ours;
                    next.families = Arc::new(families);
                }
                Err(e) => {
                    m.scrape_error("metrics_missing_series");
                    errors.push(format!("/metrics: {e}"));
                }
            }
        }
        Some((latency, Err(e))) => {
            next.metrics_latency = Some(latency);
            if next.health != Health::Loading {
                m.scrape_error(e.kind);
                errors.push(format!("/metrics: {}", e.message));
            }
        }
    }
    match slots {
        Ok(Some(claimed)) => {
            next.slots = Some(claimed.min(u64::from(max_slots)) as u32);
            next.slots_claimed = (claimed > u64::from(max_slots)).then_some(claimed);
            if next.slots_claimed.is_some() {
                m.scrape_error("props_slots_capped");
            }
        }
        Ok(None) => {}
        Err(e) => {
            if next.health == Health::Ok {
                m.scrape_error("props");
                errors.push(format!("/props: {e}"));
            }
        }
    }
    if let Some(claimed) = next.slots_claimed {
        errors.push(format!(
            "/props: total_slots {claimed} is more than routing.max_slots = {max_slots}; \
             capped to {max_slots}"
        ));
    }
    if !errors.is_empty() {
        next.last_error = Some(errors.join("; "));
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fetch::{fetch_metrics, fetch_slots};
    use crate::backend::observed::DownCause;
    use crate::backend::promtext;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server on port 0 answering every connection with `response`
    /// (`None`: accept and never answer).
    async fn serve(response: Option<&'static str>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    match response {
                        Some(r) => {
                            let _ = conn.write_all(r.as_bytes()).await;
                            let _ = conn.shutdown().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn answer(status: &str, body: &str) -> &'static str {
        Box::leak(
            format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        )
    }

    fn test_client() -> reqwest::Client {
        let t = Duration::from_millis(300);
        reqwest::Client::builder()
            .timeout(t)
            .connect_timeout(t)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn health_causes_are_typed() {
        let c = test_client();
        let ok = serve(Some(answer("200 OK", "{\"status\":\"ok\"}"))).await;
        assert_eq!(fetch_health(&c, &ok).await, Health::Ok);
        let loading = serve(Some(answer("503 Service Unavailable", "Loading model"))).await;
        assert_eq!(fetch_health(&c, &loading).await, Health::Loading);
        let busy = serve(Some(answer("503 Service Unavailable", "busy"))).await;
        assert_eq!(
            fetch_health(&c, &busy).await,
            Health::Down(DownCause::Unavailable("busy".into()))
        );
        let err = serve(Some(answer("500 Internal Server Error", ""))).await;
        assert_eq!(
            fetch_health(&c, &err).await,
            Health::Down(DownCause::Status(500))
        );
        let silent = serve(None).await;
        assert_eq!(
            fetch_health(&c, &silent).await,
            Health::Down(DownCause::Timeout)
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let h = fetch_health(&test_client(), &format!("http://{addr}")).await;
        assert_eq!(h, Health::Down(DownCause::Refused));
        assert_eq!(
            DownCause::Refused.to_string(),
            "connection failed (refused or unreachable)"
        );
    }

    fn real_client() -> reqwest::Client {
        let t = Duration::from_millis(500);
        client(&ScrapeConfig {
            interval: t,
            timeout: t,
            stale_after: t,
            slow: t,
            props_interval: t,
            max_slots: 512,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn redirects_are_scrape_errors_never_followed() {
        let target = serve(Some(answer("200 OK", "{\"total_slots\": 4}"))).await;
        let moved: &'static str = Box::leak(
            format!(
                "HTTP/1.1 302 Found\r\nlocation: {target}/x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .into_boxed_str(),
        );
        let base = serve(Some(moved)).await;
        let c = real_client();
        let h = fetch_health(&c, &base).await;
        let Health::Down(DownCause::Redirect(why)) = &h else {
            panic!("{h:?}");
        };
        assert_eq!(
            why,
            &format!("HTTP 302 redirect to \"{target}/x\", not followed")
        );
        let (_, m) = fetch_metrics(&c, &base).await;
        let e = m.err().unwrap();
        assert_eq!(e.kind, "metrics_redirect");
        assert!(e.message.contains("not followed"), "{}", e.message);
        let p = fetch_slots(&c, &base).await.unwrap_err();
        assert!(p.starts_with("HTTP 302 redirect to"), "{p}");
    }

    #[tokio::test]
    async fn bodies_are_bounded() {
        let c = real_client();
        let big = "x".repeat(MAX_SCRAPE_BODY + 1);
        let announced = serve(Some(answer("200 OK", &big))).await;
        let (_, m) = fetch_metrics(&c, &announced).await;
        assert_eq!(m.err().unwrap().kind, "metrics_too_large");
        let p = fetch_slots(&c, &announced).await.unwrap_err();
        assert_eq!(p, format!("body larger than {MAX_SCRAPE_BODY} bytes"));
        // No Content-Length: read until close, and stopped at the cap.
        let unannounced: &'static str = Box::leak(
            format!("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{big}").into_boxed_str(),
        );
        let streamed = serve(Some(unannounced)).await;
        let (_, m) = fetch_metrics(&c, &streamed).await;
        assert_eq!(m.err().unwrap().kind, "metrics_too_large");
        // Too many samples, within the byte cap.
        let mut many = String::new();
        for i in 0..=promtext::MAX_SAMPLES {
            many += &format!("m{i} 1\n");
        }
        let many = serve(Some(answer("200 OK", &many))).await;
        let (_, m) = fetch_metrics(&c, &many).await;
        assert_eq!(m.err().unwrap().kind, "metrics_too_many");
    }

    #[tokio::test]
    async fn props_claims_are_read_as_claimed() {
        let c = real_client();
        let huge = serve(Some(answer("200 OK", "{\"total_slots\": 4000000000}"))).await;
        assert_eq!(fetch_slots(&c, &huge).await, Ok(4_000_000_000));
        for bad in [
            "{\"total_slots\": -1}",
            "{\"total_slots\": 1e30}",
            "{\"total_slots\": 0}",
            "[]",
        ] {
            let b = serve(Some(answer("200 OK", bad))).await;
            assert!(fetch_slots(&c, &b).await.is_err(), "{bad}");
        }
    }
}
