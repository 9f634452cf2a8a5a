//! Sluice: an admission-control gateway for fleets of llama.cpp `llama-server`.
//!
//! Module map, one line per module. Imports point down this list's arrows
//! only (`tests/module_graph.rs` fails on a circle): `gateway` → services →
//! `admission` → `backend` → `telemetry`; `config` → the params of
//! `admission` and `backend`. (Maintained per branch: the integrator updates
//! it after merging the parallel restructuring branches.)
//!
//! - [`gateway`]: the composition root: builds metrics, fleet, gate and the pingora services from a [`config::Config`].
//! - [`config`]: TOML text → validated [`config::Config`]; every problem named by key, value and reason.
//!   - `config::file`: the `File*` serde structs mirroring the text.
//!   - `config::secrets`: files holding secrets must be private; inline keys in a readable file are warned about.
//!   - `config::problems`: [`config::ConfigError`] and the collector that names key and value.
//!   - `config::server`: `[server]`, `[admin]`, `[scrape]`, `[routing]`.
//!   - `config::backends`: `[[backends]]`: names, URLs, addresses.
//!   - `config::admission`: `[queue]`, `[rate_limit]`, `[token_budget]`, `[[api_keys]]`, `[auth]` → [`admission::gate::GateParams`].
//!   - `config::policy`: `[breaker]`, `[limiter]` → [`backend::spec::PolicyParams`].
//! - [`telemetry`]: the gateway's Prometheus series and `tracing` set-up; a leaf.
//! - [`edge`]: policy on what crosses the edge toward clients.
//!   - [`edge::cors`]: backend CORS headers replaced by a configured allowlist of origins.
//! - [`proxy`]: the pingora `ProxyHttp` request path.
//! - [`admin`]: the admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`, drain.
//! - [`reload`]: SIGHUP: re-read the file, apply the backend list in place.
//! - [`reject`]: every refusal and its response (status, `Retry-After`, body).
//! - [`usage`]: token counts read from the end of a completion response.
//! - [`admission`]: gateway-side admission control.
//!   - [`admission::gate`]: identify, rate-limit, charge tokens, admit now / queue / shed; [`admission::gate::GateParams`].
//!   - [`admission::queue`]: the bounded, deadline-aware, fair queue.
//!   - [`admission::drain`]: fleet drain-rate estimate and the wait it predicts.
//!   - [`admission::ratelimit`]: per-key request rate limits (GCRA).
//!   - [`admission::budget`]: per-key token budgets.
//!   - [`admission::dispatcher`]: hands returned permits to queued requests.
//! - [`backend`]: per-backend state and policy.
//!   - [`backend::spec`]: the backend layer's parameters: backend, scrape, breaker/limiter.
//!   - [`backend::fleet`]: every backend; which one takes a request, or why none can.
//!   - [`backend::state`]: one backend's shared state and the in-flight [`backend::state::Permit`].
//!   - [`backend::policy`]: breaker and adaptive limit of one backend, behind one lock.
//!   - [`backend::breaker`]: the circuit breaker.
//!   - [`backend::limiter`]: the AIMD concurrency limit.
//!   - [`backend::eligibility`]: may a backend take a request now, and its load.
//!   - [`backend::selector`]: power of two choices among eligible backends.
//!   - [`backend::observed`]: what the last scrape learned, published whole.
//!   - [`backend::load`]: the load figures in one `/metrics` scrape.
//!   - [`backend::promtext`]: Prometheus text → metric families.
//!   - [`backend::scrape`]: the scrape loop (`/health`, `/metrics`, `/props`).
//!   - [`backend::export`]: the `/metrics` page: own series plus re-exported backend series.
//! - [`systemd`]: run directory, `sd_notify` readiness and watchdog keep-alives.
//! - [`sim`]: the llama-server simulator (`sluice sim`, the demo fleet, test bed).
//! - [`demo`]: `sluice demo`: a simulated fleet behind the gateway, overloaded.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod backend;
pub mod config;
pub mod demo;
pub mod edge;
pub mod gateway;
pub mod proxy;
pub mod reject;
pub mod reload;
pub mod sim;
pub mod systemd;
pub mod telemetry;
pub mod usage;
