//! The center against the oracle: one process holding every zone's data
//! (`rollup_table`, itself checked against the full scan). Zones are fed
//! random batches; their snapshots reach the center shuffled, duplicated
//! and interleaved with older ones, and its tables must still equal the
//! oracle's field by field.

use super::*;
use crate::federation::center::tables::{table, Standing};
use crate::federation::snapshot::{cells_for, message, take};
use crate::goals::incremental::{rollup_table, Tallies};
use crate::goals::model_tests::{declaration, feed, full_month, goals, period_amount, zone, Meters};
use crate::goals::{Asked, Level, SpanChoice};
use crate::state::{State, ZoneState};
use crate::testkit::{id, utc};
use zonesync_proto::rng::SplitMix64 as Rng;
use zonesync_proto::{Catalog, Period};

struct World {
    cat: Catalog,
    goals: Vec<GoalDef>,
    zones: Vec<Zone>,
    state: State,
    tallies: Tallies,
    asks: Vec<Asked>,
}

const PERIOD: Period = Period::Month(2026, 10);

/// Three zones: two of 济源, one of 濮阳, the last one serving one goal set only.
fn world() -> World {
    let cat = Catalog::builtin().unwrap();
    let goals = goals(&cat);
    let mut zones = vec![zone(), zone(), zone()];
    zones[1].id = ZoneId::parse("x").unwrap();
    zones[2].id = ZoneId::parse("y").unwrap();
    zones[2].city = "濮阳".into();
    zones[2].goal_sets = vec![goals[0].set.clone()];
    let settings = GoalSettings::default();
    let tallies = Tallies::for_zones(&zones, &goals, &cat, &settings);
    let mut state = State::default();
    for z in &zones {
        state.zone_mut(&z.id);
    }
    let asks = vec![
        Asked::basis(PERIOD),
        Asked::new(PERIOD, SpanChoice::Month).unwrap(),
        Asked::new(PERIOD, SpanChoice::Year).unwrap(),
    ];
    World {
        cat,
        goals,
        zones,
        state,
        tallies,
        asks,
    }
}

impl World {
    fn step(&mut self, r: &mut Rng, meters: &mut Meters) -> usize {
        let zi = r.below(3) as usize;
        let e = r.below(8) as usize;
        let mut readings = vec![
            meters.reading(r, e),
            period_amount(r, &["value_added", "gross_output", "revenue", "tax", "land_area"]),
        ];
        readings.extend(full_month(r));
        let z = self.zones[zi].clone();
        feed(
            &mut self.state,
            &self.tallies,
            &z,
            &id(e as u32 + 1),
            &readings,
            &[declaration(r)],
            &self.cat,
        );
        zi
    }

    fn snapshot(&self, zi: usize, at: DateTime<Utc>) -> ZoneTallies {
        let z = &self.zones[zi].id;
        let cells = cells_for(&self.goals, &self.asks, &GoalSettings::default());
        let taken = take(&self.state, &self.tallies, z, &cells).unwrap();
        message(z, 1, taken, &self.goals, &cells, &GoalSettings::default(), at, at)
    }

    fn center(&self) -> Merge {
        Merge::new(self.zones.clone(), self.goals.clone().into(), GoalSettings::default())
    }

    /// The oracle's rows for `level`.
    fn oracle(&self, level: &Level, asked: Asked) -> Vec<crate::goals::GoalRow> {
        let zs: Vec<(&Zone, &ZoneState)> = self
            .zones
            .iter()
            .filter(|z| match level {
                Level::City(c) => &z.city == c,
                _ => true,
            })
            .map(|z| (z, self.state.zones.get(&z.id).unwrap()))
            .collect();
        rollup_table(&self.tallies, &zs, &self.goals, &GoalSettings::default(), level, asked).unwrap()
    }

    fn assert_equal(&self, m: &Merge, now: DateTime<Utc>, what: &str) {
        for level in [Level::City("济源".into()), Level::City("濮阳".into()), Level::Province] {
            for &asked in &self.asks {
                let t = table(m, &level, asked, now, 3600).unwrap();
                assert_eq!(t.completeness.missing, 0, "{what}");
                let oracle = self.oracle(&level, asked);
                assert_eq!(t.rows.len(), oracle.len(), "{what}: {level:?} {asked:?}");
                for (c, o) in t.rows.iter().zip(&oracle) {
                    assert_eq!(c, o, "{what}: {level:?} {asked:?} goal {}", o.id);
                    assert_eq!(c.value.map(f64::to_bits), o.value.map(f64::to_bits), "{what}: {}", o.id);
                }
            }
        }
    }
}

fn t0() -> DateTime<Utc> {
    utc("2026-11-02T08:00:00+08:00")
}

#[test]
fn shuffled_duplicated_and_replayed_snapshots_give_the_oracles_tables() {
    let mut w = world();
    let mut r = Rng::new(18);
    let mut meters = Meters::default();
    let mut sent: Vec<ZoneTallies> = (0..3).map(|zi| w.snapshot(zi, t0())).collect();
    for step in 0..60 {
        let zi = w.step(&mut r, &mut meters);
        if step % 3 == 0 {
            sent.push(w.snapshot(zi, t0() + chrono::Duration::seconds(step + 1)));
        }
    }
    for zi in 0..3 {
        sent.push(w.snapshot(zi, t0() + chrono::Duration::seconds(100)));
    }
    // Delivered in random order, with every third one again later (a replay).
    let mut order: Vec<usize> = (0..sent.len()).collect();
    order.extend((0..sent.len()).step_by(3));
    for i in (1..order.len()).rev() {
        order.swap(i, r.below(i as u64 + 1) as usize);
    }
    let mut m = w.center();
    let mut unchanged = 0;
    for i in order {
        let msg = sent[i].clone();
        let subject = msg.zone.to_string();
        match m.offer(Some(&subject), msg, Arrival::Live(t0())) {
            Outcome::Refused(why) => panic!("refused: {why}"),
            Outcome::Unchanged => unchanged += 1,
            Outcome::Applied(_) => {}
        }
    }
    assert!(unchanged > 0, "some deliveries were older or repeated");
    w.assert_equal(&m, t0(), "after shuffled delivery");
    // Every message once more, in order: nothing moves.
    let before = table(&m, &Level::Province, w.asks[0], t0(), 3600).unwrap();
    for msg in sent.clone() {
        let subject = msg.zone.to_string();
        assert_eq!(m.offer(Some(&subject), msg, Arrival::Live(t0())), Outcome::Unchanged);
    }
    assert_eq!(table(&m, &Level::Province, w.asks[0], t0(), 3600).unwrap(), before);
}

#[test]
fn an_older_snapshot_after_a_newer_one_moves_nothing_back() {
    let mut w = world();
    let mut r = Rng::new(7);
    let mut meters = Meters::default();
    let old = w.snapshot(0, t0());
    let mut new = old.clone();
    for _ in 0..100 {
        w.step(&mut r, &mut meters);
        new = w.snapshot(0, t0() + chrono::Duration::seconds(5));
        if new.cells != old.cells {
            break;
        }
    }
    assert!(new.version > old.version);
    assert_ne!(new.cells, old.cells, "the steps changed zone z's tallies");
    let mut m = w.center();
    for zi in 1..3 {
        m.offer(None, w.snapshot(zi, t0()), Arrival::Live(t0()));
    }
    assert!(matches!(m.offer(None, new, Arrival::Live(t0())), Outcome::Applied(_)));
    assert_eq!(m.offer(None, old, Arrival::Live(t0())), Outcome::Unchanged);
    w.assert_equal(&m, t0(), "newest first");
}

#[test]
fn refusals_are_counted_with_their_reason_and_change_nothing() {
    let w = world();
    let mut m = w.center();
    let good = w.snapshot(0, t0());
    assert!(matches!(
        m.offer(Some("z"), good.clone(), Arrival::Live(t0())),
        Outcome::Applied(_)
    ));
    let before = table(&m, &Level::Province, w.asks[0], t0(), 3600).unwrap();

    let mut stranger = good.clone();
    stranger.zone = ZoneId::parse("nowhere").unwrap();
    assert_eq!(
        m.offer(Some("nowhere"), stranger, Arrival::Live(t0())),
        Outcome::Refused(Refusal::UnknownZone("nowhere".into()))
    );
    // A zone's credentials used to send another zone's figures.
    let mut forged = good.clone();
    forged.version += 10;
    forged.cells[0].tally.in_scope += 1000;
    assert!(matches!(
        m.offer(Some("x"), forged.clone(), Arrival::Live(t0())),
        Outcome::Refused(Refusal::WrongSubject { .. })
    ));
    let mut settings = good.clone();
    settings.version += 1;
    settings.settings.dt_min_maturity = 9;
    assert_eq!(
        m.offer(Some("z"), settings, Arrival::Live(t0())),
        Outcome::Refused(Refusal::Settings(good.zone.clone()))
    );
    let mut goal = good.clone();
    goal.version += 1;
    goal.cells[0].goal = "XX-99".into();
    assert!(matches!(
        m.offer(None, goal, Arrival::Live(t0())),
        Outcome::Refused(Refusal::UnknownGoal { .. })
    ));
    let mut count = good.clone();
    count.version += 1;
    count.cells[1].tally.reported = usize::MAX;
    assert!(matches!(
        m.offer(None, count, Arrival::Live(t0())),
        Outcome::Refused(Refusal::Count { .. })
    ));
    let mut conflict = good.clone();
    conflict.cells[2].tally.unknown += 1;
    assert!(matches!(
        m.offer(None, conflict, Arrival::Live(t0())),
        Outcome::Refused(Refusal::Conflict { .. })
    ));
    let mut schema = good.clone();
    schema.schema = 2;
    assert_eq!(
        m.offer(None, schema, Arrival::Live(t0())),
        Outcome::Refused(Refusal::Schema(2))
    );

    assert_eq!(table(&m, &Level::Province, w.asks[0], t0(), 3600).unwrap(), before);
    let counted: u64 = m.refused.values().sum();
    assert_eq!(counted, 7);
    assert_eq!(m.refused.get("unknown_zone"), Some(&1));
    assert_eq!(m.held(&good.zone).unwrap().refused, 6, "the six naming zone z");
}

#[test]
fn a_stale_zone_keeps_its_last_figures_with_their_age_and_a_silent_one_is_named_missing() {
    let mut w = world();
    let mut r = Rng::new(3);
    let mut meters = Meters::default();
    for _ in 0..20 {
        w.step(&mut r, &mut meters);
    }
    let mut m = w.center();
    let data_at = t0() - chrono::Duration::seconds(30);
    for zi in 0..3 {
        let mut msg = w.snapshot(zi, t0());
        msg.data_at = data_at;
        // Zone y was last heard ten minutes ago, though its clock says otherwise:
        // staleness goes by the center's clock.
        let heard = if zi == 2 {
            t0() - chrono::Duration::seconds(600)
        } else {
            t0()
        };
        m.offer(None, msg, Arrival::Live(heard));
    }
    let now = t0() + chrono::Duration::seconds(10);
    let t = table(&m, &Level::Province, w.asks[0], now, 300).unwrap();
    let y = t.zones.iter().find(|z| z.zone.as_str() == "y").unwrap();
    assert_eq!(y.standing, Standing::Stale);
    assert_eq!(y.data_age_s, Some(40));
    assert_eq!(y.heard_age_s, Some(610));
    assert_eq!(
        (t.completeness.fresh, t.completeness.stale, t.completeness.missing),
        (2, 1, 0)
    );
    // Stale, not zero: its last figures are in, and the tables equal the oracle.
    assert_eq!(t.rows, w.oracle(&Level::Province, w.asks[0]));

    // A zone never heard from is left out and named; a period nobody sent is missing everywhere.
    let mut m = w.center();
    m.offer(None, w.snapshot(0, t0()), Arrival::Live(t0()));
    let t = table(&m, &Level::City("济源".into()), w.asks[0], now, 300).unwrap();
    assert_eq!(t.completeness.missing, 1);
    let x = t.zones.iter().find(|z| z.zone.as_str() == "x").unwrap();
    assert_eq!((x.standing, x.version), (Standing::Missing, None));
    let other = Asked::basis(Period::Month(2026, 3));
    let t = table(&m, &Level::Province, other, now, 300).unwrap();
    assert_eq!(t.completeness.missing, 3);
    assert!(t.rows.is_empty());
}

#[test]
fn the_parts_behind_a_figure_add_up_to_it() {
    let mut w = world();
    let mut r = Rng::new(11);
    let mut meters = Meters::default();
    for _ in 0..30 {
        w.step(&mut r, &mut meters);
    }
    let mut m = w.center();
    for zi in 0..3 {
        m.offer(None, w.snapshot(zi, t0()), Arrival::Live(t0()));
    }
    let t = table(&m, &Level::City("济源".into()), w.asks[0], t0(), 300).unwrap();
    let mut checked = 0;
    for row in t.rows.iter().filter(|r| r.kind == crate::goals::GoalKind::Coverage) {
        let parts = &t.parts[&row.id];
        assert_eq!(parts.len(), 2, "{}", row.id);
        assert_eq!(parts.iter().map(|p| p.in_scope).sum::<usize>(), row.in_scope);
        assert_eq!(parts.iter().map(|p| p.numerator).sum::<f64>(), row.numerator);
        checked += 1;
    }
    assert!(checked > 3);
}

#[test]
fn a_reset_store_s_new_epoch_wins_over_the_old_higher_version_and_an_old_epoch_replay_is_refused() {
    let mut w = world();
    let mut r = Rng::new(5);
    let mut meters = Meters::default();
    for _ in 0..40 {
        w.step(&mut r, &mut meters);
    }
    let mut m = w.center();
    for zi in 0..3 {
        m.offer(None, w.snapshot(zi, t0()), Arrival::Live(t0()));
    }
    let old = w.snapshot(0, t0());
    assert!(old.version > 2, "zone z has a history: {}", old.version);

    // Zone z's store is wiped: its version counts from zero again, its
    // figures are those of an empty store, under a later epoch.
    let z = w.zones[0].clone();
    w.state.zones.remove(&z.id);
    w.state.zone_mut(&z.id);
    w.tallies = Tallies::for_zones(&w.zones, &w.goals, &w.cat, &GoalSettings::default());
    let mut fresh = w.snapshot(0, t0() + chrono::Duration::seconds(10));
    fresh.epoch = 2;
    assert!(fresh.version < old.version);
    assert_ne!(fresh.cells, old.cells);
    assert!(matches!(
        m.offer(None, fresh.clone(), Arrival::Live(t0())),
        Outcome::Applied(_)
    ));
    let held = m.held(&z.id).unwrap().key.unwrap();
    assert_eq!((held.epoch, held.version), (2, fresh.version));
    for c in &fresh.cells {
        let gi = m.goals().iter().position(|g| g.id == c.goal).unwrap();
        assert_eq!(m.cell(&z.id, gi, c.span.0), Some(&c.tally), "{} {:?}", c.goal, c.span);
    }

    // The old store's last snapshot replayed (the stream still holds it): refused, counted, nothing moves.
    let before = table(&m, &Level::Province, w.asks[0], t0(), 3600).unwrap();
    let mut replay = old.clone();
    replay.published_at = t0() + chrono::Duration::seconds(20);
    assert_eq!(
        m.offer(Some("z"), replay, Arrival::Live(t0())),
        Outcome::Refused(Refusal::OldEpoch {
            zone: z.id.clone(),
            epoch: 1,
            held: 2
        })
    );
    assert_eq!(m.refused.get("old_epoch"), Some(&1));
    assert_eq!(m.held(&z.id).unwrap().refused, 1);
    assert_eq!(table(&m, &Level::Province, w.asks[0], t0(), 3600).unwrap(), before);
}
