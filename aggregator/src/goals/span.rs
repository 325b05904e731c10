//! The months a goal's figure covers: a month, a quarter, a year or a year to
//! date, always within one calendar year (China time), and the choice a
//! caller makes with `?span=` to override each goal's own basis.

use super::Basis;
use serde::Serialize;
use zonesync_proto::Period;

/// A set of months of one year: bit `m − 1` for month `m`.
pub type Months = u16;

/// Every month of a year.
pub const WHOLE_YEAR: Months = 0x0fff;

/// The months of quarter `q` (1–4).
pub fn quarter_months(q: u32) -> Months {
    let first = (q.clamp(1, 4) - 1) * 3;
    0b111 << first
}

/// Month `m` (1–12) alone.
pub fn month_bit(m: u32) -> Months {
    1 << (m.clamp(1, 12) - 1)
}

/// The months (1–12) in a set, in order.
pub fn each_month(set: Months) -> impl Iterator<Item = u32> {
    (1..=12u32).filter(move |m| set & month_bit(*m) != 0)
}

/// The months a figure covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Span {
    /// Exactly a period.
    Period(Period),
    /// January to the given month of a year.
    YearToDate(i32, u32),
}

impl Span {
    /// The span a goal's figure covers for a requested period.
    pub fn of(basis: Basis, p: Period) -> Span {
        match (basis, p) {
            (Basis::Requested, p) | (Basis::Year, p @ Period::Year(_)) => Span::Period(p),
            (Basis::Year, Period::Quarter(y, q)) => Span::YearToDate(y, q * 3),
            (Basis::Year, Period::Month(y, m)) => Span::YearToDate(y, m),
        }
    }

    /// The same span in another year.
    pub fn in_year(self, year: i32) -> Span {
        match self {
            Span::Period(Period::Year(_)) => Span::Period(Period::Year(year)),
            Span::Period(Period::Quarter(_, q)) => Span::Period(Period::Quarter(year, q)),
            Span::Period(Period::Month(_, m)) => Span::Period(Period::Month(year, m)),
            Span::YearToDate(_, m) => Span::YearToDate(year, m),
        }
    }

    /// The calendar year the span lies in.
    pub fn year(self) -> i32 {
        match self {
            Span::Period(p) => p.year(),
            Span::YearToDate(y, _) => y,
        }
    }

    /// The months of its year the span covers.
    pub fn months(self) -> Months {
        match self {
            Span::Period(Period::Year(_)) => WHOLE_YEAR,
            Span::Period(Period::Quarter(_, q)) => quarter_months(q),
            Span::Period(Period::Month(_, m)) => month_bit(m),
            Span::YearToDate(_, m) => (1u16 << m.clamp(1, 12)) - 1,
        }
    }

    /// How many months the span covers.
    pub fn month_count(self) -> u32 {
        self.months().count_ones()
    }

    /// When the span starts.
    pub fn start(self) -> chrono::DateTime<chrono::Utc> {
        match self {
            Span::Period(p) => p.start(),
            Span::YearToDate(y, _) => Period::Year(y).start(),
        }
    }

    /// When the span ends (exclusive).
    pub fn end(self) -> chrono::DateTime<chrono::Utc> {
        match self {
            Span::Period(p) => p.end(),
            Span::YearToDate(y, m) => Period::Month(y, m).end(),
        }
    }

    /// How people write it: `2026-10`, `2026-Q3`, `2026`, `2026-01..2026-10`.
    pub fn label(self) -> String {
        match self {
            Span::Period(p) => p.to_string(),
            Span::YearToDate(y, 12) => Period::Year(y).to_string(),
            Span::YearToDate(y, m) => format!("{y}-01..{}", Period::Month(y, m)),
        }
    }
}

/// Which span every row of a table covers: each goal's own basis (the
/// default), or one chosen by the caller (`?span=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanChoice {
    /// The goal's `basis`: year to date for most, the requested period for some.
    #[default]
    Basis,
    /// The requested month alone (`period` must be a month).
    Month,
    /// The quarter containing the requested period.
    Quarter,
    /// The whole calendar year of the requested period.
    Year,
    /// January to the end of the requested period.
    YearToDate,
}

/// Why a `span` could not be used with a `period`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    #[error("span {0:?} is not one of basis, month, quarter, year, ytd")]
    Unknown(String),
    #[error("span={span} needs a period no longer than a {span}, not {period}")]
    TooShort { span: &'static str, period: Period },
}

impl std::str::FromStr for SpanChoice {
    type Err = SpanError;
    fn from_str(s: &str) -> Result<Self, SpanError> {
        match s {
            "basis" => Ok(SpanChoice::Basis),
            "month" => Ok(SpanChoice::Month),
            "quarter" => Ok(SpanChoice::Quarter),
            "year" => Ok(SpanChoice::Year),
            "ytd" | "year_to_date" => Ok(SpanChoice::YearToDate),
            other => Err(SpanError::Unknown(other.to_owned())),
        }
    }
}

impl SpanChoice {
    /// As written in `?span=`.
    pub fn name(self) -> &'static str {
        match self {
            SpanChoice::Basis => "basis",
            SpanChoice::Month => "month",
            SpanChoice::Quarter => "quarter",
            SpanChoice::Year => "year",
            SpanChoice::YearToDate => "ytd",
        }
    }

    /// The span a goal of `basis` covers for `period` under this choice.
    pub fn span(self, basis: Basis, period: Period) -> Result<Span, SpanError> {
        let short = |span| SpanError::TooShort { span, period };
        Ok(match (self, period) {
            (SpanChoice::Basis, p) => Span::of(basis, p),
            (SpanChoice::Month, p @ Period::Month(..)) => Span::Period(p),
            (SpanChoice::Month, _) => return Err(short("month")),
            (SpanChoice::Quarter, Period::Month(y, m)) => {
                Span::Period(Period::Quarter(y, (m.clamp(1, 12) - 1) / 3 + 1))
            }
            (SpanChoice::Quarter, p @ Period::Quarter(..)) => Span::Period(p),
            (SpanChoice::Quarter, Period::Year(_)) => return Err(short("quarter")),
            (SpanChoice::Year, p) => Span::Period(Period::Year(p.year())),
            (SpanChoice::YearToDate, p) => Span::of(Basis::Year, p),
        })
    }

    /// Checks the choice can be used with `period` at all (every basis gives the same answer).
    pub fn check(self, period: Period) -> Result<(), SpanError> {
        self.span(Basis::Requested, period).map(|_| ())
    }
}

/// What a goal table is asked for: a period, and which span of it every row
/// covers. Made only by [`Asked::new`], which refuses a choice the period
/// cannot give (a month of a quarter), so every goal's span is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Asked {
    /// The period asked for.
    pub period: Period,
    /// The span chosen.
    pub span: SpanChoice,
}

impl Asked {
    /// `period` with `span`, if the two go together.
    pub fn new(period: Period, span: SpanChoice) -> Result<Asked, SpanError> {
        span.check(period)?;
        Ok(Asked { period, span })
    }

    /// `period` with each goal's own basis.
    pub fn basis(period: Period) -> Asked {
        Asked {
            period,
            span: SpanChoice::Basis,
        }
    }

    /// The span a goal of `basis` covers.
    pub fn span_for(self, basis: Basis) -> Span {
        // `new` checked the choice against the period; every basis agrees on that.
        self.span
            .span(basis, self.period)
            .unwrap_or(Span::of(basis, self.period))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_sets_of_each_span() {
        assert_eq!(Span::Period(Period::Year(2026)).months(), WHOLE_YEAR);
        assert_eq!(Span::Period(Period::Quarter(2026, 3)).months(), 0b0001_1100_0000);
        assert_eq!(Span::Period(Period::Month(2026, 10)).months(), 0b0010_0000_0000);
        assert_eq!(Span::YearToDate(2026, 10).months(), 0b0011_1111_1111);
        assert_eq!(Span::YearToDate(2026, 10).month_count(), 10);
        assert_eq!(each_month(0b1000_0000_0101).collect::<Vec<_>>(), vec![1, 3, 12]);
    }

    #[test]
    fn a_chosen_span_overrides_the_basis_and_refuses_what_cannot_be() {
        let oct = Period::Month(2026, 10);
        let q3 = Period::Quarter(2026, 3);
        let r = |c: &str, b, p| c.parse::<SpanChoice>().and_then(|c| c.span(b, p));
        assert_eq!(r("basis", Basis::Year, oct), Ok(Span::YearToDate(2026, 10)));
        assert_eq!(r("basis", Basis::Requested, oct), Ok(Span::Period(oct)));
        assert_eq!(r("month", Basis::Year, oct), Ok(Span::Period(oct)));
        assert_eq!(
            r("quarter", Basis::Year, oct),
            Ok(Span::Period(Period::Quarter(2026, 4)))
        );
        assert_eq!(r("quarter", Basis::Year, q3), Ok(Span::Period(q3)));
        assert_eq!(r("year", Basis::Requested, oct), Ok(Span::Period(Period::Year(2026))));
        assert_eq!(r("ytd", Basis::Requested, q3), Ok(Span::YearToDate(2026, 9)));
        assert_eq!(
            r("ytd", Basis::Requested, oct).map(Span::label),
            Ok("2026-01..2026-10".into())
        );
        assert!(matches!(r("month", Basis::Year, q3), Err(SpanError::TooShort { .. })));
        assert!(matches!(
            r("quarter", Basis::Year, Period::Year(2026)),
            Err(SpanError::TooShort { .. })
        ));
        assert!(matches!(r("weekly", Basis::Year, oct), Err(SpanError::Unknown(_))));
    }
}
