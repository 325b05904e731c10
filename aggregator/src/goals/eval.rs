//! Goal evaluation: pure functions from the registry and the zones' state to
//! a goal table, at zone, city or province level.
//!
//! An enterprise of the population whose data does not say what a goal needs
//! is *unknown*: for coverage it stays in the denominator and out of the
//! numerator; for sums it is left out and counted. Either way the unknown
//! count is shown beside the value, so a figure never looks better than the
//! data supports.

use super::tally::{scan_zone, Tally};
use super::{Basis, GoalDef, GoalKind, GoalSettings, Scope};
use crate::registry::Zone;
use crate::state::{AmountSource, CarrierAmount, EnterpriseState, ZoneState};
use serde::Serialize;
use std::collections::BTreeMap;
use zonesync_proto::{Catalog, EnterpriseId, IndicatorKind, Period, ReadingTime};

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
    /// reported ÷ in_scope.
    pub completeness: Option<f64>,
    /// Target.
    pub target: Option<f64>,
    /// Comparator.
    pub comparator: String,
    /// Status.
    pub status: Status,
    /// The definition and settings in force.
    pub definition: String,
    /// Deadline.
    pub deadline: Option<String>,
    /// Unit of value and target.
    pub unit: String,
    /// The preset's assumptions.
    pub note: Option<String>,
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

    fn year(self) -> i32 {
        match self {
            Span::Period(p) => p.year(),
            Span::YearToDate(y, _) => y,
        }
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

    fn label(self) -> String {
        match self {
            Span::Period(p) => p.to_string(),
            Span::YearToDate(y, 12) => Period::Year(y).to_string(),
            Span::YearToDate(y, m) => format!("{y}-01..{}", Period::Month(y, m)),
        }
    }
}

/// Amount of a flow indicator over a span.
fn flow(es: &EnterpriseState, ind: &str, span: Span) -> Option<(f64, AmountSource)> {
    match span {
        Span::Period(p) => es.amount(ind, p),
        Span::YearToDate(y, 12) => es.amount(ind, Period::Year(y)),
        Span::YearToDate(y, m) => {
            let parts: Vec<(f64, AmountSource)> = (1..=m).filter_map(|i| es.amount(ind, Period::Month(y, i))).collect();
            let source = parts.first()?.1;
            Some((parts.iter().map(|p| p.0).sum(), source))
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

/// Comprehensive energy use over a span, by carrier.
fn energy_over(
    es: &EnterpriseState,
    span: Span,
    catalog: &Catalog,
    s: &GoalSettings,
) -> Option<(f64, Vec<CarrierAmount>)> {
    // Only the carriers this enterprise has data for, not the whole catalog.
    let mut codes: Vec<&String> = es.reported.keys().chain(es.metered.keys()).collect();
    codes.sort_unstable();
    codes.dedup();
    let carriers: Vec<CarrierAmount> = codes
        .into_iter()
        .filter_map(|code| catalog.get(code))
        .filter(|i| i.is_energy() && !s.intensity_excludes.contains(&i.code))
        .filter_map(|ind| {
            let (amount, source) = flow(es, &ind.code, span)?;
            Some(CarrierAmount {
                indicator: ind.code.clone(),
                amount,
                unit: ind.unit.clone().unwrap_or_default(),
                tce: ind.tce_per_unit.unwrap_or(0.0) * amount,
                source,
            })
        })
        .collect();
    (!carriers.is_empty()).then(|| (carriers.iter().map(|c| c.tce).sum(), carriers))
}

/// An indicator's amount for one enterprise over a span (`energy_tce` included).
pub fn value(es: Option<&EnterpriseState>, ind: &str, span: Span, catalog: &Catalog, s: &GoalSettings) -> Option<f64> {
    let es = es?;
    if ind == "energy_tce" {
        return energy_over(es, span, catalog, s).map(|(t, _)| t);
    }
    match catalog.get(ind).map(|i| i.kind) {
        Some(IndicatorKind::Gauge) => stock(es, ind, span),
        _ => flow(es, ind, span).map(|(v, _)| v),
    }
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
        let g = &self.goals[gi];
        self.zones
            .iter()
            .map(|(z, zs)| scan_zone(g, z, zs.map(|zs| &zs.enterprises), span, self.catalog, self.settings))
            .collect()
    }
}

/// Evaluates every goal that applies to `zones` (their `goal_sets`) at `level` for `period`,
/// scanning every enterprise: the reference the incremental tallies are checked against.
pub fn evaluate(
    goals: &[GoalDef],
    zones: &[(&Zone, Option<&ZoneState>)],
    level: Level,
    period: Period,
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
    table(&mut scan, goals, applies, &level, period, settings)
}

/// The rows of every goal `applies` accepts, from `src`'s tallies.
pub(super) fn table(
    src: &mut dyn Tallies,
    goals: &[GoalDef],
    applies: impl Fn(&GoalDef) -> bool,
    level: &Level,
    period: Period,
    settings: &GoalSettings,
) -> Vec<GoalRow> {
    let by_id: BTreeMap<&str, usize> = goals.iter().enumerate().map(|(i, g)| (g.id.as_str(), i)).collect();
    goals
        .iter()
        .enumerate()
        .filter(|(_, g)| applies(g))
        .map(|(gi, g)| {
            let span = Span::of(g.basis, period);
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
        completeness: None,
        target: g.target,
        comparator: g.comparator.clone(),
        status: Status::NoData,
        definition: String::new(),
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
                "Σ {num}{} ÷ Σ {den} over {} reporting both for {}{}",
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
            row.definition = format!("zones whose Σ {ind} reaches {min} in {}", span.label());
        }
        GoalKind::Trend => {}
    }
    row.completeness = (row.in_scope > 0).then(|| row.reported as f64 / row.in_scope as f64);
    row
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
    let cur_span = Span::of(base_goal.basis, span_period(span));
    let base_year = g.base_year.unwrap_or(cur_span.year() - 1);
    let base_span = cur_span.in_year(base_year);
    let cur = self::row(src, goals, by_id, bi, cur_span, s);
    let base = self::row(src, goals, by_id, bi, base_span, s);
    row.numerator = cur.value.unwrap_or(0.0);
    row.denominator = base.value.unwrap_or(0.0);
    row.reported = cur.reported.min(base.reported);
    row.unknown = cur.unknown.max(base.unknown);
    row.in_scope = cur.in_scope;
    let years = (cur_span.year() - base_year).max(1);
    row.value = match (cur.value, base.value) {
        (Some(c), Some(b)) if b > 0.0 && c >= 0.0 => Some(if g.annual {
            (c / b).powf(1.0 / f64::from(years)) - 1.0
        } else {
            c / b - 1.0
        }),
        _ => None,
    };
    row.period = format!("{} vs {}", cur_span.label(), base_span.label());
    row.definition = format!(
        "{} of {} ({}) against {}{}",
        if g.annual { "compound annual change" } else { "change" },
        base_goal.id,
        base_goal.name_en,
        base_span.label(),
        if g.annual {
            format!(" over {years} year(s)")
        } else {
            String::new()
        }
    );
    row.completeness = (row.in_scope > 0).then(|| row.reported as f64 / row.in_scope as f64);
    row
}

fn span_period(span: Span) -> Period {
    match span {
        Span::Period(p) => p,
        Span::YearToDate(y, m) => Period::Month(y, m),
    }
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

/// One enterprise's energy figures for a period, with the same period a year before.
#[derive(Debug, Clone, Serialize)]
pub struct EnterpriseEnergy {
    /// Credit code.
    pub enterprise: EnterpriseId,
    /// Name from the registry.
    pub name: String,
    /// Above-scale industrial.
    pub in_scope: bool,
    /// Comprehensive energy use, tce.
    pub tce: Option<f64>,
    /// Value added, 10k yuan.
    pub value_added: Option<f64>,
    /// tce per 10k yuan.
    pub intensity: Option<f64>,
    /// Intensity in the same period a year before.
    pub intensity_last_year: Option<f64>,
    /// intensity ÷ intensity_last_year − 1.
    pub yoy_change: Option<f64>,
    /// Per carrier.
    pub carriers: Vec<CarrierAmount>,
}

/// Energy use with carriers, value added and intensity of one enterprise.
type Intensity = (Option<(f64, Vec<CarrierAmount>)>, Option<f64>, Option<f64>);

/// Energy figures of every enterprise of a zone for a period.
pub fn energy(
    zone: &Zone,
    zs: Option<&ZoneState>,
    period: Period,
    catalog: &Catalog,
    s: &GoalSettings,
) -> Vec<EnterpriseEnergy> {
    let intensity = |es: Option<&EnterpriseState>, p: Period| -> Intensity {
        let e = es.and_then(|es| energy_over(es, Span::Period(p), catalog, s));
        let va = es
            .and_then(|es| flow(es, "value_added", Span::Period(p)))
            .map(|(v, _)| v);
        let i = match (&e, va) {
            (Some((t, _)), Some(v)) if v > 0.0 => Some(t / v),
            _ => None,
        };
        (e, va, i)
    };
    zone.enterprise
        .iter()
        .map(|e| {
            let es = zs.and_then(|z| z.enterprises.get(&e.id));
            let (en, va, i) = intensity(es, period);
            let (_, _, last) = intensity(es, period.year_before());
            EnterpriseEnergy {
                enterprise: e.id.clone(),
                name: e.name.clone(),
                in_scope: e.in_scope(),
                tce: en.as_ref().map(|(t, _)| *t),
                value_added: va,
                intensity: i,
                intensity_last_year: last,
                yoy_change: match (i, last) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b - 1.0),
                    _ => None,
                },
                carriers: en.map(|(_, c)| c).unwrap_or_default(),
            }
        })
        .collect()
}
