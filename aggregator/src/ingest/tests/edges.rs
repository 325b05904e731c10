//! Issue 15, item 5, at the ingest: presences only from agents the
//! registry binds, and series limits per enterprise and per agent — each
//! refusal dead-lettered with its reason and counted, nothing else lost.

use super::*;

/// An aggregator on the example registry whose `[limits]` get `limits`.
fn open_with(dir: &std::path::Path, limits: &str) -> App {
    let registry = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/registry.toml");
    let body = format!(
        "data_dir = {:?}\nregistry = {registry:?}\n[store]\ncache_capacity_bytes = 1048576\n[limits]\n{limits}\n",
        dir.join("data").display().to_string()
    );
    let path = dir.join("aggregator.toml");
    std::fs::write(&path, body).expect("write config");
    App::open(&AggregatorConfig::load(&path).expect("config")).expect("open app")
}

fn letters(app: &App) -> Vec<(Vec<String>, Vec<String>, bool)> {
    app.dead_letters
        .list(100, None)
        .expect("dead letters")
        .into_iter()
        .map(|d| (d.labels, d.reasons, d.whole_batch))
        .collect()
}

#[test]
fn a_presence_from_an_agent_the_registry_does_not_bind_creates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open_with(dir.path(), "");
    let stranger = Presence {
        agent: AgentId::parse("not-in-registry").expect("agent id"),
        dropped_readings: 123_456,
        ..presence(1, 1, 0)
    };
    let topic = Topic::state(&stranger.zone, &stranger.agent);
    for _ in 0..3 {
        let h = handle(&app.ingest(), &topic, &stranger.to_payload(), utc(NOW)).expect("handled");
        assert_eq!(h, Handled::DeadLettered);
    }
    let l = letters(&app);
    assert_eq!(l.len(), 3);
    assert_eq!(l[0].0, vec!["agent_unbound"]);
    assert!(l[0].1[0].contains("not-in-registry"), "{:?}", l[0].1);
    assert_eq!(app.metrics.rejected().get("agent_unbound"), Some(&3));
    // No agent in the zone, and no readings "dropped at source" claimed for it.
    say(&app, &presence(1, 1, 7), utc(NOW));
    let st = app.state.read().expect("state");
    let zs = st.zones.get(&zone()).expect("zone state");
    assert_eq!(
        zs.agents.keys().map(|a| a.to_string()).collect::<Vec<_>>(),
        vec!["jy-hitech-gw01"]
    );
    let zone_reg = app.registry.zone(&zone()).expect("zone").clone();
    let r = crate::quality::report(
        &zone_reg,
        Some(zs),
        Period::Month(2026, 11),
        utc(NOW),
        &app.catalog,
        &app.quality,
    );
    assert_eq!(r.readings_dropped_at_source, 7);
}

fn point(p: &str, value: f64) -> Reading {
    Reading {
        point: p.into(),
        ..gauge(value, "2026-11-23T07:00:00Z")
    }
}

#[test]
fn readings_of_new_series_past_the_enterprise_limit_are_refused_with_a_reason_the_rest_stored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let limits = "max_series_per_enterprise = 3\nmax_series_per_agent = 100";
    let app = open_with(dir.path(), limits);
    let five = (1..=5).map(|i| point(&format!("P{i}"), i as f64)).collect();
    assert_eq!(send(&app, &batch(1, false, five)), Handled::Stored);
    assert_eq!(counts(&app), (3, 3), "three series stored");
    let l = letters(&app);
    assert_eq!(l.len(), 1);
    let (labels, reasons, whole) = &l[0];
    assert_eq!(labels, &vec!["series_limit_enterprise"; 2]);
    assert!(!whole, "only the readings are refused");
    assert!(
        reasons[0].contains("\"P4\"")
            && reasons[0].contains("max_series_per_enterprise")
            && reasons[1].contains("\"P5\""),
        "{reasons:?}"
    );
    assert_eq!(app.metrics.rejected().get("series_limit_enterprise"), Some(&2));
    // A held series keeps taking values; the limit holds after a restart.
    let later = |v| Reading {
        ts: Some(utc("2026-11-23T07:15:00Z")),
        ..point("P1", v)
    };
    assert_eq!(
        send(&app, &batch(2, false, vec![later(9.0), point("P6", 6.0)])),
        Handled::Stored
    );
    assert_eq!(counts(&app), (4, 4));
    app.store.flush().expect("flush");
    drop(app);
    let app = open_with(dir.path(), limits);
    assert_eq!(counts(&app), (4, 4), "the replay holds what was live");
    assert_eq!(send(&app, &batch(3, false, vec![point("P7", 7.0)])), Handled::Stored);
    assert_eq!(counts(&app), (4, 4));
    assert_eq!(app.metrics.rejected().get("series_limit_enterprise"), Some(&1));
}

#[test]
fn the_agent_limit_counts_the_series_an_agent_brought_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open_with(dir.path(), "max_series_per_enterprise = 100\nmax_series_per_agent = 2");
    let three = (1..=3).map(|i| point(&format!("P{i}"), i as f64)).collect();
    assert_eq!(send(&app, &batch(1, false, three)), Handled::Stored);
    assert_eq!(counts(&app), (2, 2));
    assert_eq!(letters(&app)[0].0, vec!["series_limit_agent"]);
    assert!(letters(&app)[0].1[0].contains("max_series_per_agent"));
}

#[test]
fn a_presence_stored_before_presences_were_checked_makes_no_agent_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = open_with(dir.path(), "");
    // As an older aggregator stored it: no check on the way in.
    let forged = Presence {
        agent: AgentId::parse("forged-gw").expect("agent id"),
        dropped_readings: 2_469_120_000,
        enterprises: vec![],
        ..presence(1, 1, 0)
    };
    app.store.put_presence(&forged).expect("stored");
    app.store.put_presence(&presence(1, 1, 7)).expect("stored");
    app.store.flush().expect("flush");
    drop(app);
    let app = open_with(dir.path(), "");
    let st = app.state.read().expect("state");
    let zs = st.zones.get(&zone()).expect("zone state");
    assert_eq!(
        zs.agents.keys().map(|a| a.to_string()).collect::<Vec<_>>(),
        vec!["jy-hitech-gw01"]
    );
    let zone_reg = app.registry.zone(&zone()).expect("zone").clone();
    let r = crate::quality::report(
        &zone_reg,
        Some(zs),
        Period::Month(2026, 11),
        utc(NOW),
        &app.catalog,
        &app.quality,
    );
    assert_eq!(r.readings_dropped_at_source, 7, "nothing claimed for the forged agent");
}
