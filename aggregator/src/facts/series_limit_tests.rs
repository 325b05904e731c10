//! The series limits against the ledger: which readings of a batch would
//! pass a limit, and that only what is applied counts.

use super::{Ledger, SeriesLimit, SeriesLimits};
use chrono::{DateTime, Utc};
use zonesync_proto::{Accepted, AgentId, CanonicalReading, Catalog, EnterpriseId, Period, ReadingTime, ZoneId};

const LIMITS: SeriesLimits = SeriesLimits {
    per_enterprise: 3,
    per_agent: 4,
};

fn at() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap_or_default()
}

fn gauge(point: &str) -> CanonicalReading {
    CanonicalReading {
        indicator: "electricity".into(),
        point: point.into(),
        value: 1.0,
        at: ReadingTime::Ts(at()),
    }
}

fn batch(agent: &str, enterprise: usize, seq: u64, readings: Vec<CanonicalReading>) -> Accepted {
    let e = ["91419001MA0000001N", "91419001MA0000002R"][enterprise];
    Accepted {
        agent: AgentId::parse(agent).unwrap(),
        boot: 1,
        outbox: None,
        seq,
        digest: format!("{agent}-{seq}"),
        sent_at: at(),
        zone: ZoneId::parse("z").unwrap(),
        enterprise: EnterpriseId::from_stored(e).unwrap(),
        backfill: false,
        readings,
        declarations: Vec::new(),
        refused: Vec::new(),
    }
}

/// Applies `a` without the readings over the limits; returns what was over.
fn take(ledger: &mut Ledger, mut a: Accepted) -> Vec<(usize, SeriesLimit)> {
    let over = ledger.over_series_limits(&a, LIMITS);
    let refused: Vec<usize> = over.iter().map(|(i, _)| *i).collect();
    a.readings = a
        .readings
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !refused.contains(i))
        .map(|(_, r)| r)
        .collect();
    let catalog = Catalog::builtin().unwrap();
    ledger.apply(&a, &catalog).expect("a new batch");
    over
}

#[test]
fn only_new_series_past_a_limit_are_refused_and_only_applied_ones_count() {
    let mut l = Ledger::default();
    // Five new points for E1: the fourth and fifth would pass its limit of 3.
    let five = ["P1", "P2", "P3", "P4", "P5"].map(gauge).to_vec();
    assert_eq!(
        take(&mut l, batch("gw-a", 0, 1, five)),
        vec![(3, SeriesLimit::Enterprise(3)), (4, SeriesLimit::Enterprise(3))]
    );
    // Held series take new values whatever the limit; the same new point
    // twice in a batch is one series.
    assert_eq!(
        take(&mut l, batch("gw-a", 0, 2, ["P1", "P3"].map(gauge).to_vec())),
        vec![]
    );
    assert_eq!(
        take(&mut l, batch("gw-a", 0, 3, ["P4", "P4"].map(gauge).to_vec())),
        vec![(0, SeriesLimit::Enterprise(3)), (1, SeriesLimit::Enterprise(3))]
    );
    // gw-a brought in 3; in E2 it may bring in one more, its limit being 4.
    assert_eq!(
        take(&mut l, batch("gw-a", 1, 4, ["Q1", "Q2", "Q1"].map(gauge).to_vec())),
        vec![(1, SeriesLimit::Agent(4))]
    );
    // Another agent: E1's held points are fine, a new one is not; in E2 a
    // period figure is a series of its own (value added has no point).
    assert_eq!(
        take(&mut l, batch("gw-b", 0, 1, ["P2", "P9"].map(gauge).to_vec())),
        vec![(1, SeriesLimit::Enterprise(3))]
    );
    let va = CanonicalReading {
        indicator: "value_added".into(),
        point: Default::default(),
        value: 10.0,
        at: ReadingTime::Period(Period::Month(2026, 10)),
    };
    assert_eq!(take(&mut l, batch("gw-b", 1, 2, vec![va, gauge("Q2")])), vec![]);
    // E2 now holds Q1, value added and Q2: full.
    assert_eq!(
        take(&mut l, batch("gw-b", 1, 3, vec![gauge("Q3")])),
        vec![(0, SeriesLimit::Enterprise(3))]
    );
    assert_eq!(SeriesLimit::Agent(4).label(), "series_limit_agent");
}
