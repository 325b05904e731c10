//! End-to-end tests: real brokers (embedded rumqttd, Mosquitto), agents and
//! the aggregator as real processes or in-process, real sockets throughout.
//! Expected figures are worked out by hand in `support/dataset.rs`.

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use zonesync_agent::config::AgentConfig;
use zonesync_agent::shutdown;
use zonesync_aggregator::config::AggregatorConfig;
use zonesync_demo as demo;
use zonesync_e2e::dataset::{self, Dataset, E, ZONE};
use zonesync_e2e::inprocess::InProcess;
use zonesync_e2e::proxy::Proxy;
use zonesync_e2e::{approx, goal, spawn_agent, spawn_aggregator, Api, Mosquitto};

const WAIT: Duration = Duration::from_secs(90);

/// The coverage rates and intensities of the 97-tick data set, by hand:
/// in scope E1..E4; E4 silent (unknown).
async fn assert_hand_computed_goals(api: &Api, ds: &Dataset) {
    let want = ds.expected_readings() as f64;
    api.wait_metric("zonesync_aggregator_readings_stored_total", want, WAIT)
        .await;
    api.wait_metric(
        "zonesync_aggregator_declarations_stored_total",
        ds.expected_declarations() as f64,
        WAIT,
    )
    .await;
    assert_eq!(api.metric("zonesync_aggregator_readings_stored_total").await, want);
    assert_eq!(api.metric("zonesync_aggregator_readings_duplicate_total").await, 0.0);

    let g = api.get(&format!("/api/v1/zones/{ZONE}/goals?period=2026-10")).await;
    // (id, numerator, unknown, value) with denominator 4 (E1..E4).
    for (id, num, unknown, value) in [
        ("HN27-03", 2.0, 1, 0.5),  // E1 maturity 3, E3 SME level 2; E2 maturity 1; E4 unknown
        ("HN27-04", 2.0, 1, 0.5),  // R&D: E1, E3
        ("JY27-16", 3.0, 1, 0.75), // any scenario: E1, E2, E3
        ("JY27-18", 2.0, 1, 0.5),  // intermediate or above: E1, E3
        ("JY27-17", 1.0, 1, 0.25), // advanced: E1
        ("PY-07", 1.0, 1, 0.25),   // smart retrofit: E1 flag; E2 maturity 1; E3 flag false
    ] {
        let row = goal(&g, id);
        assert_eq!(row["numerator"], json!(num), "{id}: {row}");
        assert_eq!(row["denominator"], json!(4.0), "{id}: {row}");
        assert_eq!(row["unknown"], json!(unknown), "{id}: {row}");
        approx(&row["value"], value, id);
    }
    assert_eq!(goal(&g, "HN27-03")["status"], "not_met");

    // Energy, October = one day: rate × 3 meters-weight × 208 kWh × 0.0001229 tce/kWh.
    let tce = |rate: f64| rate * 3.0 * 208.0 * 0.0001229;
    let ei = goal(&g, "EI");
    approx(&ei["numerator"], tce(10.0) + tce(20.0) + tce(5.0), "zone tce"); // 2.684136
    approx(&ei["denominator"], 40.0 + 100.0 + 10.0, "zone value added");
    approx(&ei["value"], 2.684136 / 150.0, "zone intensity");
    assert_eq!((ei["reported"].clone(), ei["unknown"].clone()), (json!(3), json!(1)));

    let en = api.get(&format!("/api/v1/zones/{ZONE}/energy?period=2026-10")).await;
    let row = |id: &str| {
        en["enterprises"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["enterprise"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing from {en}"))
    };
    approx(&row(E[0])["intensity"], 0.766896 / 40.0, "E1 intensity");
    approx(&row(E[1])["intensity"], 1.533792 / 100.0, "E2 intensity");
    approx(&row(E[2])["intensity"], 0.383448 / 10.0, "E3 intensity");
    approx(&row(E[0])["carriers"][0]["amount"], 6240.0, "E1 kWh");
    assert_eq!(row(E[3])["intensity"], Value::Null, "E4 never reported");
}

/// Readings of a 2000-tick run: every one exactly once, energy exact.
async fn assert_exact_ledger(api: &Api, ds: &Dataset) {
    let want = ds.expected_stored_readings();
    let deadline = std::time::Instant::now() + WAIT;
    let mut stored = 0;
    while std::time::Instant::now() < deadline {
        let z = api.get("/api/v1/zones").await;
        stored = z["zones"][0]["readings_stored"].as_u64().unwrap_or(0);
        if stored >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stored, want, "readings stored vs produced");
    // Not even sent twice: a kill between the outbox's mark and its flush
    // skips the cut-short seal's numbers instead of rotating and resending
    // everything held (agent/src/outbox/identity.rs, `seq-done`).
    assert_eq!(api.metric("zonesync_aggregator_readings_duplicate_total").await, 0.0);
    // 1999 intervals = 20 whole days + 79 intervals (32 at weight 1, 47 at weight 3) of day 21.
    let days = 20.0 * 208.0 + 173.0;
    let en = api.get(&format!("/api/v1/zones/{ZONE}/energy?period=2026-10")).await;
    for (id, rate, va) in [(E[0], 10.0, 40.0), (E[1], 20.0, 100.0), (E[2], 5.0, 10.0)] {
        let row = en["enterprises"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["enterprise"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing"));
        approx(&row["carriers"][0]["amount"], rate * 3.0 * days, &format!("{id} kWh"));
        approx(&row["value_added"], va * 20.0, &format!("{id} value added"));
        let e = api.get(&format!("/api/v1/zones/{ZONE}/enterprises/{id}")).await;
        assert_eq!(e["late_readings"], json!(0), "{id}: registers arrived in order");
        assert_eq!(e["counter_resets"], json!(0), "{id}");
    }
}

fn tracing_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,rumqttd=off"))
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_goals_match_hand_computed_figures() {
    tracing_init();
    let dir = tempfile::tempdir().unwrap();
    let t = InProcess::start(dir.path(), 97, 1 << 20, |c| c).await;
    // Agent A also serves its own metrics on a local port.
    let metrics_port = zonesync_e2e::free_port();
    let mut config_a = AgentConfig::load(&t.ds.agent_a).unwrap();
    config_a.metrics.listen = Some(format!("127.0.0.1:{metrics_port}"));
    let a = tokio::spawn(zonesync_agent::run(config_a, t.signal.clone()));
    let b = tokio::spawn(zonesync_agent::run(
        AgentConfig::load(&t.ds.agent_b).unwrap(),
        t.signal.clone(),
    ));
    assert_hand_computed_goals(&t.api, &t.ds).await;
    let served = assert_goal_gauges(&t.api).await + &assert_agent_metrics(metrics_port).await;
    assert_grafana_queries_served(&served);
    t.stop().await;
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}

/// The agent's own `/metrics` (`[metrics] listen`) passes `promtool check
/// metrics` and carries its upstream's acknowledgements and backlog.
async fn assert_agent_metrics(port: u16) -> String {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("GET the agent's /metrics")
        .text()
        .await
        .expect("metrics text");
    promtool_check(&text);
    let sample = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name} in the agent's metrics:\n{text}"))
    };
    assert!(sample("zonesync_agent_upstream_batches_acked{upstream=\"primary\"}") > 0.0);
    assert_eq!(sample("zonesync_agent_upstream_connected{upstream=\"primary\"}"), 1.0);
    sample("zonesync_agent_outbox_pending_items");
    sample("zonesync_agent_outbox_dropped_readings");
    let missing = reqwest::get(format!("http://127.0.0.1:{port}/other"))
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    text
}

/// Every metric the example Grafana dashboard (deploy/grafana/zonesync.json)
/// queries is one the aggregator or an agent serves.
fn assert_grafana_queries_served(served: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/zonesync.json");
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the Grafana dashboard")).expect("JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut checked = 0;
    for e in &exprs {
        for name in e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("zonesync_"))
        {
            assert!(
                served.lines().any(|l| l.starts_with(&format!("# TYPE {name} "))),
                "the dashboard queries {name}, which nothing serves"
            );
            checked += 1;
        }
    }
    assert!(checked >= 12, "metric names checked: {checked}");
}

/// Prometheus's own linter, `promtool check metrics` (Debian `prometheus`).
fn promtool_check(text: &str) {
    zonesync_e2e::checked_by(
        "promtool",
        &["check", "metrics"],
        text.as_bytes(),
        "promtool is not installed: run scripts/test.sh, which installs it (apt-get install prometheus)",
    );
}

/// `/metrics` passes `promtool check metrics` (Prometheus's own linter,
/// Debian `prometheus`) and carries each goal of the last complete month as
/// the API has it: a zone on Grafana charts the same figures.
async fn assert_goal_gauges(api: &Api) -> String {
    let text = reqwest::get(format!("{}/metrics", api.base()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    promtool_check(&text);
    let table = api.get(&format!("/api/v1/zones/{ZONE}/goals")).await;
    let mut seen = 0;
    for g in table["goals"].as_array().expect("goals") {
        let sample = format!(
            "zonesync_goal_value{{zone=\"{ZONE}\",goal=\"{}\",span=\"{}\",unit=\"{}\"}} ",
            g["id"].as_str().unwrap(),
            g["period"].as_str().unwrap(),
            g["unit"].as_str().unwrap()
        );
        let line = text.lines().find(|l| l.starts_with(&sample));
        match g["value"].as_f64() {
            Some(v) => {
                let shown: f64 = line
                    .unwrap_or_else(|| panic!("no gauge for {sample}"))
                    .rsplit(' ')
                    .next()
                    .and_then(|x| x.parse().ok())
                    .expect("a number");
                assert!(
                    (shown - v).abs() <= 1e-9 * v.abs().max(1.0),
                    "{sample}{shown} vs API {v}"
                );
                seen += 1;
            }
            None => assert!(line.is_none(), "a missing figure is exported: {line:?}"),
        }
    }
    assert!(seen >= 5, "goal gauges compared: {seen}");
    text
}

/// A zone may run nats-server's own MQTT listener instead of Mosquitto (one
/// broker per zone, issue 18): the agents and the aggregator work unchanged
/// against it, down to the hand-computed figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_mqtt_listener_goals_match_hand_computed_figures() {
    let dir = tempfile::tempdir().unwrap();
    let broker = zonesync_e2e::nats::NatsServer::mqtt(&dir.path().join("nats"));
    let port = broker.mqtt_port.expect("MQTT port");
    let ds = dataset::write(dir.path(), port, 97, 2);
    // nats-server's MQTT listener speaks 3.1.1 only: the one setting an
    // agent needs there (docs/federation.md).
    ds.speak_mqtt311();
    let (mut agg, api) = spawn_aggregator(&ds.aggregator);
    let mut a = spawn_agent(&ds.agent_a);
    let mut b = spawn_agent(&ds.agent_b);
    assert_hand_computed_goals(&api, &ds).await;
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    assert!(agg.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_goals_match_hand_computed_figures() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let ds = dataset::write(dir.path(), broker.port, 97, 2);
    let (mut agg, api) = spawn_aggregator(&ds.aggregator);
    let mut a = spawn_agent(&ds.agent_a);
    let mut b = spawn_agent(&ds.agent_b);
    assert_hand_computed_goals(&api, &ds).await;
    // Agents and aggregator stop cleanly on SIGTERM.
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    assert!(agg.terminate().success());
    // The restarted aggregator learns the goodbyes from its store or, if the
    // first one stopped before handling them, from the broker's retained
    // presence after it subscribes: wait for that, not for a fixed time.
    let (_agg2, api2) = spawn_aggregator(&ds.aggregator);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let agents = api2.get(&format!("/api/v1/zones/{ZONE}/agents")).await;
        let list = agents["agents"].as_array().cloned().unwrap_or_default();
        if list.len() == 2 && list.iter().all(|a| a["state"]["status"] == "offline") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "clean goodbye leaves offline presence: {agents}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

mod delivery;
mod demo_run;
mod openapi;
mod outbound;
mod security;
