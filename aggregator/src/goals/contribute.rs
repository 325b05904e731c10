//! What one registered enterprise contributes to a goal over a span: who is a
//! member, who is unknown, what is summed — and, for sums over months, which
//! months.
//!
//! The months rule (shared/reference and issue 14): both sides of a ratio, and
//! both years of a trend, cover the same months of the same enterprise. An
//! enterprise's months are those where every figure the goal reads has a
//! value — for energy, every carrier the enterprise uses in the year(s)
//! concerned — and the rest are left out of every side and counted
//! (`partial_months`). A trend of a ratio or total is therefore made of each
//! enterprise's months known in both years: a meter installed in September
//! compares September onwards with September onwards.

use super::conditions::{Answer, Declared};
use super::figure::{matched, Quantity};
use super::span::Span;
use super::tally::Contribution;
use super::{GoalDef, GoalKind, GoalSettings};
use crate::registry::{Enterprise, Zone};
use crate::state::EnterpriseState;
use zonesync_proto::Catalog;

static NO_DECLARATIONS: Declared = Declared::new();

/// The base goal of a trend whose figure is a sum over months (ratio or
/// total): such a trend is made of its own contributions, matched month by
/// month across the two years. Other trends compare their base goal's rows.
pub(super) fn summed_base<'g>(goals: &'g [GoalDef], g: &GoalDef) -> Option<&'g GoalDef> {
    if g.kind != GoalKind::Trend {
        return None;
    }
    goals
        .iter()
        .find(|o| Some(&o.id) == g.of.as_ref())
        .filter(|b| matches!(b.kind, GoalKind::Ratio | GoalKind::Total))
}

/// The span a trend compares `cur` with: the same months of its base year
/// (the year before unless the goal fixes one).
pub(super) fn base_span(g: &GoalDef, cur: Span) -> Span {
    cur.in_year(g.base_year.unwrap_or(cur.year() - 1))
}

/// What one registered enterprise of `zone` contributes to goal `goals[gi]` over `span`
/// (for a trend, `span` is the current one; the base year's is [`base_span`]).
///
/// An enterprise that has sent nothing (`es` None) contributes exactly what
/// one with an empty state does; the incremental tallies rely on that.
#[allow(clippy::too_many_arguments)]
pub(super) fn contribution(
    goals: &[GoalDef],
    gi: usize,
    zone: &Zone,
    reg: &Enterprise,
    es: Option<&EnterpriseState>,
    span: Span,
    catalog: &Catalog,
    s: &GoalSettings,
) -> Contribution {
    let g = &goals[gi];
    let d = es.map_or(&NO_DECLARATIONS, |e| &e.declarations);
    // A trend's members are its base goal's.
    let base = summed_base(goals, g);
    let pop = base.unwrap_or(g).population.contains(reg, d);
    if pop == Some(false) {
        return Contribution::default();
    }
    let mut c = Contribution {
        member: true,
        ..Contribution::default()
    };
    let full = span.month_count();
    let read = Reader {
        zone,
        reg,
        es,
        d,
        catalog,
        s,
    };
    match g.kind {
        GoalKind::Coverage => {
            c.den = 1.0;
            let answer = g.condition.unwrap_or(super::Condition::Always).answer(d, s);
            match (pop, answer.met()) {
                (Some(true), Some(met)) => {
                    c.num = if met { 1.0 } else { 0.0 };
                    c.reported = true;
                    c.months = full;
                    c.proxied = met && matches!(answer, Answer::Proxy(_));
                }
                _ => c.unknown = true,
            }
        }
        GoalKind::Ratio => {
            let years = [span.year()];
            match read.ratio(g, span, &years) {
                Some((n, dn)) => {
                    let months = matched(n.figures().chain(dn.figures()), span.months());
                    c.num = n.sum(months);
                    c.den = dn.sum(months);
                    c.proxied = c.num != 0.0 && by_proxy(g.numerator_filter.as_ref(), zone, reg, d);
                    c.note_months(months, full);
                }
                None => c.unknown = true,
            }
        }
        GoalKind::Total | GoalKind::Count => {
            let pass = g.filter.as_ref().map_or(Some(true), |f| f.passes(zone, reg, d));
            let filter_proxied = by_proxy(g.filter.as_ref(), zone, reg, d);
            let known = match (g.kind, pass) {
                // Outside the filter: a member that adds nothing (not "reported", so a
                // total of a filter nobody passes stays without a value).
                (_, Some(false)) => return c,
                (_, None) => None,
                (GoalKind::Total, Some(true)) => read.quantity(g.indicator.as_deref(), span, &[span.year()]).map(|q| {
                    let months = matched(q.figures(), span.months());
                    (q.sum(months), months)
                }),
                (_, Some(true)) => {
                    let answer = g.condition.map(|c| c.answer(d, s));
                    let cond = answer.map_or(Some(true), Answer::met);
                    // A threshold on partial months is judged on what is known: it can
                    // only come out lower than the whole, never higher.
                    let thr = g.threshold.as_ref().map_or(Some((true, span.months())), |t| {
                        read.quantity(Some(&t.indicator), span, &[span.year()]).map(|q| {
                            let months = matched(q.figures(), span.months());
                            (q.sum(months) >= t.min, months)
                        })
                    });
                    match (cond, thr) {
                        (Some(false), _) => Some((0.0, span.months())),
                        (_, Some((false, months))) => Some((0.0, months)),
                        (Some(true), Some((true, months))) => {
                            c.proxied = matches!(answer, Some(Answer::Proxy(_)));
                            Some((1.0, months))
                        }
                        _ => None,
                    }
                }
            };
            match known {
                Some((v, months)) => {
                    c.num = v;
                    c.proxied |= v != 0.0 && filter_proxied;
                    c.note_months(months, full);
                }
                None => c.unknown = true,
            }
        }
        GoalKind::ZoneCount => {
            let passes = g.filter.as_ref().is_none_or(|f| f.passes(zone, reg, d) == Some(true));
            if let (true, Some(q)) = (passes, read.quantity(g.indicator.as_deref(), span, &[span.year()])) {
                c.num = q.sum(matched(q.figures(), span.months()));
            }
        }
        GoalKind::Trend => match base {
            Some(b) => read.trend(&mut c, g, b, span),
            // A trend of a coverage or count compares its base goal's rows.
            None => return Contribution::default(),
        },
    }
    c
}

/// Whether a filter let the enterprise in only on its proxy (the zone's code
/// prefixes standing in for a leading-industry flag the registry does not set):
/// such a member's amount counts, and the row says how many did.
fn by_proxy(f: Option<&super::Filter>, zone: &Zone, reg: &Enterprise, d: &Declared) -> bool {
    f.is_some_and(|f| f.answer(zone, reg, d) == Answer::Proxy(true))
}

impl Contribution {
    /// Records the months a reporting member's figure covers; none means it is unknown.
    fn note_months(&mut self, months: super::span::Months, full: u32) {
        let n = months.count_ones();
        if n == 0 {
            self.unknown = true;
            self.num = 0.0;
            self.den = 0.0;
            self.base_num = 0.0;
            self.base_den = 0.0;
            return;
        }
        self.reported = true;
        self.months = n;
        self.partial_months = full.saturating_sub(n);
    }
}

/// One enterprise's data as goals read it.
struct Reader<'a> {
    zone: &'a Zone,
    reg: &'a Enterprise,
    es: Option<&'a EnterpriseState>,
    d: &'a Declared,
    catalog: &'a Catalog,
    s: &'a GoalSettings,
}

impl Reader<'_> {
    fn quantity(&self, ind: Option<&str>, span: Span, years: &[i32]) -> Option<Quantity> {
        Quantity::of(self.es?, ind?, span, years, self.catalog, self.s)
    }

    /// A ratio goal's numerator and denominator over `span`, unmatched; None when unknown.
    fn ratio(&self, g: &GoalDef, span: Span, years: &[i32]) -> Option<(Quantity, Quantity)> {
        let in_num = g
            .numerator_filter
            .as_ref()
            .map_or(Some(true), |f| f.passes(self.zone, self.reg, self.d));
        let den = self.quantity(g.denominator.as_deref(), span, years)?;
        let num = match in_num? {
            true => self.quantity(g.numerator.as_deref(), span, years)?,
            // Outside the numerator's filter: nothing on that side, and no months to match.
            false => Quantity::Flow(Vec::new()),
        };
        Some((num, den))
    }

    /// A trend's contribution: its base goal over `cur` and over the base
    /// year's span, both over the months known in both.
    fn trend(&self, c: &mut Contribution, g: &GoalDef, b: &GoalDef, cur: Span) {
        let base = base_span(g, cur);
        let years = [cur.year(), base.year()];
        let full = cur.month_count();
        let months = match b.kind {
            GoalKind::Ratio => match (self.ratio(b, cur, &years), self.ratio(b, base, &years)) {
                (Some((cn, cd)), Some((bn, bd))) => {
                    let figures = cn.figures().chain(cd.figures()).chain(bn.figures()).chain(bd.figures());
                    let months = matched(figures, cur.months());
                    c.num = cn.sum(months);
                    c.den = cd.sum(months);
                    c.base_num = bn.sum(months);
                    c.base_den = bd.sum(months);
                    months
                }
                _ => 0,
            },
            _ => {
                let pass = b
                    .filter
                    .as_ref()
                    .map_or(Some(true), |f| f.passes(self.zone, self.reg, self.d));
                match pass {
                    Some(false) => return,
                    None => 0,
                    Some(true) => match (
                        self.quantity(b.indicator.as_deref(), cur, &years),
                        self.quantity(b.indicator.as_deref(), base, &years),
                    ) {
                        (Some(cq), Some(bq)) => {
                            let months = matched(cq.figures().chain(bq.figures()), cur.months());
                            c.num = cq.sum(months);
                            c.base_num = bq.sum(months);
                            months
                        }
                        _ => 0,
                    },
                }
            }
        };
        c.note_months(months, full);
    }
}
