//! Batch numbering and clocks: forged and reused sequence numbers, a fast
//! clock at first install, a second agent's clock far ahead.

use super::fixture::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_max_seq_is_refused_as_seq_ahead_and_the_real_correction_wins() {
    let s = setup();
    let port = s.broker.port;
    let (agg, api) = start(&s.config);
    let ob = outbox(1);
    let mut confirms = listen_confirms(port, "agent-a").await;
    let now = Utc::now();
    announce(&api, port, "agent-a", &ob, 1).await;
    publish(port, vec![batch("agent-a", &ob, 1, 0, now, vec![value_added(40.0)])]).await;
    wait_value_added(&api, 0, 40.0).await;

    // The forger holds the agent's credentials and topic: seq u64::MAX with a wrong figure,
    // then the agent's own next batch corrects the month.
    publish(
        port,
        vec![
            batch("agent-a", &ob, u64::MAX, 0, now, vec![value_added(9999.0)]),
            batch("agent-a", &ob, 2, 0, now, vec![value_added(45.0)]),
        ],
    )
    .await;
    wait_value_added(&api, 0, 45.0).await;
    let dl = wait_dead_letters(&api, "seq_ahead", 1).await;
    assert_eq!(dl.len(), 1, "{dl:#?}");
    assert_eq!(dl[0]["seq"].as_u64(), Some(u64::MAX), "{:#}", dl[0]);
    assert_eq!(dl[0]["agent"], "agent-a");
    assert_eq!(dl[0]["whole_batch"], true);
    assert_eq!(api.metric(&rejected("seq_ahead")).await, 1.0);
    let a = agent_state(&api, "agent-a").await;
    assert_eq!(a["refused_seq_ahead"], 1, "{a:#}");
    assert_eq!(a["last_seq"], 2, "the forged seq is not the agent's: {a:#}");
    // The confirmation refuses it by reason; it never counts as handled.
    let seen = confirms_until(&mut confirms, "seq 2", |cs| cs.iter().any(|c| c.contains(2))).await;
    let refusals: Vec<_> = seen.iter().flat_map(|c| c.refused.clone()).collect();
    assert!(
        refusals.iter().any(|r| r.seq == u64::MAX && r.reason == "seq_ahead"),
        "{seen:#?}"
    );
    assert!(seen.iter().all(|c| !c.contains(u64::MAX)), "{seen:#?}");
    assert!(seen.iter().all(|c| c.outbox.as_ref() == Some(&ob)), "{seen:#?}");
    assert_healthy(&api).await;
    stop(agg);

    // After a restart: the figure is still the real one, the refusal is still
    // on record, and the agent's numbering goes on from its real seq.
    let (agg, api) = start(&s.config);
    assert_eq!(shown_value_added(&api, 0).await, Some(45.0));
    assert_eq!(dead_letters(&api, "seq_ahead").await.len(), 1);
    assert_healthy(&api).await;
    publish(
        port,
        vec![batch("agent-a", &ob, 3, 0, Utc::now(), vec![value_added(46.0)])],
    )
    .await;
    wait_value_added(&api, 0, 46.0).await;
    assert_eq!(agent_state(&api, "agent-a").await["last_seq"], 3);
    assert_healthy(&api).await;
    stop(agg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinstalled_outbox_after_a_fast_clock_restates_the_month_and_keeps_winning() {
    let s = setup();
    let port = s.broker.port;
    let (agg, api) = start(&s.config);
    // First install, clock fast: the old outbox numbered from clock microseconds.
    let old = outbox(0xa);
    let a0: u64 = 1_900_000_000_000_000;
    let now = Utc::now();
    announce(&api, port, "agent-a", &old, a0).await;
    publish(
        port,
        vec![
            batch("agent-a", &old, a0, 0, now, vec![value_added(40.0)]),
            batch("agent-a", &old, a0 + 2, 0, now, vec![value_added(42.0)]),
        ],
    )
    .await;
    wait_value_added(&api, 0, 42.0).await;
    assert_eq!(api.metric(&rejected("seq_ahead")).await, 0.0, "announced, so not ahead");

    // Reinstalled: a fresh outbox numbering from 1 restates the month.
    let new = outbox(0xb);
    announce(&api, port, "agent-a", &new, 1).await;
    publish(
        port,
        vec![batch("agent-a", &new, 1, 0, Utc::now(), vec![value_added(50.0)])],
    )
    .await;
    wait_value_added(&api, 0, 50.0).await;
    // A batch of the old outbox turning up late (resent after its later one
    // was stored: overtaken in its own outbox) does not undo the new figure.
    publish(
        port,
        vec![batch("agent-a", &old, a0 + 1, 0, now, vec![value_added(41.0)])],
    )
    .await;
    api.wait_metric("zonesync_aggregator_overtaken_stale_total", 1.0, WAIT)
        .await;
    assert_eq!(shown_value_added(&api, 0).await, Some(50.0));
    // Later corrections from the new outbox win, however small its seqs.
    for (seq, v) in [(2, 52.0), (3, 53.0)] {
        publish(
            port,
            vec![batch("agent-a", &new, seq, 0, Utc::now(), vec![value_added(v)])],
        )
        .await;
        wait_value_added(&api, 0, v).await;
    }
    let a = agent_state(&api, "agent-a").await;
    assert_eq!(a["outbox"], new.as_str(), "{a:#}");
    assert_eq!(a["last_seq"], 3, "the current outbox's numbering: {a:#}");
    assert_eq!(a["numberings"][old.as_str()]["highest"].as_u64(), Some(a0 + 2), "{a:#}");
    assert_eq!(a["numberings"][new.as_str()]["highest"], 3, "{a:#}");
    assert_eq!(api.metric(&rejected("seq_ahead")).await, 0.0);
    assert_eq!(api.metric(&rejected(REFUSED_REUSED_SEQ)).await, 0.0);
    stop(agg);

    // The same after a restart, and the next correction still wins.
    let (agg, api) = start(&s.config);
    assert_eq!(shown_value_added(&api, 0).await, Some(53.0));
    publish(
        port,
        vec![
            // The old outbox's last batch redelivered: already held, nothing changes.
            batch("agent-a", &old, a0 + 2, 0, now, vec![value_added(42.0)]),
            batch("agent-a", &new, 4, 0, Utc::now(), vec![value_added(54.0)]),
        ],
    )
    .await;
    wait_value_added(&api, 0, 54.0).await;
    assert_eq!(api.metric("zonesync_aggregator_batches_duplicate_total").await, 1.0);
    assert_healthy(&api).await;
    stop(agg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_with_a_clock_in_2099_is_refused_and_never_decides_the_figure() {
    let s = setup();
    // E1 may be reported by two gateways (e.g. a replacement running beside the old one).
    let registry = s.dir.path().join("registry.toml");
    let text = std::fs::read_to_string(&registry).expect("registry");
    let bound = text.replacen(
        "name = \"E1\"\n",
        "name = \"E1\"\nagents = [\"agent-a\", \"agent-b\"]\n",
        1,
    );
    assert_ne!(bound, text, "E1 found in the test registry");
    std::fs::write(&registry, bound).expect("write registry");
    let port = s.broker.port;
    let (agg, api) = start(&s.config);
    let (oa, ob) = (outbox(0x1a), outbox(0x1b));
    announce(&api, port, "agent-a", &oa, 1).await;
    publish(
        port,
        vec![batch("agent-a", &oa, 1, 0, Utc::now(), vec![value_added(40.0)])],
    )
    .await;
    wait_value_added(&api, 0, 40.0).await;

    let mut confirms = listen_confirms(port, "agent-b").await;
    let year_2099 = DateTime::parse_from_rfc3339("2099-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let future = batch("agent-b", &ob, 1, 0, year_2099, vec![value_added(999.0)]);
    let future_digest = digest(&future.payload);
    announce(&api, port, "agent-b", &ob, 1).await;
    publish(port, vec![future]).await;
    let dl = wait_dead_letters(&api, "sent_at_future", 1).await;
    assert_eq!(
        (
            dl[0]["agent"].as_str(),
            dl[0]["seq"].as_u64(),
            dl[0]["whole_batch"].as_bool()
        ),
        (Some("agent-b"), Some(1), Some(true)),
        "{:#}",
        dl[0]
    );
    let seen = confirms_until(&mut confirms, "the 2099 batch", |cs| {
        cs.iter().any(|c| !c.refused.is_empty())
    })
    .await;
    let c = seen.iter().find(|c| !c.refused.is_empty()).expect("a refusal");
    assert_eq!(c.outbox.as_ref(), Some(&ob));
    assert_eq!(c.refused.len(), 1, "{c:#?}");
    assert_eq!(
        (
            c.refused[0].seq,
            c.refused[0].reason.as_str(),
            c.refused[0].digest.as_str()
        ),
        (1, "sent_at_future", future_digest.as_str())
    );
    assert!(!c.contains(1), "refused, so not confirmed as handled: {c:#?}");
    assert_eq!(api.metric(&rejected("sent_at_future")).await, 1.0);
    assert_eq!(shown_value_added(&api, 0).await, Some(40.0), "the real figure stays");

    // The real agent's correction wins.
    publish(
        port,
        vec![batch("agent-a", &oa, 2, 0, Utc::now(), vec![value_added(44.0)])],
    )
    .await;
    wait_value_added(&api, 0, 44.0).await;
    // agent-b, clock fixed, resends its kept batch (same seq, now another
    // digest): accepted, and as the later arrival it restates the month; the
    // next correction from agent-a wins again, whatever either clock says.
    publish(
        port,
        vec![batch("agent-b", &ob, 1, 0, Utc::now(), vec![value_added(47.0)])],
    )
    .await;
    wait_value_added(&api, 0, 47.0).await;
    let seen = confirms_until(&mut confirms, "agent-b's resend", |cs| cs.iter().any(|c| c.contains(1))).await;
    assert!(seen.iter().all(|c| c.refused.is_empty()), "{seen:#?}");
    publish(
        port,
        vec![batch(
            "agent-a",
            &oa,
            3,
            0,
            Utc::now() - Span::hours(3),
            vec![value_added(48.0)],
        )],
    )
    .await;
    wait_value_added(&api, 0, 48.0).await;
    assert_eq!(api.metric(&rejected("sent_at_future")).await, 1.0);
    assert_healthy(&api).await;
    stop(agg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_claimed_ahead_by_a_forger_refuse_the_real_batches_until_a_fresh_outbox_resends_them() {
    let s = setup();
    let port = s.broker.port;
    let (agg, api) = start(&s.config);
    let mut confirms = listen_confirms(port, "agent-a").await;
    let first = outbox(0x21);
    announce(&api, port, "agent-a", &first, 1).await;
    let t0 = Utc::now() - Span::hours(2);
    let at = |i: i64| t0 + Span::minutes(15 * i);
    let real = |ob: &OutboxId, seq: u64, i: i64| {
        batch(
            "agent-a",
            ob,
            seq,
            0,
            Utc::now(),
            vec![
                register("M1", 100.0 + 10.0 * i as f64, at(i)),
                value_added(40.0 + i as f64),
            ],
        )
    };
    publish(port, vec![real(&first, 1, 0), real(&first, 2, 1)]).await;
    wait_value_added(&api, 0, 41.0).await;

    // The forger numbers ahead of the agent under its (agent, outbox).
    let forged = |seq: u64, i: i64| {
        batch(
            "agent-a",
            &first,
            seq,
            0,
            Utc::now(),
            vec![register("M1", 5000.0 + i as f64, at(i)), value_added(999.0 - i as f64)],
        )
    };
    publish(port, vec![forged(3, 2), forged(4, 3)]).await;
    wait_value_added(&api, 0, 996.0).await;

    // The agent's own seqs 3 and 4 come with other content: refused as reused.
    let (r3, r4) = (real(&first, 3, 2), real(&first, 4, 3));
    let digests = [digest(&r3.payload), digest(&r4.payload)];
    publish(port, vec![r3, r4]).await;
    let dl = wait_dead_letters(&api, REFUSED_REUSED_SEQ, 2).await;
    let seqs: Vec<_> = dl.iter().map(|d| d["seq"].as_u64()).collect();
    assert_eq!(seqs, vec![Some(3), Some(4)], "{dl:#?}");
    assert!(dl.iter().all(|d| d["whole_batch"] == true && d["agent"] == "agent-a"));
    let seen = confirms_until(&mut confirms, "the refusal of seqs 3 and 4", |cs| {
        cs.iter().flat_map(|c| &c.refused).filter(|r| r.seq >= 3).count() >= 2
    })
    .await;
    let refused: Vec<_> = seen
        .iter()
        .filter(|c| c.outbox.as_ref() == Some(&first))
        .flat_map(|c| c.refused.clone())
        .collect();
    assert_eq!(refused.len(), 2, "{seen:#?}");
    for (r, d) in refused.iter().zip(&digests) {
        assert_eq!(r.reason, REFUSED_REUSED_SEQ, "{r:?}");
        assert_eq!(&r.digest, d, "the refusal names the real batch's digest: {r:?}");
    }
    // Seqs 3 and 4 were confirmed once — with the forger's digests, which the agent can tell apart.
    for c in seen.iter().filter(|c| c.contains(3) || c.contains(4)) {
        for seq in [3, 4] {
            if let Some(d) = c.digest_of(seq) {
                assert!(!digests.contains(&d.to_owned()), "{c:#?}");
            }
        }
    }
    assert_eq!(api.metric(&rejected(REFUSED_REUSED_SEQ)).await, 2.0);
    let a = agent_state(&api, "agent-a").await;
    assert_eq!(a["refused_reused_seq"], 2, "{a:#}");
    assert_eq!(shown_value_added(&api, 0).await, Some(996.0), "the forgery still shows");

    // What the agent side does next (built on another branch), simulated: a
    // fresh outbox identity, announced, resending the refused batches from seq 1.
    let fresh = outbox(0x22);
    announce(&api, port, "agent-a", &fresh, 1).await;
    publish(port, vec![real(&fresh, 1, 2), real(&fresh, 2, 3)]).await;
    wait_value_added(&api, 0, 43.0).await;
    let seen = confirms_until(&mut confirms, "the resend under a fresh outbox", |cs| {
        let mine = || cs.iter().filter(|c| c.outbox.as_ref() == Some(&fresh));
        mine().any(|c| c.contains(1)) && mine().any(|c| c.contains(2))
    })
    .await;
    assert!(
        seen.iter()
            .filter(|c| c.outbox.as_ref() == Some(&fresh))
            .all(|c| c.refused.is_empty()),
        "{seen:#?}"
    );
    // The real register values replace the forged ones at the same instants.
    let e = api.get(&format!("/api/v1/zones/{ZONE}/enterprises/{}", E[0])).await;
    let m1 = e["latest"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|r| r["indicator"] == "electricity" && r["point"] == "M1")
                .cloned()
        })
        .unwrap_or_else(|| panic!("M1 missing: {e:#}"));
    assert_eq!(m1["value"].as_f64(), Some(130.0), "{m1}");
    assert_eq!(api.metric(&rejected(REFUSED_REUSED_SEQ)).await, 2.0);
    assert_healthy(&api).await;
    stop(agg);
}

// Found by this test: a presence may announce any next_seq, and the seq limit
// once followed the announcement, so a forger announcing u64::MAX - 1 got a
// batch at u64::MAX stored and every later real restatement dropped as
// stale. Now an announcement only sets the limit of an outbox nothing is
// held from (`Numbering::seq_limit`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_presence_cannot_lift_the_seq_limit_for_a_forged_max_seq() {
    let s = setup();
    let port = s.broker.port;
    let (agg, api) = start(&s.config);
    let ob = outbox(0x71);
    announce(&api, port, "agent-a", &ob, 1).await;
    let now = Utc::now();
    publish(port, vec![batch("agent-a", &ob, 1, 0, now, vec![value_added(40.0)])]).await;
    wait_value_added(&api, 0, 40.0).await;
    // The forger: a presence for the agent's outbox announcing a numbering at
    // the end of u64, then the batch it made room for.
    announce(&api, port, "agent-a", &ob, u64::MAX - 1).await;
    publish(
        port,
        vec![batch("agent-a", &ob, u64::MAX, 0, now, vec![value_added(9999.0)])],
    )
    .await;
    // The real agent announces itself again and corrects the month.
    announce(&api, port, "agent-a", &ob, 2).await;
    publish(
        port,
        vec![batch("agent-a", &ob, 2, 0, Utc::now(), vec![value_added(45.0)])],
    )
    .await;
    let dl = wait_dead_letters(&api, "seq_ahead", 1).await;
    assert_eq!(dl[0]["seq"].as_u64(), Some(u64::MAX), "{:#}", dl[0]);
    wait_value_added(&api, 0, 45.0).await;
    assert_eq!(agent_state(&api, "agent-a").await["last_seq"], 2);
    assert_healthy(&api).await;
    stop(agg);
}
