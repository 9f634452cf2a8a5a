//! Prompt-cache affinity: which eligible backend most likely holds a
//! request's prompt prefix in its cache, unless it is clearly busier.
//!
//! ## Why
//!
//! llama-server reuses the KV cache of the longest common prefix with what a
//! slot (or its host-memory prompt cache) last processed. Turn 2 of a chat
//! repeats turn 1's whole prompt: sent to the backend that served turn 1 it
//! processes only the new tokens, anywhere else the whole history again
//! (later turns 4.2× slower, measured on two real servers).
//!
//! ## How
//!
//! Rendezvous hashing (Thaler & Ravishankar, "highest random weight"): each
//! backend scores `hash(prefix, backend)`, the highest score is the
//! prefix's home. Removing a backend moves only the prefixes it was home
//! to, and a ranking (not just one home) gives the next choice at once. With
//! bounded load (Mirrokni, Thorup & Zadimoghaddam, "Consistent Hashing with
//! Bounded Loads", 2018) in the form of a utilisation slack, the home is
//! taken only while its utilisation is within [`SLACK`] of the least
//! utilised candidate; otherwise the next in the ranking, and when none
//! qualifies the caller falls back to power of two choices. So one shared
//! system prompt cannot pile every conversation onto one backend, and an
//! idle fleet keeps every conversation at home.
//!
//! pingora's `KetamaHashing` places keys on a ring; here the candidates
//! change per request (eligibility), and ranking an eligible subset is one
//! hash per candidate with rendezvous, so no ring is kept.

use std::hash::{Hash, Hasher};

use super::selector::Candidate;

/// How much busier (in utilisation, 0..1) than the least utilised candidate
/// a prefix's home may be and still get it: half a backend. A cache hit
/// saves the whole history's prompt processing, worth more than an evenly
/// spread load; past this the queueing at the home costs more.
pub const SLACK: f64 = 0.5;

pub(super) fn score(prefix: u64, backend: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    prefix.hash(&mut h);
    backend.hash(&mut h);
    h.finish()
}

fn utilisation(c: &Candidate) -> f64 {
    f64::from(c.load) / f64::from(c.cap.max(1))
}

/// The candidate for `prefix`: its home (`home`, the conversation's
/// from [`super::homes`], else the first by rendezvous hashing), or the
/// next-ranked one within [`SLACK`] of the least utilised; `None` when
/// every candidate is clearly busier (the caller then balances by load).
/// `name` gives each candidate's backend name.
pub fn prefer<'a>(
    cands: &[Candidate],
    name: impl Fn(usize) -> &'a str,
    prefix: u64,
    home: Option<usize>,
) -> Option<usize> {
    let least = cands.iter().map(utilisation).fold(f64::INFINITY, f64::min);
    let mut ranked: Vec<(u64, &Candidate)> = cands
        .iter()
        .map(|c| match Some(c.id) == home {
            true => (u64::MAX, c),
            false => (score(prefix, name(c.id)).min(u64::MAX - 1), c),
        })
        .collect();
    ranked.sort_unstable_by_key(|r| std::cmp::Reverse(r.0));
    ranked
        .into_iter()
        .find(|(_, c)| utilisation(c) <= least + SLACK)
        .map(|(_, c)| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 4] = ["b0", "b1", "b2", "b3"];

    fn cands(loads: &[u32], cap: u32) -> Vec<Candidate> {
        loads
            .iter()
            .enumerate()
            .map(|(id, &load)| Candidate {
                cost_us: None,
                id,
                load,
                cap,
                weight: 1,
            })
            .collect()
    }

    #[test]
    fn an_idle_fleet_sends_a_prefix_home_every_time() {
        let c = cands(&[0, 0, 0, 0], 4);
        let home = prefer(&c, |i| NAMES[i], 42, None).unwrap();
        for _ in 0..10 {
            assert_eq!(prefer(&c, |i| NAMES[i], 42, None), Some(home));
        }
    }

    #[test]
    fn prefixes_spread_over_the_fleet() {
        let c = cands(&[0, 0, 0, 0], 4);
        let mut per = [0u32; 4];
        for p in 0..4000u64 {
            per[prefer(&c, |i| NAMES[i], p, None).unwrap()] += 1;
        }
        for n in per {
            assert!((800..1200).contains(&n), "{per:?}");
        }
    }

    #[test]
    fn a_clearly_busier_home_is_passed_over_for_the_next_choice() {
        let idle = cands(&[0, 0, 0, 0], 4);
        let home = prefer(&idle, |i| NAMES[i], 7, None).unwrap();
        let mut loads = [0u32; 4];
        // Home at 3/4 busy, others idle: 0.75 > 0 + 0.5.
        loads[home] = 3;
        let busy = cands(&loads, 4);
        let next = prefer(&busy, |i| NAMES[i], 7, None).unwrap();
        assert_ne!(next, home);
        // Home at 2/4 busy: still within the slack.
        loads[home] = 2;
        assert_eq!(prefer(&cands(&loads, 4), |i| NAMES[i], 7, None), Some(home));
    }

    #[test]
    fn removing_a_backend_moves_only_its_prefixes() {
        let four = cands(&[0, 0, 0, 0], 4);
        let three: Vec<Candidate> = four.iter().copied().filter(|c| c.id != 3).collect();
        for p in 0..500u64 {
            let before = prefer(&four, |i| NAMES[i], p, None).unwrap();
            let after = prefer(&three, |i| NAMES[i], p, None).unwrap();
            if before != 3 {
                assert_eq!(before, after, "prefix {p} moved");
            }
        }
    }
}
