//! A fast clock at first install, then a reinstall.

use super::fixture::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinstalled_agent_after_a_fast_clock_install_wins_with_small_seqs_and_keeps_winning() {
    let s = setup();
    let port = s.broker.port;
    let (agg, api) = start(&s.config);

    // The first install, clock fast: its outbox numbered from clock
    // microseconds, first without an outbox id, then (after an upgrade drew
    // one) under outbox A, carrying on from the same numbers.
    let a0: u64 = 1_900_000_000_000_000;
    let old = OutboxId::from_random([0xa0; 16]);
    publish(port, vec![presence(None, a0)]).await;
    wait_announced(&api, a0).await;
    let legacy = batch(None, a0, 0, vec![value_added(300.0)]);
    let legacy_again = Msg {
        topic: legacy.topic.clone(),
        payload: legacy.payload.clone(),
        retain: false,
    };
    publish(port, vec![legacy]).await;
    wait_value_added(&api, 0, 300.0).await;
    publish(port, vec![presence(Some(&old), a0 + 1)]).await;
    let last_old = batch(Some(&old), a0 + 2, 0, vec![value_added(330.0)]);
    let last_old_again = Msg {
        topic: last_old.topic.clone(),
        payload: last_old.payload.clone(),
        retain: false,
    };
    publish(
        port,
        vec![batch(Some(&old), a0 + 1, 0, vec![value_added(320.0)]), last_old],
    )
    .await;
    wait_value_added(&api, 0, 330.0).await;

    // Reinstalled: a fresh data directory. The real agent reports E1 for
    // one simulated day (97 ticks): its value added (40) must replace 330.
    let mut agent = Agent::new(
        s.dir.path(),
        port,
        &s.dir.path().join("agent-data"),
        AgentOpts {
            ticks: 97,
            ..AgentOpts::default()
        },
    );
    let p = agent.start();
    wait_readings(&api, sim_readings(1, 2, 97)).await;
    wait_value_added(&api, 0, sim_value_added(97, E1_VA_PER_DAY)).await;
    let birth = wait_presence(port, "the reinstalled agent's presence", |p| p.version != "old-install").await;
    let fresh = birth.outbox.clone().expect("the new agent names its outbox");
    assert_ne!(fresh, old, "a fresh outbox id");
    let st = agent_state(&api).await;
    assert_eq!(st["outbox"], fresh.as_str(), "{st:#}");
    let last = st["last_seq"].as_u64().expect("last_seq");
    assert!(
        (1..1000).contains(&last),
        "the new outbox numbers from 1, never from the clock: last_seq {last}"
    );
    let status = wait_status(&agent, "the outbox under its fresh id", Utc::now(), |v| {
        outbox_of(v)["outbox_id"] == fresh.as_str()
    })
    .await;
    assert!(outbox_of(&status)["next_seq"].as_u64() < Some(1000), "{status:#}");

    // The old outbox's batches delivered again (a broker's redelivery): duplicates, nothing changes.
    let dups = api.metric("zonesync_aggregator_batches_duplicate_total").await;
    publish(port, vec![legacy_again, last_old_again]).await;
    api.wait_metric("zonesync_aggregator_batches_duplicate_total", dups + 2.0, WAIT)
        .await;
    assert_eq!(shown_value_added(&api, 0).await, Some(40.0));

    // The agent goes on (restarted, a second simulated day): 80 wins too.
    stop_agent(p);
    agent.set_ticks(193);
    let p = agent.start();
    wait_readings(&api, sim_readings(1, 2, 193)).await;
    wait_value_added(&api, 0, sim_value_added(193, E1_VA_PER_DAY)).await;
    stop(agg);

    // After an aggregator restart the figure stands, and finance's correction
    // of the month (a CSV) wins over everything before it.
    let (agg, api) = start(&s.config);
    assert_eq!(shown_value_added(&api, 0).await, Some(80.0));
    agent.drop_csv(&[(0, "2026-10", 85.5)]);
    wait_value_added(&api, 0, 85.5).await;
    wait_readings(&api, sim_readings(1, 2, 193)).await;
    let st = agent_state(&api).await;
    assert_eq!(st["outbox"], fresh.as_str(), "{st:#}");
    assert!(st["last_seq"].as_u64() < Some(1000), "{st:#}");
    for label in [REFUSED_REUSED_SEQ, "seq_ahead"] {
        assert_eq!(api.metric(&rejected(label)).await, 0.0, "{label}");
        assert!(dead_letters(&api, label).await.is_empty(), "{label}");
    }
    stop_agent(p);
    stop(agg);
}
