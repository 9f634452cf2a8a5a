//! What the end of a request counts: its outcome and reason (metrics labels,
//! access log), what it says about its backend (breaker verdict, limiter
//! sample), the tokens that settle the key's budget, and the timings.
//!
//! [`complete`] is a pure function of what happened, so every row of the
//! table is a unit test; [`SluiceProxy::finish`] gathers the facts in
//! `logging` and applies the answer to metrics, fleet, gate and the log.
//!
//! | what happened                             | outcome         | reason          |
//! |-------------------------------------------|-----------------|-----------------|
//! | the backend timed out, or failed mid-way  | `failed`        | from the Reject |
//! | the gateway refused it                    | `rejected`      | from the Reject |
//! | the client left while queued              | `client_closed` | `left_queue`    |
//! | the client left later                     | `client_closed` | `client_closed` |
//! | another error                             | `failed`        | `upstream_error`|
//! | a response                                | `served`        | status class    |

use std::sync::Arc;
use std::time::Duration;

use pingora::prelude::*;
use tokio::time::Instant;

use super::facts::Class;
use super::rescue::Failure;
use super::{Ctx, SluiceProxy};
use crate::backend::breaker::Outcome;
use crate::backend::limiter::ResponseSample;
use crate::cluster::Charge;
use crate::reject::Reject;
use crate::usage::{self, Usage};

/// The moments of one request.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub start: Instant,
    /// When it got its permit (after any queueing).
    pub dispatched: Option<Instant>,
    pub first_byte: Option<Instant>,
    pub end: Instant,
}

/// What happened to one request, as `logging` sees it.
#[derive(Debug, Clone, Copy)]
pub struct Ended<'a> {
    pub failure: Option<Failure>,
    /// The status written to the client (0: none).
    pub status: u16,
    /// The rejection the client was sent, if any.
    pub reject: Option<&'a Reject>,
    pub left_queue: bool,
    pub class: Class,
    /// A backend still held the request's permit at the end.
    pub had_backend: bool,
    pub times: Times,
    /// Read from the response's tail (empty if there was none).
    pub usage: Usage,
    /// Events a streamed response carried (`None`: not a stream).
    pub streamed: Option<u64>,
    /// The prompt's size as estimated from the body, if it was read.
    pub prompt_estimate: Option<u64>,
}

/// What the backend's breaker and limiter learn from an inference request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// The limiter's sample, for successes only.
    pub sample: Option<ResponseSample>,
}

/// Everything the end of a request counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completion {
    pub outcome: &'static str,
    pub reason: &'static str,
    /// For an inference request that had a backend.
    pub verdict: Option<Verdict>,
    /// Tokens used, to settle the key's admission charge (`None`: nothing to
    /// settle here).
    pub settle_tokens: Option<u64>,
    /// (prompt, completion) tokens counted for the key.
    pub key_tokens: Option<(u64, u64)>,
    /// Time waited for a permit.
    pub queue: Option<Duration>,
    /// Time to the first response byte, from the start.
    pub ttft: Option<Duration>,
    pub duration: Duration,
    /// The backend's duration histogram observes this request.
    pub observe_duration: bool,
    /// The backend's typical-duration estimate learns from it.
    pub learn_duration: bool,
    /// Per-token times (generation, prompt) the backend's speed learns from:
    /// successes that reported them.
    pub speed: Option<(Option<f64>, Option<f64>)>,
}

/// Generations shorter than this say little about per-token time: the
/// prompt dominates it.
const MIN_TOKENS_FOR_PER_TOKEN: u64 = 8;

pub fn complete(x: &Ended) -> Completion {
    let t = x.times;
    let (outcome, reason) = match (x.reject, x.failure) {
        (Some(r @ (Reject::UpstreamTimeout | Reject::UpstreamError)), _) => ("failed", r.reason()),
        (Some(r), _) => ("rejected", r.reason()),
        _ if x.left_queue => ("client_closed", "left_queue"),
        (None, Some(Failure::Downstream)) => ("client_closed", "client_closed"),
        (None, Some(_)) => ("failed", "upstream_error"),
        (None, None) => ("served", status_class(x.status)),
    };
    // A response that ended before its usage (client gone, backend reset)
    // is counted by what was seen: the events streamed (one per token, plus
    // the role-only first chunk of a chat stream) and, once the backend
    // answered at all, the prompt estimated from the body.
    // A complete response without usable figures counts what it says.
    let cut = x.failure.is_some() || x.streamed.is_some();
    let answered = t.first_byte.is_some();
    let prompt = x
        .usage
        .prompt_tokens
        .or(x.prompt_estimate.filter(|_| answered && cut))
        .unwrap_or(0);
    let generated = x.usage.completion_tokens.or(x.streamed).unwrap_or(0);
    let inference_on_backend = x.had_backend && x.class == Class::Inference;
    let verdict = inference_on_backend.then(|| {
        let outcome = backend_outcome(x.failure, x.status, t.first_byte.is_some());
        let dispatched = t.dispatched.unwrap_or(t.start);
        let sample = (outcome == Outcome::Success).then(|| ResponseSample {
            latency: t.end.saturating_duration_since(dispatched),
            ttft: t
                .first_byte
                .map(|f| f.saturating_duration_since(dispatched)),
            per_token: x
                .usage
                .per_token_ms
                .filter(|_| generated >= MIN_TOKENS_FOR_PER_TOKEN)
                .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok()),
            in_server_wait: None,
        });
        Verdict { outcome, sample }
    });
    let served_by_backend = x.had_backend && outcome == "served";
    Completion {
        outcome,
        reason,
        verdict,
        settle_tokens: match (x.had_backend, x.class) {
            (false, _) => Some(0),
            (true, Class::Inference) => Some(prompt.saturating_add(generated)),
            (true, Class::Passthrough) => None,
        },
        key_tokens: inference_on_backend.then_some((prompt, generated)),
        queue: t.dispatched.map(|d| d.saturating_duration_since(t.start)),
        ttft: t.first_byte.map(|f| f.saturating_duration_since(t.start)),
        duration: t.end.saturating_duration_since(t.start),
        observe_duration: served_by_backend,
        learn_duration: served_by_backend && x.class == Class::Inference && x.status < 500,
        speed: verdict
            .filter(|v| v.outcome == Outcome::Success)
            .map(|_| {
                (
                    x.usage
                        .per_token_ms
                        .filter(|_| generated >= MIN_TOKENS_FOR_PER_TOKEN),
                    x.usage.prompt_per_token_ms,
                )
            })
            .filter(|(g, p)| g.is_some() || p.is_some()),
    }
}

/// What the end of a proxied request says about its backend.
fn backend_outcome(failure: Option<Failure>, status: u16, got_first_byte: bool) -> Outcome {
    match failure {
        // The client's doing; connect failures were reported by
        // fail_to_connect; a status error is the gateway's own refusal.
        Some(Failure::Downstream | Failure::Connect | Failure::Status(_)) => Outcome::NotCounted,
        Some(Failure::ReadTimeout { .. }) if !got_first_byte => Outcome::FirstByteTimeout,
        Some(_) => Outcome::Reset,
        // 503 is llama-server's "Loading model" (the scrape loop sees it);
        // 4xx is the client's doing.
        None if status >= 500 && status != 503 => Outcome::ServerError5xx,
        None if (200..400).contains(&status) => Outcome::Success,
        None => Outcome::NotCounted,
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

// === Applying it ===

impl SluiceProxy {
    /// Counts the end of a request, then returns the backend's in-flight
    /// unit now rather than when pingora drops the context.
    pub(super) fn finish(&self, session: &Session, e: Option<&Error>, ctx: &mut Ctx, end: Instant) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let backend = ctx.permit.as_ref().map(|p| Arc::clone(p.backend()));
        let c = complete(&Ended {
            failure: e.map(Failure::of),
            status,
            reject: ctx.reject.as_ref(),
            left_queue: ctx.left_queue,
            class: ctx.facts.class,
            had_backend: backend.is_some(),
            times: Times {
                start: ctx.start,
                dispatched: ctx.dispatched,
                first_byte: ctx.first_byte,
                end,
            },
            usage: ctx
                .tail
                .as_ref()
                .map(|t| usage::scan(t.as_slice()))
                .unwrap_or_default(),
            streamed: ctx.stream.map(|s| s.events()),
            prompt_estimate: ctx.body.as_ref().map(|b| b.prompt_tokens),
        });
        self.metrics
            .request(ctx.facts.class.as_str(), c.outcome, c.reason);
        if ctx.facts.class == Class::Inference {
            let named = ctx.body.as_ref().and_then(|b| b.model.as_deref());
            self.metrics
                .model_request(&self.fleet.model_label(named), c.outcome);
        }
        if c.outcome == "rejected" {
            self.metrics
                .reject_seconds
                .observe(c.duration.as_secs_f64());
        }
        if let Some(id) = &ctx.identity {
            self.metrics.key_request(&id.name, c.outcome);
            if let Some((prompt, generated)) = c.key_tokens {
                self.metrics.key_tokens(&id.name, prompt, generated);
            }
            if let (Some(charged), Some(used)) = (ctx.tokens_charged, c.settle_tokens) {
                ctx.tokens_charged = None;
                match &self.cluster {
                    Some(cl) => {
                        let shared = ctx.tokens_shared;
                        let charge = Charge {
                            tokens: charged,
                            shared,
                        };
                        cl.settle_tokens(&self.gate, id, charge, used, end);
                    }
                    None => self.gate.reconcile_tokens(id, charged, used, end),
                }
            }
        }
        if let Some(b) = &backend {
            if let Some(v) = c.verdict {
                self.fleet.report(b, v.outcome, v.sample, end);
                self.gate.completed(end);
            }
            if let Some(ttft) = c.ttft {
                b.metrics.ttft.observe(ttft.as_secs_f64());
            }
            if c.observe_duration {
                b.metrics.duration.observe(c.duration.as_secs_f64());
            }
            if c.learn_duration {
                // The backend's time, from dispatch: a wait in the gateway
                // queue is not part of what a request costs the fleet.
                b.observe_duration(c.duration.saturating_sub(c.queue.unwrap_or_default()));
            }
            if let Some((gen_ms, prompt_ms)) = c.speed {
                // Still holding this request's permit: it counts itself.
                b.observe_speed(gen_ms, prompt_ms, b.in_flight());
            }
        }
        let ms = |d: Duration| d.as_millis() as u64;
        tracing::info!(
            target: "sluice::access",
            request_id = %ctx.facts.request_id,
            method = %session.req_header().method,
            path = session.req_header().uri.path(),
            backend = backend.as_ref().map(|b| b.name()).unwrap_or("-"),
            status,
            outcome = c.outcome,
            reason = c.reason,
            key = ctx.identity.as_ref().map(|i| &*i.name).unwrap_or("-"),
            queue_ms = c.queue.map(ms),
            ttft_ms = c.ttft.map(ms),
            duration_ms = ms(c.duration),
        );
        match ctx.permit.take() {
            // A request that ran to its end teaches the backend how long
            // requests take against their estimates; any other, nothing.
            Some(p) if c.learn_duration => p.finish(end),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    /// An inference request dispatched at 10 ms, first byte at 50 ms, ended
    /// at 200 ms, on a backend.
    fn ended(start: Instant) -> Ended<'static> {
        Ended {
            failure: None,
            status: 200,
            reject: None,
            left_queue: false,
            class: Class::Inference,
            had_backend: true,
            times: Times {
                start,
                dispatched: Some(at(start, 10)),
                first_byte: Some(at(start, 50)),
                end: at(start, 200),
            },
            usage: Usage {
                prompt_tokens: Some(20),
                completion_tokens: Some(10),
                per_token_ms: Some(15.0),
                prompt_per_token_ms: Some(1.0),
            },
            streamed: None,
            prompt_estimate: Some(25),
        }
    }

    fn verdict(c: &Completion) -> Outcome {
        c.verdict.expect("a verdict").outcome
    }

    #[test]
    fn success_gives_a_sample_timed_from_dispatch() {
        let start = Instant::now();
        let c = complete(&ended(start));
        assert_eq!((c.outcome, c.reason), ("served", "2xx"));
        let v = c.verdict.unwrap();
        assert_eq!(v.outcome, Outcome::Success);
        let s = v.sample.unwrap();
        assert_eq!(s.latency, Duration::from_millis(190));
        assert_eq!(s.ttft, Some(Duration::from_millis(40)));
        assert_eq!(s.per_token, Some(Duration::from_millis(15)));
        assert_eq!(c.speed, Some((Some(15.0), Some(1.0))));
        assert_eq!(c.settle_tokens, Some(30));
        assert_eq!(c.key_tokens, Some((20, 10)));
        assert_eq!(c.queue, Some(Duration::from_millis(10)));
        assert_eq!(c.ttft, Some(Duration::from_millis(50)));
        assert_eq!(c.duration, Duration::from_millis(200));
        assert!(c.observe_duration && c.learn_duration);

        // A short generation gives no per-token time.
        let mut x = ended(start);
        x.usage.completion_tokens = Some(7);
        let s = complete(&x).verdict.unwrap().sample.unwrap();
        assert_eq!(s.per_token, None);
    }

    #[test]
    fn absurd_usage_saturates_instead_of_panicking() {
        let mut x = ended(Instant::now());
        x.usage = Usage {
            prompt_tokens: Some(u64::MAX),
            completion_tokens: Some(u64::MAX),
            per_token_ms: Some(f64::MAX),
            prompt_per_token_ms: Some(f64::MAX),
        };
        let c = complete(&x);
        assert_eq!(c.settle_tokens, Some(u64::MAX));
        assert_eq!(c.key_tokens, Some((u64::MAX, u64::MAX)));
        assert_eq!(c.verdict.unwrap().sample.unwrap().per_token, None);
    }

    #[test]
    fn a_stream_cut_before_its_usage_is_billed_what_was_streamed() {
        let mut x = ended(Instant::now());
        x.usage = Usage::default();
        x.streamed = Some(41);
        x.failure = Some(Failure::Downstream);
        let c = complete(&x);
        assert_eq!(c.settle_tokens, Some(25 + 41));
        assert_eq!(c.key_tokens, Some((25, 41)));
        // The backend never answered: no prompt is known to be processed.
        x.times.first_byte = None;
        x.streamed = Some(0);
        assert_eq!(complete(&x).settle_tokens, Some(0));
        // The final usage, when it came, wins over the counts.
        let mut x = ended(Instant::now());
        x.streamed = Some(99);
        assert_eq!(complete(&x).key_tokens, Some((20, 10)));
    }

    #[test]
    fn client_gone_counts_nothing_against_the_backend() {
        let mut x = ended(Instant::now());
        x.failure = Some(Failure::Downstream);
        let c = complete(&x);
        assert_eq!((c.outcome, c.reason), ("client_closed", "client_closed"));
        assert_eq!(verdict(&c), Outcome::NotCounted);
        assert!(!c.observe_duration);
    }

    #[test]
    fn upstream_timeout_before_the_first_byte() {
        let mut x = ended(Instant::now());
        x.failure = Some(Failure::ReadTimeout { upstream: true });
        x.times.first_byte = None;
        x.status = 504;
        x.reject = Some(&Reject::UpstreamTimeout);
        let c = complete(&x);
        assert_eq!((c.outcome, c.reason), ("failed", "upstream_timeout"));
        assert_eq!(verdict(&c), Outcome::FirstByteTimeout);
        assert_eq!(c.verdict.unwrap().sample, None);
        // After the first byte it is a reset stream.
        x.times.first_byte = Some(at(x.times.start, 50));
        assert_eq!(verdict(&complete(&x)), Outcome::Reset);
    }

    #[test]
    fn other_upstream_failures() {
        let mut x = ended(Instant::now());
        x.failure = Some(Failure::Other);
        x.status = 0;
        let c = complete(&x);
        assert_eq!((c.outcome, c.reason), ("failed", "upstream_error"));
        assert_eq!(verdict(&c), Outcome::Reset);
        x.reject = Some(&Reject::UpstreamError);
        x.status = 502;
        assert_eq!(complete(&x).reason, "upstream_error");
        // Connect failures were reported already.
        x.failure = Some(Failure::Connect);
        assert_eq!(verdict(&complete(&x)), Outcome::NotCounted);
    }

    #[test]
    fn server_errors_but_not_loading_503() {
        let mut x = ended(Instant::now());
        x.status = 500;
        let c = complete(&x);
        assert_eq!((c.outcome, c.reason), ("served", "5xx"));
        assert_eq!(verdict(&c), Outcome::ServerError5xx);
        assert!(c.observe_duration && !c.learn_duration);
        x.status = 503;
        assert_eq!(verdict(&complete(&x)), Outcome::NotCounted);
        x.status = 404;
        let c = complete(&x);
        assert_eq!((c.reason, verdict(&c)), ("4xx", Outcome::NotCounted));
        assert!(c.learn_duration);
    }

    #[test]
    fn rejected_before_a_backend_settles_the_charge_at_zero() {
        let mut x = ended(Instant::now());
        x.had_backend = false;
        x.status = 503;
        x.times.dispatched = None;
        x.times.first_byte = None;
        let saturated = Reject::Saturated {
            retry_after: crate::reject::Hint::secs(1),
        };
        x.reject = Some(&saturated);
        let c = complete(&x);
        assert_eq!((c.outcome, c.reason), ("rejected", "fleet_saturated"));
        assert_eq!(c.verdict, None);
        assert_eq!(c.settle_tokens, Some(0));
        assert_eq!(c.key_tokens, None);
        assert_eq!(c.queue, None);
        assert!(!c.observe_duration);
    }

    #[test]
    fn left_the_queue() {
        let mut x = ended(Instant::now());
        x.had_backend = false;
        x.left_queue = true;
        x.failure = Some(Failure::Downstream);
        x.status = 0;
        let c = complete(&x);
        assert_eq!((c.outcome, c.reason), ("client_closed", "left_queue"));
        assert_eq!(c.verdict, None);
        assert_eq!(c.settle_tokens, Some(0));
    }

    #[test]
    fn passthrough_has_no_verdict_and_settles_nothing() {
        let mut x = ended(Instant::now());
        x.class = Class::Passthrough;
        let c = complete(&x);
        assert_eq!(c.verdict, None);
        assert_eq!(c.settle_tokens, None);
        assert!(c.observe_duration && !c.learn_duration);
    }
}
