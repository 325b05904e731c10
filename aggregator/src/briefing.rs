//! The enterprises a zone office should chase this month, and what each is
//! missing — the part of the 月度简报 an official acts on: who is furthest
//! above the energy trajectory, who has not declared what a coverage goal
//! reads (so it counts as not covered, and as unknown), whose data for the
//! month is incomplete or absent, and which gateways have gone silent.
//!
//! A pure function of what the dashboard's energy series and the quality
//! report already computed, plus the registry and the goals in force; the
//! page (`/api/v1/zones/{zone}/chase`) and `report` read the same list.

use crate::dashboard::series::EnergySeries;
use crate::goals::{GoalDef, GoalKind};
use crate::quality::QualityReport;
use crate::registry::Zone;
use crate::state::ZoneState;
use chrono::{DateTime, Utc};
use serde::Serialize;
use zonesync_proto::{Catalog, Period};

/// Why an enterprise is on the list.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Why {
    /// Its latest month's energy intensity is above the trajectory by `gap`
    /// (0.12 = 12 % above).
    OffTrajectory {
        /// intensity ÷ trajectory − 1.
        gap: f64,
        /// The month it was measured in.
        month: Period,
    },
    /// It has declared none of the attributes these goals' conditions read,
    /// so it counts as not covered (and unknown) there.
    Undeclared {
        /// The attributes, catalog codes; each entry the alternatives any
        /// one of which would answer (`dt_maturity` or `sme_dt_level`).
        attributes: Vec<Vec<String>>,
        /// Their Chinese names, in the same order, alternatives joined by 或.
        names_zh: Vec<String>,
        /// The goals that read them.
        goals: Vec<String>,
    },
    /// Its readings for the month are incomplete.
    Incomplete {
        /// Received ÷ expected over its points.
        completeness: f64,
    },
    /// In scope, and nothing at all received from it.
    NoData,
}

impl Why {
    /// The reason in a Chinese sentence, as a briefing writes it.
    pub fn zh(&self) -> String {
        match self {
            Why::OffTrajectory { gap, month } => format!(
                "能耗强度高于下降轨迹 {:+.1}%（{}）",
                gap * 100.0,
                crate::goals::words::span_words(&month.to_string())
            ),
            Why::Undeclared { names_zh, goals, .. } => {
                format!("未申报{}（影响 {}）", names_zh.join("、"), goals.join("、"))
            }
            Why::Incomplete { completeness } => format!("本月数据不全，完整度 {:.1}%", completeness * 100.0),
            Why::NoData => "本月无任何数据".into(),
        }
    }
}

/// One enterprise to chase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToChase {
    /// Credit code.
    pub enterprise: String,
    /// Name.
    pub name: String,
    /// Everything it is missing, most pressing first.
    pub why: Vec<Why>,
    /// The same, in Chinese sentences.
    pub why_zh: Vec<String>,
}

/// A gateway that has gone silent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SilentAgent {
    /// Agent id.
    pub agent: String,
    /// Last heard from.
    pub last_seen: Option<DateTime<Utc>>,
    /// Seconds since.
    pub silent_secs: Option<i64>,
}

/// The list for one zone and month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chase {
    /// The month.
    pub period: Period,
    /// Enterprises with at least one reason, furthest off first.
    pub enterprises: Vec<ToChase>,
    /// Gateways flagged silent by the quality settings.
    pub silent_agents: Vec<SilentAgent>,
}

/// The coverage goals' declared attributes each enterprise of the
/// population lacks: (the condition's attributes, any one of which would
/// answer; goal ids), in goal order.
fn undeclared(
    goals: &[GoalDef],
    zone: &Zone,
    e: &crate::registry::Enterprise,
    es: Option<&crate::state::EnterpriseState>,
) -> Vec<(&'static [&'static str], Vec<String>)> {
    let none = crate::goals::Declared::new();
    let d = es.map_or(&none, |es| &es.declarations);
    let mut out: Vec<(&'static [&'static str], Vec<String>)> = Vec::new();
    // Only the goals the zone's plans set (a Jiyuan zone is not chased for Puyang's).
    let applies = |g: &&GoalDef| zone.goal_sets.is_empty() || zone.goal_sets.contains(&g.set);
    for g in goals.iter().filter(|g| g.kind == GoalKind::Coverage).filter(applies) {
        let Some(cond) = g.condition else { continue };
        if g.population.contains(e, d) == Some(false) {
            continue;
        }
        let keys = cond.declared_keys();
        if keys.is_empty() || keys.iter().any(|k| d.contains_key(*k)) {
            continue;
        }
        match out.iter_mut().find(|(k, _)| *k == keys) {
            Some((_, ids)) => ids.push(g.id.clone()),
            None => out.push((keys, vec![g.id.clone()])),
        }
    }
    out
}

/// Who to chase in `zone` for the month of `quality`, from the energy series
/// ending that month and the goals in force.
pub fn chase(
    zone: &Zone,
    zs: Option<&ZoneState>,
    energy: &EnergySeries,
    quality: &QualityReport,
    goals: &[GoalDef],
    catalog: &Catalog,
) -> Chase {
    let mut list = Vec::new();
    for e in &zone.enterprise {
        let es = zs.and_then(|z| z.enterprises.get(&e.id));
        let mut why = Vec::new();
        if let Some(s) = energy.enterprises.iter().find(|s| s.enterprise == e.id) {
            if let (Some(gap), Some(i)) = (s.series.gap, s.series.latest) {
                if gap > 0.0 {
                    if let Some(month) = energy.months.get(i) {
                        why.push(Why::OffTrajectory { gap, month: *month });
                    }
                }
            }
        }
        let missing = undeclared(goals, zone, e, es);
        if !missing.is_empty() {
            let name = |k: &str| catalog.get(k).map_or_else(|| k.to_owned(), |i| i.name_zh.clone());
            why.push(Why::Undeclared {
                attributes: missing
                    .iter()
                    .map(|(keys, _)| keys.iter().map(|k| (*k).to_owned()).collect())
                    .collect(),
                names_zh: missing
                    .iter()
                    .map(|(keys, _)| keys.iter().map(|k| name(k)).collect::<Vec<_>>().join("或"))
                    .collect(),
                goals: {
                    let mut ids: Vec<String> = missing.iter().flat_map(|(_, g)| g.iter().cloned()).collect();
                    ids.dedup();
                    ids
                },
            });
        }
        let q = quality.enterprises.iter().find(|q| q.enterprise == e.id.as_str());
        match (es, q) {
            (None, _) if e.in_scope() => why.push(Why::NoData),
            (Some(_), Some(q)) if q.flagged => {
                if let Some(c) = q.completeness {
                    why.push(Why::Incomplete { completeness: c });
                }
            }
            _ => {}
        }
        if !why.is_empty() {
            let why_zh = why.iter().map(Why::zh).collect();
            list.push(ToChase {
                enterprise: e.id.to_string(),
                name: e.name.clone(),
                why,
                why_zh,
            });
        }
    }
    // Furthest above the trajectory first, then the most reasons.
    let gap = |c: &ToChase| {
        c.why
            .iter()
            .find_map(|w| match w {
                Why::OffTrajectory { gap, .. } => Some(*gap),
                _ => None,
            })
            .unwrap_or(f64::NEG_INFINITY)
    };
    list.sort_by(|a, b| {
        gap(b)
            .total_cmp(&gap(a))
            .then(b.why.len().cmp(&a.why.len()))
            .then(a.enterprise.cmp(&b.enterprise))
    });
    Chase {
        period: quality.period,
        enterprises: list,
        silent_agents: quality
            .agents
            .iter()
            .filter(|a| a.flagged)
            .map(|a| SilentAgent {
                agent: a.agent.clone(),
                last_seen: a.last_seen,
                silent_secs: a.silent_secs,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goals::{load_goals, BUILTIN_GOALS};
    use crate::testkit::{enterprise, zone};
    use zonesync_proto::DeclaredValue;

    /// An enterprise that has declared nothing is chased for each attribute
    /// its zone's coverage goals read — and only its zone's plans' goals;
    /// declaring the attribute takes it off the list.
    #[test]
    fn undeclared_attributes_are_named_for_the_zones_own_goals() {
        let catalog = Catalog::builtin().unwrap();
        let goals = load_goals(BUILTIN_GOALS, &catalog).unwrap().goal;
        let mut z = zone(vec![enterprise(1, true, "C33")], &[]);
        z.goal_sets = vec!["henan-2027".into()];
        let missing = undeclared(&goals, &z, &z.enterprise[0], None);
        let ids: Vec<&String> = missing.iter().flat_map(|(_, g)| g).collect();
        assert!(ids.iter().any(|g| *g == "HN27-03"), "{missing:?}");
        // Named with every attribute that would answer: maturity or the SME level.
        let dt = missing.iter().find(|(_, g)| g.contains(&"HN27-03".to_owned())).unwrap();
        assert_eq!(dt.0, ["dt_maturity", "sme_dt_level"]);
        assert!(
            ids.iter().all(|g| g.starts_with("HN")),
            "only the zone's own plan: {missing:?}"
        );
        let mut es = crate::state::EnterpriseState::default();
        for (keys, _) in &missing {
            es.declarations.insert(keys[0].to_owned(), DeclaredValue::Integer(3));
        }
        assert_eq!(undeclared(&goals, &z, &z.enterprise[0], Some(&es)), vec![]);
    }
}
