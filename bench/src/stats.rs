//! Order statistics over a handful of runs or a few thousand latencies.
//!
//! Medians and percentiles use the nearest-rank method on sorted samples, so
//! every figure reported is a value that was actually observed.

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of `samples`; `None` when empty.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v.get(rank.min(v.len()) - 1).copied()
}

/// The median of `samples` (the lower middle value for an even count).
pub fn median(samples: &[f64]) -> Option<f64> {
    percentile(samples, 50.0)
}

/// The smallest sample.
pub fn min(samples: &[f64]) -> Option<f64> {
    samples.iter().copied().filter(|x| x.is_finite()).min_by(f64::total_cmp)
}

/// The largest sample.
pub fn max(samples: &[f64]) -> Option<f64> {
    samples.iter().copied().filter(|x| x.is_finite()).max_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(median(&v), Some(3.0));
        assert_eq!(percentile(&v, 99.0), Some(5.0));
        assert_eq!(percentile(&v, 1.0), Some(1.0));
        assert_eq!(min(&v), Some(1.0));
        assert_eq!(max(&v), Some(5.0));
        assert_eq!(median(&[]), None);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 99.0), Some(99.0));
        assert_eq!(median(&hundred), Some(50.0));
    }
}
