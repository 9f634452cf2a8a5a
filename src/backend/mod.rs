//! Per-backend state and policy.
pub mod breaker;
pub mod eligibility;
pub mod export;
pub mod fleet;
pub mod limiter;
pub mod load;
pub mod observed;
pub mod policy;
pub mod promtext;
pub mod scrape;
pub mod selector;
pub mod spec;
pub mod state;
