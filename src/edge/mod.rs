//! The client edge: what a client may cost and who it is, before a request
//! reaches admission — connection caps and the header clock, the client
//! address behind trusted proxies (API keys as digests: `admission::keys`);
//! which browser origins may read its answers (`cors`).
pub mod body_pace;
pub mod client_addr;
pub mod conn_table;
pub mod cors;
pub mod guard;
pub mod routes;

pub use body_pace::BodyPace;
pub use client_addr::TrustedProxies;
pub use conn_table::{ConnLimits, ConnRefusal};
pub use guard::{Connections, Guarded};
pub use routes::{Route, Routes};
