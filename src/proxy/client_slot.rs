//! `server.max_clients`: a cap on client requests open at once, whatever
//! their class, so a flood of slow clients cannot hold unbounded tasks and
//! memory. A [`ClientSlot`] is one place; it is returned when dropped (with
//! the request's context), so no path can leak one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One of `server.max_clients` places; returned on drop.
#[derive(Debug)]
pub struct ClientSlot(Arc<AtomicUsize>);

impl ClientSlot {
    /// A place if fewer than `max` are taken from `open`.
    pub fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<ClientSlot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| ClientSlot(Arc::clone(open)))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_places_and_each_returned_on_drop() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = ClientSlot::take(&open, 2).unwrap();
        let b = ClientSlot::take(&open, 2).unwrap();
        assert!(ClientSlot::take(&open, 2).is_none());
        assert_eq!(open.load(Ordering::Acquire), 2);
        drop(a);
        let c = ClientSlot::take(&open, 2).unwrap();
        assert!(ClientSlot::take(&open, 2).is_none());
        drop((b, c));
        assert_eq!(open.load(Ordering::Acquire), 0);
        assert!(ClientSlot::take(&open, 0).is_none());
    }
}
