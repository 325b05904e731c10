//! An outbox restored from a copy.

use super::fixture::*;

/// What [`restore_and_run_again`] leaves running and what it saw.
struct Restored {
    s: Setup,
    agg: Proc,
    api: Api,
    agent: Agent,
    running: Proc,
    sniffed: Sniffed,
    /// The outbox id of the copy.
    copied_id: String,
    /// The copy's next seq.
    copied_next: u64,
    /// The next seq the outbox had reached when the copy was put back.
    reached: u64,
}

/// Runs the agent, copies its stopped data directory, runs it on, puts the
/// copy back (with its high-water mark file, or keeping the current one)
/// and runs it again, with a correction of the month after the restore.
async fn restore_and_run_again(with_mark: bool) -> Restored {
    let s = setup();
    let port = s.broker.port;
    let (agg, api) = start(&s.config);
    let sniffed = Sniffed::default();
    let _sniffer = sniffed.start(port).await;
    let data = s.dir.path().join("agent-data");
    let mut agent = Agent::new(s.dir.path(), port, &data, AgentOpts::default());
    let p = agent.start();
    wait_readings(&api, sim_readings(1, 2, 100)).await;
    // Copied with nothing held: after the restore the first batches it
    // publishes are new seals under reused numbers. (With a batch still held,
    // its resend's confirmation would show the aggregator's `highest` past
    // the restored next seq and the agent would rotate before reissuing any.)
    wait_status(&agent, "every batch confirmed before the copy", Utc::now(), |v| {
        let o = outbox_of(v);
        o["sealed_batches"] == 0 && o["pending_items"] == 0
    })
    .await;
    stop_agent(p);
    let snapshot = s.dir.path().join("agent-data-copy");
    copy_tree(&data, &snapshot);
    let hw = zonesync_agent::outbox::identity::high_water_path(&data.join("outbox"));
    assert!(hw.exists(), "the mark lives beside the outbox: {}", hw.display());
    let first = agent.status();
    let copied_id = outbox_of(&first)["outbox_id"].as_str().expect("outbox id").to_owned();
    let copied_next = outbox_of(&first)["next_seq"].as_u64().expect("next_seq");

    agent.set_ticks(150);
    let p = agent.start();
    wait_readings(&api, sim_readings(1, 2, 150)).await;
    stop_agent(p);
    let second = agent.status();
    assert_eq!(outbox_of(&second)["outbox_id"], copied_id.as_str());
    let reached = outbox_of(&second)["next_seq"].as_u64().expect("next_seq");
    assert!(
        reached > copied_next,
        "the second run sent more: {copied_next} → {reached}"
    );

    // Put the copy back: everything (a VM snapshot), or all but the marks.
    let done = zonesync_agent::outbox::identity::done_path(&data.join("outbox"));
    let kept_marks = [&hw, &done].map(|m| std::fs::read(m).expect("mark"));
    std::fs::remove_dir_all(&data).expect("remove data dir");
    copy_tree(&snapshot, &data);
    if !with_mark {
        for (m, bytes) in [&hw, &done].iter().zip(kept_marks) {
            std::fs::write(m, bytes).expect("keep the current mark");
        }
    }
    agent.set_ticks(200);
    let running = agent.start();
    // Nothing produced after the restore is lost; then finance corrects the month.
    wait_readings(&api, sim_readings(1, 2, 200)).await;
    wait_value_added(&api, 0, sim_value_added(200, E1_VA_PER_DAY)).await;
    agent.drop_csv(&[(0, "2026-10", 77.0)]);
    wait_value_added(&api, 0, 77.0).await;
    Restored {
        s,
        agg,
        api,
        agent,
        running,
        sniffed,
        copied_id,
        copied_next,
        reached,
    }
}

/// Waits until the running agent has everything confirmed under an outbox id other than `old`.
async fn wait_rotated_and_confirmed(agent: &Agent, old: &str) -> Value {
    wait_status(agent, "a fresh outbox id, everything confirmed", Utc::now(), |v| {
        let o = outbox_of(v);
        o["outbox_id"] != old && o["sealed_batches"] == 0 && o["pending_items"] == 0
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_restored_with_its_mark_like_a_vm_snapshot_is_caught_by_digest_and_rotates() {
    let r = restore_and_run_again(true).await;
    // The restored outbox numbered from copied_next again under the same
    // id: the aggregator holds other bytes there and refuses them by reason.
    assert!(
        !r.sniffed.reused().is_empty(),
        "the snapshot did publish seqs again with other bytes"
    );
    let dl = dead_letters(&r.api, REFUSED_REUSED_SEQ).await;
    assert!(!dl.is_empty(), "the reused seqs are refused as reused_seq");
    for d in &dl {
        let seq = d["seq"].as_u64().expect("seq");
        assert!((r.copied_next..r.reached).contains(&seq), "{d:#}");
    }
    let status = wait_rotated_and_confirmed(&r.agent, &r.copied_id).await;
    assert!(
        status["upstreams"][0]["identity_rotations"].as_u64() >= Some(1),
        "{status:#}"
    );
    let st = agent_state(&r.api).await;
    assert_eq!(st["outbox"], outbox_of(&status)["outbox_id"], "{st:#}");
    stop_agent(r.running);
    stop(r.agg);
    let marks = assert_one_batch_per_mark(&r.s.dir.path().join("aggregator").join("store"));
    eprintln!(
        "snapshot with its mark: seqs {}..{} reissued, {} refused as reused_seq, {marks} marks held",
        r.copied_next,
        r.reached,
        dl.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_restored_without_its_mark_never_reissues_a_seq() {
    let r = restore_and_run_again(false).await;
    // The mark knew better than the store: numbering went on from it, under a fresh id.
    let status = wait_rotated_and_confirmed(&r.agent, &r.copied_id).await;
    let o = outbox_of(&status);
    assert!(o["store_rollbacks"].as_u64() >= Some(1), "{status:#}");
    assert!(o["next_seq"].as_u64() > Some(r.reached), "{status:#}");
    let reused = r.sniffed.reused();
    assert!(reused.is_empty(), "seqs published twice with other bytes: {reused:#?}");
    let again: Vec<u64> = r
        .sniffed
        .seqs(&r.copied_id)
        .into_iter()
        .filter(|s| *s >= r.reached)
        .collect();
    assert!(
        again.is_empty(),
        "nothing sealed under the restored id after the restore: {again:?}"
    );
    assert_eq!(r.api.metric(&rejected(REFUSED_REUSED_SEQ)).await, 0.0);
    assert!(dead_letters(&r.api, REFUSED_REUSED_SEQ).await.is_empty());
    stop_agent(r.running);
    stop(r.agg);
    let marks = assert_one_batch_per_mark(&r.s.dir.path().join("aggregator").join("store"));
    eprintln!(
        "copy without its mark: {marks} marks held, {} published",
        r.sniffed.len()
    );
}
