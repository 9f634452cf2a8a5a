//! When a failed upstream attempt is tried again on another backend.
//!
//! Resending is safe only while the backend cannot have started on the
//! request: after a failed connect (nothing was sent), or when a pooled
//! connection that sat idle turns out dead before any response byte (the
//! backend died or closed it meanwhile; the request never reached a live
//! llama-server). Never after a timeout (the backend may be working on it),
//! never once a response started, never for the client's own errors, and at
//! most [`MAX_CONNECT_RETRIES`] times per request.
//!
//! The decisions are pure functions of plain facts; the pingora phases
//! gather the facts and apply the answer.

use pingora::prelude::*;
use pingora::{ErrorSource, ErrorType};
use tokio::time::Instant;

use super::{Ctx, SluiceProxy};
use crate::backend::breaker::Outcome;

/// Failed attempts are retried on another backend at most this often.
pub const MAX_CONNECT_RETRIES: u32 = 1;

/// After a connect failure: retry while the request has retries left.
pub fn after_connect_failure(retries_so_far: u32) -> bool {
    retries_so_far < MAX_CONNECT_RETRIES
}

/// What is known when an established upstream connection fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyFailure {
    /// The error is on the client's side.
    pub downstream: bool,
    /// The upstream connection came from the pool.
    pub reused_connection: bool,
    /// No response byte reached the gateway or the client.
    pub nothing_back: bool,
    /// The whole request body is still in the retry buffer.
    pub body_buffered: bool,
    /// A read or write timeout.
    pub timeout: bool,
    /// Retries this request has had.
    pub retries_so_far: u32,
}

/// After an error on an established connection: retry only a dead pooled
/// connection that got nothing back and still holds the whole body.
pub fn after_proxy_error(f: ProxyFailure) -> bool {
    !f.downstream
        && f.reused_connection
        && f.nothing_back
        && f.body_buffered
        && !f.timeout
        && f.retries_so_far < MAX_CONNECT_RETRIES
}

// === Applying the decisions ===

impl SluiceProxy {
    /// `fail_to_connect`: report the backend, and retry elsewhere if allowed.
    pub(super) fn connect_failed(
        &self,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
        now: Instant,
    ) -> Box<Error> {
        if let Some(p) = &ctx.permit {
            self.fleet
                .report(p.backend(), Outcome::ConnectError, None, now);
        }
        if after_connect_failure(ctx.connect_retries) {
            ctx.connect_retries += 1;
            self.metrics.retries.inc();
            tracing::warn!(request_id = %ctx.facts.request_id, peer = %peer, error = %e, "connect failed; retrying on another backend");
            e.set_retry(true);
        }
        e
    }

    /// `error_while_proxy`: retry a dead pooled connection, nothing else.
    pub(super) fn proxy_failed(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let failure = ProxyFailure {
            downstream: e.esource() == &ErrorSource::Downstream,
            reused_connection: client_reused,
            nothing_back: ctx.first_byte.is_none() && session.response_written().is_none(),
            body_buffered: !session.as_ref().retry_buffer_truncated(),
            timeout: matches!(
                e.etype(),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
            ),
            retries_so_far: ctx.connect_retries,
        };
        let retry = after_proxy_error(failure);
        if retry {
            ctx.connect_retries += 1;
            self.metrics.retries.inc();
            tracing::warn!(request_id = %ctx.facts.request_id, error = %e, "pooled upstream connection failed before any response; retrying on another backend");
        }
        e.set_retry(retry);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD_POOLED: ProxyFailure = ProxyFailure {
        downstream: false,
        reused_connection: true,
        nothing_back: true,
        body_buffered: true,
        timeout: false,
        retries_so_far: 0,
    };

    #[test]
    fn connect_failures_retry_once() {
        assert!(after_connect_failure(0));
        assert!(!after_connect_failure(1));
        assert!(!after_connect_failure(5));
    }

    #[test]
    fn a_dead_pooled_connection_retries_once() {
        assert!(after_proxy_error(DEAD_POOLED));
        assert!(!after_proxy_error(ProxyFailure {
            retries_so_far: 1,
            ..DEAD_POOLED
        }));
    }

    #[test]
    fn anything_less_safe_is_not_retried() {
        for f in [
            ProxyFailure {
                downstream: true,
                ..DEAD_POOLED
            },
            ProxyFailure {
                reused_connection: false,
                ..DEAD_POOLED
            },
            ProxyFailure {
                nothing_back: false,
                ..DEAD_POOLED
            },
            ProxyFailure {
                body_buffered: false,
                ..DEAD_POOLED
            },
            ProxyFailure {
                timeout: true,
                ..DEAD_POOLED
            },
        ] {
            assert!(!after_proxy_error(f), "{f:?}");
        }
    }
}
