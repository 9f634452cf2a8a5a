//! Every injected fault, shown happening: through the in-process handle and
//! through `POST /sim/fault`.

mod support;

use std::time::{Duration, Instant};

use sluice::backend::promtext;
use sluice::sim::{self, Fault, FaultSet, MetricsFault, SimOptions};
use support::sim::*;

fn fast() -> SimOptions {
    SimOptions {
        slots: 2,
        gen_tps: 1000.0,
        prompt_tps: 100_000.0,
        ..SimOptions::default()
    }
}

async fn connect(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    tokio::net::TcpStream::connect(addr).await
}

#[tokio::test]
async fn refuse_connections_then_resume_on_same_port() {
    let s = sim::spawn(fast()).await.unwrap();
    let addr = s.addr();
    // A pooled keep-alive connection dies with the "process".
    let c = client();
    assert_eq!(
        c.get(format!("{}/health", s.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    s.stop_listening().await;
    let e = connect(addr).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(c.get(format!("{}/health", s.url())).send().await.is_err());
    s.resume_listening().await.unwrap();
    assert_eq!(s.addr(), addr);
    assert_eq!(get(&s.url(), "/health").await.0, 200);
    s.shutdown();
}

#[tokio::test]
async fn refuse_for_a_while_via_control_endpoint() {
    let s = sim::spawn(fast()).await.unwrap();
    let (st, _, _) = post(&s.url(), "/sim/fault", r#"{"refuse_for_ms": 300}"#).await;
    assert_eq!(st, 200);
    let addr = s.addr();
    let mut refused = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if connect(addr).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "never refused");
    assert!(eventually(Duration::from_millis(400), || s.is_listening()).await);
    assert_eq!(get(&s.url(), "/health").await.0, 200);
    s.shutdown();
}

#[tokio::test]
async fn accept_and_hang() {
    let s = sim::spawn(fast()).await.unwrap();
    s.set_fault(Fault::Hang);
    let r = client()
        .get(format!("{}/health", s.url()))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    // The connection was accepted; the control endpoint still answers.
    assert_eq!(get(&s.url(), "/sim/counters").await.0, 200);
    s.clear_faults();
    assert_eq!(get(&s.url(), "/health").await.0, 200);
    s.shutdown();
}

#[tokio::test]
async fn slow_down_by_a_factor() {
    let s = sim::spawn(SimOptions {
        gen_tps: 1000.0,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let body = r#"{"prompt":"hi","n_predict":50}"#; // ~51 ms at full speed
    let t = Instant::now();
    post(&s.url(), "/completion", body).await;
    let normal = t.elapsed();
    s.set_fault(Fault::Slow(4.0));
    let t = Instant::now();
    post(&s.url(), "/completion", body).await;
    let slow = t.elapsed();
    assert!(
        slow > normal * 3 && slow > Duration::from_millis(190),
        "{normal:?} {slow:?}"
    );
    // And through the control endpoint.
    let (st, _, _) = post(&s.url(), "/sim/fault", r#"{"slow": 1.0}"#).await;
    assert_eq!(st, 200);
    let t = Instant::now();
    post(&s.url(), "/completion", body).await;
    assert!(t.elapsed() < slow / 2, "back to normal speed");
    s.shutdown();
}

#[tokio::test]
async fn a_fraction_of_requests_get_5xx() {
    let s = sim::spawn(SimOptions {
        seed: 7,
        faults: FaultSet {
            error_rate: Some(0.5),
            ..FaultSet::default()
        },
        ..fast()
    })
    .await
    .unwrap();
    let mut errors = 0;
    for _ in 0..40 {
        let (st, _, body) = post(&s.url(), "/completion", r#"{"prompt":"hi","n_predict":0}"#).await;
        if st == 500 {
            assert!(body.contains("server_error"));
            errors += 1;
        }
    }
    assert!((8..=32).contains(&errors), "{errors} of 40");
    assert_eq!(s.counters().errors_injected, errors);
    s.set_fault(Fault::ErrorRate {
        fraction: 1.0,
        status: 503,
    });
    assert_eq!(
        post(&s.url(), "/v1/completions", r#"{"prompt":"x"}"#)
            .await
            .0,
        503
    );
    assert_eq!(
        get(&s.url(), "/health").await.0,
        200,
        "only inference fails"
    );
    s.shutdown();
}

#[tokio::test]
async fn reset_mid_stream_after_n_tokens() {
    let s = sim::spawn(fast()).await.unwrap();
    s.set_fault(Fault::ResetAfterTokens(3));
    let mut r = client()
        .post(format!("{}/completion", s.url()))
        .body(r#"{"prompt":"hi","n_predict":200,"stream":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (events, clean) = read_sse(&mut r).await;
    assert!(!clean, "stream must end in an error");
    assert_eq!(events.len(), 3, "{events:?}");
    // Non-streaming: the connection closes with no answer.
    let r = client()
        .post(format!("{}/completion", s.url()))
        .body(r#"{"prompt":"hi","n_predict":200}"#)
        .send()
        .await;
    assert!(r.is_err());
    assert!(eventually(Duration::from_secs(1), || s.counters().processing_now == 0).await);
    let c = s.counters();
    assert_eq!((c.resets_injected, c.cancelled), (2, 2));
    s.shutdown();
}

#[tokio::test]
async fn metrics_malformed_empty_disabled_and_delayed() {
    let s = sim::spawn(fast()).await.unwrap();
    s.set_fault(Fault::Metrics(MetricsFault::Malformed));
    let (st, _, body) = get(&s.url(), "/metrics").await;
    assert_eq!(st, 200);
    assert!(promtext::parse(&body).is_err(), "{body}");

    s.set_fault(Fault::Metrics(MetricsFault::Empty));
    let (st, _, body) = get(&s.url(), "/metrics").await;
    assert_eq!((st, body.as_str()), (200, ""));

    s.set_fault(Fault::Metrics(MetricsFault::Disabled));
    let (st, _, body) = get(&s.url(), "/metrics").await;
    assert_eq!(st, 501);
    assert!(body.contains("not_supported_error"));

    s.clear_faults();
    s.set_fault(Fault::MetricsDelay(Duration::from_millis(250)));
    let t = Instant::now();
    let (st, _, body) = get(&s.url(), "/metrics").await;
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert_eq!(st, 200);
    assert!(promtext::parse(&body).is_ok());

    let (st, _, _) = post(
        &s.url(),
        "/sim/fault",
        r#"{"metrics":"disabled","metrics_delay_ms":0}"#,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(get(&s.url(), "/metrics").await.0, 501);
    let (st, _, _) = post(&s.url(), "/sim/fault", r#"{"metrics":"sideways"}"#).await;
    assert_eq!(st, 400, "bad fault bodies are rejected");
    s.shutdown();
}

#[tokio::test]
async fn back_into_loading() {
    let s = sim::spawn(fast()).await.unwrap();
    assert_eq!(get(&s.url(), "/health").await.0, 200);
    s.set_loading(true);
    let (st, _, body) = get(&s.url(), "/health").await;
    assert_eq!(st, 503);
    assert!(body.contains("Loading model"));
    s.set_loading(false);
    assert_eq!(get(&s.url(), "/health").await.0, 200);
    post(&s.url(), "/sim/fault", r#"{"loading": true}"#).await;
    assert_eq!(get(&s.url(), "/v1/models").await.0, 503);
    post(&s.url(), "/sim/clear", "").await;
    assert_eq!(get(&s.url(), "/v1/models").await.0, 200);
    s.shutdown();
}
