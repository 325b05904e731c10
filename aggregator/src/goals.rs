//! Goal evaluation: pure functions from the registry and a zone's state to
//! the zone's goal table.
//!
//! Goals are data (`aggregator/goals.toml`, compiled in). An enterprise in
//! scope that has not declared what a condition needs is *unknown*: it counts
//! in the denominator but not the numerator, and is reported beside the rate,
//! so a rate never looks better than the data supports.

use crate::registry::Zone;
use crate::state::{CarrierAmount, ZoneState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zonesync_proto::{Catalog, DeclaredValue, EnterpriseId, Period, ScenarioLevel};

/// The goal presets compiled into the aggregator.
pub const BUILTIN_GOALS: &str = include_str!("../goals.toml");

/// Thresholds behind the coverage conditions (defaults from shared/reference/digital-levels.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GoalSettings {
    /// "Digitally transformed" = GB/T 39116 maturity at least this (level 2 is 数字化改造).
    pub dt_min_maturity: i64,
    /// ... or MIIT SME digitalisation level at least this.
    pub sme_min_level: i64,
    /// "Smart retrofit" = the declared flag, or maturity at least this.
    pub smart_retrofit_min_maturity: i64,
    /// Energy carriers left out of intensity (self-generated renewables, per current policy).
    pub intensity_excludes: Vec<String>,
}

impl Default for GoalSettings {
    fn default() -> Self {
        Self {
            dt_min_maturity: 2,
            sme_min_level: 2,
            smart_retrofit_min_maturity: 3,
            intensity_excludes: vec!["electricity_renewable_self".into()],
        }
    }
}

/// A coverage condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Maturity or SME level at the threshold.
    DigitallyTransformed,
    /// At least one scenario at any level.
    ScenarioAny,
    /// At least one scenario at intermediate or advanced level.
    ScenarioIntermediate,
    /// At least one scenario at advanced level.
    ScenarioAdvanced,
    /// Smart retrofit done.
    SmartRetrofit,
    /// Has R&D activity.
    RdActivity,
    /// Has an R&D institution.
    RdInstitution,
    /// Business systems on cloud.
    OnCloud,
}

fn flag(d: &BTreeMap<String, DeclaredValue>, code: &str) -> Option<bool> {
    match d.get(code) {
        Some(DeclaredValue::Bool(b)) => Some(*b),
        _ => None,
    }
}

fn level(d: &BTreeMap<String, DeclaredValue>, code: &str) -> Option<i64> {
    match d.get(code) {
        Some(DeclaredValue::Integer(n)) => Some(*n),
        _ => None,
    }
}

impl Condition {
    /// Whether declarations satisfy the condition; None when they do not say.
    pub fn eval(self, d: &BTreeMap<String, DeclaredValue>, s: &GoalSettings) -> Option<bool> {
        let scen = |min: ScenarioLevel| match d.get("scenarios") {
            Some(DeclaredValue::Scenarios(list)) => Some(list.iter().any(|x| x.level >= min)),
            _ => None,
        };
        match self {
            Condition::DigitallyTransformed => {
                let m = level(d, "dt_maturity").map(|l| l >= s.dt_min_maturity);
                let sme = level(d, "sme_dt_level").map(|l| l >= s.sme_min_level);
                match (m, sme) {
                    (None, None) => None,
                    (a, b) => Some(a.unwrap_or(false) || b.unwrap_or(false)),
                }
            }
            Condition::ScenarioAny => scen(ScenarioLevel::Basic),
            Condition::ScenarioIntermediate => scen(ScenarioLevel::Intermediate),
            Condition::ScenarioAdvanced => scen(ScenarioLevel::Advanced),
            Condition::SmartRetrofit => {
                let f = flag(d, "smart_retrofit");
                let m = level(d, "dt_maturity").map(|l| l >= s.smart_retrofit_min_maturity);
                match (f, m) {
                    (None, None) => None,
                    (a, b) => Some(a.unwrap_or(false) || b.unwrap_or(false)),
                }
            }
            Condition::RdActivity => flag(d, "rd_activity"),
            Condition::RdInstitution => flag(d, "rd_institution"),
            Condition::OnCloud => flag(d, "on_cloud"),
        }
    }

    /// The definition in force, shown beside the figure.
    pub fn definition(self, s: &GoalSettings) -> String {
        match self {
            Condition::DigitallyTransformed => format!(
                "dt_maturity ≥ {} (GB/T 39116) or sme_dt_level ≥ {} (MIIT)",
                s.dt_min_maturity, s.sme_min_level
            ),
            Condition::ScenarioAny => "≥ 1 declared scenario at any level".into(),
            Condition::ScenarioIntermediate => "≥ 1 scenario at intermediate (中级) or advanced level".into(),
            Condition::ScenarioAdvanced => "≥ 1 scenario at advanced (高级) level".into(),
            Condition::SmartRetrofit => format!(
                "smart_retrofit declared true, or dt_maturity ≥ {}",
                s.smart_retrofit_min_maturity
            ),
            Condition::RdActivity => "rd_activity declared true".into(),
            Condition::RdInstitution => "rd_institution declared true".into(),
            Condition::OnCloud => "on_cloud declared true".into(),
        }
    }
}

/// Kind of goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoalKind {
    /// Share of in-scope enterprises meeting a condition.
    Coverage,
    /// tce per 10k yuan of value added.
    Intensity,
}

/// A goal definition from the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalDef {
    /// Stable id (the checklist's id).
    pub id: String,
    /// Preset group.
    pub set: String,
    /// Chinese name.
    pub name_zh: String,
    /// English name.
    pub name_en: String,
    /// Seed file.
    pub source: String,
    /// Clause as written.
    pub clause: String,
    /// Kind.
    pub kind: GoalKind,
    /// Coverage condition.
    #[serde(default)]
    pub condition: Option<Condition>,
    /// Target value (a share for coverage).
    #[serde(default)]
    pub target: Option<f64>,
    /// ">=", "<=", "rising" or "report".
    pub comparator: String,
    /// Deadline as written.
    #[serde(default)]
    pub deadline: Option<String>,
    /// Unit of the value.
    #[serde(default)]
    pub unit: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GoalFile {
    goal: Vec<GoalDef>,
}

/// Why a goal file was refused.
#[derive(Debug, thiserror::Error)]
pub enum GoalError {
    #[error("goal catalog is not valid: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("goal {0} is a coverage goal without a condition")]
    NoCondition(String),
}

/// Parses a goal catalog.
pub fn load_goals(text: &str) -> Result<Vec<GoalDef>, GoalError> {
    let f: GoalFile = toml::from_str(text)?;
    if let Some(g) = f
        .goal
        .iter()
        .find(|g| g.kind == GoalKind::Coverage && g.condition.is_none())
    {
        return Err(GoalError::NoCondition(g.id.clone()));
    }
    Ok(f.goal)
}

/// Where a goal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Target reached.
    Met,
    /// Target not reached.
    NotMet,
    /// Nothing to compute from (no enterprise in scope, or none reported).
    NoData,
    /// A figure without a numeric target (reported, or tracked as a trend).
    Reported,
}

/// One row of a zone's goal table.
#[derive(Debug, Clone, Serialize)]
pub struct GoalRow {
    /// Goal id.
    pub id: String,
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
    /// The figure: a share for coverage, tce/10k yuan for intensity.
    pub value: Option<f64>,
    /// Numerator (enterprises covered; tce).
    pub numerator: f64,
    /// Denominator (enterprises in scope; value added in 10k yuan).
    pub denominator: f64,
    /// In-scope enterprises whose data does not say (counted as not covered).
    pub unknown: usize,
    /// In-scope enterprises with data for this goal.
    pub reported: usize,
    /// In-scope enterprises.
    pub in_scope: usize,
    /// Target.
    pub target: Option<f64>,
    /// Comparator.
    pub comparator: String,
    /// Met, not met, no data, reported.
    pub status: Status,
    /// The definition and settings in force.
    pub definition: String,
    /// Deadline.
    pub deadline: Option<String>,
    /// Unit of `value`.
    pub unit: String,
}

/// One enterprise's energy figures for a period.
#[derive(Debug, Clone, Serialize)]
pub struct EnterpriseEnergy {
    /// Credit code.
    pub enterprise: EnterpriseId,
    /// Name from the registry.
    pub name: String,
    /// In scope of the coverage goals.
    pub in_scope: bool,
    /// Comprehensive energy use, tce.
    pub tce: Option<f64>,
    /// Value added, 10k yuan.
    pub value_added: Option<f64>,
    /// tce per 10k yuan.
    pub intensity: Option<f64>,
    /// Per carrier.
    pub carriers: Vec<CarrierAmount>,
}

/// Energy figures of every enterprise in the registry for a period.
pub fn energy(
    zone: &Zone,
    zs: Option<&ZoneState>,
    period: Period,
    catalog: &Catalog,
    s: &GoalSettings,
) -> Vec<EnterpriseEnergy> {
    zone.enterprise
        .iter()
        .map(|e| {
            let es = zs.and_then(|z| z.enterprises.get(&e.id));
            let energy = es.and_then(|es| es.energy_tce(period, catalog, &s.intensity_excludes));
            let va = es.and_then(|es| es.amount("value_added", period)).map(|(v, _)| v);
            let tce = energy.as_ref().map(|(t, _)| *t);
            EnterpriseEnergy {
                enterprise: e.id.clone(),
                name: e.name.clone(),
                in_scope: e.in_scope(),
                tce,
                value_added: va,
                intensity: match (tce, va) {
                    (Some(t), Some(v)) if v > 0.0 => Some(t / v),
                    _ => None,
                },
                carriers: energy.map(|(_, c)| c).unwrap_or_default(),
            }
        })
        .collect()
}

/// Evaluates `goals` for one zone and period.
pub fn evaluate(
    goals: &[GoalDef],
    zone: &Zone,
    zs: Option<&ZoneState>,
    period: Period,
    catalog: &Catalog,
    s: &GoalSettings,
) -> Vec<GoalRow> {
    let scope: Vec<_> = zone.enterprise.iter().filter(|e| e.in_scope()).collect();
    let empty = BTreeMap::new();
    goals
        .iter()
        .filter(|g| zone.goal_sets.is_empty() || zone.goal_sets.contains(&g.set))
        .map(|g| {
            let mut row = GoalRow {
                id: g.id.clone(),
                name_zh: g.name_zh.clone(),
                name_en: g.name_en.clone(),
                source: g.source.clone(),
                clause: g.clause.clone(),
                kind: g.kind,
                value: None,
                numerator: 0.0,
                denominator: 0.0,
                unknown: 0,
                reported: 0,
                in_scope: scope.len(),
                target: g.target,
                comparator: g.comparator.clone(),
                status: Status::NoData,
                definition: String::new(),
                deadline: g.deadline.clone(),
                unit: g.unit.clone().unwrap_or_else(|| "share".into()),
            };
            match (g.kind, g.condition) {
                (GoalKind::Coverage, Some(c)) => {
                    row.definition = format!("{}; scope: above-scale industrial enterprises in the registry", c.definition(s));
                    for e in &scope {
                        let d = zs
                            .and_then(|z| z.enterprises.get(&e.id))
                            .map(|es| &es.declarations)
                            .unwrap_or(&empty);
                        match c.eval(d, s) {
                            Some(true) => {
                                row.numerator += 1.0;
                                row.reported += 1;
                            }
                            Some(false) => row.reported += 1,
                            None => row.unknown += 1,
                        }
                    }
                    row.denominator = scope.len() as f64;
                    if row.denominator > 0.0 {
                        row.value = Some(row.numerator / row.denominator);
                    }
                }
                (GoalKind::Intensity, _) => {
                    row.definition = format!(
                        "Σ tce ÷ Σ value added over in-scope enterprises reporting both for {period}; electricity at equivalent value (catalog); excluded carriers: {}",
                        if s.intensity_excludes.is_empty() { "none".to_owned() } else { s.intensity_excludes.join(", ") }
                    );
                    for e in energy(zone, zs, period, catalog, s).into_iter().filter(|e| e.in_scope) {
                        if let (Some(t), Some(v)) = (e.tce, e.value_added) {
                            if v > 0.0 {
                                row.numerator += t;
                                row.denominator += v;
                                row.reported += 1;
                                continue;
                            }
                        }
                        row.unknown += 1;
                    }
                    if row.denominator > 0.0 {
                        row.value = Some(row.numerator / row.denominator);
                    }
                }
                (GoalKind::Coverage, None) => {}
            }
            row.status = match (row.value, row.target, g.comparator.as_str()) {
                (None, _, _) => Status::NoData,
                (Some(v), Some(t), ">=") => if v >= t - 1e-12 { Status::Met } else { Status::NotMet },
                (Some(v), Some(t), "<=") => if v <= t + 1e-12 { Status::Met } else { Status::NotMet },
                _ => Status::Reported,
            };
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Enterprise;
    use crate::state::State;
    use zonesync_proto::{Scenario, ZoneId};

    fn ent(n: u32, above: bool) -> Enterprise {
        Enterprise {
            id: EnterpriseId::with_check_char(&format!("91419001MA{n:07}")).unwrap(),
            name: format!("E{n}"),
            above_scale: above,
            industrial: true,
            agents: vec![],
        }
    }

    #[test]
    fn builtin_goals_load() {
        let g = load_goals(BUILTIN_GOALS).unwrap();
        assert!(g.iter().any(|g| g.id == "HN27-03"));
    }

    #[test]
    fn unknown_enterprises_count_against_coverage() {
        // Four above-scale enterprises: maturity 3, maturity 1, SME level 2, and one silent; plus one below scale.
        let zone = Zone {
            id: ZoneId::parse("z").unwrap(),
            name_zh: "z".into(),
            name_en: String::new(),
            city: String::new(),
            province: String::new(),
            goal_sets: vec![],
            enterprise: vec![ent(1, true), ent(2, true), ent(3, true), ent(4, true), ent(5, false)],
        };
        let cat = Catalog::builtin().unwrap();
        let mut st = State::default();
        let decl = |code: &str, v: DeclaredValue| vec![(code.to_owned(), v)];
        st.apply(
            &zone.id,
            &zone.enterprise[0].id,
            &[],
            &decl("dt_maturity", DeclaredValue::Integer(3)),
            &cat,
        );
        st.apply(
            &zone.id,
            &zone.enterprise[1].id,
            &[],
            &decl("dt_maturity", DeclaredValue::Integer(1)),
            &cat,
        );
        st.apply(
            &zone.id,
            &zone.enterprise[2].id,
            &[],
            &decl("sme_dt_level", DeclaredValue::Integer(2)),
            &cat,
        );
        st.apply(
            &zone.id,
            &zone.enterprise[4].id,
            &[],
            &decl("dt_maturity", DeclaredValue::Integer(5)),
            &cat,
        );
        st.apply(
            &zone.id,
            &zone.enterprise[0].id,
            &[],
            &decl(
                "scenarios",
                DeclaredValue::Scenarios(vec![Scenario {
                    code: "能源智能管控".into(),
                    level: ScenarioLevel::Intermediate,
                }]),
            ),
            &cat,
        );
        let goals = load_goals(BUILTIN_GOALS).unwrap();
        let rows = evaluate(
            &goals,
            &zone,
            st.zones.get(&zone.id),
            Period::Month(2026, 10),
            &cat,
            &GoalSettings::default(),
        );
        let dt = rows.iter().find(|r| r.id == "HN27-03").unwrap();
        assert_eq!(
            (dt.numerator, dt.denominator, dt.unknown, dt.reported),
            (2.0, 4.0, 1, 3)
        );
        assert_eq!(dt.value, Some(0.5));
        assert_eq!(dt.status, Status::NotMet);
        let mid = rows.iter().find(|r| r.id == "JY27-18").unwrap();
        assert_eq!((mid.numerator, mid.unknown), (1.0, 3));
        let adv = rows.iter().find(|r| r.id == "JY27-17").unwrap();
        assert_eq!(adv.numerator, 0.0);
        let retro = rows.iter().find(|r| r.id == "PY-07").unwrap();
        assert_eq!(
            (retro.numerator, retro.unknown),
            (1.0, 2),
            "maturity 3 counts as smart retrofit by default"
        );
        let ei = rows.iter().find(|r| r.id == "EI").unwrap();
        assert_eq!(ei.status, Status::NoData);
    }
}
