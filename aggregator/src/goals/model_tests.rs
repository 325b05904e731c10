//! The incremental goal tallies against the full scan they replace: random
//! sequences of readings and declarations (meter resets, late readings,
//! intervals across China midnight at month and year ends, enterprises that
//! never report, stocks, every declared attribute a goal reads) applied through
//! `State::apply`, and after every step the table from the tallies must equal
//! `evaluate`'s, bit for bit, for every period asked so far, without another scan.
//! Its generators are shared with the federation tests (`crate::federation`).

use super::incremental::{rollup_table, zone_table, Tallies, MAX_SPANS};
use super::*;
use crate::registry::Zone;
use crate::state::{State, ZoneState};
use crate::testkit::{self, enterprise, id, utc};
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;

use zonesync_proto::{
    CanonicalReading, Catalog, DeclaredValue, EnterpriseId, Period, ReadingTime, Scenario, ScenarioLevel, ZoneId,
};

/// splitmix64: deterministic, so a failure names a step that can be replayed.
use zonesync_proto::rng::SplitMix64 as Rng;

/// Awkward amounts: fractions that do not add up exactly in binary, several magnitudes.
pub(crate) fn amount(r: &mut Rng) -> f64 {
    let scale = *r.pick(&[0.1, 1.0, 7.3, 1000.0, 123_456.7]);
    (r.below(10_000) as f64 + 0.1) * scale
}

pub(crate) fn zone() -> Zone {
    let mut ents = vec![
        enterprise(1, true, "C3120"),
        enterprise(2, true, "C3990"),
        enterprise(3, true, ""),
        enterprise(4, false, ""),
        enterprise(5, true, "C2610"),
        enterprise(6, true, "G5400"),
        enterprise(7, true, "C3211"),
        enterprise(8, false, "C3120"),
        enterprise(9, true, "C2611"), // never reports
    ];
    ents[5].industrial = false;
    ents[7].industrial = false;
    testkit::zone(ents, &["C31", "C26"])
}

pub(crate) fn goals(cat: &Catalog) -> Vec<GoalDef> {
    let mut g = load_goals(BUILTIN_GOALS, cat).unwrap().goal;
    g.extend(load_goals(super::tests::GOALS, cat).unwrap().goal);
    g
}

/// Every declared attribute a goal can read, with values of the right type.
pub(crate) fn declaration(r: &mut Rng) -> (String, DeclaredValue) {
    let flags = [
        "smart_retrofit",
        "rd_activity",
        "rd_institution",
        "rd_institution_provincial",
        "on_cloud",
        "high_tech",
        "tech_sme",
        "specialized_sme",
        "lead_goose",
        "gazelle",
        "green_factory",
        "strategic_emerging",
    ];
    match r.below(6) {
        0 => ((*r.pick(&flags)).into(), DeclaredValue::Bool(r.below(2) == 1)),
        1 => (
            (*r.pick(&["dt_maturity", "sme_dt_level", "logistics_a_rating"])).into(),
            DeclaredValue::Integer(r.below(6) as i64),
        ),
        2 => (
            "enterprise_size".into(),
            DeclaredValue::Text((*r.pick(&["large", "medium", "small", "中型", "micro"])).into()),
        ),
        3 => (
            "industry_code".into(),
            DeclaredValue::Text((*r.pick(&["C3120", "C2610", "G5400", "C3990"])).into()),
        ),
        _ => {
            let levels = [
                ScenarioLevel::Basic,
                ScenarioLevel::Intermediate,
                ScenarioLevel::Advanced,
            ];
            let list = (0..r.below(3))
                .map(|i| Scenario {
                    code: format!("S{i}"),
                    level: *r.pick(&levels),
                })
                .collect();
            ("scenarios".into(), DeclaredValue::Scenarios(list))
        }
    }
}

/// A period amount, for any indicator a goal reads (energy carriers included) or another one.
pub(crate) fn period_amount(r: &mut Rng, indicators: &[&str]) -> CanonicalReading {
    let y = *r.pick(&[2015, 2025, 2026]);
    let period = match r.below(6) {
        0 => Period::Year(y),
        1 => Period::Quarter(y, 1 + r.below(4) as u32),
        _ => Period::Month(y, *r.pick(&[1, 2, 9, 10, 11, 12])),
    };
    CanonicalReading {
        indicator: (*r.pick(indicators)).into(),
        point: Default::default(),
        value: amount(r),
        at: ReadingTime::Period(period),
    }
}

/// Value added and every energy carrier of one month, so months match across
/// the sides of an intensity and across the years of its trend (sparse random
/// amounts rarely do).
pub(crate) fn full_month(r: &mut Rng) -> Vec<CanonicalReading> {
    let y = *r.pick(&[2015, 2025, 2026]);
    let m = *r.pick(&[1, 2, 9, 10, 11]);
    let mut out = Vec::new();
    for ind in ["value_added", "electricity", "natural_gas", "raw_coal"] {
        // Now and then one is missing: a partial month.
        if r.below(8) != 0 {
            out.push(CanonicalReading {
                indicator: ind.into(),
                point: Default::default(),
                value: amount(r),
                at: ReadingTime::Period(Period::Month(y, m)),
            });
        }
    }
    out
}

/// Meter clocks per (enterprise, point): each register reading moves on from the last one,
/// sometimes back (a late reading), its value up, sometimes down (a reset).
#[derive(Default)]
pub(crate) struct Meters {
    at: HashMap<(usize, &'static str), (DateTime<Utc>, f64)>,
}

impl Meters {
    pub(crate) fn reading(&mut self, r: &mut Rng, e: usize) -> CanonicalReading {
        let (indicator, point) = *r.pick(&[
            ("electricity", "M1"),
            ("electricity", "M2"),
            ("natural_gas", "G1"),
            ("electricity_renewable_self", "PV"),
        ]);
        // Just before China midnight at a month end and at the year end, and in early 2015.
        let start = *r.pick(&[
            "2026-10-31T22:50:00+08:00",
            "2025-12-31T23:20:00+08:00",
            "2015-10-31T23:40:00+08:00",
        ]);
        let (ts, reg) = self
            .at
            .entry((e, point))
            .or_insert_with(|| (utc(start), r.below(1000) as f64));
        let mut next = *ts + Duration::minutes(5 * (1 + r.below(8)) as i64);
        if r.below(10) == 0 {
            next = *ts - Duration::minutes(10); // late: kept, not used for deltas
        }
        if r.below(30) == 0 {
            next = utc(r.pick::<&str>(&["2026-11-01T00:00:00+08:00", "2026-01-01T00:00:00+08:00"]));
            // exactly midnight
        }
        let value = if r.below(12) == 0 {
            r.below(50) as f64 // meter replaced
        } else {
            *reg + amount(r) / 100.0
        };
        if next > *ts {
            *ts = next;
            *reg = value;
        }
        CanonicalReading {
            indicator: indicator.into(),
            point: point.into(),
            value,
            at: ReadingTime::Ts(next),
        }
    }
}

/// A stock read at an instant (land area from a survey), on one of two points.
pub(crate) fn stock_reading(r: &mut Rng) -> CanonicalReading {
    CanonicalReading {
        indicator: (*r.pick(&["land_area", "land_area_low_efficiency"])).into(),
        point: (*r.pick(&["P1", "P2"])).into(),
        value: amount(r),
        at: ReadingTime::Ts(utc(r.pick::<&str>(&[
            "2025-06-30T12:00:00+08:00",
            "2026-10-31T23:59:00+08:00",
            "2026-11-01T00:00:00+08:00",
            "2015-03-01T08:00:00+08:00",
        ]))),
    }
}

fn scans(t: &Tallies, z: &Zone) -> u64 {
    t.lock(&z.id).unwrap().scans
}

/// Applies a batch to `st`, keeping the zone's tallies in step.
pub(crate) fn feed(
    st: &mut State,
    t: &Tallies,
    z: &Zone,
    e: &EnterpriseId,
    readings: &[CanonicalReading],
    declarations: &[(String, DeclaredValue)],
    cat: &Catalog,
) {
    let mut ix = t.lock(&z.id).unwrap();
    st.apply_following(&z.id, e, readings, declarations, cat, Some(&mut *ix));
}

#[allow(clippy::too_many_arguments)]
fn assert_same(
    st: &State,
    t: &Tallies,
    z: &Zone,
    goals: &[GoalDef],
    cat: &Catalog,
    period: impl Into<Asked>,
    step: usize,
) {
    let period: Asked = period.into();
    let zs = st.zones.get(&z.id).unwrap();
    let kept = zone_table(t, zs, &z.id, period).unwrap();
    let scanned = evaluate(
        goals,
        &[(z, Some(zs))],
        Level::Zone("z".into()),
        period,
        cat,
        &GoalSettings::default(),
    );
    assert_eq!(kept.len(), scanned.len());
    for (k, s) in kept.iter().zip(&scanned) {
        assert_eq!(k, s, "step {step}, {period:?}, goal {}", s.id);
        assert_eq!(
            k.value.map(f64::to_bits),
            s.value.map(f64::to_bits),
            "step {step}, {}",
            s.id
        );
    }
}

#[test]
fn kept_tallies_equal_a_full_scan_after_every_random_step() {
    let cat = Catalog::builtin().unwrap();
    let goals = goals(&cat);
    let z = zone();
    let settings = GoalSettings::default();
    let mut amounts: Vec<&str> = vec![
        "value_added",
        "gross_output",
        "revenue",
        "tax",
        "rd_spend",
        "investment",
        "employees",
        "patents_granted",
        "land_area",
        "solid_waste_generated",
        "solid_waste_utilized",
        "wastewater_generated",
        "wastewater_treated_central",
        "pollutant_emissions",
    ];
    amounts.extend(["electricity", "natural_gas", "raw_coal", "electricity_renewable_self"]);
    // Periods asked for, one more every 25 steps: some tallies are built before any data, others midway;
    // some with a span chosen over the goals' own basis (`?span=`).
    let periods: Vec<Asked> = [
        ("2026-10", SpanChoice::Basis),
        ("2026-11", SpanChoice::Month),
        ("2026", SpanChoice::Basis),
        ("2026-Q4", SpanChoice::Basis),
        ("2025-12", SpanChoice::Quarter),
        ("2026-01", SpanChoice::Month),
        ("2015-10", SpanChoice::Basis),
        ("2026-10", SpanChoice::Year),
        ("2025", SpanChoice::Basis),
    ]
    .iter()
    .map(|(p, c)| Asked::new(Period::parse(p).unwrap(), *c).unwrap())
    .collect();
    for seed in 1..=3u64 {
        let mut r = Rng::new(seed);
        let mut st = State::default();
        st.zone_mut(&z.id);
        let t = Tallies::for_zones([&z], &goals, &cat, &settings);
        let mut meters = Meters { at: HashMap::new() };
        let mut asked = 1;
        assert_same(&st, &t, &z, &goals, &cat, periods[0], 0);
        for step in 1..=200 {
            let e = r.below(8) as usize; // enterprise 9 never reports
            let mut readings = Vec::new();
            let mut declarations = Vec::new();
            for _ in 0..1 + r.below(3) {
                match r.below(12) {
                    0..=3 => readings.push(meters.reading(&mut r, e)),
                    4..=6 => readings.push(period_amount(&mut r, &amounts)),
                    7 => readings.push(stock_reading(&mut r)),
                    8 | 9 => readings.extend(full_month(&mut r)),
                    _ => declarations.push(declaration(&mut r)),
                }
            }
            feed(&mut st, &t, &z, &id(e as u32 + 1), &readings, &declarations, &cat);
            let new_period = step % 25 == 0 && asked < periods.len();
            if new_period {
                asked += 1;
            }
            let before = scans(&t, &z);
            for p in &periods[..asked] {
                assert_same(&st, &t, &z, &goals, &cat, *p, step);
            }
            if !new_period {
                assert_eq!(
                    scans(&t, &z),
                    before,
                    "step {step}: a table after a change needed a scan"
                );
            }
        }
        let ix = t.lock(&z.id).unwrap();
        assert!(ix.updates > 100, "the steps changed tallies: {:?}", *ix);
    }
}

#[test]
fn least_recently_used_spans_are_dropped_and_rebuilt_equal() {
    let cat = Catalog::builtin().unwrap();
    let goals = goals(&cat);
    let z = zone();
    let mut st = State::default();
    let t = Tallies::for_zones([&z], &goals, &cat, &GoalSettings::default());
    let mut r = Rng::new(42);
    let mut meters = Meters { at: HashMap::new() };
    for step in 0..40 {
        let e = r.below(8) as usize;
        let readings = vec![
            meters.reading(&mut r, e),
            period_amount(&mut r, &["value_added", "revenue"]),
        ];
        feed(
            &mut st,
            &t,
            &z,
            &id(e as u32 + 1),
            &readings,
            &[declaration(&mut r)],
            &cat,
        );
        // Every month of 2020..2022 once, then back to the first ones.
        let p = Period::Month(2020 + step / 12, 1 + (step % 12) as u32);
        assert_same(&st, &t, &z, &goals, &cat, p, step as usize);
        assert_same(&st, &t, &z, &goals, &cat, Period::Month(2026, 10), step as usize);
        assert!(t.lock(&z.id).unwrap().spans() <= MAX_SPANS);
    }
}

#[test]
fn city_and_province_tables_merge_the_zones_tallies_exactly() {
    let cat = Catalog::builtin().unwrap();
    let goals = goals(&cat);
    let settings = GoalSettings::default();
    let a = zone();
    let mut b = zone();
    b.id = ZoneId::parse("y").unwrap();
    b.city = "濮阳".into();
    b.leading_industries = vec!["C32".into()];
    let mut st = State::default();
    let t = Tallies::for_zones([&a, &b], &goals, &cat, &settings);
    st.zone_mut(&a.id);
    st.zone_mut(&b.id);
    let mut r = Rng::new(5);
    let mut meters = Meters { at: HashMap::new() };
    let amounts = [
        "value_added",
        "gross_output",
        "revenue",
        "electricity",
        "land_area",
        "tax",
    ];
    let period = Period::Month(2026, 10);
    for step in 0..80 {
        let z = if r.below(2) == 0 { &a } else { &b };
        let e = r.below(8) as usize;
        let readings = vec![meters.reading(&mut r, e), period_amount(&mut r, &amounts)];
        feed(
            &mut st,
            &t,
            z,
            &id(e as u32 + 1),
            &readings,
            &[declaration(&mut r)],
            &cat,
        );
        for level in [Level::Province, Level::City("濮阳".into())] {
            let zones: Vec<&Zone> = [&a, &b]
                .into_iter()
                .filter(|z| level == Level::Province || z.city == "濮阳")
                .collect();
            let states: Vec<(&Zone, &ZoneState)> = zones.iter().map(|z| (*z, st.zones.get(&z.id).unwrap())).collect();
            let opt: Vec<(&Zone, Option<&ZoneState>)> = states.iter().map(|(z, zs)| (*z, Some(*zs))).collect();
            // Each goal's basis, and every row over the month alone (`?span=month`).
            for asked in [Asked::basis(period), Asked::new(period, SpanChoice::Month).unwrap()] {
                let kept = rollup_table(&t, &states, &goals, &settings, &level, asked).unwrap();
                let scanned = evaluate(&goals, &opt, level.clone(), asked, &cat, &settings);
                assert_eq!(kept, scanned, "step {step}, {level:?}, {asked:?}");
            }
        }
    }
}
