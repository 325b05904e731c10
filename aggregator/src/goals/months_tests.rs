//! The months rule worked out by hand on the presets (EI, PY-06): a meter
//! installed in September against a whole year of coal and value added.
//! Both sides of an intensity and both years of its trend cover the same
//! months of each enterprise; the months left out are counted.

use super::*;
use crate::state::State;
use crate::testkit::{self, amount, enterprise, id};
use zonesync_proto::{CanonicalReading, Catalog, Period};

/// A: coal and value added every month, no electricity. B: coal and value
/// added every month; electricity only from September 2025 (meters installed).
fn state(z: &crate::registry::Zone, cat: &Catalog) -> State {
    let mut st = State::default();
    let month = |y: i32, m: u32| format!("{y}-{m:02}");
    let mut a: Vec<CanonicalReading> = Vec::new();
    let mut b: Vec<CanonicalReading> = Vec::new();
    for m in 1..=10 {
        a.push(amount("raw_coal", &month(2025, m), 2.0));
        a.push(amount("raw_coal", &month(2026, m), 1.8));
        for y in [2025, 2026] {
            a.push(amount("value_added", &month(y, m), 100.0));
            b.push(amount("raw_coal", &month(y, m), 1.0));
            b.push(amount("value_added", &month(y, m), 100.0));
            if y == 2026 || m >= 9 {
                b.push(amount("electricity", &month(y, m), 10_000.0));
            }
        }
    }
    st.apply(&z.id, &id(1), &a, &[], cat);
    st.apply(&z.id, &id(2), &b, &[], cat);
    st
}

fn table(asked: Asked) -> Vec<GoalRow> {
    let cat = Catalog::builtin().unwrap();
    let goals = load_goals(BUILTIN_GOALS, &cat).unwrap();
    let z = testkit::zone(vec![enterprise(1, true, ""), enterprise(2, true, "")], &[]);
    let st = state(&z, &cat);
    evaluate(
        &goals.goal,
        &[(&z, st.zones.get(&z.id))],
        Level::Zone("z".into()),
        asked,
        &cat,
        &GoalSettings::default(),
    )
}

fn row(rows: &[GoalRow], id: &str) -> GoalRow {
    rows.iter().find(|r| r.id == id).cloned().unwrap()
}

fn close(a: Option<f64>, b: f64) {
    let a = a.expect("a value");
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}

#[test]
fn an_intensity_covers_only_the_months_both_sides_report() {
    let rows = table(Period::Month(2025, 10).into());
    let ei = row(&rows, "EI");
    assert_eq!(ei.period, "2025-01..2025-10");
    // A: 10 months, 20 t × 0.7143 = 14.286 tce over 1000. B: only Sep and Oct have
    // every carrier: 2 t × 0.7143 + 20,000 kWh × 0.0001229 = 1.4286 + 2.458 = 3.8866 tce
    // over 200. (14.286 + 3.8866) ÷ 1200 = 0.0151438…; B's 8 other months are left out.
    close(ei.value, (14.286 + 3.8866) / 1200.0);
    close(Some(ei.denominator), 1200.0);
    assert_eq!((ei.reported, ei.unknown, ei.partial_months), (2, 0, 8));
    // (10 + 2) member-months of 2 × 10.
    close(ei.completeness, 0.6);
    let ei26 = row(&table(Period::Month(2026, 10).into()), "EI");
    assert_eq!((ei26.partial_months, ei26.completeness), (0, Some(1.0)));
}

#[test]
fn year_on_year_compares_the_same_months_and_agrees_with_the_monthly_figures() {
    let rows = table(Period::Month(2026, 10).into());
    let t = row(&rows, "PY-06");
    assert_eq!(t.period, "2026-01..2026-10 vs 2025-01..2025-10");
    // A over Jan–Oct both years: 18 t → 12.8574 tce, 20 t → 14.286 tce, 1000 each.
    // B over Sep–Oct only (its months known in both years): 3.8866 tce over 200 both years.
    // Now (12.8574 + 3.8866) ÷ 1200 against (14.286 + 3.8866) ÷ 1200:
    // 16.744 ÷ 18.1726 − 1 = −7.861 %. (Unmatched, 2026's ten months of B's
    // electricity against 2025's two read +35.2 %.)
    close(t.value, 16.744 / 18.1726 - 1.0);
    assert_eq!(t.status, Status::Met, "≤ −4 %");
    assert_eq!((t.reported, t.unknown, t.partial_months), (2, 0, 8));
    close(t.completeness, 0.6);
    // The monthly figures, Jan–Oct, asked through the same API with span=month:
    // Jan–Aug only A is known in both years (−10 %); Sep and Oct
    // (1.8 × 0.7143 + 1.9433) ÷ (2 × 0.7143 + 1.9433) − 1 = 3.22904 ÷ 3.3719 − 1 = −4.237 %.
    let monthly: Vec<f64> = (1..=10)
        .map(|m| {
            let asked = Asked::new(Period::Month(2026, m), SpanChoice::Month).unwrap();
            let r = row(&table(asked), "PY-06");
            assert_eq!(r.period, format!("2026-{m:02} vs 2025-{m:02}"));
            r.value.unwrap()
        })
        .collect();
    close(Some(monthly[0]), 1.8 / 2.0 - 1.0);
    close(Some(monthly[9]), 3.22904 / 3.3719 - 1.0);
    // A year to date made of those months lies among them.
    let (lo, hi) = monthly
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    let ytd = t.value.unwrap();
    assert!(lo <= ytd && ytd <= hi, "{ytd} outside the monthly {lo}..{hi}");
}
