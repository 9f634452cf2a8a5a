//! Admission control at the gateway.

use std::time::Duration;

/// The one dispatch margin: a request is handed a backend only while more
/// than this much of its wait budget is left, because the wake-up, the
/// network hop and pingora's connect take a few milliseconds and the point of
/// a deadline is that the backend never sees a request after it.
///
/// The rule, applied by the gate at every dispatch decision:
///
/// - **at once** ([`gate::Gate::admit`]): a request whose whole wait budget
///   is at most the margin is refused (`DeadlineUnmeetable`), not dispatched;
/// - **into the queue**: the predicted wait plus the margin must fit the
///   budget, or the request is refused at once (`DeadlineUnmeetable`);
/// - **out of the queue** ([`gate::Gate::pump`]): an entry within the margin
///   of its deadline is never handed a permit; it is answered
///   `QueueTimeout`.
///
/// Nothing else needs a margin: after the gate, the proxy only has to check
/// that the deadline has not passed (`now < deadline`).
pub const DISPATCH_MARGIN: Duration = Duration::from_millis(25);

pub mod budget;
pub mod calibration;
pub mod dispatcher;
pub mod drain;
pub mod gate;
pub mod headers;
pub mod identity;
pub mod keys;
pub mod predict;
pub mod queue;
pub mod ratelimit;
pub mod retry_after;
pub mod schedule;
