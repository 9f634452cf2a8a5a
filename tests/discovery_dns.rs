//! DNS-discovered fleets against a real resolver: dnsmasq on loopback
//! answers `llama.fleet.test` from a hosts file this test rewrites, and
//! simulated llama-servers listen on 127.0.0.2, .3, .4 at one port (Linux
//! routes all of 127/8 to lo). The fleet grows (traffic reaches every new
//! member), shrinks (the leaver gets no new request, its stream finishes),
//! survives a DNS outage (members kept, requests served) and empties on
//! NXDOMAIN (drained; not ready).

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice::config::Config;
use sluice::gateway::{free_port, RunningGateway};
use sluice::sim::{SimHandle, SimOptions};
use support::dns::Dnsmasq;

const NAME: &str = "llama.fleet.test";

/// Join and leave times are a resolve period, a TTL and a scrape round or
/// two; this bound is loose for a busy shared machine.
const WITHIN: Duration = Duration::from_secs(15);

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// 4 slots, 100 tokens/s: a 300-token stream runs ~3 s.
fn sim_options() -> SimOptions {
    SimOptions {
        slots: 4,
        gen_tps: 100.0,
        prompt_tps: 100_000.0,
        ..SimOptions::default()
    }
}

/// Three sims at 127.0.0.2-4, one port.
async fn spawn_sims() -> (u16, Vec<SimHandle>) {
    for _ in 0..10 {
        let port = std::net::TcpListener::bind("127.0.0.2:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let mut sims = Vec::new();
        for last in 2..=4 {
            match sluice::sim::spawn_at(SocketAddr::new(ip(last), port), sim_options()).await {
                Ok(s) => sims.push(s),
                Err(_) => break,
            }
        }
        if sims.len() == 3 {
            return (port, sims);
        }
        sims.iter().for_each(|s| s.shutdown());
    }
    panic!("no port free on 127.0.0.2, .3 and .4 at once");
}

struct Bed {
    rt: tokio::runtime::Runtime,
    sims: Vec<SimHandle>,
    gw: RunningGateway,
    client: reqwest::Client,
}

impl Bed {
    fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .rt
            .block_on(support::get(&self.client, &self.gw.admin_url(), path));
        (r.status, r.body)
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.get("/status").1).unwrap()
    }

    fn entry(&self) -> Value {
        self.status()["discovery"][0].clone()
    }

    fn members(&self) -> Vec<String> {
        let e = self.entry();
        e["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect()
    }

    /// The fleet's backends that may take a request now.
    fn eligible(&self) -> Vec<String> {
        let s = self.status();
        let mut v: Vec<String> = s["backends"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["eligible"] == true)
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    fn in_flight(&self, name: &str) -> u64 {
        self.status()["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .map_or(0, |b| b["in_flight"].as_u64().unwrap())
    }

    fn received(&self) -> Vec<u64> {
        self.sims.iter().map(|s| s.counters().received).collect()
    }

    /// `n` short completions at once, each with its own prompt (no cache
    /// affinity); their statuses.
    fn burst(&self, n: usize, tokens: u32) -> Vec<u16> {
        let url = format!("{}/v1/chat/completions", self.gw.proxy_url());
        self.rt.block_on(async {
            let calls = (0..n).map(|i| {
                let body = json!({
                    "messages": [{"role": "user", "content": format!("question {i} {}", rand::random::<u64>())}],
                    "max_tokens": tokens,
                });
                let (client, url) = (self.client.clone(), url.clone());
                async move {
                    client
                        .post(url)
                        .body(body.to_string())
                        .send()
                        .await
                        .map_or(0, |r| r.status().as_u16())
                }
            });
            futures::future::join_all(calls).await
        })
    }

    /// A 300-token stream read to its end on the runtime: its status and
    /// whether it ended with `[DONE]`.
    fn stream(&self) -> tokio::task::JoinHandle<(u16, bool)> {
        let url = format!("{}/v1/chat/completions", self.gw.proxy_url());
        let body = json!({
            "messages": [{"role": "user", "content": format!("a long story {}", rand::random::<u64>())}],
            "max_tokens": 300, "stream": true,
        });
        let client = self.client.clone();
        self.rt.spawn(async move {
            let Ok(mut r) = client.post(url).body(body.to_string()).send().await else {
                return (0, false);
            };
            let status = r.status().as_u16();
            let mut text = Vec::new();
            while let Ok(Some(chunk)) = r.chunk().await {
                text.extend_from_slice(&chunk);
            }
            let done = String::from_utf8_lossy(&text).contains("data: [DONE]");
            (status, done)
        })
    }

    fn wait(&self, what: &str, f: impl Fn(&Bed) -> bool) -> Duration {
        let t0 = Instant::now();
        if !support::poll(WITHIN, || f(self)) {
            panic!("timed out waiting for {what}; status: {:#}", self.status());
        }
        t0.elapsed()
    }
}

fn gateway_config(dns: &Dnsmasq, port: u16) -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nthreads = 2\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
         [scrape]\ninterval = \"100ms\"\ntimeout = \"500ms\"\n\
         [[backends]]\nname = \"pool\"\ndiscover = \"dns\"\nurl = \"http://{NAME}:{port}\"\n\
         resolve_every = \"200ms\"\n\
         [discovery]\nnameservers = [\"{}\"]\n",
        free_port(),
        free_port(),
        dns.addr()
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn names(ips: &[u8]) -> Vec<String> {
    ips.iter().map(|i| format!("pool/127.0.0.{i}")).collect()
}

#[test]
fn a_discovered_fleet_grows_shrinks_and_outlives_its_dns() {
    let mut dns = Dnsmasq::start("fleet.test");
    dns.set(NAME, &[ip(2)]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (port, sims) = rt.block_on(spawn_sims());
    let gw = RunningGateway::start(&gateway_config(&dns, port)).unwrap();
    let bed = Bed {
        rt,
        sims,
        gw,
        client: reqwest::Client::new(),
    };

    // Start: the first lookup ran before the listeners opened.
    assert_eq!(bed.members(), names(&[2]), "{:#}", bed.status());
    bed.wait("the first member eligible", |b| b.eligible() == names(&[2]));

    // Grow: 1 → 3 members, each serving.
    dns.set(NAME, &[ip(2), ip(3), ip(4)]);
    let join = bed.wait("three members eligible", |b| {
        b.eligible() == names(&[2, 3, 4])
    });
    let before = bed.received();
    let statuses = bed.burst(12, 40);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let after = bed.received();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(
            a > b,
            "member 127.0.0.{} got no request: {before:?} → {after:?}",
            i + 2
        );
    }

    // A reload (SIGHUP's path) of the same file keeps what DNS found.
    let changes = bed.gw.reload(&gateway_config(&dns, port));
    assert!(
        changes.removed.is_empty() && changes.added.is_empty(),
        "{changes:?}"
    );
    assert_eq!(bed.eligible(), names(&[2, 3, 4]));

    // Shrink: 127.0.0.4 leaves while streaming; it is drained, not cut.
    let mut streams = Vec::new();
    while bed.in_flight("pool/127.0.0.4") == 0 {
        assert!(
            streams.len() < 12,
            "no stream reached 127.0.0.4: {:#}",
            bed.status()
        );
        streams.push(bed.stream());
        support::poll(Duration::from_millis(500), || {
            bed.in_flight("pool/127.0.0.4") > 0
        });
    }
    // Every request the gateway sent there has arrived.
    bed.wait("the leaver's streams arrived", |b| {
        b.in_flight("pool/127.0.0.4") as usize == b.sims[2].counters().processing_now
    });
    let completed_on_leaver = bed.sims[2].counters().completed;
    dns.set(NAME, &[ip(2), ip(3)]);
    let leave = bed.wait("127.0.0.4 gone from the fleet", |b| {
        b.members() == names(&[2, 3]) && !b.eligible().iter().any(|n| n.ends_with(".4"))
    });
    let leaver_seen = bed.sims[2].counters().received;
    // Fewer than the free slots: the streams still hold some.
    let statuses = bed.burst(4, 20);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        bed.sims[2].counters().received,
        leaver_seen,
        "the member that left got a new request"
    );
    let ends: Vec<(u16, bool)> = bed
        .rt
        .block_on(futures::future::join_all(streams))
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(ends.iter().all(|e| *e == (200, true)), "{ends:?}");
    assert!(
        bed.sims[2].counters().completed > completed_on_leaver,
        "the leaver's stream did not finish there"
    );

    // A DNS outage: lookups fail, the members stay, the gateway serves.
    dns.kill();
    let outage = bed.wait("a failed lookup", |b| b.entry()["last_outcome"] == "error");
    assert_eq!(bed.members(), names(&[2, 3]));
    assert!(bed.entry()["last_error"].is_string(), "{:#}", bed.entry());
    let statuses = bed.burst(8, 20);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let metrics = bed.get("/metrics").1;
    let errors: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "sluice_discovery_resolutions_total{backend=\"pool\",outcome=\"error\"} ",
            )
        })
        .unwrap_or_else(|| panic!("no error count:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(errors >= 1.0, "{errors}");
    assert!(metrics.contains("sluice_discovery_members{backend=\"pool\"} 2"));

    // NXDOMAIN: the name is gone, so are the members; not ready.
    dns.set(NAME, &[]);
    dns.restart();
    let empty = bed.wait("no members after NXDOMAIN", |b| {
        b.members().is_empty() && b.entry()["last_outcome"] == "empty"
    });
    assert!(bed.eligible().is_empty());
    assert_eq!(bed.get("/readyz").0, 503);

    eprintln!(
        "discovery timings (hosts file change → /status, resolve_every 200ms, TTL 1s, scrape 100ms): \
         join→serving {} ms, leave→drained {} ms, outage→error seen {} ms, NXDOMAIN→empty {} ms",
        join.as_millis(),
        leave.as_millis(),
        outage.as_millis(),
        empty.as_millis()
    );
    bed.gw.stop();
    bed.sims.iter().for_each(|s| s.shutdown());
}

#[test]
fn check_warns_about_a_name_that_does_not_resolve_yet() {
    let dns = Dnsmasq::start("fleet.test");
    let dir = std::env::temp_dir().join(format!("sluice-dnscheck-{:x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            "[[backends]]\nname = \"pool\"\ndiscover = \"dns\"\nurl = \"http://{NAME}:8080\"\n\
             [discovery]\nnameservers = [\"{}\"]\n",
            dns.addr()
        ),
    )
    .unwrap();
    let check = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), stdout, stderr)
    };
    let (ok, stdout, stderr) = check();
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ok (0 backends, 1 discovered)"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "warning: discovered backend \"pool\": {NAME} gives no member now (no such name"
        )),
        "{stderr}"
    );
    dns.set(NAME, &[ip(9)]);
    support::wait_until("dnsmasq to read the hosts file", WITHIN, || {
        dns.rcode(NAME) == Some(0)
    });
    let (ok, _, stderr) = check();
    assert!(ok && !stderr.contains("warning"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
