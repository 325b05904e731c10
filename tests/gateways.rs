//! End-to-end tests of the gateway sources: the plant's own broker (a
//! Mosquitto of its own) with an existing gateway publishing to it — EMQX
//! Neuron-shaped JSON (published here with rumqttc), a Sparkplug B edge node
//! (PyPI `pysparkplug`, `peers/sparkplug_node.py`) — the agent in-process
//! subscribing there, and the readings through the zone's Mosquitto to the
//! aggregator, whose API is checked.
//!
//! Each test probes with `zonesync-agent check` first, has the peer fail
//! and come back mid-test (the plant broker killed; the edge node killed, so
//! the broker publishes its NDEATH, then born again with bdSeq + 1), feeds
//! it bad input, and ends with a ledger: the aggregator holds exactly the
//! readings the agent appended.

use serde_json::json;
use std::time::{Duration, Instant};
use zonesync_e2e::dataset::E;
use zonesync_e2e::gateways::{publish, SparkplugNode};
use zonesync_e2e::plant::{agent_check, count, line_with, Plant, WAIT};
use zonesync_e2e::Mosquitto;

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

fn tag(extra: &str, tag: &str, indicator: &str, unit: &str, point: &str) -> String {
    format!(
        "\n[[mqtt_gateway.tags]]\n{extra}tag = \"{tag}\"\nindicator = \"{indicator}\"\nunit = \"{unit}\"\nenterprise = \"{}\"\npoint = \"{point}\"\n",
        E[0]
    )
}

fn neuron_config(plant: &Plant, port: u16) -> String {
    let at = "node = \"modbus-1\"\ngroup = \"meters\"\n";
    plant.agent_header("neuron-gw")
        + &format!("\n[[mqtt_gateway]]\nname = \"neuron\"\nkind = \"neuron\"\nport = {port}\nkeep_alive_secs = 5\n")
        + &tag(at, "kwh_total", "electricity", "kWh", "N1")
        + &tag(&format!("{at}scale = 0.001\n"), "power_w", "active_power", "kW", "N2")
}

/// One values-format upload from south node `modbus-1`, group `meters`.
fn values_format(ts: u64, kwh: f64, extra: serde_json::Value) -> Vec<u8> {
    let mut values = json!({ "kwh_total": kwh, "power_w": 12_000, "running": true });
    if let (Some(v), Some(e)) = (values.as_object_mut(), extra.as_object()) {
        v.extend(e.clone());
    }
    json!({ "timestamp": ts, "node": "modbus-1", "group": "meters", "values": values, "errors": { "temp": 2014 } })
        .to_string()
        .into_bytes()
}

const NEURON_TOPIC: &str = "/neuron/zonesync/modbus-1/meters";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neuron_uploads_become_readings_through_a_plant_broker_that_dies_and_returns() {
    let mut plant = Plant::start(true).await;
    let dir = plant.dir.path().join("plant-broker");
    std::fs::create_dir_all(&dir).unwrap();
    let mut local = Mosquitto::start(&dir);
    let config = neuron_config(&plant, local.port);

    // `check` listens for 10 s: Neuron publishes every interval, so do we.
    let check = tokio::spawn({
        let (dir, config) = (plant.dir.path().to_owned(), config.clone());
        async move { agent_check(&dir, &config).await }
    });
    while !check.is_finished() {
        publish(local.port, NEURON_TOPIC, values_format(now_ms(), 999.5, json!({}))).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = check.await.unwrap();
    line_with(&out, &["mqtt_gateway", "neuron", "ok", "electricity [N1] = 999.5 kWh"]);
    line_with(&out, &["mqtt_gateway", "neuron", "ok", "active_power [N2] = 12 kW"]);

    plant.start_agent(&config);
    let source = "mqtt_gateway:neuron";
    plant
        .wait_source("neuron-gw", source, "a session", |s| count(s, "sessions") > 0)
        .await;
    publish(local.port, NEURON_TOPIC, values_format(now_ms(), 1000.5, json!({}))).await;
    plant.wait_latest("N1", 1000.5).await;
    plant.wait_latest("N2", 12.0).await;

    // Tags-format, Neuron 2.0's field names.
    let tags = json!({ "node_name": "modbus-1", "group_name": "meters", "timestamp": now_ms(),
        "tags": [{ "name": "kwh_total", "value": 1001.25 }, { "name": "power_w", "error": 2014 }] });
    publish(local.port, NEURON_TOPIC, tags.to_string().into_bytes()).await;
    plant.wait_latest("N1", 1001.25).await;

    // Bad input: no upload at all, a string where a number belongs, and the
    // same upload delivered twice — each counted, none sent, nothing stops.
    publish(local.port, NEURON_TOPIC, b"<html>502 Bad Gateway</html>".to_vec()).await;
    let twice = values_format(now_ms(), 1001.5, json!({ "kwh_total": "n/a" }));
    publish(local.port, NEURON_TOPIC, twice.clone()).await;
    publish(local.port, NEURON_TOPIC, twice).await;
    let s = plant
        .wait_source("neuron-gw", source, "the bad input counted", |s| {
            count(s, "malformed") >= 1 && count(s, "not_numeric") >= 1 && count(s, "duplicates") >= 1
        })
        .await;
    assert!(count(&s, "unmapped_tags") >= 1 && count(&s, "tag_errors") >= 1, "{s}");

    // The plant broker dies (no persistence written) and comes back; the
    // agent reconnects and subscribes again, and Neuron's next uploads arrive.
    local.kill9();
    plant
        .wait_source("neuron-gw", source, "the lost broker counted", |s| {
            count(s, "connection_errors") > 0
        })
        .await;
    local.restart();
    let deadline = Instant::now() + WAIT;
    while plant.latest("N1").await != Some(1002.0) {
        assert!(Instant::now() < deadline, "no reading after the plant broker came back");
        publish(local.port, NEURON_TOPIC, values_format(now_ms(), 1002.0, json!({}))).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    plant.ledger_balances("neuron-gw", &[source]).await;
    assert!(plant.agent_running());
    plant.stop().await;
}

fn sparkplug_config(plant: &Plant, port: u16) -> String {
    let node = "node = \"edge1\"\ngroup = \"plant\"\n";
    plant.agent_header("spb-gw")
        + &format!("\n[[mqtt_gateway]]\nname = \"spb\"\nkind = \"sparkplug\"\nport = {port}\nkeep_alive_secs = 5\n")
        + &tag(node, "Energy", "electricity", "kWh", "S1")
        + &tag(node, "Power", "active_power", "kW", "S2")
        + &tag(
            &format!("{node}device = \"meter-1\"\n"),
            "Energy",
            "electricity",
            "kWh",
            "S3",
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkplug_b_births_aliases_seq_and_bdseq_through_an_edge_node_that_dies_and_returns() {
    let mut plant = Plant::start(true).await;
    let dir = plant.dir.path().join("plant-broker");
    std::fs::create_dir_all(&dir).unwrap();
    let local = Mosquitto::start(&dir);
    let mut node = SparkplugNode::start(plant.dir.path(), local.port);
    let config = sparkplug_config(&plant, local.port);

    // `check` asks the node for a rebirth and reads the births' values.
    let out = agent_check(plant.dir.path(), &config).await;
    line_with(&out, &["mqtt_gateway", "spb", "ok", "electricity [S1] = 1000 kWh"]);
    line_with(&out, &["mqtt_gateway", "spb", "ok", "electricity [S3] = 500 kWh"]);
    node.wait_line("rebirth edge1");

    // The agent starts after the births: the first NDATA comes before any
    // birth it saw, so it asks for a rebirth, and the births carry the values.
    plant.start_agent(&config);
    let source = "mqtt_gateway:spb";
    plant
        .wait_source("spb-gw", source, "a session", |s| count(s, "sessions") > 0)
        .await;
    node.command(r#"{"cmd": "ndata", "metrics": {"Energy": 1001.0, "Power": 11.5}}"#);
    node.wait_line("rebirth edge1");
    plant.wait_latest("S1", 1001.0).await;
    plant.wait_latest("S2", 11.5).await;
    plant.wait_latest("S3", 500.0).await;

    // DATA by alias only, node and device.
    node.command(r#"{"cmd": "ndata", "metrics": {"Energy": 1002.0}}"#);
    node.command(r#"{"cmd": "ddata", "metrics": {"Energy": 501.0}}"#);
    plant.wait_latest("S1", 1002.0).await;
    plant.wait_latest("S3", 501.0).await;

    // A seq gap: that message is not used, a rebirth brings the value.
    node.command(r#"{"cmd": "gap"}"#);
    node.command(r#"{"cmd": "ndata", "metrics": {"Energy": 1003.0}}"#);
    node.wait_line("rebirth edge1");
    plant.wait_latest("S1", 1003.0).await;
    // DATA from a node never born: counted, and that node is asked for its births.
    node.command(r#"{"cmd": "unborn", "node": "edge9", "metrics": {"Energy": 1.0}}"#);
    node.wait_line("rebirth edge9");

    // The node dies: the broker publishes its will, an NDEATH with bdSeq 0,
    // which ends the session; it comes back with bdSeq 1 and is read again.
    let before = plant
        .wait_source("spb-gw", source, "seq gaps and data before birth", |s| {
            count(s, "seq_gaps") >= 1 && count(s, "data_before_birth") >= 2
        })
        .await;
    node.kill();
    plant
        .wait_source("spb-gw", source, "the NDEATH", |s| count(s, "deaths") >= 1)
        .await;
    node.restart();
    node.command(r#"{"cmd": "ndata", "metrics": {"Energy": 1004.0}}"#);
    let deadline = Instant::now() + WAIT;
    while plant.latest("S1").await != Some(1004.0) {
        assert!(
            Instant::now() < deadline,
            "S1 never 1004 after the node came back; counters {}, node said {:?}",
            plant
                .agent_status("spb-gw")
                .map(|s| s["sources"].clone())
                .unwrap_or_default(),
            node.seen
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = plant
        .wait_source("spb-gw", source, "the new birth", |s| {
            count(s, "births") > count(&before, "births")
        })
        .await;
    assert_eq!(
        count(&after, "stale_deaths"),
        0,
        "the will was the session's own: {after}"
    );

    node.kill();
    plant
        .wait_source("spb-gw", source, "the last NDEATH", |s| count(s, "deaths") >= 2)
        .await;
    plant.ledger_balances("spb-gw", &[source]).await;
    assert!(plant.agent_running());
    plant.stop().await;
}
