//! Admission control at the gateway.
