//! One enterprise's amounts over a span, month by month, and the months that
//! several amounts share.
//!
//! A ratio or a trend over several months is only honest if both sides cover
//! the same months: two months of metered electricity against ten months of
//! value added is not an intensity. So an amount is kept as the blocks it is
//! known in — a reported month, a metered month, or a quarter or year
//! reported as a whole (which cannot be split into months) — and
//! [`matched`] finds the months every side covers, shrunk until no block lies
//! partly inside them. Sums are then taken over those months only, on every
//! side, and the months left out are counted.
//!
//! Precedence within a span: a reported figure for the whole span, then
//! reported quarters, then reported months, then metered months — what an
//! enterprise reports for a period beats what the meters add up to.

use super::span::{each_month, month_bit, quarter_months, Months, Span, WHOLE_YEAR};
use super::GoalSettings;
use crate::state::EnterpriseState;
use serde::Serialize;
use zonesync_proto::{Catalog, Indicator, IndicatorKind, Period, ReadingTime};

/// Where an amount came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Reported by the enterprise for the period as a whole.
    Reported,
    /// Sum of reported months (or quarters) within the period.
    ReportedMonths,
    /// Derived from meter registers.
    Metered,
    /// Some months reported, the others metered.
    ReportedAndMetered,
}

/// An amount known for a set of months as one figure.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Block {
    months: Months,
    amount: f64,
    metered: bool,
}

/// One flow indicator's amount over a span, as the blocks it is known in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figure {
    blocks: Vec<Block>,
    /// The months of the span.
    span: Months,
}

impl Figure {
    /// `ind`'s blocks within `span` for one enterprise.
    pub fn of(es: &EnterpriseState, ind: &str, span: Span) -> Figure {
        let y = span.year();
        let want = span.months();
        let mut left = want;
        let mut blocks = Vec::new();
        let mut take = |left: &mut Months, months: Months, amount: Option<&f64>, metered: bool| {
            if let Some(a) = amount {
                blocks.push(Block {
                    months,
                    amount: *a,
                    metered,
                });
                *left &= !months;
            }
        };
        if let Some(r) = es.reported.get(ind) {
            if want == WHOLE_YEAR {
                take(&mut left, WHOLE_YEAR, r.get(&Period::Year(y)), false);
            }
            for q in 1..=4 {
                let qm = quarter_months(q);
                if left & qm == qm {
                    take(&mut left, qm, r.get(&Period::Quarter(y, q)), false);
                }
            }
            for m in each_month(left) {
                take(&mut left, month_bit(m), r.get(&Period::Month(y, m)), false);
            }
        }
        if let Some(metered) = es.metered.get(ind) {
            for m in each_month(left) {
                take(&mut left, month_bit(m), metered.get(&Period::Month(y, m)), true);
            }
        }
        Figure { blocks, span: want }
    }

    /// The months some block covers.
    pub fn covered(&self) -> Months {
        self.blocks.iter().fold(0, |acc, b| acc | b.months)
    }

    /// Σ of the blocks lying wholly within `months`.
    pub fn sum(&self, months: Months) -> f64 {
        self.inside(months).map(|b| b.amount).sum()
    }

    /// Where the blocks within `months` came from; None when there are none.
    pub fn source(&self, months: Months) -> Option<Source> {
        let (mut metered, mut reported) = (false, false);
        for b in self.inside(months) {
            metered |= b.metered;
            reported |= !b.metered;
        }
        Some(match (reported, metered) {
            (false, false) => return None,
            (true, true) => Source::ReportedAndMetered,
            (false, true) => Source::Metered,
            (true, false) if self.blocks.len() == 1 && self.covered() == self.span => Source::Reported,
            (true, false) => Source::ReportedMonths,
        })
    }

    fn inside(&self, months: Months) -> impl Iterator<Item = &Block> {
        self.blocks.iter().filter(move |b| b.months & !months == 0)
    }
}

/// The months within `span` that every figure covers, less every month of a
/// block some figure holds only partly inside them (a quarter reported as a
/// whole cannot be matched against two of its months).
pub fn matched<'a>(figures: impl Iterator<Item = &'a Figure> + Clone, span: Months) -> Months {
    let mut set = figures.clone().fold(span, |acc, f| acc & f.covered());
    loop {
        let before = set;
        for f in figures.clone() {
            for b in &f.blocks {
                if b.months & set != 0 && b.months & !set != 0 {
                    set &= !b.months;
                }
            }
        }
        if set == before {
            return set;
        }
    }
}

/// The energy carriers an enterprise uses in any of `years`: those (counted
/// in intensity) it has any figure for in one of them, reported or metered.
/// A month only counts as known for energy when every one of them has a
/// figure for it, so a month missing gas is not taken for a month without gas.
pub fn carriers<'c>(es: &EnterpriseState, years: &[i32], catalog: &'c Catalog, s: &GoalSettings) -> Vec<&'c Indicator> {
    let mut codes: Vec<&String> = es.reported.keys().chain(es.metered.keys()).collect();
    codes.sort_unstable();
    codes.dedup();
    codes
        .into_iter()
        .filter_map(|code| catalog.get(code))
        .filter(|i| i.is_energy() && !s.intensity_excludes.contains(&i.code))
        .filter(|i| {
            let reported = es
                .reported
                .get(&i.code)
                .is_some_and(|r| r.keys().any(|p| years.contains(&p.year())));
            let metered = es
                .metered
                .get(&i.code)
                .is_some_and(|m| m.keys().any(|p| years.contains(&p.year())));
            reported || metered
        })
        .collect()
}

/// One term of a flow quantity: an indicator's figure times a factor (tce per unit for energy).
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// Catalog code.
    pub code: String,
    /// Multiplies the amount (1 but for energy carriers).
    pub factor: f64,
    /// The figure.
    pub figure: Figure,
}

/// What a goal reads of one enterprise over a span.
#[derive(Debug, Clone, PartialEq)]
pub enum Quantity {
    /// A level at the span's end (land area): no months to match.
    Stock(f64),
    /// A sum of flows (one indicator, or every carrier for `energy_tce`).
    Flow(Vec<Term>),
}

impl Quantity {
    /// `ind` (or `energy_tce`) of one enterprise over `span`, energy carriers
    /// being those used in any of `years`; None when nothing is known.
    pub fn of(
        es: &EnterpriseState,
        ind: &str,
        span: Span,
        years: &[i32],
        catalog: &Catalog,
        s: &GoalSettings,
    ) -> Option<Quantity> {
        if ind == "energy_tce" {
            let terms: Vec<Term> = carriers(es, years, catalog, s)
                .into_iter()
                .map(|i| Term {
                    code: i.code.clone(),
                    factor: i.tce_per_unit.unwrap_or(0.0),
                    figure: Figure::of(es, &i.code, span),
                })
                .collect();
            return terms
                .iter()
                .any(|t| t.figure.covered() != 0)
                .then_some(Quantity::Flow(terms));
        }
        if catalog.get(ind).map(|i| i.kind) == Some(IndicatorKind::Gauge) {
            return stock(es, ind, span).map(Quantity::Stock);
        }
        let figure = Figure::of(es, ind, span);
        (figure.covered() != 0).then(|| {
            Quantity::Flow(vec![Term {
                code: ind.to_owned(),
                factor: 1.0,
                figure,
            }])
        })
    }

    /// Its figures (none for a stock).
    pub fn figures(&self) -> impl Iterator<Item = &Figure> + Clone {
        let terms: &[Term] = match self {
            Quantity::Stock(_) => &[],
            Quantity::Flow(t) => t,
        };
        terms.iter().map(|t| &t.figure)
    }

    /// Its amount over `months` (a stock whatever the months).
    pub fn sum(&self, months: Months) -> f64 {
        match self {
            Quantity::Stock(v) => *v,
            Quantity::Flow(terms) => terms.iter().map(|t| t.factor * t.figure.sum(months)).sum(),
        }
    }
}

/// Value of a stock indicator (land area) at the end of a span: the latest
/// report for a period starting before the span ends, else the latest reading.
fn stock(es: &EnterpriseState, ind: &str, span: Span) -> Option<f64> {
    let end = span.end();
    let reported = es
        .reported
        .get(ind)
        .and_then(|r| {
            r.iter()
                .filter(|(p, _)| p.start() < end)
                .max_by_key(|(p, _)| (p.end(), std::cmp::Reverse(p.start())))
        })
        .map(|(_, v)| *v);
    reported.or_else(|| {
        let vals: Vec<f64> = es
            .latest
            .of(ind)
            .filter(|(_, (at, _))| matches!(at, ReadingTime::Ts(t) if *t < end))
            .map(|(_, (_, v))| *v)
            .collect();
        (!vals.is_empty()).then(|| vals.iter().sum())
    })
}

/// An indicator's amount for one enterprise over a span (`energy_tce`
/// included): every month known, matched or not. For one enterprise's own
/// figure where its completeness is judged elsewhere (alerts, classification);
/// goal rows match months instead (`goals::tally`).
pub fn value(es: Option<&EnterpriseState>, ind: &str, span: Span, catalog: &Catalog, s: &GoalSettings) -> Option<f64> {
    let q = Quantity::of(es?, ind, span, &[span.year()], catalog, s)?;
    Some(q.sum(span.months()))
}

/// One enterprise's ratio of two indicators over a span, both sides over the
/// months both cover (energy carrier by carrier), as the goal rows take it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchedRatio {
    /// Numerator over the matched months.
    pub num: f64,
    /// Denominator over the same months.
    pub den: f64,
    /// Months matched.
    pub months: u32,
    /// Months of the span left out.
    pub partial_months: u32,
}

/// `num ÷ den` of one enterprise over `span`, matched month by month; None
/// when either side is unknown or no month has both.
pub fn matched_ratio(
    es: Option<&EnterpriseState>,
    num: &str,
    den: &str,
    span: Span,
    catalog: &Catalog,
    s: &GoalSettings,
) -> Option<MatchedRatio> {
    let es = es?;
    let years = [span.year()];
    let n = Quantity::of(es, num, span, &years, catalog, s)?;
    let d = Quantity::of(es, den, span, &years, catalog, s)?;
    let months = matched(n.figures().chain(d.figures()), span.months());
    (months != 0).then(|| MatchedRatio {
        num: n.sum(months),
        den: d.sum(months),
        months: months.count_ones(),
        partial_months: span.month_count() - months.count_ones(),
    })
}

/// `num ÷ den` of one enterprise over `cur` and over `base` (the same months
/// of another year), both over the months known on every side in both years,
/// carriers of either year: a year-on-year change made of like months.
#[allow(clippy::too_many_arguments)]
pub fn matched_change(
    es: Option<&EnterpriseState>,
    num: &str,
    den: &str,
    cur: Span,
    base: Span,
    catalog: &Catalog,
    s: &GoalSettings,
) -> Option<(MatchedRatio, MatchedRatio)> {
    let es = es?;
    let years = [cur.year(), base.year()];
    let q = |ind: &str, span: Span| Quantity::of(es, ind, span, &years, catalog, s);
    let (cn, cd, bn, bd) = (q(num, cur)?, q(den, cur)?, q(num, base)?, q(den, base)?);
    let figures = cn.figures().chain(cd.figures()).chain(bn.figures()).chain(bd.figures());
    let months = matched(figures, cur.months());
    let ratio = |n: &Quantity, d: &Quantity| MatchedRatio {
        num: n.sum(months),
        den: d.sum(months),
        months: months.count_ones(),
        partial_months: cur.month_count() - months.count_ones(),
    };
    (months != 0).then(|| (ratio(&cn, &cd), ratio(&bn, &bd)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use crate::testkit::{amount, id, register};
    use zonesync_proto::ZoneId;

    fn state(readings: &[zonesync_proto::CanonicalReading]) -> State {
        let mut st = State::default();
        let cat = Catalog::builtin().unwrap();
        st.apply(&ZoneId::parse("z").unwrap(), &id(1), readings, &[], &cat);
        st
    }

    fn es(st: &State) -> &EnterpriseState {
        &st.zones[&ZoneId::parse("z").unwrap()].enterprises[&id(1)]
    }

    #[test]
    fn a_whole_period_beats_its_parts_and_reported_months_beat_metered_ones() {
        let st = state(&[
            amount("natural_gas", "2026-Q1", 30.0),
            amount("natural_gas", "2026-01", 1.0), // inside the reported quarter: not used
            amount("natural_gas", "2026-04", 7.0),
            // 40 kWh metered in May, 5 in June; June also reported as 6.
            register(0.0, "2026-05-01T00:00:00+08:00"),
            register(40.0, "2026-06-01T00:00:00+08:00"),
            register(45.0, "2026-07-01T00:00:00+08:00"),
            amount("electricity", "2026-06", 6.0),
        ]);
        let gas = Figure::of(es(&st), "natural_gas", Span::YearToDate(2026, 6));
        // Q1 as one block (30) + April (7); May, June unknown.
        assert_eq!(gas.covered(), 0b1111);
        assert_eq!(gas.sum(0b1111), 37.0);
        assert_eq!(gas.sum(0b0111), 30.0);
        assert_eq!(gas.sum(0b0011), 0.0, "the quarter cannot be split");
        assert_eq!(gas.source(0b1111), Some(Source::ReportedMonths));
        let el = Figure::of(es(&st), "electricity", Span::Period(Period::Quarter(2026, 2)));
        assert_eq!(el.covered(), 0b11_0000);
        assert_eq!(el.sum(WHOLE_YEAR), 40.0 + 6.0);
        assert_eq!(el.source(WHOLE_YEAR), Some(Source::ReportedAndMetered));
        let q1 = Figure::of(es(&st), "natural_gas", Span::Period(Period::Quarter(2026, 1)));
        assert_eq!(q1.source(WHOLE_YEAR), Some(Source::Reported));
    }

    #[test]
    fn matched_months_drop_a_block_only_partly_inside() {
        let st = state(&[
            amount("natural_gas", "2026-Q1", 30.0),
            amount("natural_gas", "2026-04", 7.0),
            amount("value_added", "2026-02", 10.0),
            amount("value_added", "2026-03", 10.0),
            amount("value_added", "2026-04", 10.0),
        ]);
        let span = Span::YearToDate(2026, 4);
        let gas = Figure::of(es(&st), "natural_gas", span);
        let va = Figure::of(es(&st), "value_added", span);
        // Both cover Feb–Apr, but gas holds Q1 whole: only April can be matched.
        assert_eq!(matched([&gas, &va].into_iter(), span.months()), 0b1000);
    }
}
