//! Answering an admitted inference request from the engine's events: the
//! whole body at the end, or an SSE stream (headers at once, even while
//! deferred; one event per token; the final chunk with `timings`). The
//! reset-after-N-tokens fault cuts either short.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use rand::rngs::SmallRng;
use tokio::sync::mpsc;

use super::reply::{base_response, json, respond, Answer, Body, ConnectionReset};
use super::shared::{lock, Shared};
use crate::sim::engine::RequestGuard;
use crate::sim::model::Event;
use crate::sim::options::Dialect;
use crate::sim::responses::{self, Shape};

/// One admitted inference request and what it needs to answer.
pub struct Run {
    pub shape: Shape,
    pub guard: RequestGuard,
    pub rx: mpsc::UnboundedReceiver<Event>,
    pub rng: SmallRng,
    pub reset_after: Option<u32>,
    pub shared: Arc<Shared>,
}

impl Run {
    fn note_reset(&self) {
        lock(&self.shared.stats).resets_injected += 1;
    }

    /// Non-streaming: nothing is sent until the last token.
    pub async fn complete(mut self) -> Answer {
        let mut text = String::new();
        while let Some(ev) = self.rx.recv().await {
            match ev {
                Event::Started { .. } => {}
                Event::Tokens { count, total, .. } => {
                    for _ in 0..count {
                        text.push_str(responses::next_token(&mut self.rng).1);
                    }
                    if self.reset_after.is_some_and(|n| total >= n) {
                        self.note_reset();
                        return Err(ConnectionReset);
                    }
                }
                Event::Finished { timings, .. } => {
                    self.guard.done = true;
                    return Ok(json(StatusCode::OK, self.shape.full_body(&text, &timings)));
                }
                Event::Dropped { .. } => break,
            }
        }
        Err(ConnectionReset)
    }
}

/// Streaming: headers at once (even while deferred), one SSE event per
/// token, the final chunk with `timings` (and `usage`).
pub fn stream_response(run: Run) -> Response<Body> {
    // The 2026-10 build sends `X-Accel-Buffering: no`; b4748 does not.
    let accel = run.shape.dialect == Dialect::Recent;
    struct St {
        run: Run,
        sent: u32,
        reset_next: bool,
        done: bool,
    }
    let st = St {
        run,
        sent: 0,
        reset_next: false,
        done: false,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        if st.reset_next {
            // Give hyper a pending poll to flush the tokens already written;
            // an error right away would discard its buffer with them.
            tokio::time::sleep(Duration::from_millis(10)).await;
            st.done = true;
            st.run.note_reset();
            return Some((Err(io::Error::other(ConnectionReset)), st));
        }
        loop {
            let ev = st.run.rx.recv().await?;
            let out = match ev {
                Event::Started { .. } => st.run.shape.stream_start(),
                Event::Tokens { count, .. } => {
                    let mut out = String::new();
                    for _ in 0..count {
                        if st.run.reset_after.is_some_and(|n| st.sent >= n) {
                            st.reset_next = true;
                            break;
                        }
                        st.sent += 1;
                        let (tok, piece) = responses::next_token(&mut st.run.rng);
                        let prompt_n = st.run.shape.req.prompt_tokens.max(1);
                        out.push_str(&st.run.shape.stream_token(piece, tok, st.sent, prompt_n));
                    }
                    if out.is_empty() && st.reset_next {
                        st.done = true;
                        st.run.note_reset();
                        return Some((Err(io::Error::other(ConnectionReset)), st));
                    }
                    out
                }
                Event::Finished { timings, .. } => {
                    st.run.guard.done = true;
                    st.done = true;
                    st.run.shape.stream_end(&timings)
                }
                Event::Dropped { .. } => return None,
            };
            if !out.is_empty() {
                return Some((Ok(Frame::data(Bytes::from(out))), st));
            }
        }
    });
    let mut b = base_response(StatusCode::OK, "text/event-stream");
    if accel {
        b = b.header("X-Accel-Buffering", "no");
    }
    respond(b, BodyExt::boxed_unsync(StreamBody::new(stream.boxed())))
}
