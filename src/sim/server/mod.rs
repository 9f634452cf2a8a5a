//! The HTTP face of a simulated llama-server (hyper 1, HTTP/1.1).
//!
//! Data flows one way: [`listener`] accepts connections and hands each
//! request to [`routes`], which answers the read-only endpoints itself and
//! passes `/sim/*` to [`control`] and inference to [`inference`]; an admitted
//! request is answered by [`answer`] (whole or streamed). Everything shares
//! one [`Shared`] state; [`counters`] reads it for the handle and for
//! `GET /sim/counters`.
//!
//! ```text
//! listener ──► routes ──► control ──► counters
//!                 │
//!                 └─────► inference ──► answer
//!      (all of them) ──► reply, shared
//! ```

mod answer;
mod control;
mod counters;
mod inference;
mod listener;
mod reply;
mod routes;
mod shared;

pub use counters::{read as read_counters, SimCounters};
pub use listener::start;
pub use shared::Shared;
