//! Goal evaluation: pure functions from the registry and the zones' state to
//! a goal table, at zone, city or province level.
//!
//! An enterprise of the population whose data does not say what a goal needs
//! is *unknown*: for coverage it stays in the denominator and out of the
//! numerator; for sums it is left out and counted. Either way the unknown
//! count is shown beside the value, so a figure never looks better than the
//! data supports.

use super::contribute::{base_span, summed_base};
use super::span::{Asked, Span};
use super::tally::{scan_zone, Tally};
use super::{GoalDef, GoalKind, GoalSettings, Scope};
use crate::registry::Zone;
use crate::state::ZoneState;
use serde::Serialize;
use std::collections::BTreeMap;
use zonesync_proto::{Catalog, Period};

impl From<Period> for Asked {
    fn from(p: Period) -> Asked {
        Asked::basis(p)
    }
}

/// The level a table is computed at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "level", content = "id")]
pub enum Level {
    /// One zone.
    Zone(String),
    /// One city's zones.
    City(String),
    /// Every zone served.
    Province,
}

impl Level {
    fn rank(&self) -> Scope {
        match self {
            Level::Zone(_) => Scope::Zone,
            Level::City(_) => Scope::City,
            Level::Province => Scope::Province,
        }
    }
}

/// Where a goal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Target reached.
    Met,
    /// Target not reached.
    NotMet,
    /// Nothing to compute from.
    NoData,
    /// A figure without a numeric target (rising, report).
    Reported,
    /// A zone's (or city's) part of a target set for a wider scope: shown, not judged.
    Contribution,
}

/// One row of a goal table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GoalRow {
    /// Goal id.
    pub id: String,
    /// Preset set.
    pub set: String,
    /// Chinese name.
    pub name_zh: String,
    /// English name.
    pub name_en: String,
    /// Seed file.
    pub source: String,
    /// Clause.
    pub clause: String,
    /// Kind.
    pub kind: GoalKind,
    /// Where the target applies.
    pub scope: Scope,
    /// Period the figure covers, e.g. `2026` or `2026-01..2026-10`.
    pub period: String,
    /// The figure.
    pub value: Option<f64>,
    /// Numerator (enterprises covered, Σ numerator, count).
    pub numerator: f64,
    /// Denominator (population, Σ denominator; 1 for totals and counts).
    pub denominator: f64,
    /// Members whose data does not say.
    pub unknown: usize,
    /// Of the numerator, members counted on a proxy's word because they did
    /// not declare the attribute itself (e.g. smart retrofit from maturity).
    pub numerator_from_proxy: usize,
    /// Members with data.
    pub reported: usize,
    /// Members of the population.
    pub in_scope: usize,
    /// Months left out of reporting members' figures because one side (or
    /// one year, for a trend) lacked them: Σ over members.
    pub partial_months: u64,
    /// Member-months covered ÷ (in_scope × months of the span): reported ÷
    /// in_scope when no figure leaves months out.
    pub completeness: Option<f64>,
    /// Target.
    pub target: Option<f64>,
    /// Comparator.
    pub comparator: String,
    /// Status.
    pub status: Status,
    /// The definition and settings in force.
    pub definition: String,
    /// The same in Chinese (`goals::words`), for the Chinese page and briefing.
    pub definition_zh: String,
    /// Deadline.
    pub deadline: Option<String>,
    /// Unit of value and target.
    pub unit: String,
    /// The preset's assumptions.
    pub note: Option<String>,
}

/// Where a table's tallies come from: a scan of every enterprise (the
/// reference, [`evaluate`]) or tallies kept up to date as data arrives
/// (`goals::incremental`). Rows are made from them the same way either way.
pub(super) trait Tallies {
    /// Goal `goals[gi]`'s tallies over `span`, one per zone.
    fn tallies(&mut self, gi: usize, span: Span) -> Vec<Tally>;
}

/// The reference: every member of every zone, scanned.
struct Scan<'a> {
    goals: &'a [GoalDef],
    zones: &'a [(&'a Zone, Option<&'a ZoneState>)],
    catalog: &'a Catalog,
    settings: &'a GoalSettings,
}

impl Tallies for Scan<'_> {
    fn tallies(&mut self, gi: usize, span: Span) -> Vec<Tally> {
        self.zones
            .iter()
            .map(|(z, zs)| {
                scan_zone(
                    self.goals,
                    gi,
                    z,
                    zs.map(|zs| &zs.enterprises),
                    span,
                    self.catalog,
                    self.settings,
                )
            })
            .collect()
    }
}

/// Evaluates every goal that applies to `zones` (their `goal_sets`) at `level` for
/// `asked` (a period, with each goal's basis or a chosen span), scanning every
/// enterprise: the reference the incremental tallies are checked against.
pub fn evaluate(
    goals: &[GoalDef],
    zones: &[(&Zone, Option<&ZoneState>)],
    level: Level,
    asked: impl Into<Asked>,
    catalog: &Catalog,
    settings: &GoalSettings,
) -> Vec<GoalRow> {
    let applies = |g: &GoalDef| {
        zones
            .iter()
            .any(|(z, _)| z.goal_sets.is_empty() || z.goal_sets.contains(&g.set))
    };
    let mut scan = Scan {
        goals,
        zones,
        catalog,
        settings,
    };
    table(&mut scan, goals, applies, &level, asked.into(), settings)
}

/// The rows of every goal `applies` accepts, from `src`'s tallies.
pub(super) fn table(
    src: &mut dyn Tallies,
    goals: &[GoalDef],
    applies: impl Fn(&GoalDef) -> bool,
    level: &Level,
    asked: Asked,
    settings: &GoalSettings,
) -> Vec<GoalRow> {
    let by_id: BTreeMap<&str, usize> = goals.iter().enumerate().map(|(i, g)| (g.id.as_str(), i)).collect();
    goals
        .iter()
        .enumerate()
        .filter(|(_, g)| applies(g))
        .map(|(gi, g)| {
            // A trend covers what its base goal covers, compared with its base year.
            let basis = match g.kind {
                GoalKind::Trend => {
                    g.of.as_deref()
                        .and_then(|id| by_id.get(id))
                        .map_or(g.basis, |&bi| goals[bi].basis)
                }
                _ => g.basis,
            };
            let span = asked.span_for(basis);
            let mut row = row(src, goals, &by_id, gi, span, settings);
            row.status = status(g, &row, level);
            row
        })
        .collect()
}

fn blank(g: &GoalDef, span: Span) -> GoalRow {
    GoalRow {
        id: g.id.clone(),
        set: g.set.clone(),
        name_zh: g.name_zh.clone(),
        name_en: g.name_en.clone(),
        source: g.source.clone(),
        clause: g.clause.clone(),
        kind: g.kind,
        scope: g.scope,
        period: span.label(),
        value: None,
        numerator: 0.0,
        denominator: 0.0,
        unknown: 0,
        numerator_from_proxy: 0,
        reported: 0,
        in_scope: 0,
        partial_months: 0,
        completeness: None,
        target: g.target,
        comparator: g.comparator.clone(),
        status: Status::NoData,
        definition: String::new(),
        definition_zh: String::new(),
        deadline: g.deadline.clone(),
        unit: g.unit.clone().unwrap_or_else(|| "share".into()),
        note: g.note.clone(),
    }
}

fn row(
    src: &mut dyn Tallies,
    goals: &[GoalDef],
    by_id: &BTreeMap<&str, usize>,
    gi: usize,
    span: Span,
    s: &GoalSettings,
) -> GoalRow {
    let g = &goals[gi];
    if g.kind == GoalKind::Trend {
        return trend(src, goals, by_id, g, span, s);
    }
    let tallies = src.tallies(gi, span);
    let mut row = blank(g, span);
    let mut all = Tally::default();
    for t in &tallies {
        all.merge(t);
    }
    row.in_scope = all.in_scope;
    row.reported = all.reported;
    row.unknown = all.unknown;
    row.numerator_from_proxy = all.proxied;
    row.partial_months = all.partial_months;
    row.completeness = completeness(&all, span);
    match g.kind {
        GoalKind::Coverage => {
            let c = g.condition.unwrap_or(super::Condition::Always);
            row.numerator = all.num.value();
            row.denominator = all.den.value();
            row.value = (row.denominator > 0.0).then(|| row.numerator / row.denominator);
            row.definition = format!("{}; population: {}", c.definition(s), g.population.describe());
        }
        GoalKind::Ratio => {
            let (num, den) = (
                g.numerator.as_deref().unwrap_or(""),
                g.denominator.as_deref().unwrap_or(""),
            );
            row.numerator = all.num.value();
            row.denominator = all.den.value();
            row.value = (row.denominator > 0.0).then(|| row.numerator / row.denominator);
            row.definition = format!(
                "Σ {num}{} ÷ Σ {den} over {} reporting both for {}, each over the months it reports both{}",
                g.numerator_filter
                    .as_ref()
                    .map(|f| format!(" ({})", f.describe()))
                    .unwrap_or_default(),
                g.population.describe(),
                span.label(),
                energy_note(num, den, s)
            );
        }
        GoalKind::Total | GoalKind::Count => {
            row.numerator = all.num.value();
            row.denominator = 1.0;
            row.value = (row.reported > 0).then_some(row.numerator);
            row.definition = match g.kind {
                GoalKind::Total => format!(
                    "Σ {} over {}{} for {}",
                    g.indicator.as_deref().unwrap_or(""),
                    g.population.describe(),
                    g.filter
                        .as_ref()
                        .map(|f| format!(", {}", f.describe()))
                        .unwrap_or_default(),
                    span.label()
                ),
                _ => format!(
                    "enterprises of {}{}{}",
                    g.population.describe(),
                    g.condition
                        .map(|c| format!(" with {}", c.definition(s)))
                        .unwrap_or_default(),
                    g.threshold
                        .as_ref()
                        .map(|t| format!(" with {} ≥ {} in {}", t.indicator, t.min, span.label()))
                        .unwrap_or_default()
                ),
            };
        }
        GoalKind::ZoneCount => {
            let ind = g.indicator.as_deref().unwrap_or("");
            let min = g.threshold.as_ref().map_or(f64::INFINITY, |t| t.min);
            row.numerator = tallies.iter().filter(|t| t.num.value() >= min).count() as f64;
            row.reported = tallies.len();
            row.unknown = 0;
            row.in_scope = tallies.len();
            row.denominator = 1.0;
            row.value = Some(row.numerator);
            row.completeness = (row.in_scope > 0).then_some(1.0);
            row.definition = format!("zones whose Σ {ind} reaches {min} in {}", span.label());
        }
        GoalKind::Trend => {}
    }
    row.definition_zh = super::words::definition(g, span, s);
    row
}

/// Member-months a tally's figures cover ÷ member-months of the span: an
/// enterprise that reports nothing adds none, one whose figure leaves months
/// out adds only those it covers. Without months left out this is reported ÷ in scope.
fn completeness(t: &Tally, span: Span) -> Option<f64> {
    let due = t.in_scope as f64 * f64::from(span.month_count());
    (due > 0.0).then(|| t.months as f64 / due)
}

/// A trend row: the base goal's value over the span against the same span of the base year.
fn trend(
    src: &mut dyn Tallies,
    goals: &[GoalDef],
    by_id: &BTreeMap<&str, usize>,
    g: &GoalDef,
    span: Span,
    s: &GoalSettings,
) -> GoalRow {
    let mut row = blank(g, span);
    // `load_goals` refuses a trend without a non-trend base goal.
    let Some(&bi) = g.of.as_deref().and_then(|id| by_id.get(id)) else {
        return row;
    };
    let base_goal = &goals[bi];
    if base_goal.kind == GoalKind::Trend {
        return row;
    }
    let cur_span = span;
    let base_span = base_span(g, cur_span);
    let base_year = base_span.year();
    let (cur, base) = match summed_base(goals, g) {
        // Each enterprise over the months it reports in both years.
        Some(b) => {
            let Some(gi) = by_id.get(g.id.as_str()).copied() else {
                return row;
            };
            let mut all = Tally::default();
            for t in src.tallies(gi, cur_span) {
                all.merge(&t);
            }
            row.reported = all.reported;
            row.unknown = all.unknown;
            row.in_scope = all.in_scope;
            row.partial_months = all.partial_months;
            row.completeness = completeness(&all, cur_span);
            let (bn, bd) = all.base_values();
            let (cn, cd) = (all.num.value(), all.den.value());
            match b.kind {
                GoalKind::Ratio => ((cd > 0.0).then(|| cn / cd), (bd > 0.0).then(|| bn / bd)),
                _ => ((all.reported > 0).then_some(cn), (all.reported > 0).then_some(bn)),
            }
        }
        // A coverage or count: its rows as they stand, year against year.
        None => {
            let cur = self::row(src, goals, by_id, bi, cur_span, s);
            let base = self::row(src, goals, by_id, bi, base_span, s);
            row.reported = cur.reported.min(base.reported);
            row.unknown = cur.unknown.max(base.unknown);
            row.in_scope = cur.in_scope;
            row.completeness = (row.in_scope > 0).then(|| row.reported as f64 / row.in_scope as f64);
            (cur.value, base.value)
        }
    };
    row.numerator = cur.unwrap_or(0.0);
    row.denominator = base.unwrap_or(0.0);
    let years = (cur_span.year() - base_year).max(1);
    row.value = match (cur, base) {
        (Some(c), Some(b)) if b > 0.0 && c >= 0.0 => Some(if g.annual {
            (c / b).powf(1.0 / f64::from(years)) - 1.0
        } else {
            c / b - 1.0
        }),
        _ => None,
    };
    row.period = format!("{} vs {}", cur_span.label(), base_span.label());
    row.definition = format!(
        "{} of {} ({}) against {}{}{}",
        if g.annual { "compound annual change" } else { "change" },
        base_goal.id,
        base_goal.name_en,
        base_span.label(),
        if g.annual {
            format!(" over {years} year(s)")
        } else {
            String::new()
        },
        if summed_base(goals, g).is_some() {
            "; each enterprise over the months it reports in both years"
        } else {
            ""
        }
    );
    row.definition_zh = super::words::trend_definition(
        g,
        base_goal,
        cur_span,
        base_span,
        years,
        summed_base(goals, g).is_some(),
    );
    row
}

fn energy_note(num: &str, den: &str, s: &GoalSettings) -> String {
    if num == "energy_tce" || den == "energy_tce" {
        format!(
            "; energy at the catalog's coefficients (electricity at equivalent value), excluded carriers: {}",
            if s.intensity_excludes.is_empty() {
                "none".to_owned()
            } else {
                s.intensity_excludes.join(", ")
            }
        )
    } else {
        String::new()
    }
}

fn status(g: &GoalDef, row: &GoalRow, level: &Level) -> Status {
    let Some(v) = row.value else {
        return Status::NoData;
    };
    let partial = matches!(g.kind, GoalKind::Total | GoalKind::Count | GoalKind::ZoneCount) && level.rank() < g.scope;
    if partial {
        return Status::Contribution;
    }
    let eps = 1e-12;
    match (row.target, g.comparator.as_str()) {
        (Some(t), ">=") => {
            if v >= t - eps {
                Status::Met
            } else {
                Status::NotMet
            }
        }
        (Some(t), ">") => {
            if v > t + eps {
                Status::Met
            } else {
                Status::NotMet
            }
        }
        (Some(t), "<=") => {
            if v <= t + eps {
                Status::Met
            } else {
                Status::NotMet
            }
        }
        (Some(t), "<") => {
            if v < t - eps {
                Status::Met
            } else {
                Status::NotMet
            }
        }
        _ => Status::Reported,
    }
}
