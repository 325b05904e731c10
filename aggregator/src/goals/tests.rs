//! Each goal kind against a small data set worked out by hand: enterprises
//! that never report, a meter reset and an interval ending at China midnight.

use super::*;
use crate::registry::Zone;
use crate::state::State;
use crate::testkit::{self, amount, enterprise, id, register};
use zonesync_proto::{Catalog, DeclaredValue, Period};

fn zone() -> Zone {
    // A (1): leading industry, reports everything; B (2): not leading, no R&D figure;
    // C (3): silent; D (4): below scale.
    testkit::zone(
        vec![
            enterprise(1, true, "C3120"),
            enterprise(2, true, "C3990"),
            enterprise(3, true, ""),
            enterprise(4, false, ""),
        ],
        &["C31"],
    )
}

fn state(z: &Zone, cat: &Catalog) -> State {
    let mut st = State::default();
    let a = vec![
        // 100 kWh in the interval ending at midnight: all October. Then a reset: 50 kWh in November.
        register(1000.0, "2026-10-31T23:45:00+08:00"),
        register(1100.0, "2026-11-01T00:00:00+08:00"),
        register(50.0, "2026-11-01T00:15:00+08:00"),
        amount("electricity", "2025-10", 200.0),
        amount("value_added", "2025-10", 100.0),
        amount("value_added", "2026-10", 100.0),
        amount("revenue", "2026-10", 1000.0),
        amount("rd_spend", "2026-10", 20.0),
        amount("land_area", "2026", 10.0),
        amount("gross_output", "2026-10", 150_000.0),
    ];
    st.apply(
        &z.id,
        &id(1),
        &a,
        &[("dt_maturity".into(), DeclaredValue::Integer(3))],
        cat,
    );
    let b = vec![
        amount("value_added", "2026-10", 300.0),
        amount("revenue", "2026-10", 2000.0),
        amount("land_area", "2026", 20.0),
        amount("gross_output", "2026-10", 50_000.0),
    ];
    st.apply(&z.id, &id(2), &b, &[], cat);
    st.apply(&z.id, &id(4), &[amount("revenue", "2026-10", 500.0)], &[], cat);
    st
}

pub(super) const GOALS: &str = r#"
[[goal]]
id = "cov"
set = "t"
name_zh = "x"
name_en = "x"
source = "s"
clause = "c"
kind = "coverage"
condition = "digitally_transformed"
target = 1.0
comparator = ">="

[[goal]]
id = "rd"
set = "t"
name_zh = "x"
name_en = "x"
source = "s"
clause = "c"
kind = "ratio"
numerator = "rd_spend"
denominator = "revenue"
target = 0.0135
comparator = ">="

[[goal]]
id = "leading"
set = "t"
name_zh = "x"
name_en = "x"
source = "s"
clause = "c"
kind = "ratio"
numerator = "value_added"
numerator_filter = "leading_industry"
denominator = "value_added"
target = 0.6
comparator = ">="

[[goal]]
id = "va_mu"
set = "t"
name_zh = "x"
name_en = "x"
source = "s"
clause = "c"
kind = "ratio"
numerator = "value_added"
denominator = "land_area"
target = 80.0
comparator = ">="
unit = "10k_yuan/mu"

[[goal]]
id = "revenue"
set = "t"
name_zh = "x"
name_en = "x"
source = "s"
clause = "c"
kind = "total"
scope = "city"
indicator = "revenue"
target = 28000000.0
comparator = ">"

[[goal]]
id = "big"
set = "t"
name_zh = "x"
name_en = "x"
source = "s"
clause = "c"
kind = "count"
threshold = { indicator = "gross_output", min = 100000.0 }
target = 1.0
comparator = ">="

[[goal]]
id = "zones"
set = "t"
name_zh = "x"
name_en = "x"
source = "s"
clause = "c"
kind = "zone_count"
indicator = "gross_output"
filter = "leading_industry"
threshold = { indicator = "gross_output", min = 100000.0 }
target = 1.0
comparator = ">="

[[goal]]
id = "ei"
set = "t"
name_zh = "x"
name_en = "x"
source = "s"
clause = "c"
kind = "ratio"
numerator = "energy_tce"
denominator = "value_added"
basis = "requested"
comparator = "report"
unit = "tce/10k_yuan"

[[goal]]
id = "ei_trend"
set = "t"
name_zh = "x"
name_en = "x"
source = "s"
clause = "c"
kind = "trend"
of = "ei"
annual = true
target = -0.04
comparator = "<="
"#;

fn rows(level: Level, period: &str) -> Vec<GoalRow> {
    let cat = Catalog::builtin().unwrap();
    let goals = load_goals(GOALS, &cat).unwrap();
    let z = zone();
    let st = state(&z, &cat);
    evaluate(
        &goals.goal,
        &[(&z, st.zones.get(&z.id))],
        level,
        Period::parse(period).unwrap(),
        &cat,
        &GoalSettings::default(),
    )
}

fn row<'a>(rows: &'a [GoalRow], id: &str) -> &'a GoalRow {
    rows.iter().find(|r| r.id == id).unwrap()
}

fn close(a: Option<f64>, b: f64) {
    let a = a.expect("a value");
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}

#[test]
fn every_kind_matches_the_hand_computed_figures() {
    let r = rows(Level::Zone("z".into()), "2026-10");
    // Population: A, B, C (D is below scale).
    let cov = row(&r, "cov");
    assert_eq!(
        (cov.numerator, cov.denominator, cov.unknown, cov.reported),
        (1.0, 3.0, 2, 1)
    );
    assert_eq!(cov.status, Status::NotMet);
    // R&D ÷ revenue: only A has both (20 / 1000); B lacks rd_spend, C everything.
    let rd = row(&r, "rd");
    close(rd.value, 0.02);
    assert_eq!((rd.reported, rd.unknown), (1, 2));
    assert_eq!(rd.period, "2026-01..2026-10", "year to date by default");
    // Leading-industry share of value added: A is C31 (leading) 100, B 300 → 0.25.
    close(row(&r, "leading").value, 0.25);
    // Value added per mu: (100 + 300) / (10 + 20).
    close(row(&r, "va_mu").value, 400.0 / 30.0);
    // Revenue total of the population: A + B (D is out); a city target seen from a zone is a contribution.
    let rev = row(&r, "revenue");
    close(rev.value, 3000.0);
    assert_eq!((rev.unknown, rev.status), (1, Status::Contribution));
    // Enterprises with output ≥ 10亿元: A.
    let big = row(&r, "big");
    close(big.value, 1.0);
    assert_eq!((big.reported, big.unknown, big.status), (2, 1, Status::Met));
    close(row(&r, "zones").value, 1.0);
    // October energy: the 100 kWh interval ending at midnight, not the reset's 50 kWh of November.
    let ei = row(&r, "ei");
    close(ei.value, 100.0 * 0.0001229 / 100.0);
    assert_eq!(ei.period, "2026-10");
    assert_eq!((ei.reported, ei.unknown, ei.status), (1, 2, Status::Reported));
    // Against October 2025 (200 kWh for the same value added): halved.
    let t = row(&r, "ei_trend");
    close(t.value, -0.5);
    assert_eq!(t.status, Status::Met);
    assert_eq!(t.period, "2026-10 vs 2025-10");
}

#[test]
fn november_gets_the_reset_meter_and_city_level_judges_city_targets() {
    let r = rows(Level::City("济源".into()), "2026-11");
    // November has 50 kWh but no value added: no intensity.
    assert_eq!(row(&r, "ei").value, None);
    assert_eq!(row(&r, "ei").status, Status::NoData);
    // At city level the revenue target is judged (3000 is far below 2800亿元).
    assert_eq!(row(&r, "revenue").status, Status::NotMet);
}

#[test]
fn malformed_goal_catalogs_are_refused_with_the_goal_named() {
    let cat = Catalog::builtin().unwrap();
    let bad = GOALS.replace("numerator = \"rd_spend\"", "numerator = \"rd_spending\"");
    assert!(matches!(load_goals(&bad, &cat), Err(GoalError::Invalid { id, .. }) if id == "rd"));
    let bad = GOALS.replace("of = \"ei\"", "of = \"nope\"");
    assert!(matches!(load_goals(&bad, &cat), Err(GoalError::Invalid { id, .. }) if id == "ei_trend"));
    let bad = GOALS.replace("comparator = \"report\"", "comparator = \"=~\"");
    assert!(load_goals(&bad, &cat).is_err());
}

/// Every row of shared/reference/goals-from-seeds.md, copied here so the test
/// does not depend on files outside the repository.
const CHECKLIST: [&str; 56] = [
    "HN27-01", "HN27-02", "HN27-03", "HN27-04", "HN27-05", "HN27-06", "C25-01", "C25-02", "C25-03", "C25-04", "C25-05",
    "C25-06", "C25-07", "HN20-01", "HN20-02", "HN20-03", "HN20-04", "HN20-05", "HN20-06", "HN20-07", "JY27-01",
    "JY27-02", "JY27-03", "JY27-04", "JY27-05", "JY27-06", "JY27-07", "JY27-08", "JY27-09", "JY27-10", "JY27-11",
    "JY27-12", "JY27-13", "JY27-14", "JY27-15", "JY27-16", "JY27-17", "JY27-18", "JY27-19", "JY27-20", "JY27-21",
    "JY27-22", "JY27-23", "PY-01", "PY-02", "PY-03", "PY-04", "PY-05", "PY-06", "PY-07", "PY-08", "PY-09", "PY-10",
    "PY-11", "PY-12", "PY-13",
];

#[test]
fn the_presets_cover_every_checklist_row_as_a_goal_or_a_stated_reason() {
    let cat = Catalog::builtin().unwrap();
    let goals = load_goals(BUILTIN_GOALS, &cat).unwrap();
    for id in CHECKLIST {
        let as_goal = goals
            .goal
            .iter()
            .any(|g| g.id == id || g.id.strip_suffix(['a', 'b', 'c']) == Some(id));
        let excused = goals.not_computable.iter().find(|n| n.id == id);
        assert!(
            as_goal ^ excused.is_some(),
            "{id}: preset {as_goal}, not computable {}",
            excused.is_some()
        );
        if let Some(n) = excused {
            assert!(n.reason.len() > 20, "{id} needs a real reason");
        }
    }
    // Every preset evaluates on an empty zone without panicking, with no data as its status.
    let z = zone();
    let rows = evaluate(
        &goals.goal,
        &[(&z, None)],
        Level::Province,
        Period::Month(2026, 10),
        &cat,
        &GoalSettings::default(),
    );
    assert_eq!(rows.len(), goals.goal.len());
    assert!(rows
        .iter()
        .filter(|r| r.kind != GoalKind::Count && r.kind != GoalKind::ZoneCount)
        .all(|r| r.status == Status::NoData || r.kind == GoalKind::Coverage));
}

const RETROFIT_GOALS: &str = r#"
[[goal]]
id = "retrofit"
set = "t"
name_zh = "x"
name_en = "x"
source = "s"
clause = "c"
kind = "coverage"
condition = "smart_retrofit"
target = 0.6
comparator = ">="

[[goal]]
id = "retrofitted"
set = "t"
name_zh = "x"
name_en = "x"
source = "s"
clause = "c"
kind = "count"
condition = "smart_retrofit"
target = 3.0
comparator = ">="
"#;

#[test]
fn a_declared_no_beats_a_high_maturity_and_the_proxy_share_is_shown() {
    let cat = Catalog::builtin().unwrap();
    let goals = load_goals(RETROFIT_GOALS, &cat).unwrap();
    let z = testkit::zone((1..=5).map(|n| enterprise(n, true, "")).collect(), &[]);
    let mut st = State::default();
    let declare = |st: &mut State, n: u32, retrofit: Option<bool>, maturity: Option<i64>| {
        let mut d: Vec<(String, DeclaredValue)> = Vec::new();
        d.extend(retrofit.map(|b| ("smart_retrofit".to_owned(), DeclaredValue::Bool(b))));
        d.extend(maturity.map(|m| ("dt_maturity".to_owned(), DeclaredValue::Integer(m))));
        st.apply(&z.id, &id(n), &[], &d, &cat);
    };
    declare(&mut st, 1, Some(true), Some(2)); // declared yes
    declare(&mut st, 2, Some(false), Some(4)); // declared no: stays no despite maturity 4
    declare(&mut st, 3, None, Some(3)); // undeclared: the proxy (3 ≥ 3) says yes
    declare(&mut st, 4, None, Some(1)); // undeclared: the proxy (1 < 3) says no
                                        // 5 declares nothing: unknown.
    let rows = evaluate(
        &goals.goal,
        &[(&z, st.zones.get(&z.id))],
        Level::Zone("z".into()),
        Period::Month(2026, 10),
        &cat,
        &GoalSettings::default(),
    );
    // Covered: 1 (declared) and 3 (proxy) of 5 = 0.4, under the 0.6 target.
    // (Flag OR maturity would have counted 2 as well: 3 of 5 = 0.6, "met".)
    let cov = row(&rows, "retrofit");
    assert_eq!(
        (
            cov.numerator,
            cov.denominator,
            cov.numerator_from_proxy,
            cov.unknown,
            cov.reported
        ),
        (2.0, 5.0, 1, 1, 4)
    );
    close(cov.value, 0.4);
    assert_eq!(cov.status, Status::NotMet);
    let count = row(&rows, "retrofitted");
    assert_eq!((count.numerator, count.numerator_from_proxy), (2.0, 1));
    assert_eq!(count.status, Status::NotMet);
}

#[test]
fn every_preset_names_its_plan_as_an_official_does_and_keeps_its_seed_file() {
    let cat = zonesync_proto::Catalog::builtin().unwrap();
    let goals = load_goals(BUILTIN_GOALS, &cat).unwrap();
    let sources = goals
        .goal
        .iter()
        .map(|g| (&g.id, &g.source, &g.seed))
        .chain(goals.not_computable.iter().map(|n| (&n.id, &n.source, &n.seed)));
    for (id, source, seed) in sources {
        assert!(
            !source.ends_with(".txt") && (source.contains("方案") || source.contains("意见")),
            "{id}: source {source:?} is not a plan's title"
        );
        let seed = seed.as_deref().unwrap_or_default();
        let file = seed.strip_suffix(".txt").unwrap_or_default();
        assert!(
            file.len() == 20 && file.as_bytes()[3] == b'_' && file[4..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}: seed {seed:?}"
        );
    }
}
