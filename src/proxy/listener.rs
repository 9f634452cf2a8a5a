//! The client listener's socket buffers: pingora's defaults (a 64 KiB read
//! buffer and a 1,460-byte write buffer on every accepted connection) are
//! replaced by none for reads and 8 KiB for writes.
//!
//! ## Why
//!
//! - **Reads unbuffered.** pingora reads a request head into its own 4 KiB
//!   buffer and a body into its own 64 KiB one, so a buffer under them only
//!   adds a copy. tokio's `BufReader` zero-fills its buffer, so the default
//!   made every open connection (a held SSE stream) resident 64 KiB more:
//!   most of the 67 KiB per open stream measured at 1,000 streams.
//! - **Writes buffered to 8 KiB.** A response whose length is known is
//!   written as head, then body, then one flush. With 1,460 bytes the head of
//!   a typical completion (about 250 bytes) is sent on its own and the body
//!   (1.6 KiB for an `n_predict: 0` answer) in a second `send`: two trips
//!   through the loopback TCP stack where one does. 8 KiB holds the head and
//!   the body of most non-streamed answers. Streamed (chunked) bodies are
//!   flushed after every chunk by pingora whatever the size, so SSE events
//!   are not held back.

use pingora::listeners::{L4BufferSettings, ListenerConfig};

/// Bytes of the write buffer on each client connection (see the module doc).
pub const WRITE_BUFFER: usize = 8 * 1024;

/// A plain TCP client listener on `addr` with the gateway's buffer sizes.
pub fn tcp(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::new(0, WRITE_BUFFER))
}
