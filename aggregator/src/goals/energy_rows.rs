//! Each enterprise's energy figures for a period (`GET …/energy`, and the
//! dashboard's monthly series built from them), by the same months rule as the
//! goal rows: intensity covers only the months where every carrier the
//! enterprise uses that year and its value added are known. tce and value
//! added are shown as far as they are known, and a row with months missing
//! says so (`partial`, `missing`) instead of passing electricity alone off as
//! the enterprise's energy; nothing is ranked on it.

use super::figure::{carriers, matched, Figure, Source};
use super::span::{each_month, Months, Span};
use super::GoalSettings;
use crate::registry::Zone;
use crate::state::{EnterpriseState, ZoneState};
use serde::Serialize;
use zonesync_proto::{Catalog, EnterpriseId, Period};

/// One energy carrier's amount over the months of the period it has.
#[derive(Debug, Clone, Serialize)]
pub struct CarrierFigure {
    /// Catalog code.
    pub indicator: String,
    /// Amount in the canonical unit, over the months it covers.
    pub amount: f64,
    /// Canonical unit.
    pub unit: String,
    /// Tonnes of standard coal.
    pub tce: f64,
    /// Where the amount came from.
    pub source: Source,
    /// Months of the period it covers.
    pub months: u32,
}

/// A figure an enterprise lacks for some months of the period.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Missing {
    /// Carrier code or `value_added`.
    pub indicator: String,
    /// The months of the period without it.
    pub months: Vec<Period>,
}

/// One enterprise's energy figures for a period, with the same months a year before.
#[derive(Debug, Clone, Serialize)]
pub struct EnterpriseEnergy {
    /// Credit code.
    pub enterprise: EnterpriseId,
    /// Name from the registry.
    pub name: String,
    /// Above-scale industrial.
    pub in_scope: bool,
    /// Comprehensive energy use as far as known, tce: Σ carriers over the months
    /// each has (when `partial`, not the whole: see `missing`).
    pub tce: Option<f64>,
    /// Value added as far as known, 10k yuan.
    pub value_added: Option<f64>,
    /// tce per 10k yuan over the months with every carrier and value added known only.
    pub intensity: Option<f64>,
    /// How many months of the period `intensity` covers.
    pub months: u32,
    /// Months in the period.
    pub months_in_period: u32,
    /// It has figures for the period, but some month lacks a carrier it uses
    /// that year or its value added: `tce` and `value_added` are not whole,
    /// `intensity` covers fewer months than the period (or none), and nothing
    /// ranks it on them.
    pub partial: bool,
    /// What it lacks, per indicator, when `partial`.
    pub missing: Vec<Missing>,
    /// Intensity a year before, over the months known in both years.
    pub intensity_last_year: Option<f64>,
    /// Intensity over those same months this year ÷ `intensity_last_year` − 1.
    pub yoy_change: Option<f64>,
    /// Months `intensity_last_year` and `yoy_change` cover.
    pub yoy_months: u32,
    /// Per carrier it uses, over the months it has.
    pub carriers: Vec<CarrierFigure>,
}

/// An enterprise's carriers (with tce per unit) and value added over one span.
struct Sides {
    carriers: Vec<(String, String, f64, Figure)>,
    value_added: Figure,
}

impl Sides {
    fn of(es: &EnterpriseState, span: Span, years: &[i32], catalog: &Catalog, s: &GoalSettings) -> Sides {
        Sides {
            carriers: carriers(es, years, catalog, s)
                .into_iter()
                .map(|i| {
                    (
                        i.code.clone(),
                        i.unit.clone().unwrap_or_default(),
                        i.tce_per_unit.unwrap_or(0.0),
                        Figure::of(es, &i.code, span),
                    )
                })
                .collect(),
            value_added: Figure::of(es, "value_added", span),
        }
    }

    fn figures(&self) -> impl Iterator<Item = &Figure> + Clone {
        self.carriers.iter().map(|c| &c.3).chain([&self.value_added])
    }

    /// tce as far as known: every carrier over the months it has.
    fn known_tce(&self, all: Months) -> Option<f64> {
        let known = self.carriers.iter().any(|(_, _, _, f)| f.covered() != 0);
        known.then(|| self.carriers.iter().map(|(_, _, k, f)| k * f.sum(all)).sum())
    }

    /// (tce, value added) over `months`; None without a carrier or a month.
    fn over(&self, months: Months) -> Option<(f64, f64)> {
        (months != 0 && !self.carriers.is_empty()).then(|| {
            (
                self.carriers.iter().map(|(_, _, k, f)| k * f.sum(months)).sum(),
                self.value_added.sum(months),
            )
        })
    }
}

fn ratio(p: Option<(f64, f64)>) -> Option<f64> {
    p.and_then(|(t, v)| (v > 0.0).then(|| t / v))
}

/// Energy figures of every enterprise of a zone for a period.
pub fn energy(
    zone: &Zone,
    zs: Option<&ZoneState>,
    period: Period,
    catalog: &Catalog,
    s: &GoalSettings,
) -> Vec<EnterpriseEnergy> {
    let span = Span::Period(period);
    let all = span.months();
    zone.enterprise
        .iter()
        .map(|e| {
            let mut row = EnterpriseEnergy {
                enterprise: e.id.clone(),
                name: e.name.clone(),
                in_scope: e.in_scope(),
                tce: None,
                value_added: None,
                intensity: None,
                months: 0,
                months_in_period: all.count_ones(),
                partial: false,
                missing: Vec::new(),
                intensity_last_year: None,
                yoy_change: None,
                yoy_months: 0,
                carriers: Vec::new(),
            };
            let Some(es) = zs.and_then(|z| z.enterprises.get(&e.id)) else {
                return row;
            };
            let now = Sides::of(es, span, &[period.year()], catalog, s);
            let months = matched(now.figures(), all);
            let known = now.figures().any(|f| f.covered() != 0);
            let figures = now.over(months);
            row.tce = now.known_tce(all);
            row.value_added = (now.value_added.covered() != 0).then(|| now.value_added.sum(all));
            row.intensity = ratio(figures);
            row.months = if figures.is_some() { months.count_ones() } else { 0 };
            // An enterprise with value added but no energy carrier used that year
            // has no energy figure, not a partial one.
            let uses_energy = !now.carriers.is_empty();
            if known && uses_energy {
                row.missing = now
                    .carriers
                    .iter()
                    .map(|(code, _, _, f)| (code.as_str(), f))
                    .chain([("value_added", &now.value_added)])
                    .filter_map(|(code, f)| {
                        let lacking = all & !f.covered();
                        (lacking != 0).then(|| Missing {
                            indicator: code.to_owned(),
                            months: each_month(lacking).map(|m| Period::Month(period.year(), m)).collect(),
                        })
                    })
                    .collect();
            }
            row.partial = uses_energy && known && (!row.missing.is_empty() || row.months < row.months_in_period);
            row.carriers = now
                .carriers
                .iter()
                .filter_map(|(code, unit, k, f)| {
                    let amount = f.sum(all);
                    Some(CarrierFigure {
                        indicator: code.clone(),
                        amount,
                        unit: unit.clone(),
                        tce: k * amount,
                        source: f.source(all)?,
                        months: f.covered().count_ones(),
                    })
                })
                .collect();
            // Year on year: both years over the months known in both, carriers of either year.
            let before = span.in_year(period.year() - 1);
            let years = [period.year(), period.year() - 1];
            let (a, b) = (
                Sides::of(es, span, &years, catalog, s),
                Sides::of(es, before, &years, catalog, s),
            );
            let both = matched(a.figures().chain(b.figures()), all);
            let (cur, last) = (ratio(a.over(both)), ratio(b.over(both)));
            row.intensity_last_year = last;
            row.yoy_months = if last.is_some() { both.count_ones() } else { 0 };
            row.yoy_change = match (cur, last) {
                (Some(c), Some(l)) if l > 0.0 => Some(c / l - 1.0),
                _ => None,
            };
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use crate::testkit::{self, amount, enterprise, id};

    #[test]
    fn a_month_missing_gas_and_coal_is_partial_not_electricity_alone() {
        let z = testkit::zone(vec![enterprise(1, true, "")], &[]);
        let cat = Catalog::builtin().unwrap();
        let mut st = State::default();
        // September: electricity, gas, coal and value added; October: electricity only.
        let readings = [
            amount("electricity", "2026-09", 10_000.0),
            amount("natural_gas", "2026-09", 1_000.0),
            amount("raw_coal", "2026-09", 2.0),
            amount("value_added", "2026-09", 100.0),
            amount("electricity", "2026-10", 10_000.0),
        ];
        st.apply(&z.id, &id(1), &readings, &[], &cat);
        let sep = &energy(
            &z,
            st.zones.get(&z.id),
            Period::Month(2026, 9),
            &cat,
            &GoalSettings::default(),
        )[0];
        // 10,000 kWh × 0.0001229 + 1,000 m³ × 0.0012143 + 2 t × 0.7143 = 1.229 + 1.2143 + 1.4286 = 3.8719 tce.
        let tce = 1.229 + 1.2143 + 1.4286;
        assert!((sep.tce.unwrap() - tce).abs() < 1e-9, "{:?}", sep.tce);
        assert!((sep.intensity.unwrap() - tce / 100.0).abs() < 1e-12);
        assert!(!sep.partial);
        let oct = &energy(
            &z,
            st.zones.get(&z.id),
            Period::Month(2026, 10),
            &cat,
            &GoalSettings::default(),
        )[0];
        // October: the electricity is shown as what it is (1.229 tce, partial, gas and
        // coal missing), and there is no intensity.
        assert!(oct.partial);
        assert!((oct.tce.unwrap() - 1.229).abs() < 1e-12);
        assert_eq!((oct.value_added, oct.intensity, oct.months), (None, None, 0));
        let lacking: Vec<&str> = oct.missing.iter().map(|m| m.indicator.as_str()).collect();
        assert_eq!(lacking, vec!["natural_gas", "raw_coal", "value_added"]);
        assert_eq!(oct.missing[0].months, vec![Period::Month(2026, 10)]);
        // Electricity is still shown, as what it is: one carrier.
        assert_eq!(oct.carriers.len(), 1);
        // Value added alone, no carrier used that year: no energy figure, not a partial one.
        let mut st = State::default();
        st.apply(&z.id, &id(1), &[amount("value_added", "2026-10", 100.0)], &[], &cat);
        let va_only = &energy(
            &z,
            st.zones.get(&z.id),
            Period::Month(2026, 10),
            &cat,
            &GoalSettings::default(),
        )[0];
        assert_eq!(
            (va_only.partial, va_only.value_added, va_only.tce),
            (false, Some(100.0), None)
        );
        assert!(va_only.missing.is_empty());
        assert_eq!(
            (oct.carriers[0].indicator.as_str(), oct.carriers[0].amount),
            ("electricity", 10_000.0)
        );
    }
}
