//! [`Hint`]: when a refused client should come back, and whether at all;
//! the value behind `Retry-After`, `retry-after-ms` and `x-should-retry`.

use std::time::Duration;

/// When a refused client should come back, and whether it should at all.
/// Computed by `admission::retry_after` (the one rounding rule); here it is
/// only written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    /// Whole milliseconds, at least 1.
    ms: u32,
    /// `false`: no retry the client can still make is likely to be served
    /// (`x-should-retry: false`).
    retry: bool,
}

impl Hint {
    /// A hint of whole seconds (at least 1), retry welcome.
    pub const fn secs(s: u32) -> Hint {
        let s = if s == 0 { 1 } else { s };
        Hint {
            ms: s.saturating_mul(1000),
            retry: true,
        }
    }

    /// A hint of `ms` milliseconds (at least 1); `retry`: whether a retry
    /// is worth making. The rounding and bounds are `RetryAfter`'s.
    pub const fn from_millis(ms: u32, retry: bool) -> Hint {
        Hint {
            ms: if ms == 0 { 1 } else { ms },
            retry,
        }
    }

    /// The same hint, with no retry worth making.
    pub const fn no_retry(self) -> Hint {
        Hint {
            retry: false,
            ..self
        }
    }

    /// `retry-after-ms`.
    pub fn millis(self) -> u32 {
        self.ms
    }

    /// `Retry-After`: the milliseconds rounded up to whole seconds.
    pub fn secs_rounded_up(self) -> u32 {
        self.ms.div_ceil(1000).max(1)
    }

    /// The hint as a duration.
    pub fn wait(self) -> Duration {
        Duration::from_millis(u64::from(self.ms))
    }

    /// `x-should-retry`.
    pub fn retry(self) -> bool {
        self.retry
    }
}
