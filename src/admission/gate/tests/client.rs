//! The client contract at the gate: hints for a client that says what it
//! is (an OpenAI SDK's timeout and retry count), promises, and returning
//! retries ranked first. Paused clock throughout.

use super::*;

const PATIENT: Duration = Duration::from_secs(60);

/// An SDK call: `taken` retries before this one, a 30 s timeout.
fn sdk(wait: Duration, taken: u32) -> Call {
    Call {
        wait,
        client: ClientHeaders {
            patience: Some(Duration::from_secs(30)),
            retries_taken: Some(taken),
        },
        default_wait: false,
    }
}

fn hint(r: Reject) -> Hint {
    r.hint().expect("a refusal with a hint")
}

fn metric(fleet: &Fleet, line: &str) -> bool {
    fleet.metrics.encode().lines().any(|l| l == line)
}

#[tokio::test(start_paused = true)]
async fn refused_sdk_clients_are_told_to_come_back_one_after_another() {
    let (_fleet, gate) = setup(&[1], "[queue]\ncapacity = 0\n");
    let now = Instant::now();
    let _held = ready(gate.admit(&someone(&gate, "x"), BUDGET, Priority::Normal, now));
    let w = Wants::default();
    // The drain prior: one completion a second. Each SDK refusal is
    // promised the next free second.
    let a = gate.admit_call(
        &someone(&gate, "a"),
        sdk(PATIENT, 0),
        Priority::Normal,
        w,
        now,
    );
    let b = gate.admit_call(
        &someone(&gate, "b"),
        sdk(PATIENT, 0),
        Priority::Normal,
        w,
        now,
    );
    let (a, b) = (hint(a.err().unwrap()), hint(b.err().unwrap()));
    assert_eq!((a.millis(), b.millis()), (1000, 2000));
    assert!(a.retry() && b.retry());
    // A plain client is told the same calendar, and makes no promise.
    let c = gate.admit(&someone(&gate, "c"), BUDGET, Priority::Normal, now);
    let d = gate.admit(&someone(&gate, "d"), BUDGET, Priority::Normal, now);
    assert_eq!(hint(c.err().unwrap()).millis(), 3000);
    assert_eq!(hint(d.err().unwrap()).millis(), 3000);
    // Promises nobody claims are forgotten (due 2 s, tolerance 1 s).
    advance(Duration::from_millis(3001)).await;
    let e = gate.admit(
        &someone(&gate, "e"),
        BUDGET,
        Priority::Normal,
        Instant::now(),
    );
    assert_eq!(hint(e.err().unwrap()).millis(), 1000);
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_comes_back_when_told_is_served_before_first_attempts() {
    let (fleet, gate) = setup(&[1], "");
    let now = Instant::now();
    let held = ready(gate.admit(&someone(&gate, "x"), BUDGET, Priority::Normal, now));
    let (_, mut first, _) =
        queued(gate.admit(&someone(&gate, "f"), PATIENT, Priority::Normal, now));
    let (_, mut early, _) = {
        // A retry count with no promise behind it: a first attempt.
        let c = sdk(PATIENT, 1);
        queued(gate.admit_call(
            &someone(&gate, "g"),
            c,
            Priority::Normal,
            Wants::default(),
            now,
        ))
    };
    // Too short a budget for the queue: refused, told when to return.
    let r = gate.admit_call(
        &someone(&gate, "r"),
        sdk(Duration::from_millis(500), 0),
        Priority::Normal,
        Wants::default(),
        now,
    );
    let told = hint(r.err().unwrap());
    assert!(told.retry());
    advance(told.wait()).await;
    refresh(&fleet, 1);
    let now = Instant::now();
    let (_, mut back, _) = queued(gate.admit_call(
        &someone(&gate, "r"),
        sdk(PATIENT, 1),
        Priority::Normal,
        Wants::default(),
        now,
    ));
    drop(held);
    gate.pump(Instant::now);
    assert!(
        back.try_recv().unwrap().is_ok(),
        "the returning retry first"
    );
    assert_eq!(first.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(early.try_recv().unwrap_err(), TryRecvError::Empty);
    assert!(metric(
        &fleet,
        "sluice_returning_retries_total{when_told=\"true\"} 1"
    ));
    assert!(metric(
        &fleet,
        "sluice_returning_retries_total{when_told=\"false\"} 1"
    ));
}

#[tokio::test(start_paused = true)]
async fn a_promise_ranks_one_retry_only() {
    let (_fleet, gate) = setup(&[1], "");
    let now = Instant::now();
    let _held = ready(gate.admit(&someone(&gate, "x"), BUDGET, Priority::Normal, now));
    let short = sdk(Duration::from_millis(200), 0);
    let r = gate.admit_call(
        &someone(&gate, "r"),
        short,
        Priority::Normal,
        Wants::default(),
        now,
    );
    advance(hint(r.err().unwrap()).wait()).await;
    let now = Instant::now();
    let w = Wants::default();
    let id = someone(&gate, "r");
    let (_, _a, _) = queued(gate.admit_call(&id, sdk(PATIENT, 1), Priority::Normal, w, now));
    let (_, _b, _) = queued(gate.admit_call(&id, sdk(PATIENT, 1), Priority::Normal, w, now));
    let Some(q) = gate.locked() else {
        panic!("a queue")
    };
    assert_eq!((q.len(), q.returning_len()), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn hopeless_retries_are_told_not_to_retry() {
    let (fleet, gate) = setup(&[1], "[queue]\ncapacity = 0\n");
    let now = Instant::now();
    let _held = ready(gate.admit(&someone(&gate, "x"), BUDGET, Priority::Normal, now));
    let w = Wants::default();
    // The last attempt of a default SDK: nothing can fit.
    let last = gate.admit_call(
        &someone(&gate, "a"),
        sdk(PATIENT, 2),
        Priority::Normal,
        w,
        now,
    );
    let last = hint(last.err().unwrap());
    assert!(!last.retry());
    assert!(last.millis() >= 100);
    assert!(metric(&fleet, "sluice_no_retry_answers_total 1"));
    // A fleet that will not free a slot within two 30 s waits: no retry.
    for b in fleet.backends().iter() {
        b.observe_duration(Duration::from_secs(120));
    }
    gate.completed(now);
    advance(Duration::from_secs(120)).await;
    refresh(&fleet, 1);
    let now = Instant::now();
    let far = gate.admit_call(
        &someone(&gate, "b"),
        sdk(PATIENT, 0),
        Priority::Normal,
        w,
        now,
    );
    let far = hint(far.err().unwrap());
    assert!(!far.retry(), "{far:?}");
}
