//! Percentiles from the observations between two readings of a cumulative
//! histogram, interpolated linearly inside a bucket as Prometheus's
//! `histogram_quantile` does. So the console's figures match what a
//! dashboard computes from the same series.

use super::reading::Buckets;

/// The `q` quantile (0..=1) of the observations in `new` but not in `old`;
/// `None` when there were none. Beyond the last finite bound the answer is
/// that bound (the histogram knows no more).
pub fn between(old: &Buckets, new: &Buckets, q: f64) -> Option<f64> {
    let total = new.total.saturating_sub(old.total);
    if total == 0 || new.bounds.is_empty() {
        return None;
    }
    let count = |i: usize| {
        let o = old.counts.get(i).copied().unwrap_or(0);
        new.counts[i].saturating_sub(o)
    };
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (i, &upper) in new.bounds.iter().enumerate() {
        let c = count(i);
        if c as f64 >= rank && c > below {
            let inside = (rank - below as f64) / (c - below) as f64;
            return Some(lower + (upper - lower) * inside.clamp(0.0, 1.0));
        }
        below = c;
        lower = upper;
    }
    new.bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(bounds: &[f64], per_bucket: &[u64], over: u64) -> Buckets {
        let mut counts = Vec::new();
        let mut acc = 0;
        for n in per_bucket {
            acc += n;
            counts.push(acc);
        }
        Buckets {
            bounds: bounds.to_vec(),
            counts,
            total: acc + over,
        }
    }

    #[test]
    fn interpolates_inside_the_bucket_of_the_rank() {
        let b = [0.1, 1.0, 10.0];
        let old = hist(&b, &[0, 0, 0], 0);
        // 10 in (0, 0.1], 10 in (0.1, 1]
        let new = hist(&b, &[10, 10, 0], 0);
        assert_eq!(between(&old, &new, 0.5), Some(0.1));
        let p75 = between(&old, &new, 0.75).unwrap();
        assert!((p75 - 0.55).abs() < 1e-9, "{p75}");
        assert_eq!(between(&old, &new, 1.0), Some(1.0));
    }

    #[test]
    fn only_the_new_observations_count() {
        let b = [0.1, 1.0, 10.0];
        let old = hist(&b, &[100, 0, 0], 0);
        let new = hist(&b, &[100, 0, 4], 0);
        let p50 = between(&old, &new, 0.5).unwrap();
        assert!(p50 > 1.0 && p50 <= 10.0, "{p50}");
        assert_eq!(between(&new, &new, 0.5), None);
    }

    #[test]
    fn beyond_the_last_bound_is_the_last_bound() {
        let b = [0.1, 1.0];
        let new = hist(&b, &[1, 0], 9);
        assert_eq!(between(&Buckets::default(), &new, 0.99), Some(1.0));
    }
}
