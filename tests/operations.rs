//! Operating a running gateway: reload without dropping work, drain, the
//! admin token, SIGHUP on the real binary, and bad clients.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use sluice::config::Config;
use sluice::sim::SimOptions;
use support::{completion, fast, Harness};

fn config_for(h: &Harness, backends: &[(usize, u32)], extra: &str) -> Config {
    let gw = h.gw();
    let mut text = format!(
        "[server]\nlisten = \"{}\"\nthreads = 1\n[admin]\nlisten = \"{}\"\n[scrape]\ninterval = \"100ms\"\n{extra}\n",
        gw.proxy_addr, gw.admin_addr
    );
    for (i, w) in backends {
        text += &format!(
            "[[backends]]\nname = \"b{i}\"\nurl = \"{}\"\nweight = {w}\n",
            h.sims[*i].url()
        );
    }
    Config::parse(&text).unwrap()
}

fn served_by(h: &Harness, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = h.post("/completion", completion(0));
            assert_eq!(r.status, 200, "{}", r.body);
            r.header("x-sluice-backend").unwrap().to_string()
        })
        .collect()
}

#[test]
fn reload_swaps_backends_without_dropping_a_stream() {
    let slow = SimOptions {
        gen_tps: 50.0,
        ..fast(4)
    };
    let h = Harness::start(vec![slow, fast(4), fast(4)], "", &[]);
    // Start from b0 alone.
    h.gw().reload(&config_for(&h, &[(0, 1)], ""));
    h.wait_until("b0 alone and eligible", Duration::from_secs(5), |h| {
        let s = h.status();
        s["backends"].as_array().unwrap().len() == 1 && s["backends"][0]["eligible"] == true
    });
    // A stream on b0 that lasts ~1.5 s.
    let url = format!("{}/completion", h.gw().proxy_url());
    let c = h.client.clone();
    let stream = h.rt.spawn(async move {
        let r = c
            .post(url)
            .body(r#"{"prompt":"hi","n_predict":75,"stream":true}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    });
    h.wait_until("stream in flight", Duration::from_secs(3), |h| {
        h.backend_status(0)["in_flight"] == 1
    });
    // Replace b0 by b1 and b2 (re-weighted 3:1).
    let changes = h.gw().reload(&config_for(&h, &[(1, 3), (2, 1)], ""));
    assert_eq!(changes.removed, vec!["b0"]);
    assert_eq!(changes.added, vec!["b1", "b2"]);
    h.wait_until("new backends eligible", Duration::from_secs(5), |h| {
        h.status()["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["eligible"] == true)
    });
    let by = served_by(&h, 120);
    assert!(by.iter().all(|b| b != "b0"), "removed backend got new work");
    let b1 = by.iter().filter(|b| *b == "b1").count() as f64 / by.len() as f64;
    assert!((0.6..0.9).contains(&b1), "weight-3 backend got {b1:.2}");
    // The stream that was running on the removed backend finished whole.
    let body = h.rt.block_on(stream).unwrap();
    assert!(body.contains("\"stop\":true"), "stream cut short: {body}");
    assert_eq!(h.sims[0].counters().completed, 1);
    assert_eq!(h.sims[0].counters().cancelled, 0);
}

fn admin_post(h: &Harness, path: &str, token: Option<&str>) -> (u16, String) {
    let admin = h.gw().admin_url();
    h.rt.block_on(async {
        let mut r = h.client.post(format!("{admin}{path}"));
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn operator_actions_are_off_without_a_token() {
    let h = Harness::start(vec![fast(4)], "", &[]);
    let (status, body) = admin_post(&h, "/backends/b0/drain", Some("anything"));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin.token_file"));
}

#[test]
fn drain_stops_new_work_and_lets_in_flight_finish() {
    const TOKEN: &str = "0123456789abcdef-admin";
    let dir = std::env::temp_dir().join(format!("sluice-token-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    // A token file must be private (group/other access is refused).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let slow = SimOptions {
        gen_tps: 50.0,
        ..fast(1)
    };
    let h = Harness::start_with_admin(
        vec![slow, fast(4)],
        &format!("token_file = {:?}\n", token_file.display().to_string()),
    );
    h.wait_all_eligible();
    // Occupy b0's only slot through the gateway (b1 is busier by weight? no:
    // send until one lands on b0, holding it ~1.2 s).
    let url = format!("{}/completion", h.gw().proxy_url());
    let held = h.rt.block_on(async {
        for _ in 0..50 {
            let r = h
                .client
                .post(&url)
                .body(r#"{"prompt":"hi","n_predict":60,"stream":true}"#)
                .send()
                .await
                .unwrap();
            if r.headers()["x-sluice-backend"] == "b0" {
                return Some(r);
            }
            let _ = r.bytes().await;
        }
        None
    });
    let held = held.expect("no request landed on b0");
    assert_eq!(admin_post(&h, "/backends/b0/drain", None).0, 401);
    assert_eq!(
        admin_post(&h, "/backends/b0/drain", Some("wrong-token-000000")).0,
        401
    );
    assert_eq!(admin_post(&h, "/backends/nope/drain", Some(TOKEN)).0, 404);
    let (status, body) = admin_post(&h, "/backends/b0/drain", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"draining\":true"), "{body}");
    assert!(body.contains("\"in_flight\":1"), "{body}");
    assert!(served_by(&h, 20).iter().all(|b| b == "b1"));
    // The request in flight on the drained backend finishes whole.
    let text = h.rt.block_on(held.text()).unwrap();
    assert!(text.contains("\"stop\":true"), "cut short: {text}");
    h.wait_until("b0 idle", Duration::from_secs(3), |h| {
        h.backend_status(0)["in_flight"] == 0
    });
    let (status, _) = admin_post(&h, "/backends/b0/undrain", Some(TOKEN));
    assert_eq!(status, 200);
    h.wait_until("b0 eligible again", Duration::from_secs(3), |h| {
        h.backend_status(0)["eligible"] == true
    });
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_backend_configured_drained_gets_nothing() {
    let h = Harness::start(vec![fast(4), fast(4)], "", &[]);
    h.wait_all_eligible();
    let mut c = config_for(&h, &[(0, 1), (1, 1)], "");
    c.backends[0].drain = true;
    h.gw().reload(&c);
    h.wait_until("b0 draining", Duration::from_secs(2), |h| {
        h.backend_status(0)["draining"] == true
    });
    assert!(served_by(&h, 20).iter().all(|b| b == "b1"));
}

#[test]
fn bad_clients_get_clear_statuses_and_leave_no_stuck_slot() {
    let h = Harness::start(vec![fast(2)], "[routing]\nmax_body_bytes = 1024\n", &[]);
    h.wait_all_eligible();
    // Declared too large: 413 before anything reaches a backend.
    let big = "x".repeat(4096);
    let r = h.post(
        "/completion",
        serde_json::json!({"prompt": big, "n_predict": 1}),
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.header("x-sluice-reason"), Some("body_too_large"));
    // Malformed HTTP: 400, and the gateway keeps serving.
    let mut s = std::net::TcpStream::connect(h.gw().proxy_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"THIS IS NOT HTTP\r\n\r\n").unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    assert!(buf.starts_with("HTTP/1.1 400"), "got {buf:?}");
    // A client that sends half a body and goes away leaves nothing held.
    let mut s = std::net::TcpStream::connect(h.gw().proxy_addr).unwrap();
    s.write_all(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"prompt\":")
        .unwrap();
    // Load pattern: the client stalls mid-body before it goes away.
    std::thread::sleep(Duration::from_millis(200));
    drop(s);
    h.wait_until("nothing in flight", Duration::from_secs(5), |h| {
        h.backend_status(0)["in_flight"] == 0
    });
    let t = Instant::now();
    assert_eq!(h.post("/completion", completion(1)).status, 200);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(h.sims[0].counters().processing_now, 0);
}

/// Kills the child on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sighup_reloads_the_file_and_an_invalid_file_is_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sims: Vec<_> = rt.block_on(async {
        vec![
            sluice::sim::spawn(fast(2)).await.unwrap(),
            sluice::sim::spawn(fast(2)).await.unwrap(),
        ]
    });
    let dir = std::env::temp_dir().join(format!("sluice-hup-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sluice.toml");
    let (proxy, admin) = (sluice::gateway::free_port(), sluice::gateway::free_port());
    let head = format!(
        "[server]\nlisten = \"127.0.0.1:{proxy}\"\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[scrape]\ninterval = \"100ms\"\n"
    );
    let backend = |i: usize| {
        format!(
            "[[backends]]\nname = \"b{i}\"\nurl = \"{}\"\n",
            sims[i].url()
        )
    };
    std::fs::write(&path, format!("{head}{}", backend(0))).unwrap();
    let log = dir.join("stderr.log");
    let child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--config"])
            .arg(&path)
            .arg("--run-dir")
            .arg(&dir)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let status = || -> Option<serde_json::Value> {
        rt.block_on(async {
            let r = client
                .get(format!("http://127.0.0.1:{admin}/status"))
                .send()
                .await
                .ok()?;
            serde_json::from_str(&r.text().await.ok()?).ok()
        })
    };
    let wait = |what: &str, f: &dyn Fn(&serde_json::Value) -> bool| {
        support::wait_until(what, Duration::from_secs(10), || {
            status().is_some_and(|s| f(&s))
        });
    };
    let count = |s: &serde_json::Value| s["backends"].as_array().map_or(0, |b| b.len());
    wait("one backend", &|s| count(s) == 1);
    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &child.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    std::fs::write(&path, format!("{head}{}{}", backend(0), backend(1))).unwrap();
    hup();
    wait("two backends, both eligible", &|s| {
        count(s) == 2 && s["backends"][1]["eligible"] == true
    });
    std::fs::write(
        &path,
        format!("{head}[[backends]]\nname = \"b0\"\nurl = \"htp://x\"\n"),
    )
    .unwrap();
    hup();
    support::poll(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("reload refused"))
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("scheme must be http"), "log: {text}");
    assert_eq!(
        count(&status().unwrap()),
        2,
        "the running configuration changed"
    );
    drop(child);
    for s in sims {
        s.shutdown();
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn chunked_bodies_over_the_limit_and_too_many_clients_are_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt
        .block_on(sluice::sim::spawn(SimOptions {
            gen_tps: 30.0,
            ..fast(8)
        }))
        .unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nthreads = 1\nmax_clients = 2\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
         [scrape]\ninterval = \"100ms\"\n[routing]\nmax_body_bytes = 1024\n\
         [[backends]]\nname = \"b0\"\nurl = \"{}\"\n",
        sluice::gateway::free_port(),
        sluice::gateway::free_port(),
        sim.url()
    );
    let gw = support::start_ready(&text);
    // A chunked body that grows past the limit: 413, nothing generated.
    let mut s = std::net::TcpStream::connect(gw.proxy_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /completion HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = format!("400\r\n{}\r\n", "x".repeat(1024));
    for _ in 0..3 {
        if s.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    assert!(buf.starts_with("HTTP/1.1 413"), "got {buf:?}");
    assert_eq!(sim.counters().completed, 0);
    // Two long requests hold both client places; the third gets 503 at once.
    let client = reqwest::Client::new();
    let url = format!("{}/completion", gw.proxy_url());
    let held: Vec<_> = (0..2)
        .map(|_| {
            let c = client.clone();
            let u = url.clone();
            rt.spawn(async move {
                c.post(u)
                    .body(completion(30).to_string())
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    support::wait_until("requests started", Duration::from_secs(5), || {
        sim.counters().processing_now >= 2
    });
    let r = rt.block_on(support::post(
        &client,
        &gw.proxy_url(),
        "/completion",
        completion(1),
    ));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-sluice-reason"), Some("too_many_clients"));
    assert!(r.header("retry-after").is_some());
    for h in held {
        assert_eq!(rt.block_on(h).unwrap(), 200);
    }
    // Places are returned: a new request is served.
    let r = rt.block_on(support::post(
        &client,
        &gw.proxy_url(),
        "/completion",
        completion(1),
    ));
    assert_eq!(r.status, 200);
    gw.stop();
    sim.shutdown();
}

#[test]
fn the_proxy_listener_serves_tls_with_a_configured_certificate() {
    let dir = std::env::temp_dir().join(format!("sluice-tls-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (tests/prereqs.sh)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(sluice::sim::spawn(fast(2))).unwrap();
    let port = sluice::gateway::free_port();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nthreads = 1\ntls_cert = {:?}\ntls_key = {:?}\n\
         [admin]\nlisten = \"127.0.0.1:{}\"\n[scrape]\ninterval = \"100ms\"\n\
         [[backends]]\nname = \"b0\"\nurl = \"{}\"\n",
        cert.display().to_string(),
        key.display().to_string(),
        sluice::gateway::free_port(),
        sim.url()
    );
    let gw = support::start_ready(&text);
    let curl = |scheme: &str| {
        std::process::Command::new("curl")
            .args(["-sk", "-o", "-", "-w", "\n%{http_code}", "--max-time", "5"])
            .args([
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"prompt":"hi","n_predict":2}"#,
            ])
            .arg(format!("{scheme}://127.0.0.1:{port}/completion"))
            .output()
            .expect("curl is installed (tests/prereqs.sh)")
    };
    let out = curl("https");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n200"), "over TLS: {text}");
    assert!(text.contains("\"tokens_predicted\":2"), "{text}");
    let out = curl("http");
    assert!(
        !String::from_utf8_lossy(&out.stdout).ends_with("\n200"),
        "plain HTTP was served on the TLS port"
    );
    // A missing key file is a configuration error naming the key.
    let e = Config::parse(&text_for_missing(&cert))
        .unwrap_err()
        .problems;
    assert!(
        e.iter().any(|p| p.starts_with("server.tls_key = ")),
        "{e:?}"
    );
    gw.stop();
    sim.shutdown();
    std::fs::remove_dir_all(&dir).ok();
}

fn text_for_missing(cert: &std::path::Path) -> String {
    format!(
        "[server]\ntls_cert = {:?}\ntls_key = \"/nonexistent/key.pem\"\n[[backends]]\nname = \"b0\"\nurl = \"http://127.0.0.1:1\"\n",
        cert.display().to_string()
    )
}
