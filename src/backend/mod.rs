//! Per-backend state and policy.
pub mod eligibility;
pub mod load;
pub mod observed;
pub mod promtext;
pub mod selector;
