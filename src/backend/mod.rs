//! Per-backend state and policy.
pub mod promtext;
