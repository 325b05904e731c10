//! Issue 15, item 5: presences only from agents the registry binds, and
//! series limits per enterprise and per agent.

use super::*;

/// A batch from `agent` for `enterprise` with one reading at each of the
/// points `points` (distinct names), outbox `outbox`, number `seq`.
fn points_batch(agent: &str, outbox: u8, enterprise: &str, seq: u64, points: std::ops::Range<usize>) -> Msg {
    let b = Batch {
        v: WIRE_VERSION,
        agent: AgentId::parse(agent).expect("agent id"),
        boot: 1,
        outbox: Some(OutboxId::from_random([outbox; 16])),
        seq,
        sent_at: Utc::now(),
        zone: ZoneId::parse(dataset::ZONE).expect("zone id"),
        enterprise: EnterpriseId::parse(enterprise).expect("credit code"),
        backfill: false,
        readings: points
            .map(|i| Reading {
                indicator: "electricity".into(),
                point: format!("flood-{i}"),
                value: 1.0,
                unit: "kWh".into(),
                ts: Some(Utc::now()),
                period: None,
            })
            .collect(),
        declarations: vec![],
    };
    Msg::batch(&b)
}

/// Issue 15, item 5: presences from agent ids the registry does not bind
/// are refused (dead letter `agent_unbound`, counted) and make no agents,
/// no `/metrics` rows and no "dropped at source" in the quality report;
/// distinct series are limited per enterprise and per agent, the readings
/// of new series past a limit refused with a reason, the rest stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_presences_and_series_past_their_limits_are_refused_with_reasons() {
    use zonesync_proto::{Presence, PresenceStatus};
    const STRANGERS: u64 = 300;
    let z = zone_with("", "");
    drop(z.aggregator);
    let text = std::fs::read_to_string(&z.ds.aggregator).expect("aggregator config");
    std::fs::write(
        &z.ds.aggregator,
        format!("{text}[limits]\nmax_series_per_enterprise = 50\nmax_series_per_agent = 80\n"),
    )
    .expect("write aggregator config");
    let (_aggregator, api) = spawn_aggregator(&z.ds.aggregator);
    api.wait_metric("zonesync_aggregator_mqtt_connected", 1.0, WAIT).await;

    let zone = ZoneId::parse(dataset::ZONE).expect("zone id");
    let stranger = |i: u64| Presence {
        v: WIRE_VERSION,
        agent: AgentId::parse(&format!("stranger-{i}")).expect("agent id"),
        zone: zone.clone(),
        status: PresenceStatus::Online,
        boot: 1,
        at: Utc::now(),
        outbox: None,
        next_seq: 1,
        dropped_readings: 123_456,
        dropped_sent_readings: 0,
        clock_offset_ms: None,
        broker_denied_batches: 0,
        version: "forged".into(),
        // An enterprise that is not registered: nothing binds them.
        enterprises: vec![EnterpriseId::with_check_char("91419001MA0000099").expect("credit code")],
    };
    publish(
        z.broker.port,
        (0..STRANGERS).map(|i| Msg::presence(&stranger(i))).collect(),
    )
    .await;
    api.wait_metric(
        "zonesync_aggregator_rejected_total{reason=\"agent_unbound\"}",
        STRANGERS as f64,
        WAIT,
    )
    .await;
    // 120 new points for E1 (limit 50) and 60 for E2: agent-a may bring in
    // 80, so 30 of E2's are refused for the agent's limit.
    let e1 = dataset::E[0];
    let e2 = dataset::E[1];
    let floods = vec![
        points_batch("agent-a", 1, e1, 1, 0..60),
        points_batch("agent-a", 1, e1, 2, 60..120),
        points_batch("agent-a", 1, e2, 3, 0..60),
    ];
    publish(z.broker.port, floods).await;
    api.wait_metric("zonesync_aggregator_batches_stored_total", 3.0, WAIT)
        .await;
    assert_eq!(api.metric("zonesync_aggregator_readings_stored_total").await, 80.0);
    assert_eq!(
        api.metric("zonesync_aggregator_rejected_total{reason=\"series_limit_enterprise\"}")
            .await,
        70.0
    );
    assert_eq!(
        api.metric("zonesync_aggregator_rejected_total{reason=\"series_limit_agent\"}")
            .await,
        30.0
    );
    let letters = api.get("/api/v1/dead-letters?limit=1000").await;
    let all = letters["dead_letters"].as_array().cloned().unwrap_or_default();
    let unbound = all
        .iter()
        .find(|l| l["labels"][0] == "agent_unbound")
        .expect("an agent_unbound letter");
    assert!(
        unbound["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("stranger-") && r.contains("bound to no enterprise")),
        "{unbound}"
    );
    let series = all
        .iter()
        .find(|l| l["labels"][0] == "series_limit_enterprise")
        .expect("a series_limit_enterprise letter");
    assert_eq!(series["whole_batch"], false, "{series}");
    assert!(
        series["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("max_series_per_enterprise")),
        "{series}"
    );

    // No agent made, nothing claimed lost.
    let agents = api.get(&format!("/api/v1/zones/{}/agents", dataset::ZONE)).await;
    let ids: Vec<&str> = agents["agents"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["agent"].as_str()).collect())
        .unwrap_or_default();
    assert!(ids.iter().all(|a| !a.starts_with("stranger-")), "{ids:?}");
    let metrics = reqwest::get(format!("{}/metrics", api.base()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(!metrics.contains("stranger-"), "no per-agent rows for strangers");
    let month = Utc::now().format("%Y-%m");
    let q = api
        .get(&format!("/api/v1/zones/{}/quality?period={month}", dataset::ZONE))
        .await;
    assert_eq!(q["quality"]["readings_dropped_at_source"], 0, "{q}");
}
