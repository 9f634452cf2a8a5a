//! Admission control at the gateway.
pub mod budget;
pub mod dispatcher;
pub mod drain;
pub mod gate;
pub mod queue;
pub mod ratelimit;
