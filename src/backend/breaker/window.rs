//! The sliding failure-rate window: success and failure counts over the
//! last `window`, in a fixed ring of buckets.

use std::time::Duration;

use tokio::time::Instant;

/// Number of buckets in the sliding failure-rate window. Ten buckets make the
/// window slide in steps of a tenth of its length: fine enough that a burst
/// is forgotten close to `window` later, small enough to stay a fixed array.
pub(super) const WINDOW_BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    successes: u32,
    failures: u32,
}

/// Success/failure counts over the last `window`, in `WINDOW_BUCKETS` slices.
#[derive(Debug, Clone)]
pub(super) struct Window {
    origin: Option<Instant>,
    width: Duration,
    buckets: [Bucket; WINDOW_BUCKETS],
}

impl Window {
    pub(super) fn new(window: Duration) -> Self {
        Self {
            origin: None,
            width: window / WINDOW_BUCKETS as u32,
            buckets: [Bucket::default(); WINDOW_BUCKETS],
        }
    }

    fn epoch(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let since = now.saturating_duration_since(origin).as_nanos();
        let width = self.width.as_nanos().max(1);
        u64::try_from(since / width).unwrap_or(u64::MAX)
    }

    pub(super) fn add(&mut self, failure: bool, now: Instant) {
        let epoch = self.epoch(now);
        let b = &mut self.buckets[(epoch % WINDOW_BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        if failure {
            b.failures = b.failures.saturating_add(1);
        } else {
            b.successes = b.successes.saturating_add(1);
        }
    }

    /// (successes, failures) in buckets that are still inside the window.
    pub(super) fn totals(&mut self, now: Instant) -> (u64, u64) {
        let epoch = self.epoch(now);
        self.buckets
            .iter()
            .filter(|b| b.epoch <= epoch && epoch - b.epoch < WINDOW_BUCKETS as u64)
            .fold((0, 0), |(s, f), b| {
                (s + u64::from(b.successes), f + u64::from(b.failures))
            })
    }

    pub(super) fn clear(&mut self) {
        self.buckets = [Bucket::default(); WINDOW_BUCKETS];
        self.origin = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slide_out_one_bucket_at_a_time() {
        let t = Instant::now();
        let mut w = Window::new(Duration::from_secs(10));
        w.add(true, t);
        w.add(false, t + Duration::from_secs(5));
        assert_eq!(w.totals(t + Duration::from_secs(9)), (1, 1));
        // The first bucket (0–1 s) leaves the window at 10 s.
        assert_eq!(w.totals(t + Duration::from_secs(10)), (1, 0));
        assert_eq!(w.totals(t + Duration::from_secs(16)), (0, 0));
        w.add(true, t + Duration::from_secs(16));
        w.clear();
        assert_eq!(w.totals(t + Duration::from_secs(16)), (0, 0));
    }
}
