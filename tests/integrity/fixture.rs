//! What every integrity test uses: the broker, the aggregator process, the
//! messages an attacker or a mishap sends, and reading back what was shown.

pub(crate) use chrono::{DateTime, Duration as Span, Utc};
pub(crate) use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
pub(crate) use serde_json::Value;
pub(crate) use std::path::{Path, PathBuf};
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
pub(crate) use std::time::{Duration, Instant};
pub(crate) use tokio::sync::mpsc::UnboundedReceiver;
pub(crate) use zonesync_e2e::attack::{enterprise, rejected, setup, start, value_added, zone, MONTH};
pub(crate) use zonesync_e2e::dataset::{E, ZONE};
pub(crate) use zonesync_e2e::hostile::{copy_tree, fill, flip_middle, publish, Msg, Tmpfs};
pub(crate) use zonesync_e2e::{try_spawn_aggregator, AggregatorStart, Api, Proc};
pub(crate) use zonesync_proto::{
    digest, AgentId, Batch, Confirm, OutboxId, Presence, PresenceStatus, Reading, Topic, REFUSED_REUSED_SEQ,
    WIRE_VERSION,
};

pub(crate) const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn agent(name: &str) -> AgentId {
    AgentId::parse(name).expect("agent id")
}

/// An outbox id as an agent would draw it (random bytes), distinct per tag.
pub(crate) fn outbox(tag: u8) -> OutboxId {
    OutboxId::from_random([tag; 16])
}

/// An electricity meter register.
pub(crate) fn register(point: &str, value: f64, ts: DateTime<Utc>) -> Reading {
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
pub(crate) fn batch(
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
    Msg::batch(&b)
}

/// The retained presence an agent publishes when its outbox `ob` will number next from `next_seq`.
pub(crate) fn presence(agent_name: &str, ob: &OutboxId, next_seq: u64) -> Msg {
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

pub(crate) static CLIENTS: AtomicU64 = AtomicU64::new(0);

/// Subscribes to the aggregator's confirmations for `agent_name` (before
/// returning, so none published afterwards is missed).
pub(crate) async fn listen_confirms(port: u16, agent_name: &str) -> UnboundedReceiver<Confirm> {
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
pub(crate) async fn confirms_until(
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

/// Stops an aggregator with SIGTERM: a clean exit, no panic on its stderr.
pub(crate) fn stop(mut p: Proc) {
    let status = p.terminate();
    std::thread::sleep(Duration::from_millis(200));
    let stderr = p.stderr_text();
    assert!(status.success(), "clean exit on SIGTERM, got {status}:\n{stderr}");
    assert!(!stderr.contains("panicked"), "no panic:\n{stderr}");
}

/// October's value added for E`ent+1` as the enterprise page shows it, checked
/// against the zone's energy page (both read the same state; a batch applied
/// between the two reads is waited out).
pub(crate) async fn shown_value_added(api: &Api, ent: usize) -> Option<f64> {
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
pub(crate) async fn wait_value_added(api: &Api, ent: usize, want: f64) {
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
pub(crate) async fn dead_letters(api: &Api, label: &str) -> Vec<Value> {
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
pub(crate) async fn wait_dead_letters(api: &Api, label: &str, n: usize) -> Vec<Value> {
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

/// The agents page's entry for `agent_name`.
pub(crate) async fn agent_state(api: &Api, agent_name: &str) -> Value {
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
pub(crate) async fn announce(api: &Api, port: u16, agent_name: &str, ob: &OutboxId, next_seq: u64) {
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
pub(crate) async fn assert_healthy(api: &Api) {
    let (status, body) = api.get_with_status("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")), "{body}");
    let z = api.get("/api/v1/zones").await;
    assert_eq!(z["zones"][0]["id"], ZONE, "{z}");
    let g = api.get(&format!("/api/v1/zones/{ZONE}/goals?period={MONTH}")).await;
    assert!(g["goals"].as_array().is_some_and(|g| !g.is_empty()), "{g}");
}
