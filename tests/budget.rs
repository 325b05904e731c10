//! The outbox's disk budget end to end: an agent whose broker is away fills
//! a small budget, drops the oldest readings, and once the broker is back
//! every reading is either stored by the aggregator or counted in
//! `dropped_readings` (status and presence) — exactly.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::{Duration, Instant};
use zonesync_agent::config::AgentConfig;
use zonesync_agent::shutdown;
use zonesync_e2e::dataset::ZONE;
use zonesync_e2e::free_port;
use zonesync_e2e::inprocess::InProcess;
use zonesync_proto::Presence;

const WAIT: Duration = Duration::from_secs(90);

/// Polls the running agent's status.json until `done` holds for it.
async fn wait_status(data_dir: &std::path::Path, done: impl Fn(&zonesync_agent::status::Status) -> bool) {
    let path = zonesync_agent::status::path(data_dir);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(s) = zonesync_agent::status::read(&path) {
            if done(&s) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "status never reached the expected state");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The retained presence of `agent` on the broker at `port`.
async fn presence(port: u16, agent: &str) -> Presence {
    let (client, mut events) = AsyncClient::new(MqttOptions::new("budget-test-reader", "127.0.0.1", port), 10);
    client
        .subscribe(format!("zonesync/v1/{ZONE}/{agent}/state"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => return serde_json::from_slice(&p.payload).unwrap(),
            Ok(_) => {}
            Err(_) => panic!("no retained presence for {agent}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_budget_drops_the_oldest_and_every_reading_is_stored_or_counted() {
    let dir = tempfile::tempdir().unwrap();
    let t = InProcess::start(dir.path(), 97, 1 << 20, |c| c).await;
    let mut cfg = AgentConfig::load(&t.ds.agent_b).unwrap();
    // Readings only (declarations are de-duplicated by the aggregator), and a
    // budget for roughly a third of them.
    cfg.profile = None;
    cfg.outbox.disk_budget_bytes = 16_000;
    let produced = 2 * 97 + 1;
    let broker_port = cfg.mqtt.port;
    cfg.mqtt.port = free_port();

    // Broker away: the simulator runs to its end; nothing waits, the oldest go.
    let (trigger, signal) = shutdown::channel();
    let agent = tokio::spawn(zonesync_agent::run(cfg.clone(), signal));
    wait_status(&cfg.data_dir, |s| {
        s.outbox.pending_items + s.outbox.dropped_readings == produced
    })
    .await;
    trigger.fire();
    agent.await.unwrap().unwrap();

    // Broker back.
    cfg.mqtt.port = broker_port;
    let (trigger, signal) = shutdown::channel();
    let agent = tokio::spawn(zonesync_agent::run(cfg.clone(), signal));
    wait_status(&cfg.data_dir, |s| {
        s.connected && s.outbox.pending_items == 0 && s.outbox.sealed_batches == 0
    })
    .await;
    let dropped = zonesync_agent::status::read(&zonesync_agent::status::path(&cfg.data_dir))
        .unwrap()
        .outbox
        .dropped_readings;
    assert!(dropped > 0 && dropped < produced, "{dropped} of {produced} dropped");
    t.api
        .wait_metric(
            "zonesync_aggregator_readings_stored_total",
            (produced - dropped) as f64,
            WAIT,
        )
        .await;
    assert_eq!(
        t.api.metric("zonesync_aggregator_readings_stored_total").await as u64 + dropped,
        produced
    );
    let p = presence(broker_port, "agent-b").await;
    assert_eq!(
        (p.dropped_readings, p.dropped_sent_readings),
        (dropped, 0),
        "nothing was ever sent"
    );
    trigger.fire();
    agent.await.unwrap().unwrap();
    t.stop().await;
}
