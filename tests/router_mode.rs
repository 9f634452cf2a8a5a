//! llama-server router mode on the simulator (`sluice::sim::spawn_router`,
//! which copies the real 2026-10 router's endpoints): the gateway detects
//! the router, scrapes only loaded models and always with
//! `autoload=false` (the router's load counter stays at 0 from scrapes),
//! routes each request to its model's instance, and for a model no router
//! has loaded either waits while the router loads it or refuses it
//! (`routing.unloaded_model`).

mod support;

use std::time::Duration;

use serde_json::json;
use sluice::config::Config;
use sluice::gateway::{free_port, RunningGateway};
use sluice::sim::{spawn_router, RouterHandle, RouterOptions};
use support::{fast, get, poll, post, wait_until, Reply};

/// A router (tiny-a, tiny-b; instances of 2 fast slots) behind a gateway
/// scraping every 100 ms.
struct Rig {
    gw: RunningGateway,
    router: RouterHandle,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Rig {
    fn start(routing: &str) -> Rig {
        Rig::start_router(routing, true)
    }

    fn start_router(routing: &str, autoload: bool) -> Rig {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let router = rt
            .block_on(spawn_router(RouterOptions {
                load_time: Duration::from_millis(150),
                autoload,
                instance: fast(2),
                ..RouterOptions::default()
            }))
            .unwrap();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
             [scrape]\ninterval = \"100ms\"\ntimeout = \"500ms\"\n[routing]\n{routing}\n\
             [queue]\nmax_wait = \"5s\"\n\
             [[backends]]\nname = \"r\"\nurl = \"{}\"\n",
            free_port(),
            free_port(),
            router.url()
        );
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let gw = RunningGateway::start(&config).unwrap();
        Rig {
            gw,
            router,
            client: reqwest::Client::new(),
            rt,
        }
    }

    fn status(&self) -> serde_json::Value {
        let r = self
            .rt
            .block_on(get(&self.client, &self.gw.admin_url(), "/status"));
        serde_json::from_str(&r.body).unwrap()
    }

    fn backend(&self, name: &str) -> Option<serde_json::Value> {
        self.status()["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .cloned()
    }

    fn eligible(&self, name: &str) -> bool {
        self.backend(name).is_some_and(|b| b["eligible"] == true)
    }

    fn ask(&self, model: &str) -> Reply {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
        self.rt.block_on(post(
            &self.client,
            &self.gw.proxy_url(),
            "/v1/chat/completions",
            body,
        ))
    }

    /// Loads `model` as an operator would, on the router itself.
    fn load(&self, model: &str) {
        let r = self.rt.block_on(post(
            &self.client,
            &self.router.url(),
            "/models/load",
            json!({ "model": model }),
        ));
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.router.shutdown();
    }
}

#[test]
fn the_router_is_detected_and_scraping_never_loads_a_model() {
    let rig = Rig::start("");
    wait_until("the router detected", Duration::from_secs(5), || {
        rig.backend("r")
            .is_some_and(|b| b["router_models"].as_array().is_some_and(|m| m.len() == 2))
    });
    let r = rig.backend("r").unwrap();
    assert_eq!(
        r["router_models"][0],
        json!({"id": "tiny-a", "status": "unloaded"})
    );
    assert_eq!(r["eligible"], false, "a router itself is no capacity: {r}");
    // Five scrape rounds later, nothing was loaded by scraping.
    let seen = rig.router.props_reads();
    wait_until("5 scrape rounds", Duration::from_secs(5), || {
        rig.router.props_reads() >= seen + 5
    });
    assert_eq!(rig.router.loads(), 0);
    assert_eq!(rig.router.status("tiny-a"), Some("unloaded"));
    assert_eq!(rig.router.status("tiny-b"), Some("unloaded"));
    assert_eq!(rig.status()["backends"].as_array().unwrap().len(), 1);
    // The gateway lists the router's models, loaded or not, once each.
    let list = rig
        .rt
        .block_on(get(&rig.client, &rig.gw.proxy_url(), "/v1/models"));
    assert_eq!(list.status, 200, "{}", list.body);
    let v: serde_json::Value = serde_json::from_str(&list.body).unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny-a", "tiny-b"]);

    // An operator loads tiny-a: it becomes its own capacity, scraped per
    // model, and still nothing else loads.
    rig.load("tiny-a");
    wait_until("r/tiny-a eligible", Duration::from_secs(5), || {
        rig.eligible("r/tiny-a")
    });
    let a = rig.backend("r/tiny-a").unwrap();
    assert_eq!(a["slots"], 2, "{a}");
    assert_eq!(a["instance"], json!({"router": "r", "model": "tiny-a"}));
    let inst = rig.router.instance("tiny-a").unwrap();
    let scraped = inst.counters().metrics_scrapes;
    wait_until("3 scrapes of tiny-a", Duration::from_secs(5), || {
        inst.counters().metrics_scrapes >= scraped + 3
    });
    assert_eq!(rig.router.loads(), 1, "only the operator's load");
    assert_eq!(rig.router.status("tiny-b"), Some("unloaded"));
    let list = rig
        .rt
        .block_on(get(&rig.client, &rig.gw.proxy_url(), "/v1/models"));
    assert_eq!(list.body.matches("\"tiny-a\"").count(), 1, "{}", list.body);
    let metrics = rig
        .rt
        .block_on(get(&rig.client, &rig.gw.admin_url(), "/metrics"));
    assert!(
        metrics.body.contains("backend=\"r/tiny-a\""),
        "per-model series missing"
    );

    // Unloaded on the router: its sub-backend goes.
    let r = rig.rt.block_on(post(
        &rig.client,
        &rig.router.url(),
        "/models/unload",
        json!({"model": "tiny-a"}),
    ));
    assert_eq!(r.status, 200);
    wait_until("r/tiny-a removed", Duration::from_secs(5), || {
        rig.backend("r/tiny-a").is_none()
    });
}

#[test]
fn requests_reach_their_models_instance_and_unloaded_ones_wait_for_a_load() {
    let rig = Rig::start("");
    rig.load("tiny-a");
    wait_until("r/tiny-a eligible", Duration::from_secs(5), || {
        rig.eligible("r/tiny-a")
    });
    for _ in 0..10 {
        let r = rig.ask("tiny-a");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-sluice-backend"), Some("r/tiny-a"));
    }
    assert_eq!(
        rig.router.instance("tiny-a").unwrap().counters().received,
        10
    );

    // tiny-b is loaded nowhere: the request waits at the router while it
    // loads tiny-b (default routing.unloaded_model = "wait").
    let r = rig.ask("tiny-b");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-sluice-backend"), Some("r/tiny-b"));
    assert_eq!(rig.router.loads(), 2);
    assert_eq!(rig.router.status("tiny-b"), Some("loaded"));
    let b = rig.router.instance("tiny-b").unwrap();
    assert_eq!(b.counters().received, 1);
    // Once scraped as loaded, tiny-b has its own sub-backend.
    wait_until("r/tiny-b eligible", Duration::from_secs(5), || {
        rig.eligible("r/tiny-b")
    });
    let r = rig.ask("tiny-b");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-sluice-backend"), Some("r/tiny-b"));
    assert_eq!(b.counters().received, 2);
    assert_eq!(
        rig.router.instance("tiny-a").unwrap().counters().received,
        10
    );

    // An unknown model reaches no backend.
    let r = rig.ask("tiny-c");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.header("x-sluice-reason"), Some("model_not_found"));
    assert_eq!(rig.router.loads(), 2);
}

#[test]
fn refuse_answers_503_and_loads_nothing() {
    let rig = Rig::start("unloaded_model = \"refuse\"");
    rig.load("tiny-a");
    wait_until("r/tiny-a eligible", Duration::from_secs(5), || {
        rig.eligible("r/tiny-a")
    });
    let r = rig.ask("tiny-b");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("x-sluice-reason"), Some("model_not_loaded"));
    assert!(r.header("retry-after").is_some());
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not loaded"),
        "{v}"
    );
    assert_eq!(rig.router.loads(), 1, "the refusal loaded a model");
    assert_eq!(rig.router.status("tiny-b"), Some("unloaded"));
    // The loaded model is still served.
    let r = rig.ask("tiny-a");
    assert_eq!(r.status, 200, "{}", r.body);
    // Loaded elsewhere (an operator), tiny-b is served again.
    rig.load("tiny-b");
    assert!(
        poll(Duration::from_secs(5), || rig.eligible("r/tiny-b")),
        "{}",
        rig.status()
    );
    let r = rig.ask("tiny-b");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-sluice-backend"), Some("r/tiny-b"));
}

#[test]
fn a_router_that_does_not_autoload_is_not_sent_requests_to_wait() {
    let rig = Rig::start_router("", false);
    rig.load("tiny-a");
    wait_until("r/tiny-a eligible", Duration::from_secs(5), || {
        rig.eligible("r/tiny-a")
    });
    let r = rig.ask("tiny-b");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("x-sluice-reason"), Some("model_not_loaded"));
    assert_eq!(rig.router.loads(), 1);
    assert_eq!(rig.router.status("tiny-b"), Some("unloaded"));
    assert_eq!(rig.ask("tiny-a").status, 200);
}

/// The body and status of a capture in `2026-10-router/`.
fn capture(name: &str) -> (u16, serde_json::Value) {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/llama-server/2026-10-router/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[test]
fn the_simulated_router_answers_as_the_real_one() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let router = spawn_router(RouterOptions {
            load_time: Duration::from_millis(50),
            instance: fast(2),
            ..RouterOptions::default()
        })
        .await
        .unwrap();
        let c = reqwest::Client::new();
        let base = router.url();
        let read = |r: Reply| {
            (
                r.status,
                serde_json::from_str::<serde_json::Value>(&r.body).unwrap(),
            )
        };
        // Errors: the same status and the same body.
        for (path, file) in [
            ("/metrics", "metrics-nomodel.txt"),
            ("/slots", "slots-nomodel.txt"),
            (
                "/metrics?model=tiny-a&autoload=false",
                "metrics-a-unloaded-noautoload.txt",
            ),
            (
                "/props?model=tiny-a&autoload=false",
                "props-a-unloaded-noautoload.txt",
            ),
            (
                "/slots?model=tiny-a&autoload=false",
                "slots-a-unloaded-noautoload.txt",
            ),
        ] {
            assert_eq!(read(get(&c, &base, path).await), capture(file), "{path}");
        }
        for (body, file) in [
            (
                json!({"prompt": "Hello", "n_predict": 4}),
                "completion-nomodel.txt",
            ),
            (
                json!({"model": "nope", "prompt": "Hello"}),
                "completion-unknown-model.txt",
            ),
        ] {
            assert_eq!(
                read(post(&c, &base, "/completion", body).await),
                capture(file)
            );
        }
        // The router's own props and its list, field by field that matters.
        let (s, props) = read(get(&c, &base, "/props").await);
        let (_, real) = capture("props-nomodel.txt");
        assert_eq!(s, 200);
        for k in [
            "role",
            "max_instances",
            "models_autoload",
            "model_path",
            "build_info",
        ] {
            assert_eq!(props[k], real[k], "{k}");
        }
        let ids = |v: &serde_json::Value| -> Vec<(String, String)> {
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (m["id"].to_string(), m["status"]["value"].to_string()))
                .collect()
        };
        let (_, list) = read(get(&c, &base, "/models").await);
        assert_eq!(ids(&list), ids(&capture("models-initial.txt").1));
        assert_eq!(router.loads(), 0);
        // A read without autoload=false loads the model, as the real one does.
        let r = get(&c, &base, "/metrics?model=tiny-b").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("llamacpp:prompt_tokens_total"));
        assert_eq!(router.loads(), 1);
        assert_eq!(router.status("tiny-b"), Some("loaded"));
        let (s, props) = read(get(&c, &base, "/props?model=tiny-b&autoload=false").await);
        assert_eq!(s, 200);
        assert_eq!(props["total_slots"], 2);
        // A completion naming an unloaded model loads it and is answered.
        let r = post(
            &c,
            &base,
            "/completion",
            json!({"model": "tiny-a", "prompt": "Hello", "n_predict": 3}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(router.loads(), 2);
        assert_eq!(router.instance("tiny-a").unwrap().counters().received, 1);
        router.shutdown();

        // --no-models-autoload: nothing loads on demand.
        let router = spawn_router(RouterOptions {
            autoload: false,
            instance: fast(1),
            ..RouterOptions::default()
        })
        .await
        .unwrap();
        let base = router.url();
        let (s, props) = read(get(&c, &base, "/props").await);
        assert_eq!(
            (s, &props["models_autoload"]),
            (
                200,
                &capture("props-nomodel-no-autoload.txt").1["models_autoload"]
            )
        );
        let body = json!({"model": "tiny-a", "prompt": "Hello", "n_predict": 4});
        assert_eq!(
            read(post(&c, &base, "/completion", body).await),
            capture("completion-a-no-autoload.txt")
        );
        assert_eq!(
            read(get(&c, &base, "/metrics?model=tiny-a").await),
            capture("metrics-a-no-autoload.txt")
        );
        assert_eq!(router.loads(), 0);
        router.shutdown();
    });
}

#[test]
fn models_max_unloads_the_least_recently_used() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let router = spawn_router(RouterOptions {
            models_max: 1,
            load_time: Duration::from_millis(20),
            instance: fast(1),
            ..RouterOptions::default()
        })
        .await
        .unwrap();
        let c = reqwest::Client::new();
        for m in ["tiny-a", "tiny-b"] {
            let r = post(
                &c,
                &router.url(),
                "/completion",
                json!({"model": m, "prompt": "x", "n_predict": 1}),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        assert_eq!(router.status("tiny-a"), Some("unloaded"));
        assert_eq!(router.status("tiny-b"), Some("loaded"));
        router.shutdown();
    });
}

#[test]
fn a_burst_for_an_unloaded_model_loads_it_once_and_is_all_served() {
    let rig = Rig::start("");
    wait_until("the router detected", Duration::from_secs(5), || {
        rig.backend("r")
            .is_some_and(|b| b["router_models"].is_array())
    });
    // Twice LOAD_WAITERS at once: four wait at the router while it loads
    // tiny-b, the rest in the gateway queue until tiny-b's slots take them.
    let replies: Vec<Reply> = rig.rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let c = rig.client.clone();
                let url = rig.gw.proxy_url();
                let body = json!({"model": "tiny-b", "prompt": "hi", "n_predict": 4});
                tokio::spawn(async move { post(&c, &url, "/completion", body).await })
            })
            .collect();
        let mut v = Vec::new();
        for t in tasks {
            v.push(t.await.unwrap());
        }
        v
    });
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-sluice-backend"), Some("r/tiny-b"));
    }
    assert_eq!(rig.router.loads(), 1, "one load for the whole burst");
    assert_eq!(rig.router.status("tiny-a"), Some("unloaded"));
    assert_eq!(
        rig.router.instance("tiny-b").unwrap().counters().received,
        8
    );
}
