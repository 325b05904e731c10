//! Several upstreams and end-to-end confirmation, against real Mosquitto
//! brokers: each upstream has its own acknowledged cursor, so one that is
//! away neither holds the other back nor loses anything; and an upstream in
//! confirm mode keeps every batch until the confirming party names it — a
//! PUBACK alone deletes nothing.

use chrono::Utc;
use rumqttc::QoS;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zonesync_agent::config::{AgentConfig, MqttConfig};
use zonesync_agent::shutdown;
use zonesync_e2e::collector::{wait_status, Collector};
use zonesync_e2e::dataset::{self, ZONE};
use zonesync_e2e::Mosquitto;
use zonesync_proto::{AgentId, Confirm, Topic, ZoneId};

const WAIT: Duration = Duration::from_secs(90);
const TICKS: u64 = 97;

/// agent-b of the data set (one enterprise, two meters), readings only, in
/// small batches; `produced` is what its simulator makes in all.
fn agent_b(dir: &std::path::Path, port: u16) -> (AgentConfig, u64) {
    let ds = dataset::write(dir, port, TICKS, 2);
    let mut cfg = AgentConfig::load(&ds.agent_b).unwrap();
    cfg.profile = None;
    cfg.outbox.max_batch_items = 10;
    let produced = 2 * TICKS + (TICKS - 1) / 96;
    (cfg, produced)
}

fn data_filter() -> String {
    format!("zonesync/v1/{ZONE}/agent-b/data/#")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_upstream_neither_holds_the_other_back_nor_loses_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = (dir.path().join("broker-a"), dir.path().join("broker-b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let a = Mosquitto::start(&da);
    let mut b = Mosquitto::start(&db);
    let at_a = Collector::start(a.port, "zone-center", &data_filter(), None);
    let at_b = Collector::start(b.port, "city-center", &data_filter(), None);
    // Both subscriptions exist (persistent sessions) before B goes away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.stop();

    let (mut cfg, produced) = agent_b(dir.path(), a.port);
    cfg.mqtt.name = Some("zone".into());
    // No aggregator here, only the test's collectors: the brokers' PUBACKs
    // acknowledge (the default would wait for confirmations none sends).
    cfg.mqtt.end_to_end_confirm = false;
    cfg.upstream.push(MqttConfig {
        name: Some("city".into()),
        port: b.port,
        reconnect_min_ms: 100,
        reconnect_max_ms: 1000,
        end_to_end_confirm: false,
        ..MqttConfig::default()
    });
    let (trigger, signal) = shutdown::channel();
    let agent = tokio::spawn(zonesync_agent::run(cfg.clone(), signal));

    // Everything reaches A while B is down.
    at_a.wait_readings(produced, WAIT).await;
    let s = wait_status(&cfg.data_dir, WAIT, "zone caught up, city holding everything", |s| {
        let (zone, city) = (&s.upstreams[0], &s.upstreams[1]);
        zone.connected && zone.unacked_items == 0 && !city.connected && city.unacked_items == produced
    })
    .await;
    assert_eq!(at_b.readings(), 0, "B is down");
    assert_eq!(s.outbox.pending_items, 0);
    assert_eq!(s.outbox.sealed_items, produced, "held once, for city");
    assert_eq!(s.upstreams[1].dropped_readings, 0);

    // B back: it receives every reading, and the outbox empties.
    b.restart();
    at_b.wait_readings(produced, WAIT).await;
    wait_status(&cfg.data_dir, WAIT, "both caught up and the outbox empty", |s| {
        s.upstreams.iter().all(|u| u.connected && u.unacked_items == 0) && s.outbox.sealed_batches == 0
    })
    .await;
    trigger.fire();
    agent.await.unwrap().unwrap();
    // Exact, counting each sequence number once; same batches on both sides.
    assert_eq!(at_a.readings(), produced);
    assert_eq!(at_b.readings(), produced);
    let seqs = |c: &Collector| c.seen().keys().copied().collect::<BTreeSet<u64>>();
    assert_eq!(seqs(&at_a), seqs(&at_b));
}

/// Which sequence numbers the test confirms: odd ones only at first, then all.
struct Policy {
    all: AtomicBool,
    confirmed: Mutex<BTreeSet<u64>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_mode_keeps_batches_until_confirmed_and_resends_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let (mut cfg, produced) = agent_b(dir.path(), broker.port);
    cfg.mqtt.end_to_end_confirm = true;
    cfg.outbox.confirm_timeout_secs = 1;
    cfg.outbox.confirm_timeout_max_secs = 2;
    let agent_id = AgentId::parse("agent-b").unwrap();
    let confirm_topic = Topic::confirm(&ZoneId::parse(ZONE).unwrap(), &agent_id);

    // The test plays the aggregator: it confirms odd sequence numbers only, then everything.
    let policy = Arc::new(Policy {
        all: AtomicBool::new(false),
        confirmed: Mutex::new(BTreeSet::new()),
    });
    let (p, topic, agent) = (policy.clone(), confirm_topic.clone(), agent_id.clone());
    let confirmer = Collector::start(
        broker.port,
        "confirming-party",
        &data_filter(),
        Some(Box::new(move |b| {
            if !(b.seq % 2 == 1 || p.all.load(Ordering::SeqCst)) {
                return None;
            }
            p.confirmed.lock().unwrap().insert(b.seq);
            // As the aggregator does: under the batch's outbox, with the digest of what it holds.
            let digest = zonesync_proto::digest(&b.to_payload());
            let c = Confirm::handled(
                agent.clone(),
                b.outbox.clone(),
                vec![(b.seq, digest)],
                vec![],
                None,
                Utc::now(),
            );
            Some((topic.clone(), c.to_payload()))
        })),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (trigger, signal) = shutdown::channel();
    let agent = tokio::spawn(zonesync_agent::run(cfg.clone(), signal));
    confirmer.wait_readings(produced, WAIT).await;
    // Hostile confirmations: not JSON, another agent's, and a forged range
    // over every number without digests (sequence numbers start at 1, so it
    // covers real batches); none may crash the link or confirm a real batch.
    let forged = Confirm {
        seqs: vec![[0, u64::MAX]],
        ..Confirm::from_seqs(agent_id.clone(), vec![], Utc::now())
    };
    let other = Confirm::from_seqs(AgentId::parse("agent-a").unwrap(), vec![1, 2, 3], Utc::now());
    for payload in [b"{not json".to_vec(), other.to_payload(), forged.to_payload()] {
        confirmer
            .client
            .publish(&confirm_topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    // Every batch went out and the broker PUBACKed it; the even ones stay
    // held until confirmed, and are resent meanwhile.
    let s = wait_status(
        &cfg.data_dir,
        WAIT,
        "even batches held, resent, hostile confirmations counted",
        |s| {
            let u = &s.upstreams[0];
            s.outbox.pending_items == 0
                && u.resends > 0
                && u.confirms_malformed >= 3
                && s.outbox.sealed_batches == confirmer.seen().keys().filter(|q| *q % 2 == 0).count() as u64
        },
    )
    .await;
    let seen = confirmer.seen();
    let even: Vec<u64> = seen.keys().copied().filter(|q| q % 2 == 0).collect();
    assert!(!even.is_empty() && even.len() < seen.len(), "{seen:?}");
    assert_eq!(
        s.upstreams[0].unacked_batches,
        even.len() as u64,
        "PUBACK alone deleted nothing"
    );
    assert!(s.upstreams[0].end_to_end_confirm);
    let resent: Vec<u64> = seen.iter().filter(|(_, (_, n))| *n > 1).map(|(q, _)| *q).collect();
    assert!(
        resent.iter().any(|q| q % 2 == 0),
        "an unconfirmed batch came again: {seen:?}"
    );
    // Every odd batch was confirmed, so the clock offset is measured: the
    // test's clock is the agent's, so it lies within its own uncertainty.
    let (offset, within) = (
        s.upstreams[0].clock_offset_ms.expect("offset measured"),
        s.upstreams[0].clock_uncertainty_ms.expect("uncertainty"),
    );
    assert!(offset.abs() <= within + 1, "offset {offset} ± {within}");

    // Confirm everything from now on: the resends are confirmed and the outbox empties.
    policy.all.store(true, Ordering::SeqCst);
    let s = wait_status(&cfg.data_dir, WAIT, "every batch confirmed and deleted", |s| {
        s.outbox.sealed_batches == 0 && s.outbox.pending_items == 0
    })
    .await;
    assert_eq!(s.upstreams[0].items_acked, produced, "each batch acknowledged once");
    assert_eq!(s.upstreams[0].awaiting_confirm, 0);
    assert!(policy
        .confirmed
        .lock()
        .unwrap()
        .is_superset(&seen.keys().copied().collect()));
    trigger.fire();
    agent.await.unwrap().unwrap();
}

/// Produces `ticks` of agent-b against a Mosquitto broker and the real
/// aggregator (in-process). Once the aggregator has stored part of it, the
/// aggregator stops while the agent keeps publishing (the broker PUBACKs and
/// queues those batches in memory for the aggregator's persistent session),
/// then the broker is SIGKILLed — the loss docs/reliability.md measured —
/// and both are restarted. Waits until the agent has every batch
/// acknowledged; returns (readings the aggregator should hold, readings it
/// holds).
async fn broker_sigkill_with_a_queue(end_to_end_confirm: bool, ticks: u64) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let bdir = dir.path().join("broker");
    std::fs::create_dir_all(&bdir).unwrap();
    let mut broker = Mosquitto::start(&bdir);
    let ds = dataset::write(dir.path(), broker.port, ticks, 5);
    let agg_cfg = || zonesync_aggregator::config::AggregatorConfig::load(&ds.aggregator).unwrap();
    let (agg_stop, agg_signal) = shutdown::channel();
    let running = zonesync_aggregator::start(agg_cfg(), agg_signal).await.unwrap();
    let api = zonesync_e2e::Api::new(&format!("http://{}", running.http_addr));
    let mut cfg = AgentConfig::load(&ds.agent_b).unwrap();
    cfg.profile = None;
    cfg.outbox.max_batch_items = 10;
    cfg.mqtt.end_to_end_confirm = end_to_end_confirm;
    cfg.outbox.confirm_timeout_secs = 2;
    cfg.outbox.confirm_timeout_max_secs = 4;
    let produced = 2 * ticks + (ticks - 1) / 96;
    // One enterprise: month-to-date value added is one stored key per month (October only here).
    let stored_expected = 2 * ticks + u64::from(ticks > 96);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (agent_stop, agent_signal) = shutdown::channel();
    let agent = tokio::spawn(zonesync_agent::run(cfg.clone(), agent_signal));

    api.wait_metric("zonesync_aggregator_readings_stored_total", 200.0, WAIT)
        .await;
    agg_stop.fire();
    running.wait().await;
    // The agent keeps publishing into the broker's queue for the stopped aggregator.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.restart();
    let (agg_stop, agg_signal) = shutdown::channel();
    let running = zonesync_aggregator::start(agg_cfg(), agg_signal).await.unwrap();
    let api = zonesync_e2e::Api::new(&format!("http://{}", running.http_addr));

    // The simulator has run to its end once every reading it made is acknowledged.
    let s = wait_status(&cfg.data_dir, WAIT, "the simulator done and the outbox empty", |s| {
        s.upstreams[0].items_acked >= produced && s.outbox.pending_items == 0 && s.outbox.sealed_batches == 0
    })
    .await;
    assert_eq!(s.upstreams[0].items_acked, produced, "each batch acknowledged once");
    // The zone's count is rebuilt from the store at start (the metric counts this process only).
    let zones = api.get("/api/v1/zones").await;
    let stored = zones["zones"]
        .as_array()
        .and_then(|z| z.iter().find(|z| z["id"] == ZONE))
        .and_then(|z| z["readings_stored"].as_u64())
        .expect("the zone's readings_stored");
    agent_stop.fire();
    agent.await.unwrap().unwrap();
    agg_stop.fire();
    running.wait().await;
    (stored_expected, stored)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_confirmation_a_broker_sigkill_loses_nothing() {
    let (expected, stored) = broker_sigkill_with_a_queue(true, 1000).await;
    eprintln!("broker SIGKILL with a queue, end_to_end_confirm: {stored} of {expected} readings stored");
    // Confirmed batches are durably stored by definition and the agent
    // deleted nothing else, so every reading is there; the store counts
    // distinct keys, so none twice.
    assert_eq!(stored, expected, "0 lost, 0 doubled");
}
