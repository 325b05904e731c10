//! What a zone aggregator sends a city or province center: its exact goal
//! tallies for the spans the center serves, stamped with the zone, the
//! zone's data version and when that data last changed.
//!
//! A message is a snapshot of the zone, never a delta: the center keeps, per
//! (zone, goal, span), the tally of the highest version it has seen. So a
//! message replayed, duplicated or arriving out of order can neither count
//! twice nor move a figure back to an older state, and the last messages of
//! each zone are all a center needs to rebuild (`center::Merge`).

use crate::goals::{GoalSettings, Span, Tally};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zonesync_proto::{Period, ZoneId};

/// Format of [`ZoneTallies`]; a center refuses any other.
pub const SCHEMA: u32 = 1;

/// The subject a zone's tallies are published on: `zonesync.tallies.<zone>`
/// (NATS permissions grant each zone only its own).
pub fn subject(zone: &ZoneId) -> String {
    format!("{SUBJECT_PREFIX}{zone}")
}

/// Every zone's tally subject starts with this.
pub const SUBJECT_PREFIX: &str = "zonesync.tallies.";

/// The zone a tally subject names, if it is one.
pub fn subject_zone(subject: &str) -> Option<ZoneId> {
    ZoneId::parse(subject.strip_prefix(SUBJECT_PREFIX)?).ok()
}

/// One zone's tallies at one version of its data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneTallies {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The zone.
    pub zone: ZoneId,
    /// The zone store's identity: when it was created, in milliseconds since
    /// 1970 (`super::epoch`). A zone whose store was reset starts its version
    /// at zero again under a higher epoch, so the center takes the new
    /// store's snapshots over the old one's higher versions and refuses the
    /// old store's. 0: a zone from before epochs were sent.
    #[serde(default)]
    pub epoch: u64,
    /// The zone's data version within its epoch: grows with every batch the
    /// zone applies and is rebuilt to the same value after a restart (one per
    /// stored batch).
    pub version: u64,
    /// When the zone's data reached this version (as the zone saw it).
    pub data_at: DateTime<Utc>,
    /// When this message was made: republished unchanged it tells the
    /// center the zone is still there.
    pub published_at: DateTime<Utc>,
    /// The goal settings the zone's tallies were made with: they decide who
    /// counts, so a center refuses tallies made under other settings.
    pub settings: GoalSettings,
    /// The tallies.
    pub cells: Vec<Cell>,
}

/// One goal's tally over one span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    /// Goal id.
    pub goal: String,
    /// Span.
    pub span: SpanKey,
    /// The zone's tally.
    pub tally: Tally,
}

/// A [`Span`] as text: `2026-10`, `2026-Q3`, `2026`, or `ytd:2026-10`
/// (January to October) — [`Span::label`] is for people and writes a
/// year to December like the year itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpanKey(pub Span);

/// Why a span key was refused.
#[derive(Debug, thiserror::Error)]
#[error("span {0:?} is not a period (2026, 2026-Q3, 2026-10) or ytd:YYYY-MM")]
pub struct SpanKeyError(String);

impl From<SpanKey> for String {
    fn from(k: SpanKey) -> String {
        match k.0 {
            Span::Period(p) => p.to_string(),
            Span::YearToDate(y, m) => format!("ytd:{}", Period::Month(y, m)),
        }
    }
}

impl TryFrom<String> for SpanKey {
    type Error = SpanKeyError;
    fn try_from(s: String) -> Result<Self, SpanKeyError> {
        let bad = || SpanKeyError(s.chars().take(40).collect());
        match s.strip_prefix("ytd:") {
            Some(m) => match Period::parse(m) {
                Ok(Period::Month(y, m)) => Ok(SpanKey(Span::YearToDate(y, m))),
                _ => Err(bad()),
            },
            None => Period::parse(&s).map(|p| SpanKey(Span::Period(p))).map_err(|_| bad()),
        }
    }
}

/// Most members a tally may claim: far beyond any zone (a province has about
/// 180 zones of at most tens of thousands of enterprises), and small enough
/// that summing every zone's counts cannot overflow.
pub const MAX_COUNT: u64 = 1 << 40;

/// Why a tally's counts are not believable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("a count of {0} is beyond {MAX_COUNT}")]
pub struct CountError(pub u64);

/// Checks a received tally's counts are in range (its sums were checked as they were read).
pub fn check_counts(t: &Tally) -> Result<(), CountError> {
    let counts = [t.in_scope, t.reported, t.unknown, t.proxied].map(|c| c as u64);
    match counts
        .into_iter()
        .chain([t.months, t.partial_months])
        .find(|c| *c > MAX_COUNT)
    {
        Some(c) => Err(CountError(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_keys_round_trip_and_tell_a_year_from_a_year_to_december() {
        for span in [
            Span::Period(Period::Month(2026, 10)),
            Span::Period(Period::Quarter(2026, 3)),
            Span::Period(Period::Year(2026)),
            Span::YearToDate(2026, 12),
            Span::YearToDate(2025, 1),
        ] {
            let text = String::from(SpanKey(span));
            assert_eq!(SpanKey::try_from(text.clone()).unwrap().0, span, "{text}");
        }
        assert_ne!(
            String::from(SpanKey(Span::YearToDate(2026, 12))),
            String::from(SpanKey(Span::Period(Period::Year(2026))))
        );
        for bad in ["ytd:2026", "ytd:2026-Q1", "2026-13", "", "ytd:"] {
            assert!(SpanKey::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn subjects_name_their_zone_and_nothing_else_does() {
        let z = ZoneId::parse("jy-1").unwrap();
        assert_eq!(subject_zone(&subject(&z)), Some(z));
        assert_eq!(subject_zone("zonesync.tallies.JY"), None);
        assert_eq!(subject_zone("zonesync.tallies.a.b"), None);
        assert_eq!(subject_zone("other.jy-1"), None);
    }

    #[test]
    fn counts_beyond_the_limit_are_refused() {
        let mut t = Tally::default();
        assert_eq!(check_counts(&t), Ok(()));
        t.in_scope = MAX_COUNT as usize;
        assert_eq!(check_counts(&t), Ok(()));
        t.months = MAX_COUNT + 1;
        assert_eq!(check_counts(&t), Err(CountError(MAX_COUNT + 1)));
    }
}
