//! Batch identity and numbering: forged and reused sequence numbers, a
//! reinstalled outbox, clocks far ahead, presence figures at their limits.

use super::*;

fn outbox(name: &str) -> OutboxId {
    OutboxId::parse(&format!("outbox-{name}")).expect("outbox id")
}

fn batch_in(ob: &str, seq: u64, readings: Vec<Reading>) -> Batch {
    Batch {
        outbox: Some(outbox(ob)),
        ..batch(seq, false, readings)
    }
}

fn announce(app: &App, ob: &str, next_seq: u64) {
    let p = Presence {
        outbox: Some(outbox(ob)),
        ..presence(1, next_seq, 0)
    };
    say(app, &p, utc(NOW));
}

fn dead_labels(app: &App) -> Vec<String> {
    let mut v: Vec<String> = app
        .dead_letters
        .list(100, None)
        .expect("dead letters")
        .into_iter()
        .flat_map(|d| d.labels)
        .collect();
    v.sort();
    v
}

fn agent_state(app: &App) -> crate::state::AgentState {
    let st = app.state.read().expect("state");
    st.zones
        .get(&zone())
        .and_then(|z| z.agents.get(&agent()))
        .cloned()
        .expect("agent")
}

#[test]
fn a_forged_seq_at_u64_max_is_refused_and_later_corrections_still_win() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open(dir.path());
    announce(&app, "a", 5);
    assert_eq!(send(&app, &batch_in("a", 4, vec![amount(20.0, 10)])), Handled::Stored);
    let forged = batch_in("a", u64::MAX, vec![amount(999.0, 10)]);
    assert_eq!(send(&app, &forged), Handled::Refused);
    assert_eq!(october_value_added(&app), Some(20.0));
    assert_eq!(send(&app, &batch_in("a", 5, vec![amount(30.0, 10)])), Handled::Stored);
    assert_eq!(october_value_added(&app), Some(30.0));
    assert_eq!(agent_state(&app).refused_seq_ahead, 1);
    assert_eq!(dead_labels(&app), vec!["seq_ahead".to_owned()]);
    app.store.flush().expect("flush");
    drop(app);
    let app = open(dir.path());
    assert_eq!(october_value_added(&app), Some(30.0));
    // Still refused after a restart, and still no panic.
    assert_eq!(send(&app, &forged), Handled::Refused);
    assert_eq!(send(&app, &batch_in("a", 6, vec![amount(31.0, 10)])), Handled::Stored);
    assert_eq!(october_value_added(&app), Some(31.0));
}

#[test]
fn a_reinstalled_gateway_restates_what_its_fast_clock_outbox_sent() {
    // The first outbox was made while the clock ran years ahead (older
    // agents started their numbers at the clock in µs).
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open(dir.path());
    let fast = 1_900_000_000_000_000;
    announce(&app, "fast", fast);
    let old = batch_in("fast", fast - 1, vec![amount(50.0, 10)]);
    assert_eq!(send(&app, &old), Handled::Stored);
    // Reinstalled with the right clock: a new outbox numbering from 1.
    announce(&app, "fresh", 1);
    assert_eq!(
        send(&app, &batch_in("fresh", 1, vec![amount(60.0, 10)])),
        Handled::Stored
    );
    assert_eq!(october_value_added(&app), Some(60.0));
    assert_eq!(
        send(&app, &batch_in("fresh", 2, vec![amount(61.0, 10)])),
        Handled::Stored
    );
    // A late redelivery of the old outbox's batch changes nothing.
    assert_eq!(send(&app, &old), Handled::Duplicate);
    assert_eq!(october_value_added(&app), Some(61.0));
    app.store.flush().expect("flush");
    drop(app);
    assert_eq!(october_value_added(&open(dir.path())), Some(61.0));
}

#[test]
fn the_same_mark_with_other_content_is_refused_and_never_confirmed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open(dir.path());
    announce(&app, "a", 1);
    // A forger holding the agent's credentials numbers ahead of it.
    let forged = batch_in("a", 1, vec![amount(999.0, 10)]);
    assert_eq!(send(&app, &forged), Handled::Stored);
    let topic = Topic::data(&zone(), &agent(), &ent());
    let real = batch_in("a", 1, vec![amount(20.0, 10)]);
    let group = vec![
        (1u64, Publish::new(&topic, QoS::AtLeastOnce, real.to_payload())),
        (1u64, Publish::new(&topic, QoS::AtLeastOnce, forged.to_payload())),
    ];
    let (done, confirms, effects, _) = handle_group(&app.ingest(), read_group(&app, group), utc(NOW));
    assert_eq!(done.len(), 2, "both are handled: acknowledged to the broker");
    let answers = confirms.get(&(zone(), agent(), Some(outbox("a")))).expect("answers");
    assert_eq!(
        answers[0],
        Answer::Refused(Refusal {
            seq: 1,
            digest: zonesync_proto::digest(&real.to_payload()),
            reason: REFUSED_REUSED_SEQ.into()
        }),
        "the real batch is refused, not confirmed: the agent keeps it"
    );
    assert_eq!(
        answers[1],
        Answer::Handled {
            seq: 1,
            digest: zonesync_proto::digest(&forged.to_payload())
        },
        "the forger's redelivery is a duplicate, confirmed with its own digest"
    );
    assert_eq!(dead_labels(&app), vec![REFUSED_REUSED_SEQ.to_owned()]);
    // Nothing moves in memory before the flush that makes it durable.
    assert_eq!(agent_state(&app).refused_reused_seq, 0);
    apply_effects(&app.ingest(), effects, utc(NOW));
    assert_eq!(agent_state(&app).refused_reused_seq, 1);
    // Someone must look at that gateway: an alert, raised at once.
    let events = crate::alerts::evaluate_once(&app.alerts(), &Default::default(), utc(NOW)).expect("alerts");
    let raised: Vec<_> = events.iter().filter(|e| e.obs.rule == "batch_identity").collect();
    assert_eq!(raised.len(), 1, "{events:?}");
    assert!(
        raised[0].obs.detail.contains("jy-hitech-gw01"),
        "{}",
        raised[0].obs.detail
    );
    // The agent moves to a fresh outbox and resends: its figure wins.
    announce(&app, "b", 1);
    assert_eq!(send(&app, &batch_in("b", 1, vec![amount(20.0, 10)])), Handled::Stored);
    assert_eq!(october_value_added(&app), Some(20.0));
    // After a restart the refusal is still known (from its dead letter), so
    // the alert clears a day after it, not never.
    app.store.flush().expect("flush");
    drop(app);
    let app = open(dir.path());
    let a = agent_state(&app);
    assert_eq!((a.refused_reused_seq, a.last_numbering_refusal_at), (1, Some(utc(NOW))));
}

#[test]
fn presence_figures_at_their_limits_overflow_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Two agents the registry binds (a presence from any other is refused).
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/registry.toml");
    let registry = std::fs::read_to_string(example).expect("example registry").replace(
        "agents = [\"jy-hitech-gw01\"]",
        "agents = [\"jy-hitech-gw01\", \"jy-hitech-gw02\"]",
    );
    let registry_path = dir.path().join("registry.toml");
    std::fs::write(&registry_path, registry).expect("write registry");
    let body = format!(
        "data_dir = {:?}\nregistry = {:?}\n[store]\ncache_capacity_bytes = 1048576\n",
        dir.path().join("data").display().to_string(),
        registry_path.display().to_string()
    );
    let config = dir.path().join("aggregator.toml");
    std::fs::write(&config, body).expect("write config");
    let app = App::open(&AggregatorConfig::load(&config).expect("config")).expect("open app");
    for name in ["jy-hitech-gw01", "jy-hitech-gw02"] {
        let p = Presence {
            agent: AgentId::parse(name).expect("agent"),
            next_seq: u64::MAX,
            clock_offset_ms: Some(i64::MIN),
            broker_denied_batches: 0,
            ..presence_sent(u64::MAX, u64::MAX, u64::MAX, u64::MAX)
        };
        say(&app, &p, utc(NOW));
    }
    let zone_reg = app.registry.zone(&zone()).expect("zone").clone();
    let st = app.state.read().expect("state");
    let r = crate::quality::report(
        &zone_reg,
        st.zones.get(&zone()),
        Period::Month(2026, 11),
        utc(NOW) + chrono::Duration::days(1),
        &app.catalog,
        &app.quality,
    );
    assert_eq!(r.readings_dropped_at_source, u64::MAX);
    assert_eq!(r.readings_dropped_sent_at_source, u64::MAX);
}

#[test]
fn a_sent_at_beyond_the_skew_limit_is_refused_and_decides_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open(dir.path());
    assert_eq!(send(&app, &batch(1, false, vec![amount(20.0, 10)])), Handled::Stored);
    let future = Batch {
        sent_at: utc("2099-01-01T00:00:00Z"),
        ..batch(2, false, vec![amount(99.0, 10)])
    };
    assert_eq!(send(&app, &future), Handled::Refused);
    assert_eq!(october_value_added(&app), Some(20.0));
    assert_eq!(dead_labels(&app), vec!["sent_at_future".to_owned()]);
    assert_eq!(send(&app, &batch(3, false, vec![amount(25.0, 10)])), Handled::Stored);
    assert_eq!(october_value_added(&app), Some(25.0));
}
