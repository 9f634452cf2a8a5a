//! Per-backend state and policy.
pub mod breaker;
pub mod eligibility;
pub mod fleet;
pub mod load;
pub mod observed;
pub mod promtext;
pub mod selector;
pub mod state;
