//! Goals as data: the catalog of every quantitative target in the action
//! plans (`aggregator/goals.toml`, compiled in), and its evaluation.
//!
//! Five kinds cover the seeds:
//! - `coverage`: share of a population of enterprises meeting a condition;
//! - `ratio`: a sum over a sum (R&D ÷ revenue, value added ÷ land, tce ÷ value added);
//! - `total`: a sum of one indicator; `count`: enterprises meeting a condition or threshold;
//!   `zone_count`: zones whose total of an indicator passes a threshold;
//! - `trend`: another goal's value against the same period of a base year,
//!   or as a compound annual rate.
//!
//! Rows of the seeds that no enterprise data can answer (zone designations,
//! land reclaimed) are listed under `[[not_computable]]` with the reason, so
//! the checklist in shared/reference/goals-from-seeds.md is covered row by row.

pub mod cache;
pub mod compare;
mod conditions;
mod contribute;
mod energy_rows;
mod eval;
pub mod exact;
mod figure;
pub mod file;
pub mod incremental;
mod merged;
#[cfg(test)]
pub(crate) mod model_tests;
#[cfg(test)]
mod months_tests;
pub mod pace;
mod span;
mod tally;
#[cfg(test)]
mod tests;
pub mod words;

pub use conditions::{Answer, Checked, Condition, Contradiction, Declared, Filter, GoalSettings, Population};
pub use energy_rows::{energy, EnterpriseEnergy};
pub use eval::{evaluate, GoalRow, Level, Status};
pub use figure::{matched_change, matched_ratio, value, MatchedRatio, Source};
pub use merged::{cells_read, merged_table};
pub use span::{Asked, Span, SpanChoice, SpanError};
pub use tally::{Contribution, Tally};

use serde::{Deserialize, Serialize};

/// The goal presets compiled into the aggregator.
pub const BUILTIN_GOALS: &str = include_str!("../../goals.toml");

/// Kind of goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoalKind {
    /// Share of the population meeting `condition`.
    Coverage,
    /// Σ numerator ÷ Σ denominator over the population.
    Ratio,
    /// Σ indicator over the population.
    Total,
    /// Enterprises of the population meeting `condition` and/or `threshold`.
    Count,
    /// Zones whose Σ indicator reaches `threshold.min`.
    ZoneCount,
    /// Change of goal `of` against a base period.
    Trend,
}

/// Where a goal's target applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Each development zone.
    #[default]
    Zone,
    /// The city (all its zones together).
    City,
    /// The province (all zones).
    Province,
}

/// Which period a goal's figure covers, given the period asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The calendar year containing the requested period (year to date while it runs).
    #[default]
    Year,
    /// Exactly the requested period.
    Requested,
}

/// An enterprise-level threshold: the indicator's amount in the period at least `min` (canonical unit).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Catalog code.
    pub indicator: String,
    /// Minimum, in the indicator's canonical unit.
    pub min: f64,
}

/// A goal definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalDef {
    /// Stable id (the checklist's id).
    pub id: String,
    /// Preset group (one per seed document, plus `energy`).
    pub set: String,
    /// Chinese name.
    pub name_zh: String,
    /// English name.
    pub name_en: String,
    /// The plan as an official names it: title, issuer, document number.
    pub source: String,
    /// Its text under `shared/seeds/`, where it came from one.
    #[serde(default)]
    pub seed: Option<String>,
    /// Clause as written.
    pub clause: String,
    /// Kind.
    pub kind: GoalKind,
    /// Where the target applies.
    #[serde(default)]
    pub scope: Scope,
    /// Which enterprises count.
    #[serde(default)]
    pub population: Population,
    /// coverage / count: the condition.
    #[serde(default)]
    pub condition: Option<Condition>,
    /// ratio: numerator indicator (or `energy_tce`).
    #[serde(default)]
    pub numerator: Option<String>,
    /// ratio: only these enterprises' numerator counts.
    #[serde(default)]
    pub numerator_filter: Option<Filter>,
    /// ratio: denominator indicator (or `energy_tce`).
    #[serde(default)]
    pub denominator: Option<String>,
    /// total / zone_count: the indicator summed.
    #[serde(default)]
    pub indicator: Option<String>,
    /// total / zone_count: only these enterprises' amounts count.
    #[serde(default)]
    pub filter: Option<Filter>,
    /// count: amount threshold per enterprise; zone_count: per zone.
    #[serde(default)]
    pub threshold: Option<Threshold>,
    /// trend: the goal whose value is compared.
    #[serde(default)]
    pub of: Option<String>,
    /// trend: fixed base year (default: the year before).
    #[serde(default)]
    pub base_year: Option<i32>,
    /// trend: compound annual rate over the years since the base.
    #[serde(default)]
    pub annual: bool,
    /// Period basis for amounts.
    #[serde(default)]
    pub basis: Basis,
    /// Target, in `unit`.
    #[serde(default)]
    pub target: Option<f64>,
    /// `>=`, `>`, `<=`, `<`, `rising` or `report`.
    pub comparator: String,
    /// Deadline as written.
    #[serde(default)]
    pub deadline: Option<String>,
    /// Unit of value and target (`share` for shares).
    #[serde(default)]
    pub unit: Option<String>,
    /// What the preset assumes beyond the clause.
    #[serde(default)]
    pub note: Option<String>,
}

/// A checklist row that enterprise data cannot answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotComputable {
    /// Checklist id.
    pub id: String,
    /// The plan as an official names it.
    pub source: String,
    /// Its text under `shared/seeds/`.
    #[serde(default)]
    pub seed: Option<String>,
    /// Clause.
    pub clause: String,
    /// Why.
    pub reason: String,
}

/// The goal catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalCatalog {
    /// Computable goals.
    pub goal: Vec<GoalDef>,
    /// Rows that are not.
    #[serde(default)]
    pub not_computable: Vec<NotComputable>,
}

/// Why a goal catalog was refused.
#[derive(Debug, thiserror::Error)]
pub enum GoalError {
    #[error("goal catalog is not valid: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("goal {id}, field `{field}`: {problem}")]
    Invalid {
        id: String,
        field: &'static str,
        problem: String,
    },
    /// A goal file named in the configuration, with where in it.
    #[error("{path}:{line}: {what}")]
    File { path: String, line: usize, what: String },
    #[error("reading goal file {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

const COMPARATORS: [&str; 6] = [">=", ">", "<=", "<", "rising", "report"];

/// Parses and checks a goal catalog against the indicator catalog.
pub fn load_goals(text: &str, catalog: &zonesync_proto::Catalog) -> Result<GoalCatalog, GoalError> {
    let c: GoalCatalog = toml::from_str(text)?;
    check(&c, catalog)?;
    Ok(c)
}

/// Every rule a goal catalog must keep: each goal complete for its kind and
/// naming indicators the catalog has, trends pointing at a goal of the
/// catalog, no id twice. The error names the goal and the field at fault.
pub(crate) fn check(c: &GoalCatalog, catalog: &zonesync_proto::Catalog) -> Result<(), GoalError> {
    for g in &c.goal {
        let bad = |field: &'static str, problem: &str| GoalError::Invalid {
            id: g.id.clone(),
            field,
            problem: problem.to_owned(),
        };
        let known = |code: &Option<String>| match code.as_deref() {
            Some("energy_tce") => true,
            Some(c) => catalog.get(c).is_some(),
            None => false,
        };
        if !COMPARATORS.contains(&g.comparator.as_str()) {
            return Err(bad("comparator", "must be one of >=, >, <=, <, rising, report"));
        }
        if g.target.is_none() && !matches!(g.comparator.as_str(), "rising" | "report") {
            return Err(bad("target", "needs a target, or comparator rising/report"));
        }
        if let Some(t) = &g.threshold {
            if catalog.get(&t.indicator).is_none() {
                return Err(bad("threshold", "threshold indicator is not in the catalog"));
            }
        }
        match g.kind {
            GoalKind::Coverage if g.condition.is_none() => return Err(bad("condition", "coverage needs a condition")),
            GoalKind::Ratio if !known(&g.numerator) => {
                return Err(bad("numerator", "ratio needs a numerator indicator from the catalog"))
            }
            GoalKind::Ratio if !known(&g.denominator) => {
                return Err(bad(
                    "denominator",
                    "ratio needs a denominator indicator from the catalog",
                ))
            }
            GoalKind::Total | GoalKind::ZoneCount if !known(&g.indicator) => {
                return Err(bad("indicator", "needs an indicator from the catalog"))
            }
            GoalKind::ZoneCount if g.threshold.is_none() => {
                return Err(bad("threshold", "zone_count needs a threshold"))
            }
            GoalKind::Count if g.condition.is_none() && g.threshold.is_none() => {
                return Err(bad("condition", "count needs a condition or a threshold"))
            }
            GoalKind::Trend
                if !c
                    .goal
                    .iter()
                    .any(|o| Some(&o.id) == g.of.as_ref() && o.kind != GoalKind::Trend) =>
            {
                return Err(bad("of", "trend needs `of`: the id of a non-trend goal"))
            }
            _ => {}
        }
    }
    let mut ids: Vec<&str> = c
        .goal
        .iter()
        .map(|g| g.id.as_str())
        .chain(c.not_computable.iter().map(|n| n.id.as_str()))
        .collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(GoalError::Invalid {
            id: w[0].to_owned(),
            field: "id",
            problem: "listed twice".into(),
        });
    }
    Ok(())
}
