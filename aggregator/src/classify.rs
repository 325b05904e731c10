//! Enterprise classification (企业分类综合评价, seed 004, PY-10): the Henan
//! A/B/C rule over per-mu and efficiency indicators.
//!
//! Score = Σ (indicator ÷ benchmark × weight), the benchmark being the zone's
//! mean of that indicator over the enterprises that have it. Then, of the
//! enterprises that can be classified (N):
//! - A (优先发展类): among the top half by score, the best `a_share` × N by the
//!   `a_rank_by` indicator (default tax per mu);
//! - C (倒逼转型类): among the bottom half by score, the worst `c_share` × N by
//!   the `c_rank_by` indicator (default value added per tce);
//! - B (鼓励提升类): everyone else.
//!
//! An enterprise missing any indicator is listed as "cannot classify: missing
//! X", never silently put in a class. Weights, indicators and shares are
//! settings; the defaults (Huangyan-style weights, Henan's shares) are a preset
//! and labelled so (shared/reference/mu-benefit-classification.md).

use crate::goals::{value, GoalSettings, Population, Span};
use crate::registry::Zone;
use crate::state::ZoneState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zonesync_proto::{Catalog, EnterpriseId, Period};

/// One scored indicator: numerator ÷ denominator over the year.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoredIndicator {
    /// Name used in output and in `a_rank_by` / `c_rank_by`.
    pub id: String,
    /// Numerator indicator code (or `energy_tce`).
    pub numerator: String,
    /// Denominator indicator code (or `energy_tce`).
    pub denominator: String,
    /// Weight in the score.
    pub weight: f64,
}

/// Classification settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassificationSettings {
    /// What the defaults are.
    pub preset: String,
    /// Which enterprises are classified.
    pub population: Population,
    /// Scored indicators.
    pub indicators: Vec<ScoredIndicator>,
    /// Share of all classified enterprises that are A.
    pub a_share: f64,
    /// Indicator ranking the A candidates (higher is better).
    pub a_rank_by: String,
    /// Share of all classified enterprises that are C.
    pub c_share: f64,
    /// Indicator ranking the C candidates (lower is worse).
    pub c_rank_by: String,
}

impl Default for ClassificationSettings {
    fn default() -> Self {
        let ind = |id: &str, n: &str, d: &str, w: f64| ScoredIndicator {
            id: id.into(),
            numerator: n.into(),
            denominator: d.into(),
            weight: w,
        };
        Self {
            preset: "Henan A/B/C rule (2019) with Huangyan (Taizhou) 2022 weights; zone means as benchmarks".into(),
            population: Population::AboveScaleIndustrial,
            indicators: vec![
                ind("tax_per_mu", "tax", "land_area", 30.0),
                ind("value_added_per_mu", "value_added", "land_area", 20.0),
                ind("value_added_per_tce", "value_added", "energy_tce", 20.0),
                ind("value_added_per_emission", "value_added", "pollutant_emissions", 10.0),
                ind("labour_productivity", "value_added", "employees", 10.0),
                ind("rd_intensity", "rd_spend", "revenue", 10.0),
            ],
            a_share: 0.15,
            a_rank_by: "tax_per_mu".into(),
            c_share: 0.10,
            c_rank_by: "value_added_per_tce".into(),
        }
    }
}

/// One enterprise's result.
#[derive(Debug, Clone, Serialize)]
pub struct Classified {
    /// Credit code.
    pub enterprise: EnterpriseId,
    /// Registry name.
    pub name: String,
    /// "A", "B" or "C"; None when it cannot be classified.
    pub class: Option<&'static str>,
    /// Weighted score.
    pub score: Option<f64>,
    /// Indicator values.
    pub indicators: BTreeMap<String, f64>,
    /// What is missing, e.g. "tax_per_mu (tax)".
    pub missing: Vec<String>,
}

/// The zone's classification for a year.
#[derive(Debug, Clone, Serialize)]
pub struct Classification {
    /// The year.
    pub period: Period,
    /// Settings in force.
    pub settings: ClassificationSettings,
    /// Zone mean of each indicator.
    pub benchmarks: BTreeMap<String, f64>,
    /// Every member of the population.
    pub enterprises: Vec<Classified>,
}

/// Classifies a zone's enterprises for `year`.
pub fn classify(
    zone: &Zone,
    zs: Option<&ZoneState>,
    year: i32,
    catalog: &Catalog,
    goals: &GoalSettings,
    cs: &ClassificationSettings,
) -> Classification {
    let span = Span::Period(Period::Year(year));
    let empty = BTreeMap::new();
    let mut out: Vec<Classified> = zone
        .enterprise
        .iter()
        .filter_map(|e| {
            let es = zs.and_then(|z| z.enterprises.get(&e.id));
            let declared = es.map(|s| &s.declarations).unwrap_or(&empty);
            if cs.population.contains(e, declared) == Some(false) {
                return None;
            }
            let mut c = Classified {
                enterprise: e.id.clone(),
                name: e.name.clone(),
                class: None,
                score: None,
                indicators: BTreeMap::new(),
                missing: Vec::new(),
            };
            for ind in &cs.indicators {
                let n = value(es, &ind.numerator, span, catalog, goals);
                let d = value(es, &ind.denominator, span, catalog, goals);
                match (n, d) {
                    (Some(n), Some(d)) if d > 0.0 => {
                        c.indicators.insert(ind.id.clone(), n / d);
                    }
                    (n, d) => {
                        let what: Vec<&str> = [
                            (n.is_none(), ind.numerator.as_str()),
                            (d.is_none_or(|d| d <= 0.0), ind.denominator.as_str()),
                        ]
                        .iter()
                        .filter(|(m, _)| *m)
                        .map(|(_, w)| *w)
                        .collect();
                        c.missing.push(format!("{} ({})", ind.id, what.join(", ")));
                    }
                }
            }
            Some(c)
        })
        .collect();

    let complete: Vec<usize> = (0..out.len()).filter(|i| out[*i].missing.is_empty()).collect();
    let mut benchmarks = BTreeMap::new();
    for ind in &cs.indicators {
        let vals: Vec<f64> = complete
            .iter()
            .filter_map(|i| out[*i].indicators.get(&ind.id).copied())
            .collect();
        if !vals.is_empty() {
            benchmarks.insert(ind.id.clone(), vals.iter().sum::<f64>() / vals.len() as f64);
        }
    }
    for &i in &complete {
        let score = cs
            .indicators
            .iter()
            .map(|ind| {
                let b = benchmarks.get(&ind.id).copied().unwrap_or(0.0);
                let v = out[i].indicators.get(&ind.id).copied().unwrap_or(0.0);
                if b > 0.0 {
                    v / b * ind.weight
                } else {
                    0.0
                }
            })
            .sum();
        out[i].score = Some(score);
        out[i].class = Some("B");
    }
    let n = complete.len();
    let mut by_score = complete.clone();
    by_score.sort_by(|a, b| {
        out[*b]
            .score
            .partial_cmp(&out[*a].score)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let half = n.div_ceil(2);
    let key = |i: usize, id: &str| out[i].indicators.get(id).copied().unwrap_or(0.0);
    let mut top: Vec<usize> = by_score[..half].to_vec();
    top.sort_by(|a, b| key(*b, &cs.a_rank_by).total_cmp(&key(*a, &cs.a_rank_by)));
    let mut bottom: Vec<usize> = by_score[half..].to_vec();
    bottom.sort_by(|a, b| key(*a, &cs.c_rank_by).total_cmp(&key(*b, &cs.c_rank_by)));
    let a: Vec<usize> = top.into_iter().take((cs.a_share * n as f64).round() as usize).collect();
    let c: Vec<usize> = bottom
        .into_iter()
        .take((cs.c_share * n as f64).round() as usize)
        .collect();
    for i in a {
        out[i].class = Some("A");
    }
    for i in c {
        out[i].class = Some("C");
    }
    Classification {
        period: Period::Year(year),
        settings: cs.clone(),
        benchmarks,
        enterprises: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use crate::testkit::{self, enterprise, id};
    use zonesync_proto::{CanonicalReading, ReadingTime};

    /// Two indicators keep the arithmetic by hand: tax per mu (weight 60) and
    /// value added per mu (weight 40).
    fn settings() -> ClassificationSettings {
        ClassificationSettings {
            indicators: vec![
                ScoredIndicator {
                    id: "tax_per_mu".into(),
                    numerator: "tax".into(),
                    denominator: "land_area".into(),
                    weight: 60.0,
                },
                ScoredIndicator {
                    id: "va_per_mu".into(),
                    numerator: "value_added".into(),
                    denominator: "land_area".into(),
                    weight: 40.0,
                },
            ],
            a_share: 0.2,
            a_rank_by: "tax_per_mu".into(),
            c_share: 0.2,
            c_rank_by: "va_per_mu".into(),
            ..ClassificationSettings::default()
        }
    }

    #[test]
    fn ranks_classes_and_refuses_to_guess_for_missing_data() {
        let z = testkit::zone((1..=6).map(|n| enterprise(n, true, "")).collect(), &[]);
        let cat = Catalog::builtin().unwrap();
        let mut st = State::default();
        let amt = |ind: &str, v: f64| CanonicalReading {
            indicator: ind.into(),
            point: Default::default(),
            value: v,
            at: ReadingTime::Period(Period::Year(2026)),
        };
        // (tax, value added) on 10 mu each; E6 reports no tax.
        let data = [
            (1, 50.0, 100.0),
            (2, 40.0, 300.0),
            (3, 30.0, 200.0),
            (4, 20.0, 100.0),
            (5, 10.0, 50.0),
        ];
        for (n, tax, va) in data {
            st.apply(
                &z.id,
                &id(n),
                &[amt("tax", tax), amt("value_added", va), amt("land_area", 10.0)],
                &[],
                &cat,
            );
        }
        st.apply(
            &z.id,
            &id(6),
            &[amt("value_added", 80.0), amt("land_area", 10.0)],
            &[],
            &cat,
        );
        let c = classify(
            &z,
            st.zones.get(&z.id),
            2026,
            &cat,
            &GoalSettings::default(),
            &settings(),
        );
        // Benchmarks: tax/mu mean 3.0, VA/mu mean 15.0.
        assert!((c.benchmarks["tax_per_mu"] - 3.0).abs() < 1e-12);
        assert!((c.benchmarks["va_per_mu"] - 15.0).abs() < 1e-12);
        // Scores: E1 5/3*60+10/15*40 = 126.67; E2 80+80 = 160; E3 60+53.33 = 113.33; E4 40+26.67 = 66.67; E5 20+13.33 = 33.33.
        let class = |n: u32| c.enterprises.iter().find(|e| e.enterprise == id(n)).unwrap().class;
        let score = |n: u32| {
            c.enterprises
                .iter()
                .find(|e| e.enterprise == id(n))
                .unwrap()
                .score
                .unwrap()
        };
        assert!((score(2) - 160.0).abs() < 1e-9);
        // Top half (3 of 5): E2, E1, E3; A = 1 (20 % of 5) by tax/mu: E1.
        assert_eq!(class(1), Some("A"));
        // Bottom half: E4, E5; C = 1 by lowest VA/mu: E5.
        assert_eq!(class(5), Some("C"));
        assert_eq!((class(2), class(3), class(4)), (Some("B"), Some("B"), Some("B")));
        let e6 = c.enterprises.iter().find(|e| e.enterprise == id(6)).unwrap();
        assert_eq!(e6.class, None);
        assert_eq!(e6.missing, vec!["tax_per_mu (tax)".to_owned()]);
    }
}
