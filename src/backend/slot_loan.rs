//! Slots a replica may borrow beyond its share of a backend, when the last
//! scrape shows them idle in the other replicas' parts, and the part it
//! yields while others hold some of its own.
//!
//! ## Why loans
//!
//! Static shares ([`super::replica_share`]) never let two replicas dispatch
//! into one slot, but small shares lose pooling: with 4 replicas over 4-slot
//! backends each replica holds one slot per backend, and at 3× overload
//! with a wait budget a third of a request's time, a request that finds its
//! replica's share full cannot wait for it (the predicted wait is a whole
//! request) and is refused, while another replica's slot idles. That is an
//! Erlang loss system of 2 servers at 6 Erlang: 84 % carried, where one
//! replica pooling all 8 slots carries 100 %; measured 82 % (3 replicas:
//! 88 %, Erlang B says 87 %). The idle slots are visible in the next scrape
//! (`processing` counts every replica's requests, `ours_at_scrape` this
//! one's), so a replica may fill them, without a Redis round trip per
//! request.
//!
//! ## The rule, per backend, from one scrape
//!
//! `others` = processing + deferred − ours at the scrape; their parts add up
//! to `whole − share`.
//!
//! - **Idle in others' parts** (`others < whole − share`, and `deferred` is
//!   0): the idle slots are a pool, divided like the shares: `pool ÷
//!   replicas` each, the remainder to ranks that rotate every [`TURN`] (a
//!   wall-clock turn every replica agrees on), so that one idle slot is
//!   lent to one replica, not to all of them at once. The loan is bounded by
//!   what was idle, and returns by itself: once the backend fills, the next
//!   scrape shows no pool and the cap falls back to the share (requests
//!   already sent run to their end).
//! - **Others hold part of ours** (`others > whole − share`: a loan, or
//!   clients outside the gateway): the replica yields that much of its
//!   share until the next scrape shows it free, instead of dispatching into
//!   a slot that is taken (where llama-server would defer the request).
//!
//! ## A fresher view: lent to every replica
//!
//! From a scrape the loans reached 3 replicas 91-93 % goodput, 4 replicas
//! 89-90 % (`tests/cluster_fleet.rs`, 2 × 4 slots, 3× overload; static
//! shares: 88 % and 82 %): a slot its owner leaves idle is seen by the
//! others up to an interval later, by turns only one of them may fill it,
//! and that one must get a request first. Lending to every replica from
//! the scrape raised goodput to 95-96 % but deferred 0.5 (two replicas in
//! one slot, on the same old view). The replicas' in-flight exchange
//! (`cluster::peers`, every 20 ms through Redis) gives a view a few tens of
//! milliseconds old ([`Lend::ToAll`]): every replica may fill the idle
//! slots and the first request anywhere does: 3 replicas 96.6 %, 4
//! replicas 95.6 %, deferred mean 0.26-0.31 (20 s runs, `loadtest/RESULTS.md`).
//! Without the exchange (Redis slow or down) the scrape decides, by turns.
//!
//! Not demand-weighted shares: at equal demand (the overload case measured)
//! they equal the static shares and win nothing back. Not leases in Redis:
//! one round trip per dispatch and one per completion.
//!
//! Pure: the caller passes the scrape's figures and the turn.

use std::time::Duration;

/// How long one rotation of the pool's remainder lasts: a few scrape
/// intervals, so the replica whose turn it is sees the pool and acts on it;
/// long enough that replicas' clocks (NTP: milliseconds apart) agree on the
/// turn almost always.
pub const TURN: Duration = Duration::from_secs(1);

/// What one scrape of a backend showed, as far as loans care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub processing: u32,
    pub deferred: u32,
    /// This replica's own requests there at the scrape.
    pub ours: u32,
}

/// What this replica knows of the others' use of one backend: from its
/// last scrape, or fresher from the replicas' in-flight exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// Requests there that are not this replica's.
    pub others: u32,
    /// `requests_deferred` at the last scrape.
    pub deferred: u32,
    pub lend: Lend,
}

/// To whom the idle slots in the others' parts are lent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lend {
    /// One replica per [`TURN`] (the remainder of `pool ÷ replicas`): the
    /// view is a scrape, up to an interval old, and replicas acting on
    /// the same old view would dispatch into the same slot.
    ByTurns,
    /// Every replica, each up to the whole pool: the view is the
    /// exchange's, a few tens of milliseconds old, so two replicas meet
    /// in one slot rarely, and the first request anywhere fills it.
    ToAll,
}

impl Seen {
    /// The scrape as a view: others = processing + deferred − ours then.
    pub fn view(self) -> View {
        View {
            others: self
                .processing
                .saturating_add(self.deferred)
                .saturating_sub(self.ours),
            deferred: self.deferred,
            lend: Lend::ByTurns,
        }
    }
}

/// One replica's place in the cluster for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub rank: u32,
    pub replicas: u32,
    /// The backend's rotation offset (the same for every replica).
    pub offset: u32,
}

/// This replica's cap on a backend of `whole` slots whose static share is
/// `share`: the share, plus a loan from idle slots, minus what others hold
/// of it. Alone (1 replica) or with no view: the share.
pub fn part(whole: u32, share: u32, view: Option<View>, place: Place, turn: u64) -> u32 {
    let n = place.replicas.max(1);
    let Some(v) = view.filter(|_| n > 1) else {
        return share;
    };
    let others_part = whole.saturating_sub(share);
    if v.others > others_part {
        return whole.saturating_sub(v.others).min(share);
    }
    if v.others == others_part || v.deferred > 0 {
        return share;
    }
    let pool = others_part - v.others;
    match v.lend {
        Lend::ToAll => share + pool,
        Lend::ByTurns => {
            let start = (u64::from(place.offset) + turn) % u64::from(n);
            let my_turn = (u64::from(place.rank) + u64::from(n) - start) % u64::from(n);
            share + pool / n + u32::from(my_turn < u64::from(pool % n))
        }
    }
}

/// The turn at `unix_ms` (milliseconds since the Unix epoch).
pub fn turn_at(unix_ms: u64) -> u64 {
    unix_ms / TURN.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn place(rank: u32, replicas: u32) -> Place {
        Place {
            rank,
            replicas,
            offset: 0,
        }
    }

    fn seen(processing: u32, deferred: u32, ours: u32) -> Option<View> {
        Some(
            Seen {
                processing,
                deferred,
                ours,
            }
            .view(),
        )
    }

    fn fresh(others: u32) -> Option<View> {
        Some(View {
            others,
            deferred: 0,
            lend: Lend::ToAll,
        })
    }

    #[test]
    fn alone_or_unscraped_the_share() {
        assert_eq!(part(4, 4, seen(0, 0, 0), place(0, 1), 0), 4);
        assert_eq!(part(4, 1, None, place(0, 4), 0), 1);
    }

    #[test]
    fn a_full_backend_lends_nothing() {
        // 4 replicas, 1 slot each, every slot busy (one of them ours).
        for r in 0..4 {
            assert_eq!(part(4, 1, seen(4, 0, 1), place(r, 4), 7), 1);
        }
    }

    #[test]
    fn one_idle_slot_is_lent_to_one_replica_per_turn() {
        // Replica 3 left its slot idle; 0, 1 and 2 each hold theirs.
        for turn in 0..8u64 {
            let loans: Vec<u32> = (0..3)
                .map(|r| part(4, 1, seen(3, 0, 1), place(r, 4), turn) - 1)
                .collect();
            assert!(loans.iter().sum::<u32>() <= 1, "turn {turn}: {loans:?}");
        }
        // Over the turns, each of the three gets it.
        for r in 0..3 {
            assert!((0..4u64).any(|t| part(4, 1, seen(3, 0, 1), place(r, 4), t) == 2));
        }
    }

    #[test]
    fn deferral_stops_loans() {
        assert_eq!(part(8, 2, seen(4, 1, 2), place(0, 4), 0), 2);
    }

    #[test]
    fn the_owner_yields_what_others_hold() {
        // 2 replicas, 2 slots each; the other holds 3 (one lent from ours).
        assert_eq!(part(4, 2, seen(3, 0, 0), place(0, 2), 0), 1);
        // A whole backend taken by others (or outside clients): 0.
        assert_eq!(part(4, 2, seen(4, 1, 0), place(0, 2), 0), 0);
    }

    #[test]
    fn loans_follow_the_idle_slots() {
        // 2 replicas, 4 slots each of 8; the other uses 1 of its 4: of the
        // 3 idle, one each, and the third by turns.
        assert_eq!(part(8, 4, seen(5, 0, 4), place(0, 2), 0), 6);
        assert_eq!(part(8, 4, seen(5, 0, 4), place(0, 2), 1), 5);
    }

    #[test]
    fn a_fresh_view_lends_the_pool_to_every_replica() {
        // 4 replicas, 1 slot each; the others hold 2 of their 3: every
        // replica may fill the idle one (the first request anywhere does).
        for r in 0..4 {
            for turn in 0..4u64 {
                assert_eq!(part(4, 1, fresh(2), place(r, 4), turn), 2);
            }
        }
        // 2 idle in the others' parts: up to both.
        assert_eq!(part(8, 2, fresh(4), place(0, 4), 0), 4);
        // Full, or others holding ours: the share, or less.
        assert_eq!(part(4, 1, fresh(3), place(0, 4), 0), 1);
        assert_eq!(part(4, 1, fresh(4), place(0, 4), 0), 0);
        // A deferral at the last scrape stops loans.
        let deferred = View {
            deferred: 1,
            ..fresh(2).unwrap()
        };
        assert_eq!(part(4, 1, Some(deferred), place(0, 4), 0), 1);
    }

    proptest! {
        /// Whatever each replica last saw of one backend (all at the same
        /// scrape and turn), the loans never exceed the idle slots, and no
        /// cap exceeds the whole.
        #[test]
        fn loans_never_exceed_the_idle_slots(
            n in 2u32..8,
            whole in 1u32..64,
            used in proptest::collection::vec(0u32..16, 8),
            offset in 0u32..8,
            turn in 0u64..100,
        ) {
            let share = |r: u32| whole / n + u32::from(r < whole % n);
            let used: Vec<u32> = (0..n).map(|r| used[r as usize].min(share(r))).collect();
            let busy: u32 = used.iter().sum();
            let mut lent = 0;
            for r in 0..n {
                let p = Place { rank: r, replicas: n, offset };
                let cap = part(whole, share(r), seen(busy, 0, used[r as usize]), p, turn);
                prop_assert!(cap <= whole);
                lent += cap.saturating_sub(share(r));
            }
            prop_assert!(lent <= whole - busy, "lent {} idle {}", lent, whole - busy);
        }
    }
}
