//! Per-backend state and policy.
//!
//! Each fact has one home: in-flight in [`state::Backend`]'s atomic count,
//! the request-duration average there too, the breaker's state in its
//! [`breaker::Breaker`] (published through [`policy::PolicyView`] and read
//! with `now` via [`state::Backend::breaker_state`]), what was scraped in
//! [`observed::Observed`].
//!
//! - [`affinity`]: prompt-cache affinity (rendezvous hashing with bounded load).
//! - [`breaker`]: circuit breaker state machine (backoff, window, outcomes, config).
//! - [`catalog`]: the fleet's models: who serves a name, the list, the metrics label.
//! - [`choice`]: which backend takes a request (model, cache home, cost, free slots), or why none.
//! - [`discovery`]: DNS-discovered fleets: members from A/AAAA records, re-resolved; the list they merge into.
//! - [`eligibility`]: may a backend take a request now, and how loaded is it.
//! - [`fetch`]: the bounded, redirect-free HTTP reads of one scrape round.
//! - [`fleet`]: every backend, and which one takes a request.
//! - [`homes`]: each live conversation's backend, conversations split by slots.
//! - [`instances`]: a router's loaded models as sub-backends of the fleet.
//! - [`limiter`]: adaptive concurrency limit (AIMD, change gate, baseline, config).
//! - [`load`]: what one `/metrics` scrape says about load.
//! - [`models`]: which models a backend serves (`/v1/models`) and name matching.
//! - [`observed`]: what the scrape loop last learned, health with its cause.
//! - [`policy`]: breaker and limiter behind one lock, fed by scrapes and outcomes.
//! - [`promtext`]: Prometheus text parser for `/metrics`.
//! - [`router`]: llama-server router mode: detection, `/models` status, per-model sub-backends.
//! - [`running`]: the requests a backend holds, their ages, and when its next slots free.
//! - [`replica_share`]: this replica's part of each backend's slots when replicas share a fleet.
//! - [`scrape`]: the scrape loop (I/O glue; one clock reading per round).
//! - [`slot_loan`]: slots a replica borrows beyond its share when a scrape shows them idle.
//! - [`selector`]: power of two choices among eligible backends, by expected cost when known.
//! - [`speed`]: measured per-token times and a request's expected cost on a backend.
//! - [`state`]: one backend's shared state and its in-flight permits.
pub mod affinity;
pub mod breaker;
pub mod catalog;
pub mod choice;
pub mod discovery;
pub mod eligibility;
pub mod export;
pub mod fetch;
pub mod fleet;
pub mod homes;
pub mod instances;
pub mod limiter;
pub mod load;
pub mod models;
pub mod observed;
pub mod policy;
pub mod promtext;
pub mod replica_share;
pub mod router;
pub mod running;
pub mod scrape;
pub mod selector;
pub mod slot_loan;
pub mod spec;
pub mod speed;
pub mod state;
