//! Ingest, message by message and group by group, against a real store.

use super::handle::Answer;
use super::*;
use crate::app::App;
use crate::config::AggregatorConfig;
use crate::testkit::utc;
use rumqttc::{Publish, QoS};
use zonesync_proto::{
    AgentId, Batch, EnterpriseId, OutboxId, Period, Presence, PresenceStatus, Reading, Refusal, ZoneId,
    REFUSED_REUSED_SEQ, WIRE_VERSION,
};

const NOW: &str = "2026-11-23T08:00:00Z";

fn zone() -> ZoneId {
    ZoneId::parse("jiyuan-hitech").expect("zone id")
}
fn agent() -> AgentId {
    AgentId::parse("jy-hitech-gw01").expect("agent id")
}
fn ent() -> EnterpriseId {
    EnterpriseId::from_stored("91419001MA0000001N").expect("credit code")
}

/// An aggregator on the example registry with its store in `dir`.
fn open(dir: &std::path::Path) -> App {
    let registry = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/registry.toml");
    let body = format!(
        "data_dir = {:?}\nregistry = {registry:?}\n[store]\ncache_capacity_bytes = 1048576\n",
        dir.join("data").display().to_string()
    );
    let path = dir.join("aggregator.toml");
    std::fs::write(&path, body).expect("write config");
    App::open(&AggregatorConfig::load(&path).expect("config")).expect("open app")
}

fn gauge(value: f64, ts: &str) -> Reading {
    Reading {
        indicator: "electricity".into(),
        point: "M1".into(),
        value,
        unit: "kWh".into(),
        ts: Some(utc(ts)),
        period: None,
    }
}

fn amount(value: f64, month: u32) -> Reading {
    Reading {
        indicator: "value_added".into(),
        point: String::new(),
        value,
        unit: "10k_yuan".into(),
        ts: None,
        period: Some(Period::Month(2026, month)),
    }
}

fn batch(seq: u64, backfill: bool, readings: Vec<Reading>) -> Batch {
    Batch {
        v: WIRE_VERSION,
        agent: agent(),
        boot: 1,
        outbox: None,
        seq,
        sent_at: utc(NOW),
        zone: zone(),
        enterprise: ent(),
        backfill,
        readings,
        declarations: vec![],
    }
}

/// A group as the reading stage hands it to the ingest loop.
fn read_group(app: &App, group: Group) -> ReadGroup {
    group
        .into_iter()
        .map(|(g, p)| {
            let r = read(&app.validator, &p.topic, &p.payload, utc(NOW));
            (g, p, r)
        })
        .collect()
}

fn send(app: &App, b: &Batch) -> Handled {
    let topic = Topic::data(&b.zone, &b.agent, &b.enterprise);
    handle(&app.ingest(), &topic, &b.to_payload(), utc(NOW)).expect("handled")
}

/// (zone readings, enterprise readings) as the API shows them.
fn counts(app: &App) -> (u64, u64) {
    let st = app.state.read().expect("state");
    let zs = st.zones.get(&zone()).expect("zone state");
    (zs.readings_stored, zs.enterprises.get(&ent()).map_or(0, |e| e.readings))
}

/// The enterprise's reported value added for October 2026, as the state holds it.
fn october_value_added(app: &App) -> Option<f64> {
    let st = app.state.read().expect("state");
    let es = st
        .zones
        .get(&zone())
        .and_then(|z| z.enterprises.get(&ent()))
        .expect("enterprise");
    es.reported
        .get("value_added")
        .and_then(|m| m.get(&Period::Month(2026, 10)))
        .copied()
}

#[test]
fn reading_counts_are_the_same_before_and_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open(dir.path());
    let first = batch(
        1,
        false,
        vec![
            gauge(100.0, "2026-11-23T07:00:00Z"),
            gauge(110.0, "2026-11-23T07:15:00Z"),
            amount(50.0, 10),
        ],
    );
    assert_eq!(send(&app, &first), Handled::Stored);
    // Redelivery of the same batch, then a batch repeating a register
    // unchanged and correcting the month-to-date figure twice in itself.
    assert_eq!(send(&app, &first), Handled::Duplicate);
    let second = batch(
        2,
        false,
        vec![
            gauge(110.0, "2026-11-23T07:15:00Z"),
            amount(55.0, 10),
            amount(56.0, 10),
            gauge(120.0, "2026-11-23T07:30:00Z"),
        ],
    );
    assert_eq!(send(&app, &second), Handled::Stored);
    assert_eq!(counts(&app), (4, 4));
    let m = &app.metrics;
    assert_eq!(m.readings_stored.load(Ordering::Relaxed), 4);
    assert_eq!(m.readings_replaced.load(Ordering::Relaxed), 2);
    assert_eq!(m.readings_duplicate.load(Ordering::Relaxed), 1);
    app.store.flush().expect("flush");
    drop(app);

    let app = open(dir.path());
    assert_eq!(counts(&app), (4, 4));
    assert_eq!(october_value_added(&app), Some(56.0));
}

#[test]
fn backfill_in_order_restates_a_period_figure() {
    // A backlog drained after an outage arrives in the order it was made:
    // its later month-to-date figure is the newer one and replaces the held one.
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open(dir.path());
    let first = batch(10, true, vec![amount(40.0, 10)]);
    assert_eq!(send(&app, &first), Handled::Stored);
    let later = batch(11, true, vec![amount(1240.0, 10)]);
    assert_eq!(send(&app, &later), Handled::Stored);
    assert_eq!(october_value_added(&app), Some(1240.0));
    assert_eq!(app.metrics.backfill_stale.load(Ordering::Relaxed), 0);
}

#[test]
fn a_resent_live_batch_never_restates_what_the_agent_sent_after_it() {
    // After a broker crash the agent resends batches the broker lost; by
    // then later ones may be stored. Not backfilled, but overtaken.
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open(dir.path());
    assert_eq!(send(&app, &batch(7, false, vec![amount(56.0, 10)])), Handled::Stored);
    assert_eq!(send(&app, &batch(5, false, vec![amount(50.0, 10)])), Handled::Stored);
    assert_eq!(october_value_added(&app), Some(56.0));
    assert_eq!(app.metrics.overtaken_stale.load(Ordering::Relaxed), 1);
    assert_eq!(app.metrics.readings_replaced.load(Ordering::Relaxed), 0);
    // In order, a restated figure still replaces the held one.
    assert_eq!(send(&app, &batch(8, false, vec![amount(61.0, 10)])), Handled::Stored);
    assert_eq!(october_value_added(&app), Some(61.0));
    assert_eq!(app.metrics.readings_replaced.load(Ordering::Relaxed), 1);
}

#[test]
fn a_resent_restatement_replaces_older_ones_even_when_later_batches_overtook_it() {
    // Seen in the fault harness (broker SIGKILL, seed 5): the month-to-date
    // figure of seq 20 was lost with the broker and resent after seq 21
    // (meter readings only) was stored. It is newer than the held figure
    // (seq 10), so it must replace it; a still older resend must not.
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open(dir.path());
    assert_eq!(send(&app, &batch(10, false, vec![amount(20.0, 10)])), Handled::Stored);
    let meters = batch(21, false, vec![gauge(120.0, "2026-11-23T07:30:00Z")]);
    assert_eq!(send(&app, &meters), Handled::Stored);
    assert_eq!(send(&app, &batch(20, false, vec![amount(310.0, 10)])), Handled::Stored);
    assert_eq!(october_value_added(&app), Some(310.0));
    assert_eq!(send(&app, &batch(15, false, vec![amount(150.0, 10)])), Handled::Stored);
    assert_eq!(october_value_added(&app), Some(310.0));
    assert_eq!(app.metrics.overtaken_stale.load(Ordering::Relaxed), 1);
    // The rebuilt state agrees.
    app.store.flush().expect("flush");
    drop(app);
    assert_eq!(october_value_added(&open(dir.path())), Some(310.0));
}

#[test]
fn late_registers_between_held_ones_split_consumption_as_a_rebuild_does() {
    // After a broker crash the lost batches are resent after later ones:
    // their registers land between held ones, across a month boundary.
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open(dir.path());
    let kwh = |app: &App, month: u32| {
        let st = app.state.read().expect("state");
        let zs = st.zones.get(&zone()).expect("zone");
        let es = zs.enterprises.get(&ent()).expect("enterprise");
        (
            es.amount("electricity", Period::Month(2026, month)).map(|(v, _)| v),
            es.late_readings,
        )
    };
    let held = batch(
        2,
        false,
        vec![
            gauge(1000.0, "2026-10-31T14:00:00Z"),
            gauge(1080.0, "2026-10-31T19:00:00Z"),
        ],
    );
    assert_eq!(send(&app, &held), Handled::Stored);
    // Held: 22:00 China time on 31 October and 03:00 on 1 November (80 kWh,
    // split 2 h : 3 h by time). Late: 23:00 and 01:00, so in time order
    // October gets 10 + 30 and November 30 + 10.
    let late = batch(
        1,
        false,
        vec![
            gauge(1010.0, "2026-10-31T15:00:00Z"),
            gauge(1070.0, "2026-10-31T17:00:00Z"),
        ],
    );
    assert_eq!(send(&app, &late), Handled::Stored);
    let live = (kwh(&app, 10), kwh(&app, 11));
    // Both arrived after a later register: counted late, split in exactly.
    assert_eq!(live, ((Some(40.0), 2), (Some(40.0), 2)));
    app.store.flush().expect("flush");
    drop(app);
    let rebuilt = open(dir.path());
    assert_eq!((kwh(&rebuilt, 10), kwh(&rebuilt, 11)), live);
}

#[test]
fn a_group_confirms_stored_duplicate_and_refused_batches_to_their_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open(dir.path());
    let topic = Topic::data(&zone(), &agent(), &ent());
    let publish = |payload: Vec<u8>| (1u64, Publish::new(&topic, QoS::AtLeastOnce, payload));
    let good = batch(3, false, vec![amount(50.0, 10)]).to_payload();
    let mut unknown_unit = batch(4, false, vec![amount(50.0, 10)]);
    unknown_unit.readings[0].unit = "furlong".into();
    let handled = |seq, payload: &[u8]| Answer::Handled {
        seq,
        digest: zonesync_proto::digest(payload),
    };
    let answers = vec![
        handled(3, &good),
        handled(3, &good),
        handled(4, &unknown_unit.to_payload()),
    ];
    let group = vec![
        publish(good.clone()),
        publish(good),
        publish(unknown_unit.to_payload()),
        publish(b"{\"seq\": tru".to_vec()),
        (
            1,
            Publish::new(Topic::state(&zone(), &agent()), QoS::AtLeastOnce, b"{}".to_vec()),
        ),
    ];
    let (done, confirms, _, failed) = handle_group(&app.ingest(), read_group(&app, group), utc(NOW));
    assert_eq!(done.len(), 5, "everything handled is acknowledged");
    assert!(failed.is_empty());
    let mut expected = Confirms::new();
    expected.insert((zone(), agent(), None), answers);
    assert_eq!(
        confirms, expected,
        "truncated JSON and presence carry no seq to confirm"
    );
}

#[test]
fn backfill_never_replaces_a_newer_live_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open(dir.path());
    let live = batch(10, false, vec![gauge(120.0, "2026-11-23T07:30:00Z"), amount(56.0, 10)]);
    assert_eq!(send(&app, &live), Handled::Stored);
    // Drained after an outage: an older register, a reading stored live at
    // the same instant with another value, and the period figure as it was
    // before the live correction.
    let old = batch(
        4,
        true,
        vec![
            gauge(100.0, "2026-11-23T07:00:00Z"),
            gauge(119.0, "2026-11-23T07:30:00Z"),
            amount(50.0, 10),
        ],
    );
    assert_eq!(send(&app, &old), Handled::Stored);
    let check = |app: &App| {
        let st = app.state.read().expect("state");
        let zs = st.zones.get(&zone()).expect("zone");
        let es = zs.enterprises.get(&ent()).expect("enterprise");
        let latest = es.latest.get("electricity", "M1").copied();
        assert_eq!(
            latest,
            Some((zonesync_proto::ReadingTime::Ts(utc("2026-11-23T07:30:00Z")), 120.0))
        );
        assert_eq!(
            es.reported
                .get("value_added")
                .and_then(|m| m.get(&Period::Month(2026, 10))),
            Some(&56.0)
        );
        assert_eq!(
            es.points.get("electricity", "M1").and_then(|p| p.last),
            Some(utc("2026-11-23T07:30:00Z"))
        );
        assert_eq!(zs.readings_stored, 3);
    };
    check(&app);
    assert_eq!(app.metrics.readings_backfilled.load(Ordering::Relaxed), 1);
    assert_eq!(app.metrics.backfill_stale.load(Ordering::Relaxed), 2);
    {
        let st = app.state.read().expect("state");
        let a = st
            .zones
            .get(&zone())
            .and_then(|z| z.agents.get(&agent()))
            .expect("agent");
        assert_eq!(a.backfilled_readings, 1);
    }
    app.store.flush().expect("flush");
    drop(app);
    // What was kept is what the store holds.
    check(&open(dir.path()));
}

fn presence(boot: u64, next_seq: u64, dropped: u64) -> Presence {
    presence_sent(boot, next_seq, dropped, 0)
}

fn presence_sent(boot: u64, next_seq: u64, dropped: u64, dropped_sent: u64) -> Presence {
    Presence {
        v: WIRE_VERSION,
        agent: agent(),
        zone: zone(),
        status: PresenceStatus::Online,
        boot,
        at: utc(NOW),
        outbox: None,
        next_seq,
        version: "test".into(),
        enterprises: vec![ent()],
        dropped_readings: dropped,
        dropped_sent_readings: dropped_sent,
        clock_offset_ms: None,
        broker_denied_batches: 0,
    }
}

fn say(app: &App, p: &Presence, at: DateTime<Utc>) {
    let topic = Topic::state(&p.zone, &p.agent);
    assert_eq!(
        handle(&app.ingest(), &topic, &p.to_payload(), at).expect("handled"),
        Handled::Presence
    );
}

#[test]
fn dropped_readings_are_kept_per_agent_and_shown_as_lost() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open(dir.path());
    say(&app, &presence(1, 1, 7), utc(NOW));
    say(&app, &presence_sent(2, 1, 12, 5), utc(NOW));
    let zone_reg = app.registry.zone(&zone()).expect("zone").clone();
    let report = |app: &App| {
        let st = app.state.read().expect("state");
        crate::quality::report(
            &zone_reg,
            st.zones.get(&zone()),
            Period::Month(2026, 11),
            utc(NOW),
            &app.catalog,
            &app.quality,
        )
    };
    let r = report(&app);
    assert_eq!(r.readings_dropped_at_source, 12);
    assert_eq!(r.readings_dropped_sent_at_source, 5);
    assert_eq!(
        r.agents.iter().map(|a| a.dropped_readings).collect::<Vec<_>>(),
        vec![12]
    );
    let text = {
        let st = app.state.read().expect("state");
        crate::metrics::render_agents(&st)
    };
    assert!(
        text.contains("zonesync_aggregator_agent_dropped_readings{zone=\"jiyuan-hitech\",agent=\"jy-hitech-gw01\"} 12")
    );
    assert!(text.contains(
        "zonesync_aggregator_agent_dropped_sent_readings{zone=\"jiyuan-hitech\",agent=\"jy-hitech-gw01\"} 5"
    ));
    app.store.flush().expect("flush");
    drop(app);
    assert_eq!(report(&open(dir.path())).readings_dropped_at_source, 12);
}

#[test]
fn an_agents_measured_clock_offset_is_kept_and_flagged_beyond_the_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open(dir.path());
    let zone_reg = app.registry.zone(&zone()).expect("zone").clone();
    let liveness = |app: &App| {
        let st = app.state.read().expect("state");
        let r = crate::quality::report(
            &zone_reg,
            st.zones.get(&zone()),
            Period::Month(2026, 11),
            utc(NOW),
            &app.catalog,
            &app.quality,
        );
        let a = &r.agents[0];
        (a.clock_offset_ms, a.clock_off, a.flagged)
    };
    let mut p = presence(1, 1, 0);
    p.clock_offset_ms = Some(1_500);
    say(&app, &p, utc(NOW));
    assert_eq!(liveness(&app), (Some(1_500), false, false));
    // A later presence without a measurement keeps the last one.
    say(&app, &presence(1, 1, 0), utc(NOW));
    assert_eq!(liveness(&app).0, Some(1_500));
    p.clock_offset_ms = Some(-61_000);
    say(&app, &p, utc(NOW));
    assert_eq!(liveness(&app), (Some(-61_000), true, true));
}

#[test]
fn seqs_a_presence_announced_but_never_stored_are_listed_after_the_grace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open(dir.path());
    let grace = app.quality.missing_seq_grace_secs;
    let t0 = utc(NOW);
    for seq in [1, 2, 3] {
        assert_eq!(send(&app, &batch(seq, false, vec![])), Handled::Stored);
    }
    // The agent restarts (boot 2) and says it numbered up to 7: 4..=7 are owed.
    say(&app, &presence(2, 8, 0), t0);
    let missing = |app: &App, at: DateTime<Utc>| {
        let st = app.state.read().expect("state");
        st.zones
            .get(&zone())
            .and_then(|z| z.agents.get(&agent()))
            .and_then(|a| a.missing_seqs(at, grace))
    };
    // Within the grace the agent may still be draining its outbox.
    assert_eq!(missing(&app, t0), None);
    let later = t0 + chrono::Duration::seconds(grace);
    assert_eq!(missing(&app, later), Some((4, 7)));
    // 7 arrives: nothing is owed after it, and 4..=6 become an ordinary
    // gap between stored batches, counted once.
    let topic = Topic::data(&zone(), &agent(), &ent());
    let b = Batch {
        boot: 2,
        ..batch(7, false, vec![])
    };
    assert_eq!(
        handle(&app.ingest(), &topic, &b.to_payload(), later).expect("handled"),
        Handled::Stored
    );
    assert_eq!(missing(&app, later + chrono::Duration::seconds(grace)), None);
    {
        let st = app.state.read().expect("state");
        let a = st
            .zones
            .get(&zone())
            .and_then(|z| z.agents.get(&agent()))
            .expect("agent");
        assert_eq!(a.seq_gaps, 3);
    }
    // A reinstalled outbox (boot back to 1, numbers from the clock) is no gap.
    say(&app, &presence(1, 1_795_443_515_176_888, 0), later);
    assert_eq!(missing(&app, later + chrono::Duration::seconds(2 * grace)), None);
}

mod edges;
mod identity;
