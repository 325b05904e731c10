//! The read model fed through the ledger.

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn reg(v: f64, ts: &str) -> CanonicalReading {
    CanonicalReading {
        indicator: "electricity".into(),
        point: "M1".into(),
        value: v,
        at: ReadingTime::Ts(utc(ts)),
    }
}

/// Feeds readings one batch each, in the order given, and returns the enterprise's state.
fn fed(readings: &[CanonicalReading]) -> EnterpriseState {
    let cat = Catalog::builtin().expect("catalog");
    let zone = ZoneId::parse("z").expect("zone");
    let e = crate::testkit::id(1);
    let mut st = State::default();
    for r in readings {
        st.apply(&zone, &e, std::slice::from_ref(r), &[], &cat);
    }
    st.zones
        .remove(&zone)
        .and_then(|mut z| z.enterprises.remove(&e))
        .unwrap_or_default()
}

#[test]
fn registers_become_monthly_amounts_with_resets_and_late_readings() {
    let e = fed(&[
        reg(1000.0, "2026-10-31T23:45:00+08:00"),
        reg(1010.0, "2026-11-01T00:00:00+08:00"),
        reg(1030.0, "2026-11-01T00:15:00+08:00"),
        reg(5.0, "2026-11-01T00:30:00+08:00"),    // meter replaced
        reg(1020.0, "2026-11-01T00:05:00+08:00"), // late: split in exactly
    ]);
    assert_eq!(e.amount("electricity", Period::Month(2026, 10)).unwrap().0, 10.0);
    assert_eq!(e.amount("electricity", Period::Month(2026, 11)).unwrap().0, 25.0);
    assert_eq!(e.amount("electricity", Period::Year(2026)).unwrap().0, 35.0);
    assert_eq!((e.counter_resets, e.late_readings), (1, 1));
}

#[test]
fn registers_in_any_arrival_order_give_the_totals_of_time_order() {
    let regs = [
        reg(1000.0, "2026-10-31T23:00:00+08:00"),
        reg(1040.0, "2026-11-01T01:00:00+08:00"),
        reg(1050.0, "2026-11-01T02:00:00+08:00"),
        reg(1080.0, "2026-11-01T03:00:00+08:00"),
    ];
    let order = |ix: [usize; 4]| fed(&ix.map(|i| regs[i].clone()));
    let in_order = order([0, 1, 2, 3]);
    // Live first (the newest registers), then the backlog drained newest
    // first; and registers arriving between held ones.
    let live_first = order([2, 3, 1, 0]);
    let between = order([0, 3, 2, 1]);
    let amount = |e: &EnterpriseState, p| e.amount("electricity", p).map(|(v, _)| v);
    for p in [Period::Month(2026, 10), Period::Month(2026, 11), Period::Year(2026)] {
        assert_eq!(amount(&live_first, p), amount(&in_order, p), "{p}");
        assert_eq!(amount(&between, p), amount(&in_order, p), "{p}");
    }
    assert_eq!(amount(&in_order, Period::Month(2026, 10)), Some(20.0));
    assert_eq!(amount(&between, Period::Year(2026)), Some(80.0));
    assert_eq!((live_first.late_readings, between.late_readings), (2, 2));
}

#[test]
fn reported_amounts_win_over_metered_and_months_sum_to_quarters() {
    let va = |m, v| CanonicalReading {
        indicator: "value_added".into(),
        point: Default::default(),
        value: v,
        at: ReadingTime::Period(Period::Month(2026, m)),
    };
    let e = fed(&[va(7, 10.0), va(8, 20.0)]);
    assert_eq!(
        e.amount("value_added", Period::Quarter(2026, 3)),
        Some((30.0, AmountSource::ReportedMonths))
    );
    assert_eq!(e.amount("value_added", Period::Month(2026, 9)), None);
}
