//! The alert lifecycle, pure: raised → acknowledged → cleared, with
//! hysteresis and a minimum duration so a value hovering at the limit does not
//! flap. One state per (rule, subject).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Where an alert stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Phase {
    /// Within limits.
    #[default]
    Clear,
    /// Over the limit, not yet for the minimum duration.
    Pending {
        /// Since when.
        since: DateTime<Utc>,
    },
    /// Raised.
    Active {
        /// When it was raised.
        raised_at: DateTime<Utc>,
        /// Acknowledged by someone (who, and when).
        acked_by: Option<String>,
        /// When it was acknowledged.
        acked_at: Option<DateTime<Utc>>,
        /// Since when it has been back under the clearing threshold.
        below_since: Option<DateTime<Utc>>,
    },
}

/// A transition worth telling people about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// The alert was raised.
    Raised,
    /// The alert cleared.
    Cleared,
}

/// Tuning shared by all rules.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// How long a breach (or a recovery) must last before it counts.
    pub min_duration: Duration,
    /// Fraction of |limit| the value must fall below the limit by to clear.
    pub hysteresis: f64,
}

/// Feeds one observation (value against limit, higher is worse) into the phase.
pub fn step(phase: &mut Phase, value: f64, limit: f64, now: DateTime<Utc>, t: Tuning) -> Option<Transition> {
    let breached = value > limit;
    let clear_below = limit - limit.abs() * t.hysteresis;
    match phase {
        Phase::Clear => {
            if breached {
                *phase = Phase::Pending { since: now };
                if t.min_duration <= Duration::zero() {
                    return step(phase, value, limit, now, t);
                }
            }
            None
        }
        Phase::Pending { since } => {
            if !breached {
                *phase = Phase::Clear;
                None
            } else if now - *since >= t.min_duration {
                *phase = Phase::Active {
                    raised_at: now,
                    acked_by: None,
                    acked_at: None,
                    below_since: None,
                };
                Some(Transition::Raised)
            } else {
                None
            }
        }
        Phase::Active { below_since, .. } => {
            if value < clear_below {
                let since = *below_since.get_or_insert(now);
                if now - since >= t.min_duration {
                    *phase = Phase::Clear;
                    return Some(Transition::Cleared);
                }
            } else {
                *below_since = None;
            }
            None
        }
    }
}

/// Acknowledges an active alert; false if it is not active.
pub fn acknowledge(phase: &mut Phase, by: &str, now: DateTime<Utc>) -> bool {
    match phase {
        Phase::Active { acked_by, acked_at, .. } => {
            *acked_by = Some(by.to_owned());
            *acked_at = Some(now);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn hovering_at_the_limit_raises_once_and_clears_once() {
        let t = Tuning {
            min_duration: Duration::seconds(60),
            hysteresis: 0.05,
        };
        let mut p = Phase::Clear;
        let limit = 1.0;
        // (time, value): a short spike, a sustained breach, hovering around the limit, then a real fall.
        let series = [
            (0, 1.2),
            (30, 0.9),
            (60, 1.1),
            (90, 1.1),
            (130, 1.05),
            (160, 0.99),
            (200, 1.01),
            (240, 0.97),
            (400, 0.96),
            (500, 0.90),
            (530, 0.90),
            (570, 0.90),
            (600, 0.80),
        ];
        let events: Vec<(i64, Transition)> = series
            .iter()
            .filter_map(|(s, v)| step(&mut p, *v, limit, at(*s), t).map(|e| (*s, e)))
            .collect();
        // Raised at 130 (over since 60), not at the spike; 0.96-0.99 stays above the
        // clearing threshold 0.95; cleared 60 s after going under it at 500.
        assert_eq!(events, vec![(130, Transition::Raised), (570, Transition::Cleared)]);
        assert_eq!(p, Phase::Clear);
    }

    #[test]
    fn negative_limits_clear_below_by_their_magnitude() {
        // "decline at least 4 %": a change of -2 % breaches -0.04; clearing needs < -0.042.
        let t = Tuning {
            min_duration: Duration::zero(),
            hysteresis: 0.05,
        };
        let mut p = Phase::Clear;
        assert_eq!(step(&mut p, -0.02, -0.04, at(0), t), Some(Transition::Raised));
        assert_eq!(step(&mut p, -0.041, -0.04, at(1), t), None);
        assert!(acknowledge(&mut p, "值班员", at(2)));
        assert_eq!(step(&mut p, -0.05, -0.04, at(3), t), Some(Transition::Cleared));
        assert!(!acknowledge(&mut p, "x", at(4)));
    }
}
