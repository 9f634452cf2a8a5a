//! The client edge: what a client may cost and who it is, before a request
//! reaches admission — connection caps and the header clock, the client
//! address behind trusted proxies, and API keys held as digests; which
//! browser origins may read its answers (`cors`).
pub mod body_pace;
pub mod client_addr;
pub mod conn_table;
pub mod cors;
pub mod guard;
pub mod keys;
pub mod routes;

pub use body_pace::BodyPace;
pub use client_addr::TrustedProxies;
pub use conn_table::{ConnLimits, ConnRefusal};
pub use guard::{Connections, Guarded};
pub use keys::{KeyEntry, KeyRing};
pub use routes::{Route, Routes};
