//! Conversation homes: the backend each live conversation (prompt prefix)
//! was given, so that the conversations in flight split over the backends
//! in proportion to their slots, and each keeps its home while it lives.
//!
//! ## Why
//!
//! Rendezvous hashing alone ([`super::affinity`]) gives each backend a
//! random share of the conversations: 8 chats on two 2-slot servers split
//! 4/4 only about a quarter of the time, and 5/3 or 6/2 otherwise. Then one
//! backend's chats outnumber its slots while the other idles, and their
//! turns run away from the cache that holds their history. Pinning each
//! chat to a server, as a client could, splits them evenly.
//!
//! ## How
//!
//! Consistent hashing with bounded loads (Mirrokni, Thorup &
//! Zadimoghaddam, 2018) counted in conversations, with c = 1: a prefix seen
//! for the first time goes to the first backend in its rendezvous ranking
//! whose live homes stay within its slots' share of all live homes plus
//! this one (`⌈(live + 1) × slots / Σ slots⌉`). A home is *live* while its
//! conversation sent a turn within [`LIVE`]. Replicas whose tables saw the
//! same conversations agree (the ranking decides between equals). The table
//! is bounded by [`MAX_HOMES`]: past it, homes not live are forgotten, then
//! the oldest.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::affinity::score;

/// A conversation idle this long no longer counts towards its home's
/// share (a user's pause between turns is rarely longer).
pub const LIVE: Duration = Duration::from_secs(120);

/// The most conversations remembered (about 100 bytes each).
pub const MAX_HOMES: usize = 4096;

/// A backend that may be a home (eligible now or only full).
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The caller's identifier (index into its fleet).
    pub id: usize,
    pub name: &'a str,
    /// Its slots (its cap): its share of the conversations.
    pub slots: u32,
}

struct Home {
    backend: String,
    seen: Instant,
    /// Until when a turn of it waits in the queue for this home (its
    /// deadline: one that left unserved stops counting then).
    waiting: Option<Instant>,
}

/// The bounded table of conversation homes.
#[derive(Default)]
pub struct Homes {
    map: HashMap<u64, Home>,
}

impl Homes {
    /// The home of `prefix` among `places`: the one it was given, if still
    /// there, else a new one within the bounded load. `None` without places.
    pub fn home(&mut self, prefix: u64, places: &[Place<'_>], now: Instant) -> Option<usize> {
        if let Some(h) = self.map.get_mut(&prefix) {
            if let Some(p) = places.iter().find(|p| p.name == h.backend) {
                h.seen = now;
                return Some(p.id);
            }
        }
        let live = |name: &str| {
            self.map
                .values()
                .filter(|h| h.backend == name && now.saturating_duration_since(h.seen) < LIVE)
                .count() as u64
        };
        let lives: Vec<u64> = places.iter().map(|p| live(p.name)).collect();
        let total_live: u64 = lives.iter().sum();
        let total_slots: u64 = places.iter().map(|p| u64::from(p.slots.max(1))).sum();
        let mut ranked: Vec<usize> = (0..places.len()).collect();
        ranked.sort_unstable_by_key(|&i| std::cmp::Reverse(score(prefix, places[i].name)));
        // Σ bounds ≥ live + 1 > Σ lives: some place is within its bound.
        let pick = ranked.iter().copied().find(|&i| {
            let slots = u64::from(places[i].slots.max(1));
            lives[i] < ((total_live + 1) * slots).div_ceil(total_slots)
        })?;
        self.remember(prefix, places[pick].name, now);
        Some(places[pick].id)
    }

    /// A turn of `prefix` ran on `backend`: its newest (longest) cached
    /// prefix is there, so that is its home from now on.
    pub fn ran(&mut self, prefix: u64, backend: &str, now: Instant) {
        match self.map.get_mut(&prefix) {
            Some(h) if h.backend == backend => {
                h.seen = now;
                h.waiting = None;
            }
            _ => self.remember(prefix, backend, now),
        }
    }

    /// A turn of `prefix` waits in the queue for its (full) home, at most
    /// until `until`.
    pub fn wait(&mut self, prefix: u64, until: Instant) {
        if let Some(h) = self.map.get_mut(&prefix) {
            h.waiting = Some(until);
        }
    }

    /// Turns of other conversations waiting for `backend` now: those ahead
    /// of a new one there.
    pub fn waiting_for(&self, backend: &str, except: u64, now: Instant) -> usize {
        self.map
            .iter()
            .filter(|(k, h)| **k != except && h.backend == backend)
            .filter(|(_, h)| h.waiting.is_some_and(|until| now < until))
            .count()
    }

    fn remember(&mut self, prefix: u64, backend: &str, now: Instant) {
        if self.map.len() >= MAX_HOMES {
            self.map
                .retain(|_, h| now.saturating_duration_since(h.seen) < LIVE);
        }
        if self.map.len() >= MAX_HOMES {
            if let Some(oldest) = self.map.iter().min_by_key(|(_, h)| h.seen).map(|(k, _)| *k) {
                self.map.remove(&oldest);
            }
        }
        let backend = backend.to_string();
        let home = Home {
            backend,
            seen: now,
            waiting: None,
        };
        self.map.insert(prefix, home);
    }

    /// Conversations remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(slots: &[u32]) -> Vec<Place<'static>> {
        const NAMES: [&str; 4] = ["b0", "b1", "b2", "b3"];
        slots
            .iter()
            .enumerate()
            .map(|(id, &slots)| Place {
                id,
                name: NAMES[id],
                slots,
            })
            .collect()
    }

    #[test]
    fn live_conversations_split_by_slots_and_keep_their_home() {
        let now = Instant::now();
        let mut h = Homes::default();
        let p = places(&[2, 2]);
        for n in [8u64, 16, 100] {
            let mut h = Homes::default();
            let mut per = [0u64; 2];
            for c in 0..n {
                per[h.home(c, &p, now).unwrap()] += 1;
            }
            assert_eq!(per, [n / 2, n / 2], "{n} conversations");
        }
        // Slots 3:1 → conversations 3:1.
        let mut per = [0u64; 2];
        for c in 0..40 {
            per[h.home(c, &places(&[3, 1]), now).unwrap()] += 1;
        }
        assert_eq!(per, [30, 10]);
        // Every later turn finds the same home.
        for c in 0..40 {
            let first = h.home(c, &places(&[3, 1]), now);
            assert_eq!(h.home(c, &places(&[3, 1]), now), first);
        }
    }

    #[test]
    fn idle_conversations_leave_room_and_the_table_stays_bounded() {
        let t0 = Instant::now();
        let p = places(&[2, 2]);
        let mut h = Homes::default();
        // Four conversations given b0 while it was the only backend.
        for c in 0..4 {
            assert_eq!(h.home(c, &p[..1], t0), Some(0));
        }
        // A new one that ranks b0 first goes to b1 while they live...
        let next = (100..400u64)
            .find(|&c| Homes::default().home(c, &p, t0) == Some(0))
            .unwrap();
        assert_eq!(Homes::default().home(next, &p, t0), Some(0));
        let mut live = Homes::default();
        for c in 0..4 {
            live.home(c, &p[..1], t0);
        }
        assert_eq!(live.home(next, &p, t0), Some(1));
        // ... and to b0 once they are idle.
        let later = t0 + LIVE + Duration::from_secs(1);
        assert_eq!(h.home(next, &p, later), Some(0));
        for c in 0..(MAX_HOMES as u64 + 50) {
            h.home(10_000 + c, &p, later);
        }
        assert!(h.len() <= MAX_HOMES);
    }

    #[test]
    fn a_home_that_left_is_replaced() {
        let now = Instant::now();
        let mut h = Homes::default();
        let both = places(&[2, 2]);
        let home = h.home(7, &both, now).unwrap();
        let other: Vec<Place> = both.iter().copied().filter(|p| p.id != home).collect();
        assert_eq!(h.home(7, &other, now), Some(other[0].id));
        assert_eq!(h.home(7, &[], now), None);
        // Where a turn ran is its home from then on.
        h.ran(7, both[home].name, now);
        assert_eq!(h.home(7, &both, now), Some(home));
    }

    #[test]
    fn turns_waiting_for_a_home_are_counted_until_they_run() {
        let now = Instant::now();
        let mut h = Homes::default();
        let one = places(&[2]);
        let until = now + Duration::from_secs(5);
        for c in 0..3 {
            h.home(c, &one, now);
            h.wait(c, until);
        }
        assert_eq!(h.waiting_for("b0", 0, now), 2, "the others, not itself");
        assert_eq!(h.waiting_for("b0", 99, now), 3);
        h.ran(1, "b0", now);
        assert_eq!(h.waiting_for("b0", 99, now), 2);
        assert_eq!(
            h.waiting_for("b0", 99, until),
            0,
            "past its deadline a wait ends"
        );
    }
}
