//! What the aggregator sends out: intensity alerts and zone summaries, through receiver outages.

use super::*;

// Hostile payloads: tests/corpus.rs runs the whole corpus (tests/corpus/) through Mosquitto
// to an aggregator process.

/// A local HTTP receiver for alert webhooks, started on demand.
async fn start_receiver(port: u16, got: std::sync::Arc<std::sync::Mutex<Vec<Value>>>) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let got = got.clone();
            async move {
                got.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intensity_alert_raises_once_clears_once_and_survives_a_receiver_outage() {
    tracing_init();
    let dir = tempfile::tempdir().unwrap();
    let broker = zonesync_demo::broker::start_embedded(0, 1 << 20).unwrap();
    let receiver_port = zonesync_e2e::free_port();
    std::fs::write(
        dir.path().join("registry.toml"),
        format!("[[zone]]\nid = \"{ZONE}\"\nname_zh = \"测试开发区\"\n[[zone.enterprise]]\nid = \"{}\"\nname = \"E1\"\nabove_scale = true\nindustry = \"C3120\"\n", E[0]),
    )
    .unwrap();
    let cfg = format!(
        "data_dir = \"{d}/agg\"\nregistry = \"{d}/registry.toml\"\n[mqtt]\nport = {port}\n[http]\nlisten = \"127.0.0.1:0\"\nwrite_token = \"s3cret\"\n\
         [summaries]\nevery_secs = 0\n[outbound]\nretry_base_ms = 100\nretry_max_ms = 300\n\
         [alerts]\nevaluate_every_ms = 50\nmin_duration_secs = 0.3\nhysteresis = 0.05\n\
         [alerts.rules]\nintensity_limits = [{{ industry = \"C31\", limit = 0.5 }}, {{ industry = \"*\", limit = 9.0 }}]\nytd_change_target = -0.04\n\
         [[alerts.sinks]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{receiver_port}/hook\"\n",
        d = dir.path().display(),
        port = broker.addr.port()
    );
    std::fs::write(dir.path().join("aggregator.toml"), cfg).unwrap();
    let (trigger, signal) = shutdown::channel();
    let running = zonesync_aggregator::start(
        AggregatorConfig::load(&dir.path().join("aggregator.toml")).unwrap(),
        signal,
    )
    .await
    .unwrap();
    let api = Api::new(&format!("http://{}", running.http_addr));
    let app = running.app.clone();
    let month = zonesync_proto::Period::month_of(chrono::Utc::now()).to_string();
    let mut seq = 0u64;
    // Intensity this month = kWh × 0.0001229 / 100 (value added 100): 500,000 kWh → 0.6145 (over 0.5).
    let mut feed = |kwh: f64| {
        seq += 1;
        let payload = serde_json::to_vec(
            &json!({"v": 1, "agent": "gw-x", "boot": 1, "seq": seq, "sent_at": chrono::Utc::now().to_rfc3339(),
            "zone": ZONE, "enterprise": E[0], "readings": [
                {"indicator": "electricity", "value": kwh, "unit": "kWh", "period": month},
                {"indicator": "value_added", "value": 100.0, "unit": "万元", "period": month}
            ]}),
        )
        .unwrap();
        let topic = format!("zonesync/v1/{ZONE}/gw-x/data/{}", E[0]);
        let r = zonesync_aggregator::ingest::handle(&app.ingest(), &topic, &payload, chrono::Utc::now()).unwrap();
        assert_eq!(r, zonesync_aggregator::ingest::Handled::Stored);
    };
    let pause = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
    // Over the limit, with the receiver down: raised, delivery retried.
    feed(500_000.0);
    pause(1000).await;
    assert_eq!(api.metric("zonesync_aggregator_alerts_raised_total").await, 1.0);
    assert!(
        api.metric("zonesync_aggregator_delivery_failures_total").await >= 1.0,
        "the receiver is down"
    );
    // Hovering around the limit (0.49 and 0.52; the clearing threshold is 0.475): nothing new.
    for kwh in [400_000.0, 420_000.0, 395_000.0, 410_000.0] {
        feed(kwh);
        pause(250).await;
    }
    // Acknowledge: refused without the token, accepted with it.
    let key = format!("intensity_limit|{ZONE}|{}", E[0]);
    let http = reqwest::Client::new();
    let ack_url = format!("http://{}/api/v1/alerts/ack", running.http_addr);
    let body = json!({"key": key, "by": "值班员"});
    assert_eq!(http.post(&ack_url).json(&body).send().await.unwrap().status(), 401);
    let r = http
        .post(&ack_url)
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let active = api.get("/api/v1/alerts").await;
    assert_eq!(active["alerts"][0]["phase"]["acked_by"], "值班员", "{active}");
    // The receiver comes back: the queued "raised" arrives.
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let receiver = start_receiver(receiver_port, got.clone()).await;
    // A real fall: cleared.
    feed(300_000.0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
        pause(100).await;
    }
    pause(1000).await;
    let events = got.lock().unwrap().clone();
    let transitions: Vec<&str> = events.iter().filter_map(|e| e["transition"].as_str()).collect();
    assert_eq!(transitions, vec!["raised", "cleared"], "{events:?}");
    assert!(events.iter().all(|e| e["key"] == key.as_str()));
    assert_eq!(api.metric("zonesync_aggregator_alerts_raised_total").await, 1.0);
    assert_eq!(api.metric("zonesync_aggregator_alerts_cleared_total").await, 1.0);
    let hist = api.get("/api/v1/alerts/history").await;
    assert_eq!(hist["events"].as_array().map(Vec::len), Some(2), "{hist}");
    eprintln!(
        "alert figures: raised 1, cleared 1, delivered {}, failed attempts while the receiver was down {}",
        api.metric("zonesync_aggregator_deliveries_total").await,
        api.metric("zonesync_aggregator_delivery_failures_total").await
    );
    receiver.abort();
    trigger.fire();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_summaries_are_retained_on_mqtt_and_pushed_over_http() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    tracing_init();
    let dir = tempfile::tempdir().unwrap();
    let receiver_port = zonesync_e2e::free_port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let receiver = start_receiver(receiver_port, got.clone()).await;
    let t = InProcess::start(dir.path(), 1, 1 << 20, |c| {
        c + &format!("[summaries]\nevery_secs = 0.2\nhttp_url = \"http://127.0.0.1:{receiver_port}/hook\"\n[outbound]\nretry_base_ms = 100\n")
    })
    .await;
    let broker = t.broker;
    // Pushed over HTTP.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pushed = got.lock().unwrap().first().cloned().expect("a summary was pushed");
    assert_eq!(pushed["zone"], ZONE);
    assert!(
        pushed["goals"]
            .as_array()
            .is_some_and(|g| g.iter().any(|r| r["id"] == "HN27-03")),
        "{pushed}"
    );
    // Retained on MQTT: a client subscribing later gets the latest table at once.
    let mut o = MqttOptions::new("summary-reader", "127.0.0.1", broker.addr.port());
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(o, 16);
    client
        .subscribe(format!("zonesync/v1/{ZONE}/summary"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = events.poll().await {
                return (p.retain, serde_json::from_slice::<Value>(&p.payload).unwrap());
            }
        }
    })
    .await
    .expect("a retained summary");
    assert!(summary.0, "the summary is retained");
    assert_eq!(summary.1["zone"], ZONE);
    // The aggregator does not read its own output back as agent data.
    assert_eq!(
        t.running
            .app
            .metrics
            .dead_letters
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    receiver.abort();
    t.stop().await;
}
