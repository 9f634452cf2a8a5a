//! Admission control at the gateway.
pub mod budget;
pub mod drain;
pub mod queue;
pub mod ratelimit;
pub mod dispatcher;
pub mod gate;
