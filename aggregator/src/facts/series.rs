//! The time-stamped values of one series (an enterprise's indicator at one
//! measuring point), sorted by time, so a register arriving in any order is
//! put in its place and the consumption either side of it is known exactly.

use chrono::{DateTime, Utc};

/// Values by time (µs since the epoch), ascending, one per instant.
#[derive(Debug, Clone, Default)]
pub struct Series {
    points: Vec<(i64, f64)>,
}

/// A series' value at an instant.
pub type Point = (DateTime<Utc>, f64);

fn at(micros: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl Series {
    /// The value held at `t`, if any.
    pub fn get(&self, t: DateTime<Utc>) -> Option<f64> {
        let k = t.timestamp_micros();
        self.points
            .binary_search_by_key(&k, |(m, _)| *m)
            .ok()
            .and_then(|i| self.points.get(i))
            .map(|(_, v)| *v)
    }

    /// Sets the value at `t`; returns the points either side of it. Meters
    /// report in time order, so the common case is a push at the end.
    pub fn set(&mut self, t: DateTime<Utc>, value: f64) -> (Option<Point>, Option<Point>) {
        let k = t.timestamp_micros();
        let i = match self.points.last() {
            Some((last, _)) if *last < k => self.points.len(),
            None => 0,
            _ => match self.points.binary_search_by_key(&k, |(m, _)| *m) {
                Ok(i) => {
                    if let Some(p) = self.points.get_mut(i) {
                        p.1 = value;
                    }
                    return (self.before(i), self.points.get(i + 1).map(|(m, v)| (at(*m), *v)));
                }
                Err(i) => i,
            },
        };
        self.points.insert(i, (k, value));
        (self.before(i), self.points.get(i + 1).map(|(m, v)| (at(*m), *v)))
    }

    fn before(&self, i: usize) -> Option<Point> {
        i.checked_sub(1)
            .and_then(|j| self.points.get(j))
            .map(|(m, v)| (at(*m), *v))
    }

    /// The newest instant held.
    pub fn last(&self) -> Option<DateTime<Utc>> {
        self.points.last().map(|(m, _)| at(*m))
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
