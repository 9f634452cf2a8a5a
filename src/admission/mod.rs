//! Admission control at the gateway.

use std::time::Duration;

/// The one dispatch margin: a request is handed a backend only while at
/// least this much of its wait budget is left, because the wake-up, the
/// network hop and pingora's connect take a few milliseconds and the point of
/// a deadline is that the backend never sees a request after it.
pub const DISPATCH_MARGIN: Duration = Duration::from_millis(25);

pub mod budget;
pub mod dispatcher;
pub mod drain;
pub mod gate;
pub mod queue;
pub mod ratelimit;
