//! Attacks and mishaps on the aggregator, reproduced through a real
//! Mosquitto and real aggregator processes (issue 13, "A core you can
//! trust"): forged and reused sequence numbers, a clock far ahead, an outbox
//! reinstalled after a fast clock, a damaged or rolled-back store, a full
//! disk. Each test checks both sides: the real data ends stored and is the
//! figure shown, and the hostile or damaged input is refused or reported
//! with its reason (dead letters, `/metrics`, the agents list, the
//! confirmation on `zonesync/v1/{zone}/{agent}/confirm`, the exit status).
//!
//! The registry is the hand-computed data set's (`support/dataset.rs`):
//! enterprises with no agent binding, so any agent of the zone may report
//! for them; the sent-at test binds E1 to two agents explicitly.

use chrono::{DateTime, Duration as Span, Utc};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;
use zonesync_e2e::dataset::{self, E, ZONE};
use zonesync_e2e::{try_spawn_aggregator, AggregatorStart, Api, Mosquitto, Proc};
use zonesync_proto::{
    digest, AgentId, Batch, Confirm, EnterpriseId, OutboxId, Period, Presence, PresenceStatus, Reading, Topic, ZoneId,
    REFUSED_REUSED_SEQ, WIRE_VERSION,
};

const WAIT: Duration = Duration::from_secs(30);

/// The month whose value added the tests restate.
const MONTH: Period = Period::Month(2026, 10);

fn zone() -> ZoneId {
    ZoneId::parse(ZONE).expect("zone id")
}

fn agent(name: &str) -> AgentId {
    AgentId::parse(name).expect("agent id")
}

fn enterprise(i: usize) -> EnterpriseId {
    EnterpriseId::parse(E[i]).expect("credit code")
}

/// An outbox id as an agent would draw it (random bytes), distinct per tag.
fn outbox(tag: u8) -> OutboxId {
    OutboxId::from_random([tag; 16])
}

/// October 2026's value added (month to date), in 10k yuan.
fn value_added(value: f64) -> Reading {
    Reading {
        indicator: "value_added".into(),
        point: String::new(),
        value,
        unit: "10k_yuan".into(),
        ts: None,
        period: Some(MONTH),
    }
}

/// An electricity meter register.
fn register(point: &str, value: f64, ts: DateTime<Utc>) -> Reading {
    Reading {
        indicator: "electricity".into(),
        point: point.into(),
        value,
        unit: "kWh".into(),
        ts: Some(ts),
        period: None,
    }
}

/// One MQTT message to publish.
struct Msg {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

/// A live batch of `agent`'s outbox for E`ent+1`, sent now unless `sent_at` says otherwise.
fn batch(
    agent_name: &str,
    ob: &OutboxId,
    seq: u64,
    ent: usize,
    sent_at: DateTime<Utc>,
    readings: Vec<Reading>,
) -> Msg {
    let b = Batch {
        v: WIRE_VERSION,
        agent: agent(agent_name),
        boot: 1,
        outbox: Some(ob.clone()),
        seq,
        sent_at,
        zone: zone(),
        enterprise: enterprise(ent),
        backfill: false,
        readings,
        declarations: vec![],
    };
    Msg {
        topic: Topic::data(&b.zone, &b.agent, &b.enterprise),
        payload: b.to_payload(),
        retain: false,
    }
}

/// The retained presence an agent publishes when its outbox `ob` will number next from `next_seq`.
fn presence(agent_name: &str, ob: &OutboxId, next_seq: u64) -> Msg {
    let p = Presence {
        v: WIRE_VERSION,
        agent: agent(agent_name),
        zone: zone(),
        status: PresenceStatus::Online,
        boot: 1,
        at: Utc::now(),
        outbox: Some(ob.clone()),
        next_seq,
        dropped_readings: 0,
        dropped_sent_readings: 0,
        clock_offset_ms: None,
        version: "integrity-test".into(),
        enterprises: vec![enterprise(0)],
    };
    Msg {
        topic: Topic::state(&p.zone, &p.agent),
        payload: p.to_payload(),
        retain: true,
    }
}

static CLIENTS: AtomicU64 = AtomicU64::new(0);

/// Publishes `msgs` in order at QoS 1 on one fresh connection (the broker
/// keeps their order to each subscriber) and waits for every PUBACK.
async fn publish(port: u16, msgs: Vec<Msg>) {
    let id = format!(
        "integrity-pub-{}-{}",
        std::process::id(),
        CLIENTS.fetch_add(1, Ordering::SeqCst)
    );
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(o, 256);
    let n = msgs.len();
    let poll = tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => panic!("publisher connection: {e}"),
            }
        }
        let _ = client_disconnect(events).await;
    });
    for m in msgs {
        client
            .publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload)
            .await
            .expect("queue publish");
    }
    tokio::time::timeout(WAIT, poll)
        .await
        .expect("every message acknowledged by the broker")
        .expect("publisher task");
    let _ = client.disconnect().await;
}

async fn client_disconnect(mut events: rumqttc::EventLoop) -> Result<(), rumqttc::ConnectionError> {
    // Drive the loop a moment longer so a queued DISCONNECT goes out.
    let _ = tokio::time::timeout(Duration::from_millis(100), events.poll()).await;
    Ok(())
}

/// Subscribes to the aggregator's confirmations for `agent_name` (before
/// returning, so none published afterwards is missed).
async fn listen_confirms(port: u16, agent_name: &str) -> UnboundedReceiver<Confirm> {
    let id = format!(
        "integrity-confirms-{}-{}",
        std::process::id(),
        CLIENTS.fetch_add(1, Ordering::SeqCst)
    );
    let (client, mut events) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 64);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let topic = Topic::confirm(&zone(), &agent(agent_name));
    tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client
                        .subscribe(topic.clone(), QoS::AtLeastOnce)
                        .await
                        .expect("subscribe to confirmations");
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed_tx.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let c: Confirm = serde_json::from_slice(&p.payload).expect("a confirmation");
                    if tx.send(c).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(WAIT, subscribed)
        .await
        .expect("subscribed to confirmations")
        .expect("listener task");
    rx
}

/// Collects confirmations until `done` holds for those seen so far.
async fn confirms_until(rx: &mut UnboundedReceiver<Confirm>, what: &str, done: impl Fn(&[Confirm]) -> bool) -> Vec<Confirm> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(c)) => seen.push(c),
            _ => panic!("{what}: not confirmed within {WAIT:?}; confirmations seen: {seen:#?}"),
        }
    }
    seen
}

/// Starts an aggregator process on `config` that must come up.
fn start(config: &Path) -> (Proc, Api) {
    match try_spawn_aggregator(config, WAIT) {
        AggregatorStart::Serving(p, api) => (p, api),
        AggregatorStart::Exited(status, stderr) => panic!("the aggregator ended at start ({status}):\n{stderr}"),
    }
}

/// Stops an aggregator with SIGTERM: a clean exit, no panic on its stderr.
fn stop(mut p: Proc) {
    let status = p.terminate();
    std::thread::sleep(Duration::from_millis(200));
    let stderr = p.stderr_text();
    assert!(status.success(), "clean exit on SIGTERM, got {status}:\n{stderr}");
    assert!(!stderr.contains("panicked"), "no panic:\n{stderr}");
}

/// October's value added for E`ent+1` as the enterprise page shows it, checked
/// against the zone's energy page (both read the same state).
async fn shown_value_added(api: &Api, ent: usize) -> Option<f64> {
    let e = api.get(&format!("/api/v1/zones/{ZONE}/enterprises/{}", E[ent])).await;
    let latest = e["latest"]
        .as_array()?
        .iter()
        .find(|r| r["indicator"] == "value_added" && r["period"] == MONTH.to_string())?["value"]
        .as_f64();
    let en = api.get(&format!("/api/v1/zones/{ZONE}/energy?period={MONTH}")).await;
    let row = en["enterprises"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["enterprise"] == E[ent]).cloned());
    if let (Some(v), Some(row)) = (latest, row) {
        assert_eq!(row["value_added"].as_f64(), Some(v), "energy page agrees: {row}");
    }
    latest
}

/// Waits until E`ent+1`'s October value added shows `want`.
async fn wait_value_added(api: &Api, ent: usize, want: f64) {
    let deadline = Instant::now() + WAIT;
    let mut seen = None;
    while Instant::now() < deadline {
        seen = shown_value_added(api, ent).await;
        if seen == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("value added of E{} shows {seen:?}, expected {want}", ent + 1);
}

/// Dead letters carrying `label`, oldest first.
async fn dead_letters(api: &Api, label: &str) -> Vec<Value> {
    let dl = api.get("/api/v1/dead-letters?limit=1000").await;
    let mut v: Vec<Value> = dl["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d["labels"].as_array().is_some_and(|l| l.iter().any(|x| x == label)))
        .collect();
    v.sort_by_key(|d| d["id"].as_u64().unwrap_or(0));
    v
}

/// Waits until `n` dead letters carry `label`; returns them.
async fn wait_dead_letters(api: &Api, label: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = dead_letters(api, label).await;
        if v.len() >= n {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{n} dead letters labelled {label} expected, found {}",
            v.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rejected(label: &str) -> String {
    format!("zonesync_aggregator_rejected_total{{reason=\"{label}\"}}")
}

/// The agents page's entry for `agent_name`.
async fn agent_state(api: &Api, agent_name: &str) -> Value {
    let a = api.get(&format!("/api/v1/zones/{ZONE}/agents")).await;
    a["agents"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["agent"] == agent_name))
        .map(|x| x["state"].clone())
        .unwrap_or_else(|| panic!("{agent_name} missing from {a}"))
}

/// `/healthz` answers 200 "ok" and the API answers.
async fn assert_healthy(api: &Api) {
    let (status, body) = api.get_with_status("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")), "{body}");
    let z = api.get("/api/v1/zones").await;
    assert_eq!(z["zones"][0]["id"], ZONE, "{z}");
    let g = api.get(&format!("/api/v1/zones/{ZONE}/goals?period={MONTH}")).await;
    assert!(g["goals"].as_array().is_some_and(|g| !g.is_empty()), "{g}");
}

/// The test's broker, registry and aggregator config, in a fresh directory.
struct Setup {
    dir: tempfile::TempDir,
    broker: Mosquitto,
    config: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Mosquitto::start(dir.path());
    let ds = dataset::write(dir.path(), broker.port, 1, 2);
    Setup {
        config: ds.aggregator,
        broker,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_max_seq_is_refused_as_seq_ahead_and_the_real_correction_wins() {
    let s = setup();
    let port = s.broker.port;
    let (agg, api) = start(&s.config);
    let ob = outbox(1);
    let mut confirms = listen_confirms(port, "agent-a").await;
    let now = Utc::now();
    publish(
        port,
        vec![
            presence("agent-a", &ob, 1),
            batch("agent-a", &ob, 1, 0, now, vec![value_added(40.0)]),
        ],
    )
    .await;
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
    assert!(
        seen.iter().all(|c| c.outbox.as_ref() == Some(&ob)),
        "{seen:#?}"
    );
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
    drop(s.dir);
}
