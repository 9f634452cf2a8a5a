//! The fleet ejection cap: how many backends statistical trips may hold open
//! (see "The fleet ejection cap" in the breaker's module docs).

/// Whether a statistical trip may eject one more backend: `open_count` is
/// the number of backends currently Open or HalfOpen, `fleet_size` the number
/// of backends. At least one backend may always be ejected (otherwise a fleet
/// of one could never be), and never more than `max_ejected_share` of the
/// fleet. Non-finite or out-of-range shares are treated as the nearest bound.
pub fn may_eject(open_count: usize, fleet_size: usize, max_ejected_share: f64) -> bool {
    if open_count == 0 {
        return true;
    }
    let share = if max_ejected_share.is_nan() {
        0.0
    } else {
        max_ejected_share.clamp(0.0, 1.0)
    };
    let allowed = (share * fleet_size as f64).floor() as usize;
    open_count < allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn may_eject_respects_share_and_always_allows_one() {
        assert!(may_eject(0, 1, 0.5));
        assert!(may_eject(0, 10, 0.01));
        assert!(may_eject(1, 4, 0.5));
        assert!(!may_eject(2, 4, 0.5));
        assert!(may_eject(4, 10, 0.5));
        assert!(!may_eject(5, 10, 0.5));
        assert!(!may_eject(1, 10, f64::NAN));
        assert!(may_eject(9, 10, 7.0));
        assert!(!may_eject(usize::MAX, usize::MAX, 1.0));
    }
}
