//! Reporting periods: calendar months, quarters and years in China Standard
//! Time (UTC+8).
//!
//! Statistics in the action plans are kept by Chinese calendar periods, so a
//! meter reading taken at 2026-10-31T17:00Z belongs to November, not October.
//! Everything that turns an instant into a period goes through [`Period::month_of`].

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// China Standard Time, UTC+8, with no daylight saving.
pub const CST: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(o) => o,
    None => panic!("UTC+8 is a valid offset"),
};

/// Why a period string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("period {0:?} is not YYYY, YYYY-Qn or YYYY-MM (year 1990-2199)")]
pub struct PeriodError(pub String);

/// A calendar period in China Standard Time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Period {
    /// A whole year, `2026`.
    Year(i32),
    /// A quarter, `2026-Q3`.
    Quarter(i32, u32),
    /// A month, `2026-10`.
    Month(i32, u32),
}

impl Period {
    /// Parses `YYYY`, `YYYY-Qn` or `YYYY-MM`.
    pub fn parse(s: &str) -> Result<Self, PeriodError> {
        let err = || PeriodError(s.chars().take(40).collect());
        let year = |y: &str| -> Result<i32, PeriodError> {
            if y.len() != 4 || !y.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            let v: i32 = y.parse().map_err(|_| err())?;
            if (1990..=2199).contains(&v) {
                Ok(v)
            } else {
                Err(err())
            }
        };
        match s.split_once('-') {
            None => Ok(Period::Year(year(s)?)),
            Some((y, rest)) => {
                let y = year(y)?;
                if let Some(q) = rest.strip_prefix('Q') {
                    match q {
                        "1" | "2" | "3" | "4" => Ok(Period::Quarter(y, q.parse().map_err(|_| err())?)),
                        _ => Err(err()),
                    }
                } else if rest.len() == 2 && rest.bytes().all(|b| b.is_ascii_digit()) {
                    let m: u32 = rest.parse().map_err(|_| err())?;
                    if (1..=12).contains(&m) {
                        Ok(Period::Month(y, m))
                    } else {
                        Err(err())
                    }
                } else {
                    Err(err())
                }
            }
        }
    }

    /// The month (China time) an instant falls in.
    pub fn month_of(t: DateTime<Utc>) -> Period {
        let local = t.with_timezone(&CST);
        Period::Month(local.year(), local.month())
    }

    /// The last month (China time) that has ended by `now`. Figures default
    /// to it: a month still running ranks every enterprise on a few days.
    pub fn last_complete_month(now: DateTime<Utc>) -> Period {
        Period::month_of(Period::month_of(now).start() - chrono::Duration::seconds(1))
    }

    /// Where `now` stands in the period: ended, running (with the China-time
    /// days begun so far out of its days), or not begun.
    pub fn progress(&self, now: DateTime<Utc>) -> Progress {
        if now >= self.end() {
            Progress::Complete
        } else if now < self.start() {
            Progress::NotStarted
        } else {
            let day = |t: DateTime<Utc>| t.with_timezone(&CST).date_naive();
            let total = (day(self.end()) - day(self.start())).num_days();
            let elapsed = (day(now) - day(self.start())).num_days() + 1;
            Progress::InProgress {
                days: u32::try_from(elapsed).unwrap_or(0),
                of: u32::try_from(total).unwrap_or(0),
            }
        }
    }

    /// First instant of the period.
    pub fn start(&self) -> DateTime<Utc> {
        let (y, m) = match *self {
            Period::Year(y) => (y, 1),
            Period::Quarter(y, q) => (y, (q - 1) * 3 + 1),
            Period::Month(y, m) => (y, m),
        };
        local_midnight(y, m)
    }

    /// First instant after the period.
    pub fn end(&self) -> DateTime<Utc> {
        let (y, m) = match *self {
            Period::Year(y) => (y + 1, 1),
            Period::Quarter(y, q) => next_month(y, q * 3),
            Period::Month(y, m) => next_month(y, m),
        };
        local_midnight(y, m)
    }

    /// The year the period belongs to.
    pub fn year(&self) -> i32 {
        match *self {
            Period::Year(y) | Period::Quarter(y, _) | Period::Month(y, _) => y,
        }
    }

    /// Whether `other` lies wholly inside this period.
    pub fn contains(&self, other: &Period) -> bool {
        self.start() <= other.start() && other.end() <= self.end()
    }

    /// The months the period is made of, in order.
    pub fn months(&self) -> Vec<Period> {
        let (y, first, n) = match *self {
            Period::Year(y) => (y, 1, 12),
            Period::Quarter(y, q) => (y, (q - 1) * 3 + 1, 3),
            Period::Month(y, m) => (y, m, 1),
        };
        (first..first + n).map(|m| Period::Month(y, m)).collect()
    }

    /// The period just before, of the same length (环比): the month, quarter
    /// or year before.
    pub fn previous(&self) -> Period {
        match *self {
            Period::Year(y) => Period::Year(y - 1),
            Period::Quarter(y, 1) => Period::Quarter(y - 1, 4),
            Period::Quarter(y, q) => Period::Quarter(y, q - 1),
            Period::Month(y, 1) => Period::Month(y - 1, 12),
            Period::Month(y, m) => Period::Month(y, m - 1),
        }
    }

    /// The same period one year earlier (same-period-last-year comparisons).
    pub fn year_before(&self) -> Period {
        match *self {
            Period::Year(y) => Period::Year(y - 1),
            Period::Quarter(y, q) => Period::Quarter(y - 1, q),
            Period::Month(y, m) => Period::Month(y - 1, m),
        }
    }
}

/// Whether a period has ended ([`Period::progress`]), as the API reports it
/// beside a figure, so a month still running is never read as a whole one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Progress {
    /// The period has ended.
    Complete,
    /// The period is running: `days` China-time days begun, of `of`.
    InProgress { days: u32, of: u32 },
    /// The period has not begun.
    NotStarted,
}

fn next_month(y: i32, m: u32) -> (i32, u32) {
    if m >= 12 {
        (y + 1, 1)
    } else {
        (y, m + 1)
    }
}

fn local_midnight(y: i32, m: u32) -> DateTime<Utc> {
    // Years are bounded to 1990..=2200 by parse(); the fallback is unreachable
    // for parsed periods and keeps this total for hand-built ones.
    let date = NaiveDate::from_ymd_opt(y, m, 1).unwrap_or_default();
    match CST.from_local_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default()) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        _ => DateTime::<Utc>::MIN_UTC,
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Period::Year(y) => write!(f, "{y:04}"),
            Period::Quarter(y, q) => write!(f, "{y:04}-Q{q}"),
            Period::Month(y, m) => write!(f, "{y:04}-{m:02}"),
        }
    }
}

impl TryFrom<String> for Period {
    type Error = PeriodError;
    fn try_from(s: String) -> Result<Self, PeriodError> {
        Period::parse(&s)
    }
}

impl From<Period> for String {
    fn from(p: Period) -> String {
        p.to_string()
    }
}

impl std::str::FromStr for Period {
    type Err = PeriodError;
    fn from_str(s: &str) -> Result<Self, PeriodError> {
        Period::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_and_prints_every_form() {
        for s in ["2026", "2026-Q3", "2026-10", "2026-01"] {
            assert_eq!(Period::parse(s).unwrap().to_string(), s);
        }
        for s in ["26", "2026-13", "2026-Q5", "2026-1", "abcd", "2026-10-01", "1800"] {
            assert!(Period::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn the_period_before_crosses_years() {
        assert_eq!(Period::Month(2026, 1).previous(), Period::Month(2025, 12));
        assert_eq!(Period::Month(2026, 11).previous(), Period::Month(2026, 10));
        assert_eq!(Period::Quarter(2026, 1).previous(), Period::Quarter(2025, 4));
        assert_eq!(Period::Quarter(2026, 3).previous(), Period::Quarter(2026, 2));
        assert_eq!(Period::Year(2026).previous(), Period::Year(2025));
    }

    #[test]
    fn the_last_complete_month_and_a_running_period_follow_china_time() {
        // 6 December, 10:00 in Beijing: November is the last complete month.
        let now = utc("2026-12-06T02:00:00Z");
        assert_eq!(Period::last_complete_month(now), Period::Month(2026, 11));
        // January's last complete month is the December before.
        assert_eq!(
            Period::last_complete_month(utc("2027-01-01T00:00:00Z")),
            Period::Month(2026, 12)
        );
        assert_eq!(Period::Month(2026, 11).progress(now), Progress::Complete);
        assert_eq!(
            Period::Month(2026, 12).progress(now),
            Progress::InProgress { days: 6, of: 31 }
        );
        assert_eq!(
            Period::Year(2026).progress(now),
            Progress::InProgress { days: 340, of: 365 }
        );
        assert_eq!(Period::Month(2027, 1).progress(now), Progress::NotStarted);
        // 23:59 on the last day in Beijing is still the month running, on its last day.
        let last = utc("2026-12-31T15:59:00Z");
        assert_eq!(
            Period::Month(2026, 12).progress(last),
            Progress::InProgress { days: 31, of: 31 }
        );
    }

    #[test]
    fn months_follow_china_time_not_utc() {
        // 16:00Z on Oct 31 is 00:00 on Nov 1 in Beijing.
        assert_eq!(Period::month_of(utc("2026-10-31T15:59:59Z")), Period::Month(2026, 10));
        assert_eq!(Period::month_of(utc("2026-10-31T16:00:00Z")), Period::Month(2026, 11));
        assert_eq!(Period::Month(2026, 11).start(), utc("2026-10-31T16:00:00Z"));
        assert_eq!(Period::Month(2026, 12).end(), utc("2026-12-31T16:00:00Z"));
        assert_eq!(Period::Quarter(2026, 4).end(), utc("2026-12-31T16:00:00Z"));
    }

    #[test]
    fn containment_and_months() {
        assert!(Period::Year(2026).contains(&Period::Month(2026, 7)));
        assert!(Period::Quarter(2026, 3).contains(&Period::Month(2026, 9)));
        assert!(!Period::Quarter(2026, 3).contains(&Period::Month(2026, 10)));
        assert_eq!(Period::Quarter(2026, 2).months().len(), 3);
        assert_eq!(Period::Month(2026, 2).year_before(), Period::Month(2025, 2));
    }
}
