//! May this backend take a new request now, and how loaded is it?
//!
//! A pure function of what was scraped, what this gateway has in flight and
//! the time. Unknown is treated as saturated, not idle: a backend whose figures
//! are missing or stale may be swamped by other clients, and sending it work
//! blind is how llama-server's internal queue grows.

use std::time::Duration;

use tokio::time::Instant;

use super::load::LoadSnapshot;
use super::observed::{Health, Observed};

/// Thresholds of eligibility, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub max_deferred: u32,
    pub stale_after: Duration,
    pub slow_scrape: Duration,
    /// `routing.unloaded_model`: a request for a model no router has loaded.
    pub unloaded_model: super::router::UnloadedModel,
}

/// Why a backend gets no new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    /// Never scraped successfully.
    Unknown,
    /// Load figures older than `stale_after`.
    Stale,
    Down,
    Loading,
    /// `requests_deferred` over `max_deferred`: queueing inside llama-server.
    Overloaded,
    /// `/metrics` answered slower than `scrape.slow`: the server is swamped.
    SlowScrape,
    /// This gateway already has `cap` requests in flight there.
    Full,
    /// Taken out of rotation by the operator (drain).
    Draining,
    /// The circuit breaker is open.
    BreakerOpen,
}

impl Ineligible {
    pub fn as_str(self) -> &'static str {
        match self {
            Ineligible::Unknown => "unknown",
            Ineligible::Stale => "stale",
            Ineligible::Down => "down",
            Ineligible::Loading => "loading",
            Ineligible::Overloaded => "overloaded",
            Ineligible::SlowScrape => "slow_scrape",
            Ineligible::Full => "full",
            Ineligible::Draining => "draining",
            Ineligible::BreakerOpen => "breaker_open",
        }
    }

    /// Is the backend able to serve at all (only busy), as opposed to broken?
    /// Stale figures count as busy: the backend answered recently, and an
    /// unknown backend is treated as saturated, not as down.
    pub fn is_busy(self) -> bool {
        matches!(
            self,
            Ineligible::Overloaded | Ineligible::SlowScrape | Ineligible::Full | Ineligible::Stale
        )
    }
}

/// The verdict on one backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    pub verdict: Result<(), Ineligible>,
    /// Requests the backend holds: max(ours in flight, processing + deferred).
    pub load: u32,
}

/// Judges one backend. `cap` is the most requests this gateway may hold there.
///
/// Load = our exact in-flight count now + what the last scrape showed beyond
/// our own requests at that time (other clients of the same backend). Not
/// `max(ours, scraped)`: the scraped figure is up to one interval old and
/// still counts our requests that have finished since, which makes idle
/// backends look busy and the selector tie.
pub fn assess(obs: &Observed, in_flight: u32, cap: u32, rules: &Rules, now: Instant) -> Assessment {
    let others = obs
        .load
        .as_ref()
        .map(|(l, _)| {
            l.processing
                .saturating_add(l.deferred)
                .saturating_sub(obs.ours_at_scrape)
        })
        .unwrap_or(0);
    let load = in_flight.saturating_add(others);
    let verdict = verdict(obs, in_flight, cap, rules, now);
    Assessment { verdict, load }
}

fn verdict(
    obs: &Observed,
    in_flight: u32,
    cap: u32,
    rules: &Rules,
    now: Instant,
) -> Result<(), Ineligible> {
    match obs.health {
        Health::Ok => {}
        Health::Loading => return Err(Ineligible::Loading),
        Health::Down(_) => return Err(Ineligible::Down),
        Health::Unknown => return Err(Ineligible::Unknown),
    }
    let Some((load, at)) = obs.load.as_ref() else {
        return Err(Ineligible::Unknown);
    };
    if stale(obs, *at, rules.stale_after, now) {
        return Err(Ineligible::Stale);
    }
    if obs.metrics_latency.is_some_and(|d| d > rules.slow_scrape) {
        return Err(Ineligible::SlowScrape);
    }
    if load.deferred > rules.max_deferred && !handing_over(load, obs.slots) {
        return Err(Ineligible::Overloaded);
    }
    if in_flight >= cap {
        return Err(Ineligible::Full);
    }
    Ok(())
}

/// Figures from `at` are stale once older than `stale_after` *and* a later
/// round failed to renew them (its health is newer than the load): the
/// backend stopped answering `/metrics`. A gateway that has not looked
/// since (a process that just took over the sockets in an upgrade, a
/// scrape loop starved of CPU) holds the last figures it read,
/// uncontradicted, for up to [`UNRENEWED_FACTOR`] times as long: taken for
/// stale, they barred every backend and refused requests a fleet with free
/// slots would have served.
fn stale(obs: &Observed, at: Instant, stale_after: Duration, now: Instant) -> bool {
    let age = now.saturating_duration_since(at);
    let looked_since = obs.health_at.is_some_and(|h| h > at);
    age > stale_after && (looked_since || age > stale_after * UNRENEWED_FACTOR)
}

/// How much longer than `stale_after` figures no round has looked at since
/// are used (see [`stale`]).
const UNRENEWED_FACTOR: u32 = 10;

/// A deferral while the server holds no more requests than it has slots is
/// a hand-over, not a queue: a request arrived while the slot of one that
/// had just ended was being released (llama-server frees it on its next
/// loop), and it starts at once. Taken for overload, it would bar a
/// backend with free slots for a whole scrape interval; an overloaded
/// server holds more requests than slots.
fn handing_over(load: &LoadSnapshot, slots: Option<u32>) -> bool {
    slots.is_some_and(|s| load.processing.saturating_add(load.deferred) <= s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::load::LoadSnapshot;
    use crate::backend::observed::DownCause;

    const RULES: Rules = Rules {
        max_deferred: 0,
        stale_after: Duration::from_millis(1500),
        slow_scrape: Duration::from_secs(1),
        unloaded_model: crate::backend::router::UnloadedModel::Wait,
    };

    fn healthy(now: Instant, processing: u32, deferred: u32) -> Observed {
        Observed {
            health: Health::Ok,
            load: Some((
                LoadSnapshot {
                    processing,
                    deferred,
                    ..Default::default()
                },
                now,
            )),
            metrics_latency: Some(Duration::from_millis(2)),
            ..Default::default()
        }
    }

    #[test]
    fn healthy_fresh_idle_is_eligible() {
        let now = Instant::now();
        let a = assess(&healthy(now, 1, 0), 0, 4, &RULES, now);
        assert_eq!(a.verdict, Ok(()));
        assert_eq!(a.load, 1);
    }

    #[test]
    fn deferred_over_threshold_is_overloaded_even_when_health_is_ok() {
        let now = Instant::now();
        let a = assess(&healthy(now, 4, 1), 0, 4, &RULES, now);
        assert_eq!(a.verdict, Err(Ineligible::Overloaded));
        assert_eq!(a.load, 5);
    }

    #[test]
    fn a_deferral_within_the_slots_is_a_hand_over_not_overload() {
        let now = Instant::now();
        // 4 slots, 2 busy, 1 deferred: it waits for a slot being released.
        let mut o = healthy(now, 2, 1);
        o.slots = Some(4);
        assert_eq!(assess(&o, 3, 4, &RULES, now).verdict, Ok(()));
        // Every slot busy and one more: a queue inside the server.
        let mut o = healthy(now, 4, 1);
        o.slots = Some(4);
        assert_eq!(
            assess(&o, 0, 4, &RULES, now).verdict,
            Err(Ineligible::Overloaded)
        );
        // Slots unknown: any deferral over the allowance is overload.
        let o = healthy(now, 2, 1);
        assert_eq!(
            assess(&o, 0, 4, &RULES, now).verdict,
            Err(Ineligible::Overloaded)
        );
    }

    #[test]
    fn unknown_and_stale_count_as_unusable() {
        let now = Instant::now();
        assert_eq!(
            assess(&Observed::default(), 0, 4, &RULES, now).verdict,
            Err(Ineligible::Unknown)
        );
        let later = now + Duration::from_secs(2);
        // A later round answered /health but not /metrics.
        let unrenewed = Observed {
            health_at: Some(now + Duration::from_secs(1)),
            ..healthy(now, 0, 0)
        };
        assert_eq!(
            assess(&unrenewed, 0, 4, &RULES, later).verdict,
            Err(Ineligible::Stale)
        );
    }

    #[test]
    fn figures_no_round_has_looked_at_since_are_used_a_while_longer() {
        let now = Instant::now();
        let obs = Observed {
            health_at: Some(now),
            ..healthy(now, 0, 0)
        };
        // The gateway has not looked since (just started, or starved).
        let later = now + Duration::from_secs(2);
        assert_eq!(assess(&obs, 0, 4, &RULES, later).verdict, Ok(()));
        let much_later = now + RULES.stale_after * UNRENEWED_FACTOR + Duration::from_millis(1);
        assert_eq!(
            assess(&obs, 0, 4, &RULES, much_later).verdict,
            Err(Ineligible::Stale)
        );
    }

    #[test]
    fn full_loading_down_slow() {
        let now = Instant::now();
        assert_eq!(
            assess(&healthy(now, 0, 0), 4, 4, &RULES, now).verdict,
            Err(Ineligible::Full)
        );
        let mut o = healthy(now, 0, 0);
        o.health = Health::Loading;
        assert_eq!(
            assess(&o, 0, 4, &RULES, now).verdict,
            Err(Ineligible::Loading)
        );
        o.health = Health::Down(DownCause::Refused);
        assert_eq!(assess(&o, 0, 4, &RULES, now).verdict, Err(Ineligible::Down));
        let mut o = healthy(now, 0, 0);
        o.metrics_latency = Some(Duration::from_secs(2));
        assert_eq!(
            assess(&o, 0, 4, &RULES, now).verdict,
            Err(Ineligible::SlowScrape)
        );
    }

    #[test]
    fn load_is_ours_now_plus_others_at_the_scrape() {
        let now = Instant::now();
        // The scrape saw 3 busy, 2 of them ours; 3 of ours are in flight now.
        let mut o = healthy(now, 3, 0);
        o.ours_at_scrape = 2;
        assert_eq!(assess(&o, 3, 4, &RULES, now).load, 4);
        // Our requests that finished since the scrape do not count.
        o.ours_at_scrape = 3;
        assert_eq!(assess(&o, 0, 4, &RULES, now).load, 0);
    }
}
