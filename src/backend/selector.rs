//! Which eligible backend gets the next request: the best of all
//! candidates when this gateway is alone, else power of two choices;
//! compared by expected cost when both have one, else by utilisation.
//!
//! Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing"
//! (2001): sample two backends at random and send to the less utilised one.
//! Always picking the apparent least-loaded backend herds when the figures
//! are old: replicas that see each other's requests only a scrape (or an
//! exchange) later would all pile onto the same backend until then. Two
//! random choices keep most of the benefit of comparing loads while
//! spreading the error. A gateway alone ([`Scope::Alone`]) sees every
//! request it sent the moment it sent it (its in-flight count is exact;
//! only other clients' load is a scrape old, the same for every choice),
//! so it compares them all: with two of three backends busy, two random
//! choices put a stream on a busy one a third of the time (its first token
//! and its whole stream slower, measured in `loadtest/bench` scenario 2).
//!
//! Weights bias the sampling (a weight-2 backend is sampled twice as often)
//! and break ties, so idle fleets split traffic by weight. Utilisation is
//! `load / cap`, compared exactly by cross-multiplying. A candidate's cost is
//! the request's expected time on it ([`super::speed`]): with both costs
//! known the cheaper wins, so a 3× slower backend gets work only when the
//! fast ones are full; a backend still unmeasured but already working loses
//! to a measured one until its first figures come. The random source is passed in, so choices are
//! reproducible in tests.

use rand::Rng;

/// One eligible backend, as the selector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The caller's identifier (index into its fleet).
    pub id: usize,
    pub load: u32,
    /// The most requests this backend may hold (at least 1).
    pub cap: u32,
    pub weight: u32,
    /// The request's expected time here in microseconds, once measured.
    pub cost_us: Option<u64>,
}

/// Whose requests the candidates' loads count exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This gateway alone sends to the fleet: compare every candidate.
    Alone,
    /// Other replicas send too, seen late: two random choices.
    Shared,
}

/// Picks a candidate, or `None` when there is none.
pub fn choose<R: Rng + ?Sized>(cands: &[Candidate], scope: Scope, rng: &mut R) -> Option<usize> {
    match cands.len() {
        0 => None,
        1 => Some(cands[0].id),
        _ => {
            let first = weighted(cands, None, rng);
            if scope == Scope::Alone {
                // From a weighted-random start, so that ties (an idle
                // fleet) still split by weight.
                let n = cands.len();
                let best = (1..n)
                    .map(|k| &cands[(first + k) % n])
                    .fold(&cands[first], |a, b| better(a, b));
                return Some(best.id);
            }
            let second = weighted(cands, Some(first), rng);
            Some(better(&cands[first], &cands[second]).id)
        }
    }
}

/// The better of two candidates (`a` on a tie).
fn better<'a>(a: &'a Candidate, b: &'a Candidate) -> &'a Candidate {
    match (a.cost_us, b.cost_us) {
        (Some(ca), Some(cb)) => return if ca <= cb { a } else { b },
        // An unmeasured backend already working has its first
        // figures coming: until then the measured one is the known
        // quantity (a slow backend would otherwise take a share of
        // the warm-up). An idle unmeasured one is tried.
        (Some(_), None) if b.load > 0 => return a,
        (None, Some(_)) if a.load > 0 => return b,
        _ => {}
    }
    // a.load / a.cap <= b.load / b.cap, without division.
    let lhs = u64::from(a.load) * u64::from(b.cap.max(1));
    let rhs = u64::from(b.load) * u64::from(a.cap.max(1));
    if lhs <= rhs {
        a
    } else {
        b
    }
}

/// Samples a position with probability proportional to weight, skipping `skip`.
fn weighted<R: Rng + ?Sized>(cands: &[Candidate], skip: Option<usize>, rng: &mut R) -> usize {
    let total: u64 = cands
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != skip)
        .map(|(_, c)| u64::from(c.weight.max(1)))
        .sum();
    let mut pick = rng.random_range(0..total.max(1));
    for (i, c) in cands.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        let w = u64::from(c.weight.max(1));
        if pick < w {
            return i;
        }
        pick -= w;
    }
    // Unreachable with total > 0; fall back to the last allowed position.
    (0..cands.len())
        .rev()
        .find(|i| Some(*i) != skip)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn c(id: usize, load: u32, cap: u32, weight: u32) -> Candidate {
        Candidate {
            id,
            load,
            cap,
            weight,
            cost_us: None,
        }
    }

    #[test]
    fn known_costs_beat_utilisation() {
        let mut rng = SmallRng::seed_from_u64(9);
        // The busier backend is cheaper (3x faster): it wins every time.
        let fast = Candidate {
            cost_us: Some(400),
            ..c(0, 3, 4, 1)
        };
        let slow = Candidate {
            cost_us: Some(1200),
            ..c(1, 0, 4, 1)
        };
        for _ in 0..100 {
            assert_eq!(choose(&[fast, slow], Scope::Shared, &mut rng), Some(0));
        }
        // One unknown cost on an idle backend: utilisation decides (it is
        // tried)...
        let fresh = Candidate {
            cost_us: None,
            ..c(1, 0, 4, 1)
        };
        assert_eq!(choose(&[fast, fresh], Scope::Shared, &mut rng), Some(1));
        // ... but one already working waits for its figures.
        let pending = Candidate {
            cost_us: None,
            ..c(1, 1, 4, 1)
        };
        for _ in 0..100 {
            assert_eq!(choose(&[fast, pending], Scope::Shared, &mut rng), Some(0));
            assert_eq!(choose(&[pending, fast], Scope::Shared, &mut rng), Some(0));
        }
    }

    #[test]
    fn two_backends_always_compare_both() {
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_eq!(
                choose(&[c(0, 3, 4, 1), c(1, 1, 4, 1)], Scope::Shared, &mut rng),
                Some(1)
            );
        }
    }

    #[test]
    fn utilisation_not_raw_load_decides() {
        let mut rng = SmallRng::seed_from_u64(2);
        // 2 of 8 slots (25 %) beats 1 of 2 (50 %).
        assert_eq!(
            choose(&[c(0, 1, 2, 1), c(1, 2, 8, 1)], Scope::Shared, &mut rng),
            Some(1)
        );
    }

    #[test]
    fn idle_fleet_splits_by_weight() {
        let mut rng = SmallRng::seed_from_u64(3);
        let cands = [c(0, 0, 4, 3), c(1, 0, 4, 1)];
        let n = 10_000;
        let zeros = (0..n)
            .filter(|_| choose(&cands, Scope::Shared, &mut rng) == Some(0))
            .count();
        let share = zeros as f64 / n as f64;
        assert!((0.70..0.80).contains(&share), "share {share}");
    }

    #[test]
    fn alone_compares_every_candidate() {
        let mut rng = SmallRng::seed_from_u64(3);
        // Three backends, two busy: always the idle one (two random choices
        // would pick a busy one whenever they drew the two busy ones).
        let cands = [c(0, 1, 4, 1), c(1, 0, 4, 1), c(2, 1, 4, 1)];
        for _ in 0..200 {
            assert_eq!(choose(&cands, Scope::Alone, &mut rng), Some(1));
        }
        let shared = (0..600)
            .filter(|_| choose(&cands, Scope::Shared, &mut rng) != Some(1))
            .count();
        assert!(
            (120..280).contains(&shared),
            "{shared} of 600 on a busy one"
        );
        // Known costs: the cheapest of all.
        let costed = |id, cost| Candidate {
            cost_us: Some(cost),
            ..c(id, 0, 4, 1)
        };
        let cands = [costed(0, 900), costed(1, 300), costed(2, 600)];
        for _ in 0..100 {
            assert_eq!(choose(&cands, Scope::Alone, &mut rng), Some(1));
        }
        // An idle fleet still splits by weight.
        let idle = [c(0, 0, 4, 3), c(1, 0, 4, 1)];
        let heavy = (0..4000)
            .filter(|_| choose(&idle, Scope::Alone, &mut rng) == Some(0))
            .count();
        assert!(
            (2800..3200).contains(&heavy),
            "{heavy} of 4000 on the weight-3 one"
        );
    }

    #[test]
    fn empty_and_single() {
        let mut rng = SmallRng::seed_from_u64(4);
        assert_eq!(choose(&[], Scope::Shared, &mut rng), None);
        assert_eq!(choose(&[c(7, 9, 1, 1)], Scope::Shared, &mut rng), Some(7));
    }

    proptest! {
        #[test]
        fn never_picks_the_more_utilised_of_its_pair(
            loads in proptest::collection::vec((0u32..20, 1u32..10, 1u32..5), 2..8),
            seed in any::<u64>(),
        ) {
            let cands: Vec<_> = loads.iter().enumerate().map(|(i, &(l, cap, w))| c(i, l, cap, w)).collect();
            let mut rng = SmallRng::seed_from_u64(seed);
            let id = choose(&cands, Scope::Shared, &mut rng).unwrap();
            prop_assert!(id < cands.len());
            // The chosen one is never the single most utilised backend when
            // it is strictly worse than every other.
            let util = |c: &Candidate| c.load as f64 / c.cap as f64;
            let chosen = util(&cands[id]);
            let strictly_worst = cands.iter().filter(|o| o.id != id).all(|o| util(o) < chosen);
            prop_assert!(!strictly_worst);
        }
    }
}
