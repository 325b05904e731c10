//! Turning meter registers into amounts per China-time month.
//!
//! Consumption between two register readings is spread over the months the
//! interval covers in proportion to time, so a reading taken at 00:10 on the
//! 1st does not book the last ten minutes of the old month into the new one.

use chrono::{DateTime, Utc};
use zonesync_proto::Period;

/// Consumption between two register values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delta {
    /// The register grew (or stayed).
    Normal(f64),
    /// The register fell: a replaced or reset meter. Consumption since the
    /// reset is the new register value; the consumption between the last
    /// reading and the reset is unknown and not invented.
    Reset(f64),
}

impl Delta {
    /// The amount to book.
    pub fn amount(self) -> f64 {
        match self {
            Delta::Normal(v) | Delta::Reset(v) => v,
        }
    }
}

/// Consumption from `prev` to `cur`.
pub fn delta(prev: f64, cur: f64) -> Delta {
    if cur >= prev {
        Delta::Normal(cur - prev)
    } else {
        Delta::Reset(cur)
    }
}

/// Splits `amount`, used between `from` and `to`, over the months (China time) it spans.
pub fn split_by_month(from: DateTime<Utc>, to: DateTime<Utc>, amount: f64) -> Vec<(Period, f64)> {
    let first = Period::month_of(from);
    if to <= from || Period::month_of(to - chrono::Duration::nanoseconds(1)) == first {
        return vec![(first, amount)];
    }
    let total = (to - from).num_milliseconds() as f64;
    let mut out = Vec::new();
    let mut t = from;
    let mut month = first;
    while t < to {
        let end = month.end().min(to);
        let share = (end - t).num_milliseconds() as f64 / total;
        out.push((month, amount * share));
        t = end;
        month = Period::month_of(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn an_interval_ending_at_china_midnight_stays_in_its_month() {
        let v = split_by_month(utc("2026-10-31T23:45:00+08:00"), utc("2026-11-01T00:00:00+08:00"), 12.0);
        assert_eq!(v, vec![(Period::Month(2026, 10), 12.0)]);
    }

    #[test]
    fn an_interval_across_midnight_is_split_by_time() {
        let v = split_by_month(utc("2026-10-31T23:30:00+08:00"), utc("2026-11-01T00:30:00+08:00"), 10.0);
        assert_eq!(v, vec![(Period::Month(2026, 10), 5.0), (Period::Month(2026, 11), 5.0)]);
    }

    #[test]
    fn a_fall_is_a_reset_not_a_negative() {
        assert_eq!(delta(100.0, 130.0), Delta::Normal(30.0));
        assert_eq!(delta(100_000.0, 12.0), Delta::Reset(12.0));
    }
}
