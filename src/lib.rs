//! Sluice: an admission-control gateway for fleets of llama.cpp `llama-server`.
//!
//! Module map, one line per module. Imports point down this list's arrows
//! only (`tests/module_graph.rs` fails on a circle): `gateway` → services →
//! `edge` → `cluster` → `admission` → `backend` → `telemetry`; `config` → the params of
//! `edge`, `cluster`, `admission` and `backend`; `reject` and `telemetry` are leaves.
//!
//! - [`gateway`]: the composition root: builds metrics, fleet, gate and the pingora services from a [`config::Config`].
//! - [`config`]: TOML text → validated [`config::Config`]; every problem named by key, value and reason.
//!   - `config::file`: the `File*` serde structs mirroring the text.
//!   - `config::edge`: the `[server]` keys of the client edge (connections, body pace, proxies, CORS).
//!   - `config::secrets`: files holding secrets must be private; inline keys in a readable file are warned about.
//!   - `config::problems`: [`config::ConfigError`] and the collector that names key and value.
//!   - `config::server`: `[server]`, `[admin]`, `[scrape]`, `[routing]`.
//!   - `config::backends`: `[[backends]]`: names, URLs, addresses.
//!   - `config::admission`: `[queue]`, `[rate_limit]`, `[token_budget]`, `[[api_keys]]`, `[auth]` → [`admission::gate::GateParams`].
//!   - `config::policy`: `[breaker]`, `[limiter]` → [`backend::spec::PolicyParams`].
//!   - `config::cluster`: `[cluster]` → [`cluster::ClusterParams`].
//!   - `config::discovery`: `discover = "dns"`, `resolve_every`, `[discovery]` → [`backend::discovery::DiscoveryParams`].
//! - [`telemetry`]: the gateway's Prometheus series and `tracing` set-up; a leaf.
//! - [`edge`]: the client edge: what a client may cost and who it is, before admission.
//!   - [`edge::conn_table`]: open connections per address and the header clock (pure).
//!   - [`edge::guard`]: the pingora app around the proxy that enforces them.
//!   - [`edge::body_pace`]: how long a request body may take.
//!   - [`edge::routes`]: the route allowlist (llama-server's public API).
//!   - [`edge::client_addr`]: the client address behind trusted proxies.
//!   - [`edge::cors`]: backend CORS headers replaced by a configured allowlist of origins.
//! - [`proxy`]: the pingora `ProxyHttp` request path, one phase per call.
//!   - `proxy::facts`: the request head read once; `proxy::client`: client-side limits;
//!     `proxy::client_slot`: open-request caps; `proxy::admit`: a permit or a refusal;
//!     `proxy::upstream`: peer and headers; `proxy::retry`: retry decisions;
//!     `proxy::rescue`: the only place a status is written; `proxy::completion`: what an end counts;
//!     `proxy::body_facts`: the inference body read once (model, limits, prompt size, prefix);
//!     `proxy::listener`: the client listener's socket buffer sizes.
//! - [`admin`]: the admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`, drain, the console.
//! - [`console`]: the operator console page (`/ui`): a 15-minute ring sampled once a second.
//!   - `console::reading`: one moment's figures from the registry, fleet and queue;
//!     `console::quantile`: percentiles between two histogram readings;
//!     `console::history`: the bounded ring and "now" (pure); `console::sampler`: the 1 s task;
//!     `console::snapshot`: the JSON the page polls; `console::page`: the embedded page.
//! - [`reload`]: SIGHUP: re-read the file; apply backends, keys, auth, limits, budgets, admin token in place.
//! - [`reject`]: every refusal and its response (status, the retry [`reject::Hint`] headers, body).
//! - [`usage`]: token counts read from the end of a completion response.
//! - [`admission`]: gateway-side admission control.
//!   - [`admission::gate`]: identify, rate-limit, charge tokens, admit now / queue / shed; [`admission::gate::GateParams`].
//!   - [`admission::identity`]: who sent a request (key name, rate key, tenant, priority entitlement).
//!   - [`admission::keys`]: API keys as SHA-256 digests, constant-time lookup, `max_priority`.
//!   - [`admission::headers`]: `x-sluice-deadline` / `x-sluice-priority` and the OpenAI SDK headers (timeout, retry count) → the wait budget (never panics).
//!   - [`admission::retry_after`]: the one hint rule (`Retry-After`, `retry-after-ms`), its estimates, and when no retry can fit.
//!   - [`admission::queue`]: the bounded, deadline-aware, fair queue (`config`, `entry`, the queue); returning retries first.
//!     - [`admission::queue::returns`]: the hints given, per tenant, that a returning retry claims to rank first.
//!     - `admission::queue::standing`: the work ahead of a place, the standing-queue signal, entries out of reach.
//!   - [`admission::drain`]: fleet drain-rate estimate and the wait it predicts.
//!   - [`admission::predict`]: the queue's wait by work: requests ahead counted by their expected tokens.
//!   - [`admission::schedule`]: when the fleet's slots free (permits in flight by dispatch time): the rounds of an overload from idle.
//!   - [`admission::ratelimit`]: per-key request rate limits (GCRA).
//!   - [`admission::budget`]: per-key token budgets.
//!   - [`admission::dispatcher`]: hands returned permits to queued requests.
//! - [`backend`]: per-backend state and policy.
//!   - [`backend::spec`]: the backend layer's parameters: backend, scrape, breaker/limiter.
//!   - [`backend::discovery`]: DNS-discovered fleets: `discover = "dns"` entries' members from A/AAAA records
//!     (`members`: the pure rules; `dns`: pingora's `ServiceDiscovery` over hickory; `roster`: the one owner of
//!     the fleet's list, configured plus discovered; `task`: the lookup loop; `metrics`).
//!   - [`backend::fleet`]: every backend, reloads, what outcomes and scrapes teach each one, fleet-wide estimates.
//!   - [`backend::choice`]: which backend takes a request (model, cache home, cost, free slots), or why none can.
//!   - [`backend::catalog`]: the fleet's models: who serves a name, the `/v1/models` list, the metrics label.
//!   - [`backend::state`]: one backend's shared state and the in-flight [`backend::state::Permit`].
//!   - [`backend::running`]: the requests a backend holds, their ages, and when its next slots free.
//!   - [`backend::policy`]: breaker and adaptive limit of one backend, behind one lock.
//!   - [`backend::breaker`]: the circuit breaker.
//!   - [`backend::limiter`]: the AIMD concurrency limit.
//!   - [`backend::eligibility`]: may a backend take a request now, and its load.
//!   - [`backend::selector`]: power of two choices among eligible backends, by expected cost when known.
//!   - [`backend::speed`]: measured per-token times; a request's expected cost on a backend.
//!   - [`backend::replica_share`]: this replica's part of each backend's slots (`slots ÷ replicas`, remainder by rank),
//!     and the other replicas' in-flight as last exchanged.
//!   - [`backend::slot_loan`]: slots idle in other replicas' parts lent (last scrape: one replica per turn; the
//!     replicas' in-flight exchange, fresher: to every replica); taken ones yielded.
//!   - [`backend::models`]: which models a backend serves (`/v1/models`) and name matching.
//!   - [`backend::fetch`]: the bounded, redirect-free HTTP reads of one scrape round.
//!   - [`backend::router`]: llama-server router mode: detection, `/models` status, `unloaded_model`.
//!   - [`backend::instances`]: a router's loaded models as sub-backends `backend/model` of the fleet.
//!   - [`backend::affinity`]: prompt-cache affinity: a prefix's home backend unless clearly busier.
//!   - [`backend::homes`]: each live conversation's home, conversations split by slots (bounded table).
//!   - [`backend::observed`]: what the last scrape learned, published whole.
//!   - [`backend::load`]: the load figures in one `/metrics` scrape.
//!   - [`backend::promtext`]: Prometheus text → metric families.
//!   - [`backend::scrape`]: the scrape loop (`/health`, `/metrics`, `/props`).
//!   - [`backend::export`]: the `/metrics` page: own series plus re-exported backend series.
//! - [`cluster`]: several replicas, one set of limits: rate limits and token budgets in a shared Redis.
//!   - `cluster::params`: `[cluster]`; `cluster::scripts`: the Lua scripts (GCRA with leases, token bucket, heartbeat, in-flight exchange);
//!     `cluster::heartbeat`: live replicas and Redis up/down; `cluster::peers`: the replicas' in-flight per backend, every 20 ms; `cluster::share`: the fallback's per-replica
//!     shares; `cluster::lease`: rate cells granted ahead (no round trip on most requests);
//!     `cluster::ledger`: settlements kept while Redis is away; `cluster::settle`: settling a charge
//!     (now, or from the ledger); `cluster::metrics`: its series;
//!     `cluster::probe`: `sluice check`'s one look at Redis.
//! - [`systemd`]: run directory, `sd_notify` readiness and watchdog keep-alives.
//! - [`sim`]: the llama-server simulator (`sluice sim`, the demo fleet, test bed): slots, deferred queue, prompt cache, faults.
//!   - [`sim::router`]: its router mode: models loaded on demand, each a simulated server.
//! - [`demo`]: `sluice demo`: a simulated fleet behind the gateway, overloaded.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod console;
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
