//! The llama-server simulator: backends that behave like llama.cpp's
//! `llama-server` under load, for tests, overload scenarios, the demo, the
//! benchmarks, and operators rehearsing their admission settings
//! (`sluice sim`).
//!
//! # The model of a server
//!
//! Calibrated on the captures in `tests/fixtures/llama-server/` and the
//! measurements in `shared/llama-server/README.md`.
//!
//! - **Slots.** A server has `slots` slots (`-np`). A request occupies one
//!   slot from its start to its last token, so `requests_processing` never
//!   exceeds `slots`.
//! - **Deferred queue.** Requests beyond the free slots wait in a FIFO
//!   queue; its length is exactly `llamacpp:requests_deferred`. (We model a
//!   server started with enough `--threads-http`; otherwise the real one
//!   queues in its HTTP library instead, which this model does not imitate.)
//! - **Speed.** A request first processes its prompt at `prompt_tps`, then
//!   generates. Generation is shared: with `n` busy slots the aggregate rate
//!   is `gen_tps × curve(n)` (sub-linear; default `n^0.663`, i.e. one request
//!   120 tok/s, two together 190 tok/s), split evenly among them. The state
//!   is integrated exactly between events (a fluid model), so finish times
//!   are exact even at thousands of tokens per second; streamed tokens go
//!   out in batches on a tick of `token_tick` (5 ms).
//! - **Prompt cache.** Each slot keeps the tokens it last processed; a new
//!   request gets the free slot sharing the longest prefix with its prompt
//!   (`--slot-prompt-similarity`, else the least recently used) and
//!   processes only the tokens beyond that prefix (`timings.cache_n`,
//!   `prompt_tokens_cached_total`); a host-memory cache (`--cache-ram`,
//!   2026-10 only) keeps what slots evict. `cache_prompt: false` turns reuse
//!   off for one request. Prompts are compared as [`tokens`]: 4-byte chunks
//!   of the rendered text. A [`SimHandle::restart`] empties every cache.
//! - **Lengths.** Prompt tokens are estimated from the text (⌈bytes/4⌉ + BOS,
//!   chat templates add a few per message). `n_predict` / `max_tokens` /
//!   `max_completion_tokens` are honoured (capped by the context); without
//!   them a length is drawn uniformly from `gen_length` with the seeded
//!   generator (`ignore_eos` without a length fills the context).
//! - **Clients that go away.** A *processing* request is cancelled at once
//!   and its slot freed. A *deferred* one is dropped from the queue after
//!   `abandon_delay` (2026-10: within 1-2 s) or, with
//!   `keep_abandoned_deferred` (b4748), kept and later run with no reader.
//! - **Metrics.** Counters move when a request finishes; `n_decode_total`
//!   moves with every decode step; `prompt_tokens_seconds` and
//!   `predicted_tokens_seconds` cover the time since the previous scrape and
//!   are reset by it. The dialect picks the series set (b4748 with
//!   `kv_cache_*`, 2026-10 without).
//! - **HTTP.** Endpoints, headers, bodies and SSE chunks copy the real
//!   server: `GET /health`, `/metrics`, `/props`, `/slots`, `/v1/models`;
//!   `POST /completion`, `/v1/completions`, `/v1/chat/completions`, streaming
//!   or not. Streams send their headers at once, even while deferred;
//!   non-streaming answers send nothing until the end. Invalid JSON is a 500
//!   `server_error`, unknown paths a 404, as in llama-server.
//!
//! # Faults
//!
//! See [`fault`]: hang, slow down, a fraction of 5xx, reset after N tokens,
//! malformed / empty / 501 / delayed `/metrics`, back into "Loading model",
//! and refusing connections (stop and resume listening on the same port).
//! Set them through [`SimHandle`] or `POST /sim/fault` on the server itself;
//! `GET /sim/counters` shows its counters.
//!
//! # Time
//!
//! Everything uses tokio time, so the pure [`model`] runs on a paused clock
//! in tests; the demo and benchmarks run it in real time.
//!
//! # Layout
//!
//! Imports run one way, from the handle down to the pure model:
//!
//! ```text
//! cli ─► router/ ─► handle ─► server/ ─► engine ─► model/
//!                     └─────► request, responses, endpoints, metrics_text, fault, options
//! ```
//!
//! - `cli`: `sluice sim`, a fleet of simulated servers from the command line.
//! - `handle`: [`SimHandle`], the in-process handle (address, counters, faults).
//! - `server/`: the HTTP face: `listener` (start, accept, stop and resume),
//!   `routes` (dispatch and the read-only endpoints), `control` (`/sim/*`),
//!   `inference` (arrival to admission), `answer` (whole or streamed reply),
//!   `reply` (llama-server's headers and error shapes), `shared` (state and
//!   switches), `counters` ([`SimCounters`]).
//! - `engine`: drives the model on the tokio clock, routes its events.
//! - `model` (+ `model/`): the pure queueing model: types and calls; `fluid`
//!   timing, `slots` scheduling, `metrics` sums.
//! - `request`, `responses`, `endpoints`, `templates`, `metrics_text`: what
//!   goes in and out, shaped like the real server per dialect; `tokens`: a
//!   prompt as a token sequence for the prompt cache.
//! - `fault`, `options`: fault switches and server options.
//! - `router/`: llama-server's router mode: a front listing several models,
//!   each loaded on demand into a simulated server of its own.

pub mod cli;
mod endpoints;
mod engine;
pub mod fault;
mod handle;
pub mod metrics_text;
pub mod model;
pub mod options;
pub mod request;
pub mod responses;
pub mod router;
mod server;
mod templates;
pub mod tokens;

pub use cli::{run_cli, SimArgs};
pub use fault::{Fault, FaultSet, MetricsFault};
pub use handle::{spawn, spawn_at, spawn_fleet, SimHandle};
pub use options::{Dialect, GenLength, SimOptions, ThroughputCurve};
pub use router::{spawn_router, spawn_router_at, RouterHandle, RouterOptions};
pub use server::SimCounters;
