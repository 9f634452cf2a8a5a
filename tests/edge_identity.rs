//! Who a client is and what its headers may claim, attacked on loopback:
//! forged `x-sluice-*` headers, forged `X-Forwarded-For`, anonymous
//! `critical` priority, 20,000 rotating bearer tokens and 20,000 client
//! addresses, and a reload that revokes a key (or is invalid).
//!
//! Run with `--nocapture` for the figures (metrics lines, store sizes, RSS).

mod support;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use sluice::config::Config;
use sluice::gateway::{free_port, RunningGateway};
use sluice::reload::Reloader;
use sluice::sim::SimOptions;
use support::{completion, fast, Harness, Reply};

/// Ports and sims picked once, so a config can be rewritten for a reload.
struct Setup {
    proxy: u16,
    admin: u16,
    backends: Vec<String>,
}

impl Setup {
    /// The config text: `server` keys in `[server]`, `admin` in `[admin]`,
    /// then `extra` sections.
    fn text(&self, server: &str, admin: &str, extra: &str) -> String {
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\nthreads = 2\n{server}\n\
             [admin]\nlisten = \"127.0.0.1:{}\"\n{admin}\n\
             [scrape]\ninterval = \"100ms\"\ntimeout = \"500ms\"\n{extra}\n",
            self.proxy, self.admin
        );
        for (i, url) in self.backends.iter().enumerate() {
            text += &format!("[[backends]]\nname = \"b{i}\"\nurl = \"{url}\"\n");
        }
        text
    }
}

fn start(sims: Vec<SimOptions>, server: &str, admin: &str, extra: &str) -> (Harness, Setup) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handles = rt.block_on(async {
        let mut v = Vec::new();
        for o in sims {
            v.push(sluice::sim::spawn(o).await.unwrap());
        }
        v
    });
    let setup = Setup {
        proxy: free_port(),
        admin: free_port(),
        backends: handles.iter().map(|s| s.url()).collect(),
    };
    let text = setup.text(server, admin, extra);
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let gw = RunningGateway::start(&config).unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let h = Harness {
        gw: Some(gw),
        sims: handles,
        client,
        rt,
    };
    h.wait_all_eligible();
    (h, setup)
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> Reply {
    let mut r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    // A request cut off when the test ends is status 0.
    let Ok(r) = r.send().await else {
        return Reply {
            status: 0,
            headers: Default::default(),
            body: String::new(),
        };
    };
    Reply {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap_or_default(),
    }
}

fn post(h: &Harness, headers: &[(&str, &str)], n_predict: u32) -> Reply {
    let url = format!("{}/completion", h.gw().proxy_url());
    h.rt.block_on(send(&h.client, &url, headers, &completion(n_predict)))
}

fn metrics(h: &Harness) -> String {
    let admin = h.gw().admin_url();
    h.rt.block_on(support::get(&h.client, &admin, "/metrics"))
        .body
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// === x-sluice-* headers are the gateway's ===

#[test]
fn forged_sluice_headers_never_reach_the_backend() {
    let (h, _) = start(vec![fast(4)], "", "", "");
    let before = now_ms();
    let r = post(
        &h,
        &[
            ("x-sluice-deadline-ms", "1"),
            ("x-sluice-backend", "b7"),
            ("x-sluice-anything", "forged"),
            ("x-sluice-priority", "normal"),
        ],
        3,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = h.sims[0].counters();
    assert_eq!(c.late_arrivals, 0, "the forged deadline reached the sim");
    let forged: Vec<_> = c
        .last_headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("x-sluice-") && *k != "x-sluice-deadline-ms")
        .collect();
    assert!(forged.is_empty(), "client headers passed on: {forged:?}");
    let sent: Vec<_> = c
        .last_headers
        .get_all("x-sluice-deadline-ms")
        .iter()
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let deadline: u128 = sent[0].to_str().unwrap().parse().unwrap();
    assert!(
        deadline > before,
        "deadline {deadline} is not the gateway's"
    );
    eprintln!("forged x-sluice-* headers: 200, none reached the sim; late arrivals 0");
}

// === X-Forwarded-For only from trusted proxies ===

#[test]
fn trusted_proxies_decide_whether_forwarded_for_names_the_client() {
    let limit = "[rate_limit]\nenabled = true\nrequests_per_minute = 1\nburst = 1\n";
    for trusted in [false, true] {
        let server = if trusted {
            "trusted_proxies = [\"127.0.0.0/8\"]"
        } else {
            ""
        };
        let (h, _) = start(vec![fast(4)], server, "", limit);
        let a = post(&h, &[("x-forwarded-for", "203.0.113.1")], 1);
        assert_eq!(a.status, 200, "{}", a.body);
        let xff = h.sims[0].counters().last_headers["x-forwarded-for"]
            .to_str()
            .unwrap()
            .to_string();
        let b = post(&h, &[("x-forwarded-for", "203.0.113.2")], 1);
        if trusted {
            assert_eq!(xff, "203.0.113.1, 127.0.0.1");
            assert_eq!(b.status, 200, "another client behind the proxy");
        } else {
            assert_eq!(xff, "127.0.0.1", "a forged chain went upstream");
            assert_eq!(b.status, 429, "a forged address evaded the limit");
            assert_eq!(b.header("x-sluice-reason"), Some("rate_limited"));
        }
        eprintln!(
            "trusted={trusted}: upstream XFF {xff:?}; second client address got {}",
            b.status
        );
    }
    let e = Config::parse(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n\
         [[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
    )
    .unwrap_err()
    .problems;
    assert_eq!(
        e,
        vec![
            "server.trusted_proxies[1] = \"10.0.0.0/33\" is not valid: is not an address or a \
             CIDR range (e.g. \"10.0.0.0/8\")"
        ]
    );
}

// === priority is an entitlement ===

#[test]
fn an_anonymous_critical_request_displaces_no_one_a_critical_key_does() {
    let slow = SimOptions {
        gen_tps: 40.0,
        ..fast(1)
    };
    let keys = "[queue]\ncapacity = 2\ntenant_share = 1.0\n\
                [[api_keys]]\nname = \"ops\"\nkey = \"sk-ops-0123456789\"\nmax_priority = \"critical\"\n";
    let (h, _) = start(vec![slow], "", "", keys);
    let url = format!("{}/completion", h.gw().proxy_url());
    let spawn = |headers: Vec<(&'static str, &'static str)>| {
        let (c, u) = (h.client.clone(), url.clone());
        h.rt.spawn(async move {
            let mut hs = vec![("x-sluice-deadline", "30")];
            hs.extend(headers);
            send(&c, &u, &hs, &completion(40)).await
        })
    };
    let _held = spawn(vec![]);
    h.wait_until("the slot taken", Duration::from_secs(5), |h| {
        h.backend_status(0)["in_flight"] == 1
    });
    let first = spawn(vec![]);
    h.wait_until("one queued", Duration::from_secs(5), |h| {
        h.status()["queue_depth"] == 1
    });
    let second = spawn(vec![]);
    h.wait_until("queue full", Duration::from_secs(5), |h| {
        h.status()["queue_depth"] == 2
    });
    // Anonymous, asking for critical: lowered to normal, refused, no one out.
    let anon = post(
        &h,
        &[
            ("x-sluice-priority", "critical"),
            ("x-sluice-deadline", "30"),
            ("authorization", "Bearer sk-guessed-0000"),
        ],
        1,
    );
    assert_eq!(anon.status, 503, "{}", anon.body);
    assert_eq!(anon.header("x-sluice-reason"), Some("queue_full"));
    assert_eq!(h.status()["queue_depth"], 2);
    assert!(!first.is_finished() && !second.is_finished());
    assert!(metrics(&h).contains("sluice_priority_lowered_total 1"));
    // The critical key displaces one normal entry.
    let ops = spawn(vec![
        ("x-sluice-priority", "critical"),
        ("authorization", "Bearer sk-ops-0123456789"),
    ]);
    let displaced = h.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if second.is_finished() {
                    return second.await.unwrap();
                }
                if first.is_finished() {
                    return first.await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("a normal entry displaced within 5 s")
    });
    assert_eq!(displaced.status, 503);
    assert_eq!(displaced.header("x-sluice-reason"), Some("displaced"));
    assert!(!ops.is_finished(), "the critical request waits its turn");
    eprintln!("anonymous critical: 503 queue_full, nobody displaced; ops critical: one displaced");
}

// === bounded state under churn ===

#[test]
fn rotating_tokens_and_addresses_leave_metrics_and_state_flat() {
    /// Distinct tokens and addresses in all; the first `HTTP` of each go
    /// through the proxy, the rest straight to the running gateway's gate
    /// (same identify, rate check and charge, without the HTTP cost).
    const N: usize = 20_000;
    const HTTP: usize = 4_000;
    const CAP: usize = 2_000;
    // One request a minute per key: no key goes idle during the test, so
    // the cap, not the sweep, bounds the store.
    let extra = format!(
        "[rate_limit]\nenabled = true\nrequests_per_minute = 1\nburst = 1\n\
         max_tracked_keys = {CAP}\n[token_budget]\nenabled = true\nmax_tracked_keys = {CAP}\n"
    );
    let (h, _) = start(
        vec![fast(4)],
        "trusted_proxies = [\"127.0.0.1\"]",
        "",
        &extra,
    );
    // Every series a request touches exists before the first count.
    assert_eq!(post(&h, &[("x-forwarded-for", "192.0.2.1")], 1).status, 200);
    let fwd = [("x-forwarded-for", "192.0.2.2"), ("x-sluice-deadline", "0")];
    assert_eq!(post(&h, &fwd, 1).status, 503);
    assert_eq!(post(&h, &fwd, 1).status, 429);
    let lines = |m: &str| m.lines().filter(|l| !l.starts_with('#')).count();
    let m0 = metrics(&h);
    let rss0 = rss_kib();
    let url = format!("{}/completion", h.gw().proxy_url());
    let gate = &h.gw().shared.gate;
    let now = tokio::time::Instant::now;
    // `x-sluice-deadline: 0`: identified, rate-checked and charged, then
    // refused before a backend is touched, so the churn runs fast.
    let blast = |header: &'static str, value: fn(usize) -> String| {
        let started = std::time::Instant::now();
        let statuses = h.rt.block_on(
            futures::stream::iter(0..HTTP)
                .map(|i| {
                    let (c, u, v) = (h.client.clone(), url.clone(), value(i));
                    async move {
                        let hs = [(header, v.as_str()), ("x-sluice-deadline", "0")];
                        send(&c, &u, &hs, &completion(1)).await.status
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<u16>>(),
        );
        let took = started.elapsed();
        let count = |s: u16| statuses.iter().filter(|x| **x == s).count();
        assert_eq!(count(503) + count(429), HTTP, "{statuses:?}");
        (took, count(503), count(429))
    };
    let token = |i: usize| format!("sk-{i:05}-{:016x}", rand::random::<u64>());
    let (took, s503, s429) = blast("authorization", |i| {
        format!("Bearer sk-{i:05}-{:016x}", rand::random::<u64>())
    });
    for i in HTTP..N {
        let id = gate
            .identify(Some(&token(i)), "127.0.0.1".parse().ok())
            .unwrap();
        let _ = gate.rate_check(&id, now());
        let _ = gate.charge_tokens(&id, 100, now());
    }
    let m1 = metrics(&h);
    let (rate1, budget1) = gate.tracked_keys();
    eprintln!(
        "{N} random tokens ({HTTP} over HTTP in {took:?}: {s503}×503, {s429}×429): /metrics \
         {} -> {} lines; tracked keys rate {rate1}, budget {budget1}",
        lines(&m0),
        lines(&m1)
    );
    assert!(!m1.contains("key=\"key-"), "a token minted a label value");
    assert!(rate1 <= 3 && budget1 <= 3, "tokens minted identities");
    // One request a minute from the address: the first passes the rate
    // check (503 for its zero deadline), every other one is 429.
    assert!(
        s503 <= 1,
        "rotating tokens evaded the address's rate limit: {s503}"
    );

    let addr = |i: usize| std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).to_string();
    let (took, s503, s429) = blast("x-forwarded-for", addr);
    for i in HTTP..N {
        let id = gate.identify(None, addr(i).parse().ok()).unwrap();
        let _ = gate.rate_check(&id, now());
        let _ = gate.charge_tokens(&id, 100, now());
    }
    let m2 = metrics(&h);
    let rss2 = rss_kib();
    let (rate2, budget2) = gate.tracked_keys();
    let overflow = m2
        .lines()
        .find(|l| l.starts_with("sluice_key_store_overflow_total{store=\"rate_limit\"}"))
        .unwrap_or("")
        .to_string();
    eprintln!(
        "{N} client addresses ({HTTP} over HTTP in {took:?}: {s503}×503 after the rate check, \
         {s429}×429): /metrics {} -> {} lines; tracked keys rate {rate2}, budget {budget2} (cap \
         {CAP}); {overflow}; RSS {:?} -> {:?} KiB",
        lines(&m1),
        lines(&m2),
        rss0,
        rss2
    );
    assert!(lines(&m2) <= lines(&m0) + 4, "{m2}");
    assert!(rate2 <= CAP + 1 && budget2 <= CAP + 1);
    assert!(
        !overflow.ends_with(" 0") && !overflow.is_empty(),
        "{overflow}"
    );
    let keys: Vec<_> = m2
        .lines()
        .filter(|l| l.starts_with("sluice_key_"))
        .filter_map(|l| l.split("key=\"").nth(1))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert!(keys.iter().all(|k| *k == "anonymous"), "{keys:?}");
}

// === reload ===

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    // Secret files open to others are refused (config::secrets).
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

#[test]
fn a_reload_revokes_a_key_at_once_and_an_invalid_file_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("sluice-reload-{:x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let token1 = write(&dir, "admin1.token", "admin-token-one-0123456\n");
    let token2 = write(&dir, "admin2.token", "admin-token-two-0123456\n");
    let key = |name: &str, secret: &str| {
        format!("[[api_keys]]\nname = \"{name}\"\nkey = \"{secret}\"\n[auth]\nrequire_key = true\n")
    };
    let admin = |t: &PathBuf| format!("token_file = {:?}", t.display().to_string());
    let (h, setup) = start(
        vec![fast(4)],
        "",
        &admin(&token1),
        &key("a", "sk-a-0123456789"),
    );
    let a = [("authorization", "Bearer sk-a-0123456789")];
    let b = [("authorization", "Bearer sk-b-0123456789")];
    assert_eq!(post(&h, &a, 1).status, 200);
    assert_eq!(post(&h, &b, 1).status, 401);
    let drain = |token: &str| {
        let url = format!("{}/backends/b0/undrain", h.gw().admin_url());
        h.rt.block_on(async {
            h.client
                .post(url)
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    assert_eq!(drain("admin-token-one-0123456"), 200);

    // The function SIGHUP calls, on a file with key b only and token two.
    let running =
        Config::parse(&setup.text("", &admin(&token1), &key("a", "sk-a-0123456789"))).unwrap();
    let file = write(
        &dir,
        "sluice.toml",
        &setup.text("", &admin(&token2), &key("b", "sk-b-0123456789")),
    );
    let reloader = Reloader::new(file.clone(), h.gw().shared.live(), running);
    assert!(reloader.reload());
    let revoked = post(&h, &a, 1);
    assert_eq!(revoked.status, 401, "a revoked key still works");
    assert_eq!(post(&h, &b, 1).status, 200);
    assert_eq!(drain("admin-token-one-0123456"), 401);
    assert_eq!(drain("admin-token-two-0123456"), 200);

    // An invalid file: refused, and everything stays as it was.
    write(
        &dir,
        "sluice.toml",
        &setup.text("", &admin(&token1), &key("a", "short")),
    );
    assert!(!reloader.reload());
    assert_eq!(post(&h, &a, 1).status, 401);
    assert_eq!(post(&h, &b, 1).status, 200);
    assert_eq!(drain("admin-token-two-0123456"), 200);

    // `RunningGateway::reload` applies the same: back to key a, auth off.
    let open = Config::parse(&setup.text(
        "",
        "",
        "[[api_keys]]\nname = \"a\"\nkey = \"sk-a-0123456789\"\n",
    ))
    .unwrap();
    h.gw().reload(&open);
    assert_eq!(post(&h, &a, 1).status, 200);
    assert_eq!(post(&h, &[], 1).status, 200, "auth is off");
    assert_eq!(
        drain("admin-token-two-0123456"),
        403,
        "no admin token: actions off"
    );
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "reload: revoked key 401 at once, new key 200; invalid file refused, old config kept"
    );
}
