//! The hostile-payload corpus (tests/corpus/manifest.toml) through a real
//! Mosquitto to a real aggregator process: every case refused with its own
//! reason and counted per reason, the process up throughout, and the good
//! batch published after each case kept exactly. A second test shows the
//! broker limit shipped in deploy/mosquitto/zonesync.conf stops a 10 MiB
//! message before it reaches the aggregator.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use zonesync_e2e::corpus::{self, DEFAULT_TOPIC};
use zonesync_e2e::dataset::{self, E, ZONE};
use zonesync_e2e::{spawn_aggregator, Api, Mosquitto};

const WAIT: Duration = Duration::from_secs(90);

/// Publishes every message at QoS 1 on one connection and waits for every
/// PUBACK; returns the connection error if the broker dropped it.
async fn publish_all(port: u16, client_id: &str, messages: Vec<(String, Vec<u8>)>) -> Result<(), String> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut events) = AsyncClient::new(o, 64);
    let n = messages.len();
    let poll = tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    });
    for (topic, payload) in messages {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| e.to_string())?;
    }
    tokio::time::timeout(Duration::from_secs(60), poll)
        .await
        .map_err(|_| "no PUBACK for every message within 60 s".to_owned())?
        .map_err(|e| e.to_string())?
}

/// A good batch for E1 with one reading, distinct per `i`.
fn good(i: u64, now: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    let ts = (now - chrono::Duration::minutes(5) + chrono::Duration::seconds(i as i64)).to_rfc3339();
    serde_json::to_vec(
        &json!({"v": 1, "agent": "gw-x", "boot": 1, "seq": 1000 + i, "sent_at": now.to_rfc3339(),
        "zone": ZONE, "enterprise": E[0],
        "readings": [{"indicator": "electricity", "point": "G", "value": 100.0 + i as f64, "unit": "kWh", "ts": ts}]}),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_is_refused_case_by_case_and_good_data_between_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let ds = dataset::write(dir.path(), broker.port, 1, 2);
    let (_agg, api) = spawn_aggregator(&ds.aggregator);
    api.wait_metric("zonesync_aggregator_mqtt_connected", 1.0, WAIT).await;

    let cases = corpus::cases();
    let now = chrono::Utc::now();
    let mut messages = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        messages.push((case.topic().to_owned(), corpus::payload(case, now)));
        messages.push((DEFAULT_TOPIC.to_owned(), good(i as u64, now)));
    }
    // The first good batch again: a duplicate, refused silently and counted.
    messages.push((DEFAULT_TOPIC.to_owned(), good(0, now)));
    let total = messages.len() as f64;
    publish_all(broker.port, "hostile-client", messages).await.unwrap();
    api.wait_metric("zonesync_aggregator_acks_sent_total", total, WAIT)
        .await;

    // Every message reached the same aggregator process, which is still up.
    assert_eq!(api.metric("zonesync_aggregator_messages_received_total").await, total);
    assert_eq!(api.get("/healthz").await["status"], "ok");
    assert_eq!(api.metric("zonesync_aggregator_store_errors_total").await, 0.0);

    // An empty message on a data topic is `zonesync-agent check`'s route
    // probe (protocol.md §1): acknowledged and counted, not dead-lettered
    // (the validator alone still calls it malformed: tests/corpus_fuzz.rs).
    let (probes, refused): (Vec<&corpus::Case>, Vec<&corpus::Case>) =
        cases.iter().partition(|c| corpus::payload(c, now).is_empty());
    assert_eq!(
        api.metric("zonesync_aggregator_probes_received_total").await,
        probes.len() as f64
    );

    // One dead letter per other case, in publishing order, with its own reasons.
    let dl = api.get("/api/v1/dead-letters?limit=1000").await;
    let mut letters = dl["dead_letters"].as_array().cloned().unwrap_or_default();
    letters.sort_by_key(|d| d["id"].as_u64().unwrap_or(0));
    assert_eq!(letters.len(), refused.len(), "one dead letter per case: {dl:#}");
    let mut want_counts: BTreeMap<String, f64> = BTreeMap::new();
    for (case, letter) in refused.iter().zip(&letters) {
        let labels: Vec<String> = letter["labels"]
            .as_array()
            .map(|a| a.iter().filter_map(|l| l.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        assert_eq!(labels, case.labels, "{}: {letter:#}", case.name());
        let reasons = letter["reasons"].to_string();
        for s in &case.says {
            let needle = serde_json::to_string(s).unwrap();
            let needle = &needle[1..needle.len() - 1];
            assert!(
                reasons.contains(needle),
                "{}: no reason says {s:?}: {reasons}",
                case.name()
            );
        }
        assert_eq!(letter["whole_batch"], json!(case.whole), "{}: {letter:#}", case.name());
        for l in &case.labels {
            *want_counts.entry(l.clone()).or_default() += 1.0;
        }
    }
    let rejected = |r: &str| format!("zonesync_aggregator_rejected_total{{reason=\"{r}\"}}");
    for (label, n) in &want_counts {
        assert_eq!(api.metric(&rejected(label)).await, *n, "rejected_total for {label}");
    }
    let by_reason = &dl["rejected_by_reason"];
    let counted: f64 = by_reason
        .as_object()
        .map(|m| m.values().filter_map(Value::as_f64).sum())
        .unwrap_or(0.0);
    assert_eq!(
        counted,
        want_counts.values().sum::<f64>(),
        "no reason counted that the manifest does not expect: {by_reason}"
    );

    // Good data: one reading per good batch plus what the partial cases kept, once each.
    let kept: u64 = cases.iter().map(|c| c.kept).sum();
    let want = cases.len() as u64 + kept;
    assert_eq!(
        api.metric("zonesync_aggregator_readings_stored_total").await,
        want as f64
    );
    assert_eq!(api.metric("zonesync_aggregator_batches_duplicate_total").await, 1.0);
    let e1 = api.get(&format!("/api/v1/zones/{ZONE}/enterprises/{}", E[0])).await;
    assert_eq!(e1["readings"], json!(want), "{e1}");
    eprintln!(
        "corpus: {} hostile cases refused ({} reasons counted), {} good readings kept, 1 duplicate batch suppressed",
        cases.len(),
        counted,
        want
    );
}

/// `max_packet_size` from the shipped broker configuration.
fn shipped_broker_limit() -> usize {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto/zonesync.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("max_packet_size ")?.trim().parse().ok())
        .expect("deploy/mosquitto/zonesync.conf sets max_packet_size")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_broker_limit_stops_a_ten_megabyte_message_before_the_aggregator() {
    let limit = shipped_broker_limit();
    assert!(limit < 10 << 20, "the shipped limit ({limit} B) is below 10 MiB");
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start_with(dir.path(), &format!("max_packet_size {limit}"));
    let ds = dataset::write(dir.path(), broker.port, 1, 2);
    let (_agg, api): (_, Api) = spawn_aggregator(&ds.aggregator);
    api.wait_metric("zonesync_aggregator_mqtt_connected", 1.0, WAIT).await;
    let now = chrono::Utc::now();
    let refused = publish_all(
        broker.port,
        "oversized-client",
        vec![(DEFAULT_TOPIC.to_owned(), corpus::ten_megabytes(now))],
    )
    .await;
    assert!(refused.is_err(), "the broker must drop a client sending 10 MiB");
    // The broker is still up and serves the next client; the aggregator never saw the big one.
    publish_all(
        broker.port,
        "next-client",
        vec![(DEFAULT_TOPIC.to_owned(), good(1, now))],
    )
    .await
    .unwrap();
    api.wait_metric("zonesync_aggregator_readings_stored_total", 1.0, WAIT)
        .await;
    assert_eq!(api.metric("zonesync_aggregator_messages_received_total").await, 1.0);
    assert_eq!(api.metric("zonesync_aggregator_dead_letters_total").await, 0.0);
}
