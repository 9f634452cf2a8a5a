//! The operator console: a live page on the admin listener (`/ui`) showing
//! the fleet, the queue and every refusal, with drain / undrain buttons that
//! call the admin listener's token-protected actions.
//!
//! - [`reading`]: one moment's figures, read from what the gateway keeps.
//! - [`quantile`]: percentiles between two readings of a histogram.
//! - [`history`]: the bounded 15-minute ring and the figures of "now".
//! - [`sampler`]: the background task that takes a reading once a second.
//! - [`snapshot`]: the small JSON document the page polls.
//! - [`page`]: the page itself, embedded in the binary.
//!
//! The request path never touches any of it: the sampler reads the
//! registry, the fleet and the queue once a second, and the page's polls
//! read the ring under a lock the request path never takes.

pub mod history;
pub mod page;
pub mod quantile;
pub mod reading;
pub mod sampler;
pub mod snapshot;

pub use history::History;
pub use sampler::{Console, Sampler};
