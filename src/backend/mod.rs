//! Per-backend state and policy.
