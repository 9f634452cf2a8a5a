//! The console's JSON endpoint and page on a running gateway: `/ui` and its
//! files are served with a strict policy, `/ui/state.json` carries the
//! `/status` document, the sampler's points (bounded by the ring) and the
//! gateway's "now" with served and refused requests, and `?since=` returns
//! only newer points.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{completion, fast, get, Harness};

fn state(h: &Harness, since: u64) -> Value {
    let r = h.rt.block_on(get(
        &h.client,
        &h.gw().admin_url(),
        &format!("/ui/state.json?since={since}"),
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

#[test]
fn state_json_follows_the_gateway_and_the_page_is_served() {
    let h = Harness::start(vec![fast(2), fast(2)], "", &[]);
    h.wait_all_eligible();
    for _ in 0..4 {
        assert_eq!(h.post("/completion", completion(4)).status, 200);
    }
    let bad = h.rt.block_on(support::post(
        &h.client,
        &h.gw().proxy_url(),
        "/completion",
        "{not json",
    ));
    assert_eq!(bad.status, 400, "{}", bad.body);

    // The sampler ticks once a second; the window holds both kinds soon.
    let mut last = Value::Null;
    let seen = support::poll(Duration::from_secs(15), || {
        last = state(&h, 0);
        let now = &last["now"];
        now["admitted_per_s"].as_f64() > Some(0.0)
            && now["shed_reasons"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x[0] == "invalid_json"))
    });
    assert!(seen, "no served and refused requests in {last:#}");

    let status = h.status();
    let names = |v: &Value| -> Vec<String> {
        v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&last["status"]), names(&status));
    assert_eq!(last["status"]["backends"][0]["slots"], 2);
    let points = last["points"].as_array().unwrap();
    assert!(!points.is_empty() && points.len() as u64 <= last["capacity"].as_u64().unwrap());
    assert_eq!(last["capacity"], 900);
    assert_eq!(points.last().unwrap()["seq"], last["seq"]);
    assert_eq!(points[0]["backends"].as_array().unwrap().len(), 2);
    assert!(last["sampler_tick_seconds"].as_f64().unwrap() >= 0.0);

    let seq = last["seq"].as_u64().unwrap();
    let newer = state(&h, seq);
    assert!(newer["points"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["seq"].as_u64().unwrap() > seq));

    let admin = h.gw().admin_url();
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let r = h.rt.block_on(get(&h.client, &admin, path));
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(r
            .header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'"));
    }
    let r = h.rt.block_on(get(&h.client, &admin, "/ui/nothing"));
    assert_eq!(r.status, 404);
}
