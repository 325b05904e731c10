//! Seqs claimed ahead by a forger.

use super::fixture::*;

/// Waits until the aggregator has refused batches of `AGENT` as reused_seq; returns them.
async fn wait_reused_seq_refusals(api: &Api, after: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let dl = dead_letters(api, REFUSED_REUSED_SEQ).await;
        if dl.len() > after || Instant::now() > deadline {
            return dl;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The forger: three batches of wrong figures under `AGENT`'s outbox `ob` at `next`, `next + 1`, `next + 2`.
fn forged(ob: &OutboxId, next: u64, figure: f64) -> Vec<Msg> {
    (0..3)
        .map(|i| batch(Some(ob), next + i, 0, vec![value_added(figure - i as f64)]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_claimed_ahead_by_a_forger_make_the_agent_rotate_and_resend_everything() {
    let s = setup();
    let port = s.broker.port;
    let (agg, api) = start(&s.config);
    // One reading per batch, so three CSV rows make three batches.
    let agent = Agent::new(
        s.dir.path(),
        port,
        &s.dir.path().join("agent-data"),
        AgentOpts {
            ticks: 97,
            batch_items: 1,
            ..AgentOpts::default()
        },
    );
    let p = agent.start();
    let mut want = sim_readings(1, 2, 97);
    wait_readings(&api, want).await;
    wait_value_added(&api, 0, 40.0).await;

    // (a) While the agent runs. Idle and fully confirmed, its next seq is
    // the one its status shows. The forger holds the agent's credentials: it
    // reads the outbox id from the agent's retained presence and claims the
    // next three seqs. The aggregator's confirmation of the forged batches
    // goes to the agent's confirm topic too: it shows numbers at or past the
    // agent's next seq held under its id (or, had the agent sealed first,
    // its own batches are refused as reused_seq): either way it must move to
    // a fresh id and nothing of its own may be lost.
    let status = wait_status(&agent, "every batch confirmed", Utc::now(), |v| {
        let o = outbox_of(v);
        o["sealed_batches"] == 0 && o["pending_items"] == 0
    })
    .await;
    let next = outbox_of(&status)["next_seq"].as_u64().expect("next_seq");
    let birth = wait_presence(port, "the agent's retained presence", |p| p.outbox.is_some()).await;
    let x = birth.outbox.clone().expect("outbox");
    assert_eq!(outbox_of(&status)["outbox_id"], x.as_str());
    publish(port, forged(&x, next, 999.0)).await;
    wait_value_added(&api, 0, 997.0).await;
    let rotated = wait_presence(port, "a presence under a fresh outbox id", |p| {
        p.outbox.as_ref().is_some_and(|o| o != &x)
    })
    .await;
    let y = rotated.outbox.expect("outbox");
    // Finance's figures arrive: sealed at the claimed seqs, under the fresh id.
    agent.drop_csv(&[(0, "2026-08", 31.0), (0, "2026-09", 32.0), (0, "2026-10", 55.0)]);
    want += 2;
    wait_value_added(&api, 0, 55.0).await;
    wait_readings(&api, want).await;
    let refused_a = dead_letters(&api, REFUSED_REUSED_SEQ).await;
    for d in &refused_a {
        let seq = d["seq"].as_u64().expect("seq");
        assert!((next..next + 3).contains(&seq), "{d:#}");
    }
    let status = wait_status(&agent, "the rotation and every batch confirmed", Utc::now(), |v| {
        let o = outbox_of(v);
        o["outbox_id"] == y.as_str() && o["sealed_batches"] == 0 && o["pending_items"] == 0
    })
    .await;
    assert!(
        status["upstreams"][0]["identity_rotations"].as_u64() >= Some(1),
        "{status:#}"
    );
    assert_eq!(agent_state(&api).await["outbox"], y.as_str());
    stop_agent(p);

    // (b) While the agent is down (it misses the confirmations of the
    // forged batches): its own batches at the claimed seqs are refused as
    // reused_seq when it comes back, and it rotates and resends.
    let stopped = agent.status();
    let next = outbox_of(&stopped)["next_seq"].as_u64().expect("next_seq");
    let offline = wait_presence(port, "the agent's goodbye", |p| p.status == PresenceStatus::Offline).await;
    assert_eq!(offline.outbox.as_ref(), Some(&y));
    publish(port, forged(&y, next, 899.0)).await;
    wait_value_added(&api, 0, 897.0).await;
    agent.drop_csv(&[(0, "2026-06", 21.0), (0, "2026-07", 22.0), (0, "2026-10", 66.0)]);
    want += 2;
    let p = agent.start();
    let refused_b = wait_reused_seq_refusals(&api, refused_a.len()).await;
    assert!(
        refused_b.len() > refused_a.len(),
        "the agent's batches under the forged seqs are refused as reused_seq"
    );
    for d in &refused_b[refused_a.len()..] {
        let seq = d["seq"].as_u64().expect("seq");
        assert!((next..next + 3).contains(&seq), "{d:#}");
        assert_eq!(d["whole_batch"], true, "{d:#}");
    }
    let rotated = wait_presence(port, "a presence under another fresh outbox id", |p| {
        p.outbox.as_ref().is_some_and(|o| o != &x && o != &y)
    })
    .await;
    let z = rotated.outbox.expect("outbox");
    wait_value_added(&api, 0, 66.0).await;
    wait_readings(&api, want).await;
    let status = wait_status(
        &agent,
        "the second rotation and every resend confirmed",
        Utc::now(),
        |v| {
            let o = outbox_of(v);
            o["outbox_id"] == z.as_str() && o["sealed_batches"] == 0 && o["pending_items"] == 0
        },
    )
    .await;
    assert!(
        status["upstreams"][0]["identity_rotations"].as_u64() >= Some(1),
        "{status:#}"
    );
    assert!(
        outbox_of(&status)["identity_rotations"].as_u64() >= Some(2),
        "{status:#}"
    );
    let st = agent_state(&api).await;
    assert_eq!(st["outbox"], z.as_str(), "{st:#}");
    assert!(st["refused_reused_seq"].as_u64() >= Some(1), "{st:#}");
    assert_eq!(api.metric(&rejected("seq_ahead")).await, 0.0);
    stop_agent(p);
    stop(agg);
    let marks = assert_one_batch_per_mark(&s.dir.path().join("aggregator").join("store"));
    eprintln!(
        "forged while running: {} refused as reused_seq; while down: {} refused; {marks} marks held",
        refused_a.len(),
        refused_b.len() - refused_a.len()
    );
}
