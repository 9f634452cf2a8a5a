//! The llama-server simulator.
