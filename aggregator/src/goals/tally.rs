//! Tallies: what one enterprise contributes to a goal's figure over a span,
//! and a zone's contributions summed.
//!
//! Both the full scan ([`super::evaluate`]) and the tallies kept up to date as
//! data arrives (`goals::incremental`) go through [`contribution`], so the
//! rules of who counts, who is unknown and what is summed are written once.

use super::conditions::{Answer, Declared};
use super::eval::{value, Span};
use super::exact::ExactSum;
use super::{GoalDef, GoalKind, GoalSettings};
use crate::registry::{Enterprise, Zone};
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
}

/// One zone's contributions to a goal over a span, summed: all a row needs.
///
/// Sums are exact ([`ExactSum`]), so a tally kept up to date by taking an
/// enterprise's old contribution out and putting its new one in is equal,
/// bit for bit, to one summed afresh.
#[derive(Debug, Clone, Default, PartialEq)]
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
    }

    /// Takes a contribution that was put in out again.
    pub fn sub(&mut self, c: &Contribution) {
        self.in_scope = self.in_scope.saturating_sub(usize::from(c.member));
        self.reported = self.reported.saturating_sub(usize::from(c.reported));
        self.unknown = self.unknown.saturating_sub(usize::from(c.unknown));
        self.proxied = self.proxied.saturating_sub(usize::from(c.proxied));
        self.num.sub(c.num);
        self.den.sub(c.den);
    }

    /// Adds another zone's tally.
    pub fn merge(&mut self, o: &Tally) {
        self.in_scope += o.in_scope;
        self.reported += o.reported;
        self.unknown += o.unknown;
        self.proxied += o.proxied;
        self.num.merge(&o.num);
        self.den.merge(&o.den);
    }
}

static NO_DECLARATIONS: Declared = Declared::new();

/// What one registered enterprise of `zone` contributes to goal `g` over `span`.
///
/// An enterprise that has sent nothing (`es` None) contributes exactly what
/// one with an empty state does; the incremental tallies rely on that.
pub(super) fn contribution(
    g: &GoalDef,
    zone: &Zone,
    reg: &Enterprise,
    es: Option<&EnterpriseState>,
    span: Span,
    catalog: &Catalog,
    s: &GoalSettings,
) -> Contribution {
    let d = es.map_or(&NO_DECLARATIONS, |e| &e.declarations);
    let pop = g.population.contains(reg, d);
    if pop == Some(false) {
        return Contribution::default();
    }
    let mut c = Contribution {
        member: true,
        ..Contribution::default()
    };
    let val = |ind: &str| value(es, ind, span, catalog, s);
    match g.kind {
        GoalKind::Coverage => {
            c.den = 1.0;
            let answer = g.condition.unwrap_or(super::Condition::Always).answer(d, s);
            match (pop, answer.met()) {
                (Some(true), Some(true)) => {
                    c.num = 1.0;
                    c.reported = true;
                    c.proxied = matches!(answer, Answer::Proxy(_));
                }
                (Some(true), Some(false)) => c.reported = true,
                _ => c.unknown = true,
            }
        }
        GoalKind::Ratio => {
            let in_num = match &g.numerator_filter {
                None => Some(true),
                Some(f) => f.passes(zone, reg, d),
            };
            let dv = val(g.denominator.as_deref().unwrap_or(""));
            let nv = match in_num {
                Some(true) => val(g.numerator.as_deref().unwrap_or("")),
                Some(false) => Some(0.0),
                None => None,
            };
            match (nv, dv) {
                (Some(n), Some(dn)) => {
                    c.num = n;
                    c.den = dn;
                    c.reported = true;
                }
                _ => c.unknown = true,
            }
        }
        GoalKind::Total | GoalKind::Count => {
            let pass = match &g.filter {
                None => Some(true),
                Some(f) => f.passes(zone, reg, d),
            };
            let known = match (g.kind, pass) {
                (_, Some(false)) => return c,
                (_, None) => None,
                (GoalKind::Total, Some(true)) => val(g.indicator.as_deref().unwrap_or("")),
                (_, Some(true)) => {
                    let answer = g.condition.map(|c| c.answer(d, s));
                    let cond = answer.map_or(Some(true), Answer::met);
                    let thr = g
                        .threshold
                        .as_ref()
                        .map_or(Some(true), |t| val(&t.indicator).map(|v| v >= t.min));
                    match (cond, thr) {
                        (Some(false), _) | (_, Some(false)) => Some(0.0),
                        (Some(true), Some(true)) => {
                            c.proxied = matches!(answer, Some(Answer::Proxy(_)));
                            Some(1.0)
                        }
                        _ => None,
                    }
                }
            };
            match known {
                Some(v) => {
                    c.num = v;
                    c.reported = true;
                }
                None => c.unknown = true,
            }
        }
        GoalKind::ZoneCount => {
            let passes = g.filter.as_ref().is_none_or(|f| f.passes(zone, reg, d) == Some(true));
            if let (true, Some(v)) = (passes, val(g.indicator.as_deref().unwrap_or(""))) {
                c.num = v;
            }
        }
        // A trend is computed from its base goal's tallies, never from contributions of its own.
        GoalKind::Trend => {}
    }
    c
}

/// Goal `g`'s tally over `span` for one zone, by scanning every registered enterprise.
pub(super) fn scan_zone(
    g: &GoalDef,
    zone: &Zone,
    states: Option<&BTreeMap<EnterpriseId, EnterpriseState>>,
    span: Span,
    catalog: &Catalog,
    s: &GoalSettings,
) -> Tally {
    let mut t = Tally::default();
    for e in &zone.enterprise {
        let es = states.and_then(|m| m.get(&e.id));
        t.add(&contribution(g, zone, e, es, span, catalog, s));
    }
    t
}
