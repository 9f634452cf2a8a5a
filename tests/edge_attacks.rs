//! Attacks on the client edge, each reproduced on loopback against the
//! gateway and a simulated fleet: slow request bodies, header drips, idle
//! and surplus connections, clients that stop reading, unauthenticated
//! reads of every route and llama-server internals. Each test failed on the
//! gateway before edge hardening; each prints the figures it measured.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{completion, fast, Harness};

fn proxy_addr(h: &Harness) -> SocketAddr {
    h.gw().proxy_addr
}

/// Reads until the server closes the connection (or `limit` passes);
/// returns what arrived and whether it closed.
fn read_to_close(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let end = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), false)
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// Twenty clients declare a 1,000-byte body and send one byte every 300 ms.
/// Before: each took a backend permit first, so the 4 slots were held and
/// well-behaved requests got 503. Now the body is read before any permit.
#[test]
fn slow_bodies_hold_no_backend_slot() {
    let h = Harness::start_with_server(vec![fast(2), fast(2)], "body_grace = \"2s\"", "");
    h.wait_all_eligible();
    let addr = proxy_addr(&h);
    let unloaded: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let r = h.post("/completion", completion(4));
            assert_eq!(r.status, 200, "{}", r.body);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();

    let started = Instant::now();
    let slow: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(
                    b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                      Content-Length: 1000\r\n\r\n{",
                )
                .unwrap();
                // The pacing is the attack.
                for _ in 0..40 {
                    std::thread::sleep(Duration::from_millis(300));
                    if s.write_all(b" ").is_err() {
                        break;
                    }
                }
                let (reply, closed) = read_to_close(&mut s, Duration::from_secs(5));
                (reply, closed, started.elapsed())
            })
        })
        .collect();
    // Let them connect and start trickling.
    std::thread::sleep(Duration::from_millis(300));
    let mut loaded = Vec::new();
    while started.elapsed() < Duration::from_millis(1800) {
        let t = Instant::now();
        let r = h.post("/completion", completion(4));
        assert_eq!(r.status, 200, "well-behaved request refused: {}", r.body);
        loaded.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut cut = Vec::new();
    for t in slow {
        let (reply, closed, at) = t.join().unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 408"),
            "a slow body gets 408: {reply:?}"
        );
        assert!(reply.contains("body_timeout"), "{reply}");
        assert!(closed, "the slow connection is closed");
        cut.push(at.as_secs_f64());
    }
    let (mut u, mut l) = (unloaded, loaded.clone());
    println!(
        "slow bodies: 20 clients at ~3 B/s held no slot; {} well-behaved requests all 200, \
         p99 {:.1} ms loaded vs {:.1} ms unloaded; slow clients answered 408 after {:.2}-{:.2} s \
         (body_grace 2 s)",
        loaded.len(),
        percentile(&mut l, 0.99),
        percentile(&mut u, 0.99),
        cut.iter().cloned().fold(f64::MAX, f64::min),
        cut.iter().cloned().fold(0.0, f64::max),
    );
    assert!(
        loaded.len() >= 10,
        "only {} requests in 1.5 s",
        loaded.len()
    );
    assert!(
        cut.iter().all(|&s| s < 4.5),
        "slow bodies cut within grace + slack: {cut:?}"
    );
}

/// A thousand connections send one header byte every 200 ms. Before: all
/// stayed open (pingora's timeout is per read). Now each is closed when its
/// request header has not arrived within `server.header_timeout`.
#[test]
fn header_drips_are_cut_off() {
    const DRIPS: usize = 1000;
    let h = Harness::start_with_server(
        vec![fast(2)],
        "header_timeout = \"1s\"\nmax_connections_per_client = 2000",
        "",
    );
    h.wait_all_eligible();
    let addr = proxy_addr(&h);
    let started = Instant::now();
    let drips: Vec<_> = (0..DRIPS)
        .map(|_| {
            h.rt.spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(b"GET /health HTTP/1.1\r\nX-Drip: ")
                    .await
                    .unwrap();
                let t = Instant::now();
                let mut buf = [0u8; 256];
                // The pacing is the attack: a byte, then 200 ms of silence.
                for _ in 0..50 {
                    if s.write_all(b"a").await.is_err() {
                        return t.elapsed();
                    }
                    match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
                        _ => {}
                    }
                }
                Duration::MAX
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let r = h.post("/completion", completion(2));
    assert_eq!(r.status, 200, "{}", r.body);
    let mut closed_after: Vec<f64> = h.rt.block_on(async {
        let mut v = Vec::new();
        for d in drips {
            v.push(d.await.unwrap().as_secs_f64());
        }
        v
    });
    let worst = percentile(&mut closed_after, 1.0);
    println!(
        "header drip: {DRIPS} connections at 5 B/s all closed, median {:.2} s, worst {:.2} s \
         (header_timeout 1 s); a normal request meanwhile got 200; test took {:.1} s",
        percentile(&mut closed_after, 0.5),
        worst,
        started.elapsed().as_secs_f64()
    );
    assert!(
        worst < 4.0,
        "every drip closed within 4 s: worst {worst:.2} s"
    );
    support::wait_until("drip connections uncounted", Duration::from_secs(5), || {
        h.gw().shared.connections.open().0 <= 1
    });
}

/// A kept-alive connection that idles past `server.keepalive_timeout` is
/// closed; before, it stayed open for pingora's 60 s.
#[test]
fn idle_keepalive_connections_are_closed() {
    let h = Harness::start_with_server(vec![fast(2)], "keepalive_timeout = \"1s\"", "");
    h.wait_all_eligible();
    let mut s = TcpStream::connect(proxy_addr(&h)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let t = Instant::now();
    let (reply, closed) = read_to_close(&mut s, Duration::from_secs(4));
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(closed, "an idle kept-alive connection is closed");
    println!(
        "idle keep-alive closed {:.2} s after its response (keepalive_timeout 1 s)",
        t.elapsed().as_secs_f64()
    );
    assert!(t.elapsed() < Duration::from_secs(3));
}

/// More connections than `server.max_connections_per_client` from one
/// address: the surplus gets a complete 503 with Retry-After at once.
#[test]
fn connections_per_client_and_in_total_are_capped() {
    let h = Harness::start_with_server(
        vec![fast(2)],
        "max_connections_per_client = 5\nmax_connections = 8",
        "",
    );
    h.wait_all_eligible();
    let addr = proxy_addr(&h);
    let held: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
    support::wait_until("5 connections counted", Duration::from_secs(5), || {
        h.gw().shared.connections.open().0 == 5
    });
    let mut extra = TcpStream::connect(addr).unwrap();
    extra
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (reply, closed) = read_to_close(&mut extra, Duration::from_secs(2));
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply:?}");
    assert!(reply.contains("retry-after: 1"), "{reply}");
    assert!(reply.contains("too_many_client_connections"), "{reply}");
    assert!(closed);
    drop(held);
    support::wait_until("connections uncounted", Duration::from_secs(5), || {
        h.gw().shared.connections.open().0 == 0
    });
    let r = h.post("/completion", completion(2));
    assert_eq!(r.status, 200, "{}", r.body);
    let c = &h.gw().shared.connections;
    println!(
        "connection caps: 6th connection from one address refused with 503 \
         too_many_client_connections ({} refused per client, {} in total)",
        c.refused_per_client
            .load(std::sync::atomic::Ordering::Relaxed),
        c.refused_total.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// A client that stops reading a long stream: the write to it times out and
/// the backend slot is freed, although the generation would run for long.
#[test]
fn a_stalled_reader_frees_its_backend_slot() {
    let sim = sluice::sim::SimOptions {
        slots: 1,
        gen_tps: 20_000.0,
        prompt_tps: 100_000.0,
        n_ctx: 4_000_000,
        ..sluice::sim::SimOptions::default()
    };
    let h = Harness::start_with_server(vec![sim], "write_timeout = \"1s\"", "");
    h.wait_all_eligible();
    let addr = proxy_addr(&h);
    let sock = h.rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        let mut s = s.connect(addr).await.unwrap();
        let body = json!({"prompt": "hi", "n_predict": 2_000_000, "ignore_eos": true, "stream": true})
            .to_string();
        let head = format!(
            "POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tokio::io::AsyncWriteExt::write_all(&mut s, head.as_bytes()).await.unwrap();
        s
    });
    let t = Instant::now();
    support::wait_until("the stream holds the slot", Duration::from_secs(5), || {
        h.backend_status(0)["in_flight"] == 1
    });
    // Never read: the socket buffers fill, then the gateway's writes block.
    support::wait_until(
        "the stalled stream is dropped",
        Duration::from_secs(30),
        || h.backend_status(0)["in_flight"] == 0,
    );
    println!(
        "stalled reader: slot freed {:.1} s after the stream started (write_timeout 1 s; \
         the generation would have run ~100 s)",
        t.elapsed().as_secs_f64()
    );
    drop(sock);
    let r = h.post("/completion", completion(2));
    assert_eq!(r.status, 200, "{}", r.body);
}

/// With `require_key`, every route needs a key — reads included — and
/// llama-server's internals are not served unless opened.
#[test]
fn every_route_needs_a_key_and_internals_are_refused() {
    let h = Harness::start(
        vec![fast(2)],
        "[[api_keys]]\nname = \"team-a\"\nkey = \"sk-test-0123456789\"\n[auth]\nrequire_key = true\n",
        &[],
    );
    h.wait_all_eligible();
    let base = h.gw().proxy_url();
    let c = &h.client;
    let get = |path: &str, key: Option<&str>| {
        h.rt.block_on(async {
            let mut r = c.get(format!("{base}{path}"));
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let reason = r
                .headers()
                .get("x-sluice-reason")
                .map(|v| v.to_str().unwrap().to_string());
            (status, reason, r.text().await.unwrap())
        })
    };
    let mut seen = Vec::new();
    for path in [
        "/slots",
        "/props",
        "/v1/models",
        "/metrics",
        "/health",
        "/lora-adapters",
    ] {
        let (status, reason, body) = get(path, None);
        assert_eq!(status, 401, "{path} without a key: {body}");
        assert_eq!(reason.as_deref(), Some("unauthorized"));
        seen.push(format!("{path} -> {status}"));
    }
    let key = Some("sk-test-0123456789");
    for path in ["/props", "/v1/models", "/health"] {
        let (status, _, body) = get(path, key);
        assert_eq!(status, 200, "{path} with a key: {body}");
    }
    for path in ["/slots", "/metrics", "/lora-adapters", "/"] {
        let (status, reason, body) = get(path, key);
        assert_eq!(status, 404, "{path} is not served: {body}");
        assert_eq!(reason.as_deref(), Some("route_not_served"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], 404);
        seen.push(format!("{path} (key) -> {status}"));
    }
    let post = h.rt.block_on(async {
        c.post(format!("{base}/slots/0?action=save"))
            .bearer_auth("sk-test-0123456789")
            .body("{\"filename\":\"x\"}")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(post, 404, "slot save is refused");
    println!("routes: {}", seen.join(", "));
}

/// An operator may open internals by name.
#[test]
fn opened_routes_pass() {
    let h = Harness::start(
        vec![fast(2)],
        "[routing]\nopen_routes = [\"/slots\"]\n",
        &[],
    );
    h.wait_all_eligible();
    let r =
        h.rt.block_on(support::get(&h.client, &h.gw().proxy_url(), "/slots"));
    assert_eq!(r.status, 200, "{}", r.body);
}
