//! Sluice: an admission-control gateway for fleets of llama.cpp `llama-server`.
//!
//! Module map:
//! - [`sim`]: the llama-server simulator (`sluice sim`, the demo fleet, test bed).
//! - [`backend`]: per-backend policy (breaker, adaptive limit).
//! - [`admission`]: gateway queue, rate limits, Retry-After estimation.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod backend;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod proxy;
pub mod reject;
pub mod reload;
pub mod sim;
pub mod telemetry;
pub mod usage;
