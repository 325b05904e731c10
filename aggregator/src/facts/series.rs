//! The time-stamped values of one series (an enterprise's indicator at one
//! measuring point), sorted by time, so a register arriving in any order is
//! put in its place and the consumption either side of it is known exactly.

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::ops::Bound;

/// Values by time (µs since the epoch), one per instant. A B-tree, so a
/// register arriving in any order — newest first after an outage — costs
/// O(log n), as one in time order does.
#[derive(Debug, Clone, Default)]
pub struct Series {
    points: BTreeMap<i64, f64>,
}

/// A series' value at an instant.
pub type Point = (DateTime<Utc>, f64);

fn at(micros: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl Series {
    /// The value held at `t`, if any.
    pub fn get(&self, t: DateTime<Utc>) -> Option<f64> {
        self.points.get(&t.timestamp_micros()).copied()
    }

    /// Sets the value at `t`; returns the points either side of it.
    pub fn set(&mut self, t: DateTime<Utc>, value: f64) -> (Option<Point>, Option<Point>) {
        let k = t.timestamp_micros();
        // The common case, a register newer than every one held: its
        // neighbours are the last one and none, without two searches more.
        match self.points.last_key_value() {
            Some((&last, &v)) if last < k => {
                self.points.insert(k, value);
                return (Some((at(last), v)), None);
            }
            None => {
                self.points.insert(k, value);
                return (None, None);
            }
            Some(_) => {}
        }
        self.points.insert(k, value);
        let before = self.points.range(..k).next_back().map(|(m, v)| (at(*m), *v));
        let after = self
            .points
            .range((Bound::Excluded(k), Bound::Unbounded))
            .next()
            .map(|(m, v)| (at(*m), *v));
        (before, after)
    }

    /// The newest instant held.
    pub fn last(&self) -> Option<DateTime<Utc>> {
        self.points.keys().next_back().map(|m| at(*m))
    }

    /// Points held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn values_in_any_order_are_kept_sorted_with_their_neighbours() {
        let mut s = Series::default();
        assert_eq!(s.set(t(20), 2.0), (None, None));
        assert_eq!(s.set(t(40), 4.0), (Some((t(20), 2.0)), None));
        assert_eq!(s.set(t(10), 1.0), (None, Some((t(20), 2.0))));
        assert_eq!(s.set(t(30), 3.0), (Some((t(20), 2.0)), Some((t(40), 4.0))));
        assert_eq!(s.set(t(30), 3.5), (Some((t(20), 2.0)), Some((t(40), 4.0))));
        assert_eq!(s.get(t(30)), Some(3.5));
        assert_eq!(s.get(t(31)), None);
        assert_eq!((s.len(), s.last()), (4, Some(t(40))));
    }
}
