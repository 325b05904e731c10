//! Tallies: what one enterprise contributes to a goal's figure over a span,
//! and a zone's contributions summed.
//!
//! Both the full scan ([`super::evaluate`]) and the tallies kept up to date as
//! data arrives (`goals::incremental`) go through
//! [`super::contribute::contribution`], so the rules of who counts, who is
//! unknown and what is summed are written once.

use super::contribute::contribution;
use super::exact::ExactSum;
use super::span::Span;
use super::{GoalDef, GoalSettings};
use crate::registry::Zone;
use crate::state::EnterpriseState;
use std::collections::BTreeMap;
use zonesync_proto::{Catalog, EnterpriseId};

/// One registered enterprise's part in a goal's figure over a span.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Contribution {
    /// A member of the goal's population (counts in `in_scope`).
    pub member: bool,
    /// Its data says what the goal needs.
    pub reported: bool,
    /// Its data does not say.
    pub unknown: bool,
    /// Counted in the numerator on a proxy's word, not a declaration (see [`super::Answer`]).
    pub proxied: bool,
    /// Added to the numerator: 1 when covered, its amount in a sum or ratio, its amount in its zone's Σ.
    pub num: f64,
    /// Added to the denominator: 1 per member for coverage, its amount for a ratio.
    pub den: f64,
    /// Trend: its numerator (or amount) over the base year's span, over the same months.
    pub base_num: f64,
    /// Trend of a ratio: its denominator over the base year's span.
    pub base_den: f64,
    /// Months of the span its figure covers: all of them for a figure that is
    /// not a sum over months (a declaration, a stock), none when unknown.
    pub months: u32,
    /// Months of the span left out of its figure, on every side, because a
    /// side lacked them (counted for members that report, see `months`).
    pub partial_months: u32,
}

/// One zone's contributions to a goal over a span, summed: all a row needs.
///
/// Sums are exact ([`ExactSum`]), so a tally kept up to date by taking an
/// enterprise's old contribution out and putting its new one in is equal,
/// bit for bit, to one summed afresh.
///
/// Serialisable, so a zone aggregator can send its tallies to a city or
/// province center (`crate::federation`), which merges them as this process
/// would.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tally {
    /// Members of the population.
    pub in_scope: usize,
    /// Members with data.
    pub reported: usize,
    /// Members whose data does not say.
    pub unknown: usize,
    /// Members counted in the numerator on a proxy's word.
    pub proxied: usize,
    /// Σ numerator contributions.
    pub num: ExactSum,
    /// Σ denominator contributions.
    pub den: ExactSum,
    /// Trends: Σ base-year numerator and denominator contributions (absent until one is put in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Box<[ExactSum; 2]>>,
    /// Σ months covered by members' figures.
    pub months: u64,
    /// Σ months left out of members' figures.
    pub partial_months: u64,
}

impl Tally {
    /// Puts a contribution in.
    pub fn add(&mut self, c: &Contribution) {
        self.in_scope += usize::from(c.member);
        self.reported += usize::from(c.reported);
        self.unknown += usize::from(c.unknown);
        self.proxied += usize::from(c.proxied);
        self.num.add(c.num);
        self.den.add(c.den);
        self.months += u64::from(c.months);
        self.partial_months += u64::from(c.partial_months);
        if c.base_num != 0.0 || c.base_den != 0.0 {
            let b = self.base.get_or_insert_with(Box::default);
            b[0].add(c.base_num);
            b[1].add(c.base_den);
        }
    }

    /// Takes a contribution that was put in out again.
    pub fn sub(&mut self, c: &Contribution) {
        self.in_scope = self.in_scope.saturating_sub(usize::from(c.member));
        self.reported = self.reported.saturating_sub(usize::from(c.reported));
        self.unknown = self.unknown.saturating_sub(usize::from(c.unknown));
        self.proxied = self.proxied.saturating_sub(usize::from(c.proxied));
        self.num.sub(c.num);
        self.den.sub(c.den);
        self.months = self.months.saturating_sub(u64::from(c.months));
        self.partial_months = self.partial_months.saturating_sub(u64::from(c.partial_months));
        if c.base_num != 0.0 || c.base_den != 0.0 {
            let b = self.base.get_or_insert_with(Box::default);
            b[0].sub(c.base_num);
            b[1].sub(c.base_den);
        }
    }

    /// Adds another zone's tally.
    pub fn merge(&mut self, o: &Tally) {
        self.in_scope += o.in_scope;
        self.reported += o.reported;
        self.unknown += o.unknown;
        self.proxied += o.proxied;
        self.num.merge(&o.num);
        self.den.merge(&o.den);
        self.months += o.months;
        self.partial_months += o.partial_months;
        if let Some(ob) = &o.base {
            let b = self.base.get_or_insert_with(Box::default);
            b[0].merge(&ob[0]);
            b[1].merge(&ob[1]);
        }
    }

    /// Σ base-year numerator and denominator (trends).
    pub fn base_values(&self) -> (f64, f64) {
        self.base.as_ref().map_or((0.0, 0.0), |b| (b[0].value(), b[1].value()))
    }
}

/// Goal `goals[gi]`'s tally over `span` for one zone, by scanning every registered enterprise.
pub(super) fn scan_zone(
    goals: &[GoalDef],
    gi: usize,
    zone: &Zone,
    states: Option<&BTreeMap<EnterpriseId, EnterpriseState>>,
    span: Span,
    catalog: &Catalog,
    s: &GoalSettings,
) -> Tally {
    let mut t = Tally::default();
    for e in &zone.enterprise {
        let es = states.and_then(|m| m.get(&e.id));
        t.add(&contribution(goals, gi, zone, e, es, span, catalog, s));
    }
    t
}
