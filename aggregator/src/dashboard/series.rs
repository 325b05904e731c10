//! The figures the dashboard draws that the goal table does not hold: energy
//! intensity month by month against a reduction trajectory, and
//! intelligent-manufacturing scenarios by level. Pure functions of the
//! registry and a zone's state, like the goal evaluation they build on.

use crate::goals::{energy, Condition, GoalCatalog, GoalSettings};
use crate::registry::Zone;
use crate::state::ZoneState;
use serde::Serialize;
use std::collections::BTreeMap;
use zonesync_proto::{Catalog, DeclaredValue, EnterpriseId, Period, ScenarioLevel};

/// The months ending with `last`, oldest first (`count` of them, at least one).
pub fn months_ending(last: Period, count: usize) -> Vec<Period> {
    let (mut y, mut m) = match last {
        Period::Month(y, m) => (y, m),
        // A year or quarter: its last month.
        other => {
            let end = other.end() - chrono::Duration::seconds(1);
            match Period::month_of(end) {
                Period::Month(y, m) => (y, m),
                _ => (other.year(), 12),
            }
        }
    };
    let mut out = Vec::with_capacity(count.max(1));
    for _ in 0..count.max(1) {
        out.push(Period::Month(y, m));
        if m == 1 {
            y -= 1;
            m = 12;
        } else {
            m -= 1;
        }
    }
    out.reverse();
    out
}

/// The reduction rule the trajectory is drawn with: the annual-rate trend goal
/// on energy intensity (`EI`) in the goal catalog, so the line follows the plans.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rate {
    /// Goal id the rate comes from (e.g. `PY-06`).
    pub goal: String,
    /// Change per year, e.g. −0.04.
    pub per_year: f64,
    /// The goal's base year; without one the rate applies year on year.
    pub base_year: Option<i32>,
}

impl Rate {
    /// The intensity year `y` should not exceed, as the goal defines it: the
    /// base year's intensity × (1 + rate)^(y − base), or, without a base
    /// year, the year before's × (1 + rate). It depends on whole years only,
    /// never on which months a chart shows.
    fn target(&self, y: i32, of_year: &BTreeMap<i32, Option<f64>>) -> Option<f64> {
        let at = |y: i32| of_year.get(&y).copied().flatten();
        match self.base_year {
            Some(b) if y > b => Some(at(b)? * (1.0 + self.per_year).powi(y - b)),
            Some(_) => None,
            None => Some(at(y - 1)? * (1.0 + self.per_year)),
        }
    }

    /// The base years whose intensity the targets of `years` read.
    fn bases(&self, years: impl Iterator<Item = i32>) -> Vec<i32> {
        let mut out: Vec<i32> = match self.base_year {
            Some(b) => vec![b],
            None => years.map(|y| y - 1).collect(),
        };
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The annual intensity-reduction target in the catalog, if any preset has one.
pub fn trajectory_rate(goals: &GoalCatalog) -> Option<Rate> {
    goals
        .goal
        .iter()
        .filter(|g| g.of.as_deref() == Some("EI") && g.annual)
        .find_map(|g| {
            g.target.map(|t| Rate {
                goal: g.id.clone(),
                per_year: t,
                base_year: g.base_year,
            })
        })
}

/// A monthly intensity series with its trajectory.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// tce per 10k yuan per month, `None` where either figure is missing.
    pub intensity: Vec<Option<f64>>,
    /// Per month, the target of its year ([`Rate`]): the base year's intensity
    /// lowered at the goal's rate; `None` where the base year has no figure.
    pub trajectory: Vec<Option<f64>>,
    /// The whole-year intensities the trajectory is anchored on, by year.
    pub base: BTreeMap<i32, Option<f64>>,
    /// Index of the last month with data.
    pub latest: Option<usize>,
    /// `intensity[latest] ÷ trajectory[latest] − 1`: how far above (positive) or
    /// below (negative) the trajectory the latest month is.
    pub gap: Option<f64>,
}

impl Series {
    fn new(
        intensity: Vec<Option<f64>>,
        months: &[Period],
        rate: Option<&Rate>,
        base: BTreeMap<i32, Option<f64>>,
    ) -> Self {
        let latest = intensity.iter().rposition(Option::is_some);
        let trajectory: Vec<Option<f64>> = months
            .iter()
            .map(|m| rate.and_then(|r| r.target(m.year(), &base)))
            .collect();
        let gap = latest.and_then(|l| match (intensity[l], trajectory.get(l).copied().flatten()) {
            (Some(i), Some(t)) if t > 0.0 => Some(i / t - 1.0),
            _ => None,
        });
        Self {
            intensity,
            trajectory,
            base,
            latest,
            gap,
        }
    }
}

/// One enterprise's series.
#[derive(Debug, Clone, Serialize)]
pub struct EnterpriseSeries {
    /// Credit code.
    pub enterprise: EnterpriseId,
    /// Registry name.
    pub name: String,
    /// Above-scale and industrial.
    pub in_scope: bool,
    /// Per month: it has figures, but a carrier it uses or its value added is
    /// missing, so that month has no intensity (and is never ranked on).
    pub partial: Vec<bool>,
    /// Its intensity and trajectory.
    #[serde(flatten)]
    pub series: Series,
}

/// The zone's and its enterprises' intensity by month.
#[derive(Debug, Clone, Serialize)]
pub struct EnergySeries {
    /// The months, oldest first.
    pub months: Vec<Period>,
    /// Unit of every figure.
    pub unit: &'static str,
    /// The trajectory's rate and the goal it comes from.
    pub rate: Option<Rate>,
    /// Σ tce ÷ Σ value added over in-scope enterprises reporting both, per month.
    pub zone: Series,
    /// Σ tce of the zone series, per month.
    pub zone_tce: Vec<Option<f64>>,
    /// Σ value added of the zone series, per month.
    pub zone_value_added: Vec<Option<f64>>,
    /// In-scope enterprises left out of the zone series each month because
    /// their figures for it are partial (see `EnterpriseEnergy::partial`).
    pub zone_partial: Vec<usize>,
    /// Enterprises with any intensity in the window, furthest above their trajectory first.
    pub enterprises: Vec<EnterpriseSeries>,
}

/// Energy intensity of a zone and each of its enterprises over `months`.
pub fn energy_series(
    zone: &Zone,
    zs: Option<&ZoneState>,
    months: &[Period],
    rate: Option<Rate>,
    catalog: &Catalog,
    settings: &GoalSettings,
) -> EnergySeries {
    let per_month: Vec<_> = months.iter().map(|p| energy(zone, zs, *p, catalog, settings)).collect();
    let mut zone_tce = Vec::with_capacity(months.len());
    let mut zone_va = Vec::with_capacity(months.len());
    let mut zone_i = Vec::with_capacity(months.len());
    let mut zone_partial = Vec::with_capacity(months.len());
    for rows in &per_month {
        zone_partial.push(rows.iter().filter(|r| r.in_scope && r.partial).count());
        let both = rows
            .iter()
            .filter(|r| r.in_scope && !r.partial)
            .filter_map(|r| Some((r.tce?, r.value_added?)));
        let (n, t, v) = both.fold((0, 0.0, 0.0), |(n, t, v), (a, b)| (n + 1, t + a, v + b));
        zone_tce.push((n > 0).then_some(t));
        zone_va.push((n > 0).then_some(v));
        zone_i.push((n > 0 && v > 0.0).then(|| t / v));
    }
    // The whole years the trajectory is anchored on: per enterprise its
    // intensity over the months known (both sides matched), for the zone the
    // in-scope enterprises whose year is whole, as the monthly zone figure.
    let bases = rate
        .as_ref()
        .map(|r| r.bases(months.iter().map(Period::year)))
        .unwrap_or_default();
    let per_year: Vec<(i32, Vec<_>)> = bases
        .iter()
        .map(|y| (*y, energy(zone, zs, Period::Year(*y), catalog, settings)))
        .collect();
    let zone_base: BTreeMap<i32, Option<f64>> = per_year
        .iter()
        .map(|(y, rows)| {
            let (t, v) = rows
                .iter()
                .filter(|r| r.in_scope && !r.partial)
                .filter_map(|r| Some((r.tce?, r.value_added?)))
                .fold((0.0, 0.0), |(t, v), (a, b)| (t + a, v + b));
            (*y, (v > 0.0).then(|| t / v))
        })
        .collect();
    let mut enterprises: Vec<EnterpriseSeries> = zone
        .enterprise
        .iter()
        .enumerate()
        .map(|(k, e)| EnterpriseSeries {
            enterprise: e.id.clone(),
            name: e.name.clone(),
            in_scope: e.in_scope(),
            partial: per_month
                .iter()
                .map(|rows| rows.get(k).is_some_and(|r| r.partial))
                .collect(),
            series: Series::new(
                per_month
                    .iter()
                    .map(|rows| rows.get(k).and_then(|r| if r.partial { None } else { r.intensity }))
                    .collect(),
                months,
                rate.as_ref(),
                per_year
                    .iter()
                    .map(|(y, rows)| (*y, rows.get(k).and_then(|r| r.intensity)))
                    .collect(),
            ),
        })
        .filter(|e| e.series.latest.is_some() || e.partial.iter().any(|p| *p))
        .collect();
    // Furthest above the trajectory first; those without a gap (no rate) last, by id.
    enterprises.sort_by(|a, b| {
        let key = |e: &EnterpriseSeries| e.series.gap.unwrap_or(f64::NEG_INFINITY);
        key(b).total_cmp(&key(a)).then_with(|| a.enterprise.cmp(&b.enterprise))
    });
    EnergySeries {
        months: months.to_vec(),
        unit: "tce/10k yuan",
        zone: Series::new(zone_i, months, rate.as_ref(), zone_base),
        rate,
        zone_tce,
        zone_value_added: zone_va,
        zone_partial,
        enterprises,
    }
}

/// Where an in-scope enterprise stands on scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioStanding {
    /// Its highest declared scenario is basic (初级).
    Basic,
    /// Intermediate (中级).
    Intermediate,
    /// Advanced (高级).
    Advanced,
    /// It declared its scenarios: none.
    None,
    /// It never declared scenarios (unknown; counted as not covered).
    Undeclared,
}

/// One in-scope enterprise's scenarios.
#[derive(Debug, Clone, Serialize)]
pub struct EnterpriseScenarios {
    /// Credit code.
    pub enterprise: EnterpriseId,
    /// Registry name.
    pub name: String,
    /// Highest level, none or undeclared.
    pub standing: ScenarioStanding,
    /// Declared scenarios as (code, level).
    pub scenarios: Vec<(String, ScenarioLevel)>,
}

/// Scenario coverage of a zone's in-scope (above-scale industrial) enterprises.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioView {
    /// In-scope enterprises: the denominator of the coverage goals.
    pub in_scope: usize,
    /// Enterprises by standing (each counted once, at its highest level).
    pub by_standing: BTreeMap<&'static str, usize>,
    /// Share with at least one scenario at basic level or higher, at intermediate
    /// or higher, at advanced; the same conditions as the coverage goals.
    pub coverage: BTreeMap<&'static str, Option<f64>>,
    /// Per scenario code: enterprises at each level.
    pub by_scenario: BTreeMap<String, BTreeMap<ScenarioLevel, usize>>,
    /// In-scope enterprises with no scenario yet (declared none, or never declared).
    pub without: Vec<EnterpriseScenarios>,
    /// Every in-scope enterprise, in registry order.
    pub enterprises: Vec<EnterpriseScenarios>,
}

/// Scenario coverage of `zone` from its enterprises' latest declarations.
pub fn scenarios(zone: &Zone, zs: Option<&ZoneState>, settings: &GoalSettings) -> ScenarioView {
    let empty = BTreeMap::new();
    let mut view = ScenarioView {
        in_scope: 0,
        by_standing: BTreeMap::new(),
        coverage: BTreeMap::new(),
        by_scenario: BTreeMap::new(),
        without: Vec::new(),
        enterprises: Vec::new(),
    };
    let mut covered = [0usize; 3];
    let conditions = [
        Condition::ScenarioAny,
        Condition::ScenarioIntermediate,
        Condition::ScenarioAdvanced,
    ];
    for e in zone.enterprise.iter().filter(|e| e.in_scope()) {
        view.in_scope += 1;
        let d = zs
            .and_then(|z| z.enterprises.get(&e.id))
            .map_or(&empty, |es| &es.declarations);
        for (n, c) in covered.iter_mut().zip(conditions) {
            if c.eval(d, settings) == Some(true) {
                *n += 1;
            }
        }
        let list: Vec<(String, ScenarioLevel)> = match d.get("scenarios") {
            Some(DeclaredValue::Scenarios(l)) => l.iter().map(|s| (s.code.clone(), s.level)).collect(),
            _ => Vec::new(),
        };
        for (code, level) in &list {
            *view
                .by_scenario
                .entry(code.clone())
                .or_default()
                .entry(*level)
                .or_default() += 1;
        }
        let standing = match (d.get("scenarios"), list.iter().map(|(_, l)| *l).max()) {
            (_, Some(ScenarioLevel::Advanced)) => ScenarioStanding::Advanced,
            (_, Some(ScenarioLevel::Intermediate)) => ScenarioStanding::Intermediate,
            (_, Some(ScenarioLevel::Basic)) => ScenarioStanding::Basic,
            (Some(DeclaredValue::Scenarios(_)), None) => ScenarioStanding::None,
            _ => ScenarioStanding::Undeclared,
        };
        *view.by_standing.entry(standing_key(standing)).or_default() += 1;
        let row = EnterpriseScenarios {
            enterprise: e.id.clone(),
            name: e.name.clone(),
            standing,
            scenarios: list,
        };
        if matches!(standing, ScenarioStanding::None | ScenarioStanding::Undeclared) {
            view.without.push(row.clone());
        }
        view.enterprises.push(row);
    }
    for (key, n) in ["any", "intermediate", "advanced"].into_iter().zip(covered) {
        let share = (view.in_scope > 0).then(|| n as f64 / view.in_scope as f64);
        view.coverage.insert(key, share);
    }
    view
}

fn standing_key(s: ScenarioStanding) -> &'static str {
    match s {
        ScenarioStanding::Basic => "basic",
        ScenarioStanding::Intermediate => "intermediate",
        ScenarioStanding::Advanced => "advanced",
        ScenarioStanding::None => "none",
        ScenarioStanding::Undeclared => "undeclared",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_run_oldest_first_across_a_year_end() {
        let m = months_ending(Period::Month(2026, 2), 4);
        let want = [(2025, 11), (2025, 12), (2026, 1), (2026, 2)].map(|(y, m)| Period::Month(y, m));
        assert_eq!(m, want);
        assert_eq!(months_ending(Period::Year(2025), 1), vec![Period::Month(2025, 12)]);
    }

    #[test]
    fn the_trajectory_is_the_year_befores_intensity_lowered_at_the_rate_whatever_the_window() {
        use crate::state::State;
        use crate::testkit::{amount, enterprise, id, zone};
        let z = zone(vec![enterprise(1, true, "")], &[]);
        let cat = Catalog::builtin().unwrap();
        let mut st = State::default();
        // 2025: 10,000 kWh and 100 万元 every month; 2026: 11,000 kWh (intensity up 10 %).
        let month = |y: i32, m: u32, kwh: f64| {
            let p = format!("{y}-{m:02}");
            vec![amount("electricity", &p, kwh), amount("value_added", &p, 100.0)]
        };
        let mut all: Vec<_> = (1..=12).flat_map(|m| month(2025, m, 10_000.0)).collect();
        all.extend((1..=11).flat_map(|m| month(2026, m, 11_000.0)));
        st.apply(&z.id, &id(1), &all, &[], &cat);
        let yoy = Rate {
            goal: "PY-06".into(),
            per_year: -0.04,
            base_year: None,
        };
        let base_2025 = 1.229 / 100.0;
        for window in [3, 12] {
            let months = months_ending(Period::Month(2026, 11), window);
            let s = energy_series(
                &z,
                st.zones.get(&z.id),
                &months,
                Some(yoy.clone()),
                &cat,
                &GoalSettings::default(),
            );
            let want = base_2025 * 0.96;
            assert!(
                (s.zone.trajectory[window - 1].unwrap() - want).abs() < 1e-12,
                "window {window}"
            );
            let gap = 1.1 / 0.96 - 1.0;
            assert!(
                (s.zone.gap.unwrap() - gap).abs() < 1e-9,
                "window {window}: {:?}",
                s.zone.gap
            );
            let e = &s.enterprises[0];
            assert!((e.series.gap.unwrap() - gap).abs() < 1e-9);
        }
        // A window reaching into 2025 anchors its 2025 months on 2024, which has no data.
        let months = months_ending(Period::Month(2026, 2), 4);
        let s = energy_series(
            &z,
            st.zones.get(&z.id),
            &months,
            Some(yoy),
            &cat,
            &GoalSettings::default(),
        );
        assert_eq!(s.zone.trajectory[0], None);
        assert!(s.zone.trajectory[3].is_some());
        // With a base year: the base year's intensity lowered once per year since.
        let based = Rate {
            goal: "X".into(),
            per_year: -0.04,
            base_year: Some(2025),
        };
        let months = months_ending(Period::Month(2026, 11), 12);
        let s = energy_series(
            &z,
            st.zones.get(&z.id),
            &months,
            Some(based),
            &cat,
            &GoalSettings::default(),
        );
        assert_eq!(s.zone.trajectory[0], None, "2025-12 is the base year itself");
        assert!((s.zone.trajectory[11].unwrap() - base_2025 * 0.96).abs() < 1e-12);
    }

    #[test]
    fn a_partial_month_is_left_out_of_the_zone_counted_and_never_ranked_on() {
        use crate::state::State;
        use crate::testkit::{amount, enterprise, id, zone};
        let z = zone(vec![enterprise(1, true, ""), enterprise(2, true, "")], &[]);
        let cat = Catalog::builtin().unwrap();
        let mut st = State::default();
        let both = |m: &str| vec![amount("electricity", m, 10_000.0), amount("value_added", m, 100.0)];
        st.apply(&z.id, &id(1), &[both("2026-09"), both("2026-10")].concat(), &[], &cat);
        // E2 uses gas (September) but has no gas figure for October: October is partial.
        let mut e2 = [both("2026-09"), both("2026-10")].concat();
        e2.push(amount("natural_gas", "2026-09", 1_000.0));
        st.apply(&z.id, &id(2), &e2, &[], &cat);
        let months = months_ending(Period::Month(2026, 10), 2);
        let s = energy_series(&z, st.zones.get(&z.id), &months, None, &cat, &GoalSettings::default());
        assert_eq!(s.zone_partial, vec![0, 1]);
        // October: E1 alone, 10,000 kWh × 0.0001229 = 1.229 tce over 100.
        assert!((s.zone.intensity[1].unwrap() - 1.229 / 100.0).abs() < 1e-12);
        // September: both, (2 × 1.229 + 1,000 m³ × 0.0012143) ÷ 200.
        assert!((s.zone.intensity[0].unwrap() - (2.458 + 1.2143) / 200.0).abs() < 1e-12);
        let e2 = s.enterprises.iter().find(|e| e.enterprise == id(2)).unwrap();
        assert_eq!(e2.partial, vec![false, true]);
        assert_eq!((e2.series.intensity[1], e2.series.latest), (None, Some(0)));
    }

    #[test]
    fn without_a_rate_there_is_no_trajectory_and_no_gap() {
        let months = months_ending(Period::Month(2026, 2), 2);
        let s = Series::new(vec![Some(1.0), Some(2.0)], &months, None, BTreeMap::new());
        assert_eq!(s.trajectory, vec![None, None]);
        assert_eq!(s.gap, None);
    }

    #[test]
    fn the_rate_comes_from_the_annual_trend_goal_on_intensity() {
        let cat = crate::goals::load_goals(crate::goals::BUILTIN_GOALS, &Catalog::builtin().unwrap()).unwrap();
        let r = trajectory_rate(&cat).unwrap();
        assert_eq!(
            r,
            Rate {
                goal: "PY-06".into(),
                per_year: -0.04,
                base_year: None,
            }
        );
    }

    #[test]
    fn scenarios_count_each_enterprise_at_its_highest_level_and_list_those_without() {
        use crate::testkit::{enterprise, id, zone};
        use zonesync_proto::Scenario;
        let z = zone(
            vec![
                enterprise(1, true, ""),
                enterprise(2, true, ""),
                enterprise(3, true, ""),
                enterprise(4, false, ""),
            ],
            &[],
        );
        let mut zs = ZoneState::default();
        let declare = |zs: &mut ZoneState, n: u32, list: Vec<(&str, ScenarioLevel)>| {
            let l = list
                .into_iter()
                .map(|(c, level)| Scenario { code: c.into(), level })
                .collect();
            let es = zs.enterprises.entry(id(n)).or_default();
            es.declarations.insert("scenarios".into(), DeclaredValue::Scenarios(l));
        };
        declare(
            &mut zs,
            1,
            vec![("a", ScenarioLevel::Basic), ("b", ScenarioLevel::Advanced)],
        );
        declare(&mut zs, 2, vec![]);
        // 3 never declares; 4 is below scale and not counted.
        declare(&mut zs, 4, vec![("a", ScenarioLevel::Advanced)]);
        let v = scenarios(&z, Some(&zs), &GoalSettings::default());
        assert_eq!(v.in_scope, 3);
        assert_eq!(v.by_standing.get("advanced"), Some(&1));
        assert_eq!(v.by_standing.get("none"), Some(&1));
        assert_eq!(v.by_standing.get("undeclared"), Some(&1));
        assert_eq!(v.coverage["any"], Some(1.0 / 3.0));
        assert_eq!(v.coverage["advanced"], Some(1.0 / 3.0));
        assert_eq!(v.by_scenario["a"][&ScenarioLevel::Basic], 1);
        assert!(!v.by_scenario["a"].contains_key(&ScenarioLevel::Advanced));
        let without: Vec<_> = v.without.iter().map(|e| (e.enterprise.clone(), e.standing)).collect();
        assert_eq!(
            without,
            vec![(id(2), ScenarioStanding::None), (id(3), ScenarioStanding::Undeclared)]
        );
    }
}
