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
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;
use zonesync_e2e::dataset::{self, E, ZONE};
use zonesync_e2e::hostile::{copy_tree, fill, flip_middle, publish, Msg, Tmpfs};
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
/// A live batch of `agent`'s outbox for E`ent+1`, sent now unless `sent_at` says otherwise.
fn batch(agent_name: &str, ob: &OutboxId, seq: u64, ent: usize, sent_at: DateTime<Utc>, readings: Vec<Reading>) -> Msg {
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
    Msg::batch(&b)
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
        broker_denied_batches: 0,
        version: "integrity-test".into(),
        enterprises: vec![enterprise(0)],
    };
    Msg::presence(&p)
}

static CLIENTS: AtomicU64 = AtomicU64::new(0);

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
async fn confirms_until(
    rx: &mut UnboundedReceiver<Confirm>,
    what: &str,
    done: impl Fn(&[Confirm]) -> bool,
) -> Vec<Confirm> {
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
/// against the zone's energy page (both read the same state; a batch applied
/// between the two reads is waited out).
async fn shown_value_added(api: &Api, ent: usize) -> Option<f64> {
    let mut last = None;
    for _ in 0..50 {
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
        match (latest, row) {
            (Some(v), Some(row)) if row["value_added"].as_f64() != Some(v) => {
                last = Some(format!("enterprise page {v}, energy page {row}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => return latest,
        }
    }
    panic!("the energy page never agreed with the enterprise page: {last:?}");
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

/// Publishes `agent_name`'s retained presence for outbox `ob` and waits
/// until the aggregator has handled it. The first one after a fresh start
/// also shows the aggregator's subscription is in place (a retained message
/// reaches it whenever it subscribes; a batch published before would not).
async fn announce(api: &Api, port: u16, agent_name: &str, ob: &OutboxId, next_seq: u64) {
    publish(port, vec![presence(agent_name, ob, next_seq)]).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let a = api.get(&format!("/api/v1/zones/{ZONE}/agents")).await;
        let announced = a["agents"].as_array().is_some_and(|l| {
            l.iter().any(|x| {
                x["agent"] == agent_name
                    && x["state"]["outbox"] == ob.as_str()
                    && x["state"]["announced"]["next_seq"].as_u64() == Some(next_seq)
            })
        });
        if announced {
            return;
        }
        assert!(Instant::now() < deadline, "presence of {agent_name} not handled: {a:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// Copies a directory tree (`cp -a`).
/// Sixty batches for E1 with 20 new meter registers each (4 points × 5
/// minutes), seqs after `set` earlier sets; the set's last batch also states
/// October's value added as `va`. Returns the messages and the readings they add.
fn register_set(ob: &OutboxId, set: u64, va: f64) -> (Vec<Msg>, u64) {
    let base = Utc::now() - Span::days(3);
    let mut msgs = Vec::new();
    for b in 0..60u64 {
        let seq = set * 60 + b + 1;
        let mut readings = Vec::new();
        for j in 0..5u64 {
            let tick = (seq - 1) * 5 + j;
            for p in 1..=4u64 {
                let ts = base + Span::minutes(tick as i64);
                readings.push(register(&format!("M{p}"), (tick * 10 + p) as f64, ts));
            }
        }
        if b == 59 {
            readings.push(value_added(va));
        }
        msgs.push(batch("agent-a", ob, seq, 0, Utc::now(), readings));
    }
    // The month's figure is one stored reading, restated by later sets.
    (msgs, 60 * 20 + u64::from(set == 0))
}

/// Readings the zone holds, as `/api/v1/zones` counts them.
async fn readings_stored(api: &Api) -> u64 {
    api.get("/api/v1/zones").await["zones"][0]["readings_stored"]
        .as_u64()
        .unwrap_or(0)
}

async fn wait_readings(api: &Api, want: u64) {
    let deadline = Instant::now() + WAIT;
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = readings_stored(api).await;
        if seen >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, want, "readings stored");
}

/// How a damaged store came out at start.
#[derive(Debug)]
enum Verdict {
    /// Refused at start, with this message.
    Refused(String),
    /// Opened with every batch and reading there.
    Intact,
}

/// Starts an aggregator on a damaged store: it must either refuse to start
/// (non-zero exit, an error message naming the store) or hold everything
/// that was stored — never start with less.
async fn judge(case: &str, config: &Path, store: &Path, want_readings: u64, want_va: f64) -> Verdict {
    match try_spawn_aggregator(config, WAIT) {
        AggregatorStart::Exited(status, stderr) => {
            eprintln!("{case}: refused at start ({status}):\n{stderr}");
            assert!(!status.success(), "{case}: a refusal ends non-zero");
            assert!(
                stderr.contains("Error:") && stderr.contains(&store.display().to_string()),
                "{case}: the error names the store {}, not only a panic:\n{stderr}",
                store.display()
            );
            Verdict::Refused(stderr)
        }
        AggregatorStart::Serving(p, api) => {
            let held = readings_stored(&api).await;
            assert_eq!(
                held, want_readings,
                "{case}: the store opened but holds {held} readings of {want_readings}: a silent loss"
            );
            assert_eq!(shown_value_added(&api, 0).await, Some(want_va), "{case}");
            assert_eq!(agent_state(&api, "agent-a").await["last_seq"], 120, "{case}");
            assert_healthy(&api).await;
            eprintln!("{case}: opened intact ({held} readings)");
            stop(p);
            Verdict::Intact
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_rolled_back_store_is_refused_at_start_or_found_intact_never_silently_short() {
    let s = setup();
    let port = s.broker.port;
    let data = s.dir.path().join("aggregator");
    let store = data.join("store");
    let ob = outbox(0x51);
    let (agg, api) = start(&s.config);
    announce(&api, port, "agent-a", &ob, 1).await;
    let (first, n1) = register_set(&ob, 0, 40.0);
    publish(port, first).await;
    wait_readings(&api, n1).await;
    stop(agg);
    let after_first = s.dir.path().join("store-after-first-set");
    copy_tree(&store, &after_first);

    let (agg, api) = start(&s.config);
    let (second, n2) = register_set(&ob, 1, 41.0);
    publish(port, second).await;
    wait_readings(&api, n1 + n2).await;
    wait_value_added(&api, 0, 41.0).await;
    stop(agg);
    let want = n1 + n2;
    let files: Vec<String> = std::fs::read_dir(&store)
        .expect("store dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    eprintln!("store files: {files:?}");

    // Each case damages its own copy of the stopped aggregator's data directory.
    let config_text = std::fs::read_to_string(&s.config).expect("config");
    let case = |name: &str| {
        let d = s.dir.path().join(format!("case-{name}"));
        copy_tree(&data, &d);
        let cfg = s.dir.path().join(format!("aggregator-{name}.toml"));
        let text = config_text.replace(
            &format!("data_dir = \"{}\"", data.display()),
            &format!("data_dir = \"{}\"", d.display()),
        );
        assert_ne!(text, config_text, "data_dir replaced");
        std::fs::write(&cfg, text).expect("write config");
        (cfg, d.join("store"))
    };

    // (a) Bytes flipped in the middle of sled's data file.
    let (cfg, st) = case("flipped-db");
    flip_middle(&st.join("db"), 64);
    let a = judge("flipped db", &cfg, &st, want, 41.0).await;

    // (b) The data file truncated to a third: refused, with a message naming the store.
    let (cfg, st) = case("truncated-db");
    let db = st.join("db");
    let len = std::fs::metadata(&db).expect("db").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .and_then(|f| f.set_len(len / 3))
        .expect("truncate db");
    let b = judge("truncated db", &cfg, &st, want, 41.0).await;
    assert!(
        matches!(b, Verdict::Refused(_)),
        "a third of the data file cannot hold it all: {b:?}"
    );

    // (c) A byte flipped in sled's `conf`, and in its snapshot if there is one.
    let (cfg, st) = case("flipped-conf");
    flip_middle(&st.join("conf"), 1);
    let c1 = judge("flipped conf", &cfg, &st, want, 41.0).await;
    let snaps: Vec<PathBuf> = std::fs::read_dir(&store)
        .expect("store dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("snap."))
        .map(|e| e.file_name().into())
        .collect();
    let mut c2 = Vec::new();
    for snap in &snaps {
        let (cfg, st) = case(&format!("flipped-{}", snap.display()));
        flip_middle(&st.join(snap), 1);
        c2.push(judge(&format!("flipped {}", snap.display()), &cfg, &st, want, 41.0).await);
    }

    // (d) The store put back to a copy taken after the first set: the
    // high-water mark beside it knows more was stored and confirmed.
    let (cfg, st) = case("rolled-back");
    std::fs::remove_dir_all(&st).expect("remove store");
    copy_tree(&after_first, &st);
    match judge("rolled back", &cfg, &st, want, 41.0).await {
        Verdict::Refused(stderr) => assert!(
            stderr.contains("rolled back") && stderr.contains("store.high-water"),
            "the rollback message names the mark:\n{stderr}"
        ),
        Verdict::Intact => panic!("a store missing the second set cannot be intact"),
    }
    eprintln!("flipped db: {a:?}\nflipped conf: {c1:?}\nflipped snapshots {snaps:?}: {c2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_acknowledgements_and_every_batch_is_stored_once_there_is_room() {
    let s = setup();
    let port = s.broker.port;
    let mnt = s.dir.path().join("small-disk");
    let disk = Tmpfs::mount(&mnt, "8m");
    let config = s.dir.path().join("aggregator-small-disk.toml");
    let text = std::fs::read_to_string(&s.config).expect("config");
    let data = s.dir.path().join("aggregator");
    let text = text.replace(
        &format!("data_dir = \"{}\"", data.display()),
        &format!("data_dir = \"{}\"", disk.path.display()),
    );
    std::fs::write(&config, text).expect("write config");

    let ob = outbox(0x61);
    let (mut agg, api) = start(&config);
    announce(&api, port, "agent-a", &ob, 1).await;
    let (first, n1) = register_set(&ob, 0, 40.0);
    publish(port, first).await;
    wait_readings(&api, n1).await;
    let mut confirms = listen_confirms(port, "agent-a").await;

    let filler = fill(&disk.path);
    let (second, n2) = register_set(&ob, 1, 41.0);
    publish(port, second).await;
    // Nothing of the second set may be confirmed or shown before it is
    // durable: sled may still fit a few records into log space it allocated
    // before the disk filled (then its flush succeeds and they are durable and
    // confirmed), but nothing may be shown beyond what was confirmed. Within
    // some 40 s the process says it is unhealthy (503) or ends non-zero so
    // that systemd restarts it.
    let deadline = Instant::now() + Duration::from_secs(45);
    let (mut unhealthy, mut exited) = (None, None);
    let mut confirmed_second = std::collections::BTreeSet::new();
    while Instant::now() < deadline && exited.is_none() {
        while let Ok(c) = confirms.try_recv() {
            confirmed_second.extend((61..=120u64).filter(|seq| c.contains(*seq)));
        }
        if let Some(status) = agg.try_wait() {
            exited = Some(status);
            break;
        }
        if let Some((code, body)) = api.try_get_with_status("/healthz").await {
            if code == 503 {
                unhealthy.get_or_insert(body);
            }
            if let Some((200, z)) = api.try_get_with_status("/api/v1/zones").await {
                let held = z["zones"][0]["readings_stored"].as_u64().unwrap_or(0);
                // Confirmations of a flush go out right after its state is
                // applied: let them arrive before judging.
                tokio::time::sleep(Duration::from_millis(300)).await;
                while let Ok(c) = confirms.try_recv() {
                    confirmed_second.extend((61..=120u64).filter(|seq| c.contains(*seq)));
                }
                assert!(
                    held <= n1 + 20 * confirmed_second.len() as u64,
                    "nothing shown before it is durable: {held} readings shown, {n1} + 20 × {} confirmed",
                    confirmed_second.len()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "full disk: /healthz {unhealthy:?}, exit {exited:?}, stderr:\n{}",
        agg.stderr_text()
    );
    assert!(
        unhealthy.is_some() || exited.is_some_and(|s| !s.success()),
        "with its disk full the aggregator neither showed 503 nor ended non-zero within 45 s"
    );
    if let Some(status) = exited {
        assert!(!status.success(), "ends non-zero on a store it cannot write: {status}");
    }
    if let Some(body) = &unhealthy {
        assert!(
            body["problems"].as_array().is_some_and(|p| !p.is_empty()),
            "503 says why: {body}"
        );
    }
    while let Ok(c) = confirms.try_recv() {
        confirmed_second.extend((61..=120u64).filter(|seq| c.contains(*seq)));
    }
    assert!(
        confirmed_second.len() < 60,
        "the disk was full: not every batch of the second set can have been made durable ({confirmed_second:?})"
    );
    assert!(
        !agg.stderr_text().contains("panicked"),
        "no panic on a full disk:\n{}",
        agg.stderr_text()
    );

    // Room again; restarted as systemd would (a process still up is stopped first),
    // it gets the unacknowledged batches from the broker's persistent session.
    std::fs::remove_file(&filler).expect("remove filler");
    if exited.is_none() {
        agg.kill9();
    }
    drop(agg);
    let (agg, api) = start(&config);
    wait_readings(&api, n1 + n2).await;
    wait_value_added(&api, 0, 41.0).await;
    // Those made durable (and confirmed) while the disk was full are not
    // delivered again; every other one is confirmed now.
    confirms_until(&mut confirms, "the second set after the restart", |cs| {
        (61..=120).all(|seq| confirmed_second.contains(&seq) || cs.iter().any(|c| c.contains(seq)))
    })
    .await;
    let a = agent_state(&api, "agent-a").await;
    assert_eq!(a["last_seq"], 120, "{a:#}");
    assert_eq!(api.metric("zonesync_aggregator_store_errors_total").await, 0.0);
    assert_healthy(&api).await;
    stop(agg);
    drop(disk);
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
